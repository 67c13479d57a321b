//! Roles through the admin API and `quire ctl`, against the real `quire` binary
//! (`serve --sandbox` on loopback): admin tokens acting as principals see and change only
//! what their roles cover (a tenant admin its tenant, a workspace manager its workspace),
//! a revoked role stops working on the next request, restrictions override roles, audit
//! queries never cross a tenant, denials are audited, and an exported chain verifies offline
//! until one record is changed, removed or moved.

mod cluster_common;

use std::process::Stdio;
use std::time::Duration;

use cluster_common::admin::Api;
use cluster_common::ctl::{admin_token_for, ctl};
use cluster_common::process::{start_sandbox, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

async fn provision(api: &Api, root: &str) {
    for tenant in ["acme", "globex"] {
        api.ok(
            root,
            Method::POST,
            "/tenants",
            Some(json!({"id": tenant, "display_name": tenant})),
        )
        .await;
        api.ok(
            root,
            Method::POST,
            &format!("/tenants/{tenant}/integrations"),
            Some(json!({"id": "main", "display_name": "main", "notion_token": "ntn_test_123"})),
        )
        .await;
    }
    for (tenant, ws) in [("acme", "docs"), ("acme", "eng"), ("globex", "ops")] {
        api.ok(
            root,
            Method::POST,
            &format!("/tenants/{tenant}/workspaces"),
            Some(json!({"id": ws, "display_name": ws, "integration": "main"})),
        )
        .await;
    }
    for (tenant, p) in [
        ("acme", "alice"),
        ("acme", "mgr"),
        ("acme", "bob"),
        ("globex", "gina"),
    ] {
        api.ok(
            root,
            Method::POST,
            &format!("/tenants/{tenant}/principals"),
            Some(json!({"id": p, "display_name": p})),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_scope_what_admin_tokens_see_and_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_sandbox(dir.path(), "warn");
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, root) = (ready.base, ready.admin_token);
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    provision(&api, &root).await;

    // Roles, assigned with ctl (one of them with a justification for the audit trail).
    let a = ctl(
        Some(&base),
        Some(&root),
        &[
            "--json",
            "roles",
            "assign",
            "--subject",
            "acme/alice",
            "--role",
            "tenant_admin",
            "--tenant",
            "acme",
            "--justification",
            "runs acme's account",
        ],
    )
    .json();
    assert_eq!(a["binding"]["role"], "tenant_admin", "{a}");
    assert_eq!(a["binding"]["granted_by"], "root", "{a}");
    let m = ctl(
        Some(&base),
        Some(&root),
        &[
            "--json",
            "roles",
            "assign",
            "--subject",
            "acme/mgr",
            "--role",
            "workspace_manager",
            "--tenant",
            "acme",
            "--workspace",
            "docs",
        ],
    )
    .json();
    let mgr_binding = m["binding"]["id"].as_u64().expect("a binding id");
    let listed = ctl(
        Some(&base),
        Some(&root),
        &["--json", "roles", "list", "--subject", "acme/mgr"],
    )
    .json();
    assert_eq!(listed["roles"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        listed["roles"][0]["scope"],
        json!({"level": "workspace", "tenant": "acme", "workspace": "docs"})
    );
    let table = ctl(Some(&base), Some(&root), &["roles", "list"]);
    assert!(
        table.ok && table.stdout.contains("acme/alice") && table.stdout.contains("tenant_admin"),
        "{} {}",
        table.stdout,
        table.stderr
    );

    let alice = admin_token_for(&base, &root, "acme/alice");
    let mgr = admin_token_for(&base, &root, "acme/mgr");

    // The tenant admin: its own tenant, nothing of another, nothing cluster-wide.
    let tenants = api.ok(&alice, Method::GET, "/tenants", None).await;
    let ids: Vec<&str> = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme"], "{tenants}");
    api.ok(&alice, Method::GET, "/tenants/acme", None).await;
    api.forbidden(
        &alice,
        Method::GET,
        "/tenants/globex",
        None,
        "tenant.read",
        "tenant globex",
    )
    .await;
    api.forbidden(
        &alice,
        Method::GET,
        "/tenants/globex/workspaces",
        None,
        "tenant.read",
        "tenant globex",
    )
    .await;
    api.forbidden(
        &alice,
        Method::GET,
        "/tenants/globex/tokens",
        None,
        "tenant.read",
        "tenant globex",
    )
    .await;
    api.forbidden(
        &alice,
        Method::POST,
        "/tenants",
        Some(json!({"id": "initech", "display_name": "Initech"})),
        "tenants.create",
        "global",
    )
    .await;
    api.forbidden(
        &alice,
        Method::POST,
        "/tenants/globex/principals",
        Some(json!({"id": "mole", "display_name": "mole"})),
        "tenant.users.manage",
        "tenant globex",
    )
    .await;
    api.forbidden(
        &alice,
        Method::GET,
        "/cluster/status",
        None,
        "system.configure",
        "global",
    )
    .await;
    api.forbidden(
        &alice,
        Method::GET,
        "/nodes",
        None,
        "system.configure",
        "global",
    )
    .await;
    api.forbidden(
        &alice,
        Method::GET,
        "/principals",
        None,
        "system.configure",
        "global",
    )
    .await;
    api.ok(
        &alice,
        Method::POST,
        "/tenants/acme/workspaces",
        Some(
            json!({"id": "wiki", "display_name": "Wiki", "integration": "main",
                    "justification": "a wiki for the handbook"}),
        ),
    )
    .await;
    // Within its authority it delegates the roles below its own, and no higher one.
    api.ok(
        &alice,
        Method::POST,
        "/roles",
        Some(json!({"subject": "acme/bob", "role": "workspace_manager",
                    "scope": {"level": "workspace", "tenant": "acme", "workspace": "eng"},
                    "ttl_secs": 3600})),
    )
    .await;
    api.forbidden(
        &alice,
        Method::POST,
        "/roles",
        Some(json!({"subject": "acme/bob", "role": "tenant_admin",
                    "scope": {"level": "tenant", "tenant": "acme"}})),
        "tenant.users.manage",
        "tenant acme",
    )
    .await;
    // Admin tokens: it sees those of its tenant only.
    let tokens = api.ok(&alice, Method::GET, "/admin-tokens", None).await;
    let subjects: Vec<&str> = tokens["admin_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["subject"].as_str().unwrap_or("root"))
        .collect();
    assert!(
        !subjects.is_empty() && subjects.iter().all(|s| s.starts_with("acme/")),
        "{tokens}"
    );
    // Role bindings: those inside its tenant, never a global one.
    let roles = api.ok(&alice, Method::GET, "/roles", None).await;
    assert!(
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["scope"]["tenant"] == "acme"),
        "{roles}"
    );

    // The workspace manager: members of its workspace only.
    let granted = api
        .ok(
            &mgr,
            Method::POST,
            "/tenants/acme/principals/bob/workspaces",
            Some(json!({"workspace": "docs"})),
        )
        .await;
    assert_eq!(granted["changed"], true);
    api.forbidden(
        &mgr,
        Method::POST,
        "/tenants/acme/principals/bob/workspaces",
        Some(json!({"workspace": "eng"})),
        "workspace.members.manage",
        "workspace acme/eng",
    )
    .await;
    let ws = api
        .ok(&mgr, Method::GET, "/tenants/acme/workspaces", None)
        .await;
    assert_eq!(ws["workspaces"].as_array().unwrap().len(), 1, "{ws}");
    assert_eq!(ws["workspaces"][0]["id"], "docs");
    let members = api
        .ok(&mgr, Method::GET, "/tenants/acme/principals", None)
        .await;
    let ids: Vec<&str> = members["principals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["bob"], "{members}");
    api.forbidden(
        &mgr,
        Method::GET,
        "/tenants/acme/workspaces/eng",
        None,
        "workspace.read",
        "workspace acme/eng",
    )
    .await;
    api.forbidden(
        &mgr,
        Method::GET,
        "/tenants/acme",
        None,
        "tenant.read",
        "tenant acme",
    )
    .await;

    // Revocation takes effect on the next request, for reads and writes alike.
    let revoked = ctl(
        Some(&base),
        Some(&root),
        &["--json", "roles", "revoke", &mgr_binding.to_string()],
    )
    .json();
    assert_eq!(revoked["revoked"], true);
    api.forbidden(
        &mgr,
        Method::GET,
        "/tenants/acme/workspaces/docs",
        None,
        "workspace.read",
        "workspace acme/docs",
    )
    .await;
    api.forbidden(
        &mgr,
        Method::POST,
        "/tenants/acme/principals/alice/workspaces",
        Some(json!({"workspace": "docs"})),
        "workspace.members.manage",
        "workspace acme/docs",
    )
    .await;

    // A restriction overrides the tenant admin's role until it is lifted.
    let refused = ctl(
        Some(&base),
        Some(&root),
        &[
            "restrictions",
            "add",
            "--subject",
            "acme/alice",
            "--permission",
            "tenant.workspaces.configure",
            "--tenant",
            "acme",
        ],
    );
    assert!(
        !refused.ok && refused.stderr.contains("--justification"),
        "{}",
        refused.stderr
    );
    let r = ctl(
        Some(&base),
        Some(&root),
        &[
            "--json",
            "restrictions",
            "add",
            "--subject",
            "acme/alice",
            "--permission",
            "tenant.workspaces.configure",
            "--tenant",
            "acme",
            "--justification",
            "workspace freeze during the audit",
        ],
    )
    .json();
    let restriction = r["id"].as_u64().expect("a restriction id");
    let (status, v) = api
        .call(
            &alice,
            Method::POST,
            "/tenants/acme/workspaces",
            Some(json!({"id": "frozen", "display_name": "f", "integration": "main"})),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace freeze"),
        "{v}"
    );
    let seen = api.ok(&alice, Method::GET, "/restrictions", None).await;
    assert_eq!(seen["restrictions"][0]["id"], restriction, "{seen}");
    ctl(
        Some(&base),
        Some(&root),
        &["--json", "restrictions", "remove", &restriction.to_string()],
    )
    .json();
    api.ok(
        &alice,
        Method::POST,
        "/tenants/acme/workspaces",
        Some(json!({"id": "thawed", "display_name": "t", "integration": "main"})),
    )
    .await;

    // Denials are in the audit trail: a read in the target tenant's chain, a change
    // (decided by apply) in the chain of what it concerned.
    let denied_read = api
        .wait_for_record(&root, "tenant=globex&kind=authorize", |r| {
            r["principal"] == "acme/alice" && r["action"] == "tenant.read"
        })
        .await;
    assert_eq!(denied_read["outcome"], "denied");
    let denied_write = api
        .wait_for_record(&root, "tenant=_cluster&outcome=denied", |r| {
            r["principal"] == "acme/alice" && r["action"] == "create_tenant"
        })
        .await;
    assert_eq!(denied_write["kind"], "admin");
    let justified = api
        .wait_for_record(&root, "tenant=acme&action=create_workspace", |r| {
            r["principal"] == "acme/alice" && r["resource"] == "workspace:wiki"
        })
        .await;
    assert_eq!(justified["justification"], "a wiki for the handbook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_stay_in_their_tenant_and_exports_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_sandbox(dir.path(), "warn");
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, root) = (ready.base, ready.admin_token);
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    provision(&api, &root).await;
    for (subject, tenant) in [("acme/alice", "acme"), ("globex/gina", "globex")] {
        api.ok(
            &root,
            Method::POST,
            "/roles",
            Some(json!({"subject": subject, "role": "tenant_admin",
                        "scope": {"level": "tenant", "tenant": tenant}})),
        )
        .await;
    }
    let alice = admin_token_for(&base, &root, "acme/alice");
    let gina = admin_token_for(&base, &root, "globex/gina");
    // Some history in each tenant's chain.
    for i in 0..3 {
        api.ok(
            &alice,
            Method::POST,
            "/tenants/acme/principals",
            Some(json!({"id": format!("a{i}"), "display_name": "a"})),
        )
        .await;
        api.ok(
            &gina,
            Method::POST,
            "/tenants/globex/principals",
            Some(json!({"id": format!("g{i}"), "display_name": "g"})),
        )
        .await;
    }

    // Each tenant admin reads its own chain, and only it.
    let own = api
        .ok(&alice, Method::GET, "/audit/records?tenant=acme", None)
        .await;
    let records = own["records"].as_array().unwrap();
    assert!(records.len() >= 3, "{own}");
    assert!(records.iter().all(|r| r["chain"] == "acme"), "{own}");
    assert!(
        records.iter().all(|r| !r.to_string().contains("globex")),
        "an acme record mentions globex: {own}"
    );
    let by_default = api.ok(&gina, Method::GET, "/audit/records", None).await;
    assert_eq!(by_default["chain"], "globex", "{by_default}");
    for (token, other) in [(&alice, "globex"), (&gina, "acme")] {
        api.forbidden(
            token,
            Method::GET,
            &format!("/audit/records?tenant={other}"),
            None,
            "audit.read",
            &format!("tenant {other}"),
        )
        .await;
        api.forbidden(
            token,
            Method::GET,
            &format!("/audit/export?tenant={other}"),
            None,
            "audit.read",
            &format!("tenant {other}"),
        )
        .await;
    }
    api.forbidden(
        &alice,
        Method::GET,
        "/audit/records?tenant=_cluster",
        None,
        "reports.enterprise",
        "global",
    )
    .await;
    let chains = api.ok(&alice, Method::GET, "/audit/chains", None).await;
    let names: Vec<&str> = chains["chains"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["chain"].as_str())
        .collect();
    assert_eq!(names, ["acme"], "{chains}");
    let verified = api.ok(&alice, Method::GET, "/audit/verify", None).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(
        verified["chains"].as_array().unwrap().len(),
        1,
        "{verified}"
    );
    let filtered = ctl(
        Some(&base),
        Some(&alice),
        &[
            "--json",
            "audit",
            "query",
            "--tenant",
            "acme",
            "--kind",
            "admin",
            "--principal",
            "acme/alice",
            "--limit",
            "2",
        ],
    )
    .json();
    assert_eq!(
        filtered["records"].as_array().unwrap().len(),
        2,
        "{filtered}"
    );
    assert_eq!(filtered["more"], true, "{filtered}");
    // A denial aimed at no tenant is kept in the caller's own chain.
    api.wait_for_record(&root, "tenant=acme&kind=authorize", |r| {
        r["principal"] == "acme/alice" && r["action"] == "reports.enterprise"
    })
    .await;
    let tail = ctl(
        Some(&base),
        Some(&alice),
        &["audit", "tail", "--tenant", "acme", "--lines", "2"],
    );
    assert!(tail.ok, "{}", tail.stderr);
    assert_eq!(tail.stdout.lines().count(), 2, "{}", tail.stdout);
    assert!(
        tail.stdout.lines().all(|l| l.starts_with('#')),
        "{}",
        tail.stdout
    );

    // --follow prints records as they commit.
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["ctl", "--url", &base, "--token", &alice])
        .args([
            "audit", "tail", "--tenant", "acme", "--lines", "1", "--follow",
        ])
        .args(["--interval-ms", "100"])
        .env_remove("QUIRE_ADMIN_TOKEN")
        .env_remove("QUIRE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start quire ctl audit tail --follow");
    let stdout = follower.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("tail --follow printed the newest record in time")
        .expect("read tail's output")
        .expect("a line");
    assert!(first.starts_with('#'), "{first}");
    api.ok(
        &alice,
        Method::POST,
        "/tenants/acme/principals",
        Some(json!({"id": "late", "display_name": "late"})),
    )
    .await;
    let followed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("principal:late") {
                return Ok(line);
            }
            seen.push(line);
        }
        Err(seen)
    })
    .await;
    assert!(
        matches!(followed, Ok(Ok(_))),
        "tail --follow did not print the new record: {followed:?}"
    );
    let _ = follower.kill().await;

    // The cluster's chains all verify (root reads every chain).
    let all = ctl(Some(&base), Some(&root), &["audit", "verify"]);
    assert!(all.ok, "{} {}", all.stdout, all.stderr);
    assert!(
        all.stdout.contains("acme") && all.stdout.contains("_cluster"),
        "{}",
        all.stdout
    );

    // Export, then verify offline (no server, no token).
    let file = dir.path().join("acme.jsonl");
    let exported = ctl(
        Some(&base),
        Some(&alice),
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(exported.ok, "{}", exported.stderr);
    let to_stdout = ctl(
        Some(&base),
        Some(&alice),
        &["audit", "export", "--tenant", "acme"],
    );
    assert!(to_stdout.ok, "{}", to_stdout.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["chain"], "acme");
    assert_eq!(header["anchor_seq"], 0);
    assert!(
        header["anchor_hash"].is_string() && header["head_hash"].is_string(),
        "{header}"
    );
    assert!(
        to_stdout.stdout.starts_with(text.lines().next().unwrap()),
        "{}",
        to_stdout.stdout
    );
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines.len() >= 6, "{text}");
    let good = ctl(
        None,
        None,
        &["audit", "verify", "--file", file.to_str().unwrap()],
    );
    assert!(good.ok, "{}", good.stderr);
    assert!(good.stdout.contains("verify"), "{}", good.stdout);

    let check_broken = |name: &str, lines: &[String], expect: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let out = ctl(
            None,
            None,
            &["audit", "verify", "--file", path.to_str().unwrap()],
        );
        assert!(
            !out.ok,
            "{name}: a tampered export verified: {}",
            out.stdout
        );
        assert!(
            out.stderr.contains(expect),
            "{name}: the error should name {expect:?}: {}",
            out.stderr
        );
    };
    // One record's outcome changed.
    let mut edited = lines.clone();
    let mut record: Value = serde_json::from_str(&edited[2]).unwrap();
    let seq = record["seq"].as_u64().unwrap();
    record["outcome"] = json!(if record["outcome"] == "ok" {
        "denied"
    } else {
        "ok"
    });
    edited[2] = serde_json::to_string(&record).unwrap();
    check_broken("edited.jsonl", &edited, &format!("record {seq}"));
    // One record deleted.
    let mut deleted = lines.clone();
    let removed: Value = serde_json::from_str(&deleted.remove(3)).unwrap();
    let next = removed["seq"].as_u64().unwrap() + 1;
    check_broken("deleted.jsonl", &deleted, &format!("record {next}"));
    // Two records swapped.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let moved: Value = serde_json::from_str(&swapped[2]).unwrap();
    check_broken(
        "swapped.jsonl",
        &swapped,
        &format!("record {}", moved["seq"].as_u64().unwrap()),
    );
    // The newest record cut off.
    let mut truncated = lines.clone();
    truncated.pop();
    check_broken("truncated.jsonl", &truncated, "removed from the end");
}
