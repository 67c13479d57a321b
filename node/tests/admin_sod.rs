//! Separation of duties and delegation through the admin API and `quire ctl`, against the
//! real `quire` binary (`serve --sandbox` on loopback): with the policy on, a tenant creation
//! answers 202 and waits for two distinct approvers of the right roles (the requester's own
//! approval and a wrong role refused), executes on the second; break-glass executes at once
//! and leaves a high-severity audit record; a temporary delegation works at once and stops at
//! its expiry or when the delegator's role is revoked; a permanent one waits for a higher
//! authority and then carries its review date. On a cluster of three processes, a request
//! made on one node and approved on the others executes once, the same on every node; and a
//! delegation that is the only thing letting an agent call tools stops on every node once its
//! revocation is acknowledged (with agents calling through other nodes), or at its expiry.

mod cluster_common;

use std::time::Duration;

use cluster_common::admin::Api;
use cluster_common::ctl::{admin_token_for, ctl};
use cluster_common::mcp::{CLUSTER_DEADLINES, Session, message_of};
use cluster_common::process::{start_sandbox, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

/// Tenant `acme` (workspaces docs and eng), its principals alice (tenant admin), mgr
/// (workspace manager of docs), carol and dave; global ea1, ea2 (enterprise admins), sec1
/// (security admin), co1 (compliance officer). Returns the role binding id of alice's role.
async fn provision(api: &Api, root: &str) -> u64 {
    api.ok(
        root,
        Method::POST,
        "/tenants",
        Some(json!({"id": "acme", "display_name": "Acme"})),
    )
    .await;
    api.ok(
        root,
        Method::POST,
        "/tenants/acme/integrations",
        Some(json!({"id": "main", "display_name": "main", "notion_token": "ntn_test_123"})),
    )
    .await;
    for ws in ["docs", "eng"] {
        api.ok(
            root,
            Method::POST,
            "/tenants/acme/workspaces",
            Some(json!({"id": ws, "display_name": ws, "integration": "main"})),
        )
        .await;
    }
    for p in ["alice", "mgr", "carol", "dave"] {
        api.ok(
            root,
            Method::POST,
            "/tenants/acme/principals",
            Some(json!({"id": p, "display_name": p})),
        )
        .await;
    }
    for g in ["ea1", "ea2", "sec1", "co1"] {
        api.ok(
            root,
            Method::POST,
            "/principals",
            Some(json!({"id": g, "display_name": g})),
        )
        .await;
    }
    let mut alice = 0;
    for (subject, role, scope) in [
        (
            "acme/alice",
            "tenant_admin",
            json!({"level": "tenant", "tenant": "acme"}),
        ),
        (
            "acme/mgr",
            "workspace_manager",
            json!({"level": "workspace", "tenant": "acme", "workspace": "docs"}),
        ),
        ("ea1", "enterprise_admin", json!({"level": "global"})),
        ("ea2", "enterprise_admin", json!({"level": "global"})),
        ("sec1", "security_admin", json!({"level": "global"})),
        ("co1", "compliance_officer", json!({"level": "global"})),
    ] {
        let v = api
            .ok(
                root,
                Method::POST,
                "/roles",
                Some(json!({"subject": subject, "role": role, "scope": scope})),
            )
            .await;
        if subject == "acme/alice" {
            alice = v["binding"]["id"].as_u64().expect("a binding id");
        }
    }
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_changes_wait_for_distinct_approvers_and_break_glass_is_audited_high() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_sandbox(dir.path(), "warn");
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, root) = (ready.base, ready.admin_token);
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    provision(&api, &root).await;
    let tok = |s: &str| admin_token_for(&base, &root, s);
    let (ea1, ea2, sec1, co1, alice) = (
        tok("ea1"),
        tok("ea2"),
        tok("sec1"),
        tok("co1"),
        tok("acme/alice"),
    );

    // The policy starts off; an enterprise admin turns it on (at once: it only adds checks).
    let p = api.ok(&ea1, Method::GET, "/sod-policy", None).await;
    assert_eq!(p["enabled"], false, "{p}");
    assert_eq!(p["tenant_lifecycle"]["approvals"], 2, "{p}");
    let on = ctl(
        Some(&base),
        Some(&ea1),
        &["approvals", "set-policy", "--on"],
    );
    assert!(on.ok, "{}", on.stderr);
    assert!(
        on.stdout.contains("separation of duties is on"),
        "{}",
        on.stdout
    );
    // A tenant admin may not read it.
    api.forbidden(
        &alice,
        Method::GET,
        "/sod-policy",
        None,
        "security.policy",
        "global",
    )
    .await;

    // Tenant creation needs a business justification ...
    let (status, v) = api
        .call(
            &ea1,
            Method::POST,
            "/tenants",
            Some(json!({"id": "beta", "display_name": "Beta"})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("business justification"),
        "{v}"
    );
    // ... and then becomes an approval request (quire ctl says so).
    let held = ctl(
        Some(&base),
        Some(&ea1),
        &[
            "--justification",
            "new customer, contract 7",
            "tenants",
            "create",
            "beta",
        ],
    );
    assert!(held.ok, "{}", held.stderr);
    assert!(
        held.stdout.contains("held for approval as request"),
        "{}",
        held.stdout
    );
    let pending = api
        .ok(&co1, Method::GET, "/approvals?status=pending", None)
        .await;
    let list = pending["approvals"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{pending}");
    let id = list[0]["id"].as_u64().expect("an id");
    assert_eq!(list[0]["action"], "create_tenant");
    assert_eq!(list[0]["requested_by"], "ea1");
    assert_eq!(list[0]["justification"], "new customer, contract 7");
    let (status, _) = api.call(&root, Method::GET, "/tenants/beta", None).await;
    assert_eq!(status, 404, "held, not executed");
    // A tenant admin sees no request.
    let (status, _) = api
        .call(&alice, Method::GET, &format!("/approvals/{id}"), None)
        .await;
    assert_eq!(status, 403);

    // The requester never approves its own request; a security admin is the wrong role.
    let (status, v) = api
        .call(
            &ea1,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("never approves its own"),
        "{v}"
    );
    let (status, v) = api
        .call(
            &sec1,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{v}");
    // One approval is too few.
    let first = ctl(
        Some(&base),
        Some(&co1),
        &["approvals", "approve", &id.to_string()],
    );
    assert!(first.ok, "{}", first.stderr);
    assert!(
        first.stdout.contains("pending (1 of 2 approvals)"),
        "{}",
        first.stdout
    );
    let (status, _) = api.call(&root, Method::GET, "/tenants/beta", None).await;
    assert_eq!(status, 404);
    // The second distinct approver executes it.
    let second = api
        .ok(
            &ea2,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(second["status"], "executed", "{second}");
    api.ok(&root, Method::GET, "/tenants/beta", None).await;
    let shown = ctl(
        Some(&base),
        Some(&co1),
        &["--json", "approvals", "show", &id.to_string()],
    )
    .json();
    let by: Vec<&str> = shown["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["by"].as_str())
        .collect();
    assert_eq!(by, ["co1", "ea2"], "{shown}");

    // A root token is held like anyone: deleting the tenant becomes a request ...
    let (status, v) = api
        .call(
            &root,
            Method::DELETE,
            "/tenants/beta",
            Some(json!({"justification": "customer left"})),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "approval_pending", "{v}");
    let id = v["approval"]["id"].as_u64().expect("an id");
    // ... which only an enterprise admin, with a justification, may break the glass on.
    let refused = ctl(
        Some(&base),
        Some(&co1),
        &[
            "--justification",
            "x",
            "approvals",
            "break-glass",
            &id.to_string(),
        ],
    );
    assert!(!refused.ok);
    let refused = ctl(
        Some(&base),
        Some(&ea2),
        &["approvals", "break-glass", &id.to_string()],
    );
    assert!(!refused.ok);
    let broke = ctl(
        Some(&base),
        Some(&ea2),
        &[
            "--justification",
            "legal hold lifted, incident 42",
            "approvals",
            "break-glass",
            &id.to_string(),
        ],
    );
    assert!(broke.ok, "{}", broke.stderr);
    assert!(broke.stdout.contains("executed"), "{}", broke.stdout);
    let (status, _) = api.call(&root, Method::GET, "/tenants/beta", None).await;
    assert_eq!(status, 404, "deleted by the break-glass");
    let high = api
        .wait_for_record(&root, "tenant=_cluster&action=break_glass", |r| {
            r["severity"] == "high"
        })
        .await;
    assert_eq!(high["principal"], "ea2", "{high}");
    assert!(
        high["justification"]
            .as_str()
            .unwrap_or_default()
            .contains("incident 42"),
        "{high}"
    );
    let executed = api
        .wait_for_record(&root, "tenant=_cluster&action=delete_tenant", |r| {
            r["outcome"] == "ok"
        })
        .await;
    assert_eq!(executed["severity"], "high", "{executed}");

    // Rejected requests cannot be approved afterwards.
    let (status, v) = api
        .call(
            &ea1,
            Method::POST,
            "/tenants",
            Some(json!({"id": "gamma", "display_name": "Gamma", "justification": "pilot"})),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let id = v["approval"]["id"].as_u64().expect("an id");
    let r = api
        .ok(&co1, Method::POST, &format!("/approvals/{id}/reject"), None)
        .await;
    assert_eq!(r["status"], "rejected", "{r}");
    let (status, _) = api
        .call(
            &ea2,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 409);
    let listed = ctl(
        Some(&base),
        Some(&co1),
        &["approvals", "list", "--status", "rejected"],
    );
    assert!(
        listed.ok && listed.stdout.contains("gamma"),
        "{}{}",
        listed.stdout,
        listed.stderr
    );

    // A root admin token is enterprise configuration: its secret comes with the 202 and works
    // once two enterprise or security admins approved it.
    let (status, v) = api
        .call(
            &ea1,
            Method::POST,
            "/admin-tokens",
            Some(json!({"display_name": "break-room", "justification": "second operator"})),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["approval"]["class"], "enterprise_config", "{v}");
    let secret = v["token"]
        .as_str()
        .expect("the secret, shown once")
        .to_owned();
    let id = v["approval"]["id"].as_u64().expect("an id");
    let (status, _) = api
        .call(&secret, Method::GET, "/cluster/status", None)
        .await;
    assert_eq!(status, 401, "not valid before approval");
    // A compliance officer is not among its approvers.
    let (status, _) = api
        .call(
            &co1,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    api.ok(
        &sec1,
        Method::POST,
        &format!("/approvals/{id}/approve"),
        None,
    )
    .await;
    let done = api
        .ok(
            &ea2,
            Method::POST,
            &format!("/approvals/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(done["status"], "executed", "{done}");
    api.ok(&secret, Method::GET, "/cluster/status", None).await;
}

/// Polls `GET path` with `token` until it answers `want`.
async fn wait_status(api: &Api, token: &str, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = api.call(token, Method::GET, path, None).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} still answers {status} (want {want}): {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_expire_end_with_the_delegators_role_and_permanent_ones_wait_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_sandbox(dir.path(), "warn");
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, root) = (ready.base, ready.admin_token);
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    let alice_binding = provision(&api, &root).await;
    let tok = |s: &str| admin_token_for(&base, &root, s);
    let (ea1, alice, mgr, carol, dave) = (
        tok("ea1"),
        tok("acme/alice"),
        tok("acme/mgr"),
        tok("acme/carol"),
        tok("acme/dave"),
    );
    let eng = "/tenants/acme/workspaces/eng";
    let (status, _) = api.call(&dave, Method::GET, eng, None).await;
    assert_eq!(status, 403);

    // A temporary delegation within alice's authority (a tenant admin may assign
    // workspace_manager) is in force at once, and ends at its expiry.
    let made = ctl(
        Some(&base),
        Some(&alice),
        &[
            "--justification",
            "covering for mgr",
            "delegations",
            "create",
            "--to",
            "acme/dave",
            "--role",
            "workspace_manager",
            "--tenant",
            "acme",
            "--workspace",
            "eng",
            "--ttl",
            "3s",
        ],
    );
    assert!(made.ok, "{}", made.stderr);
    assert!(made.stdout.contains("in force"), "{}", made.stdout);
    api.ok(&dave, Method::GET, eng, None).await;
    wait_status(&api, &dave, eng, 403).await;

    // Without a justification, or with neither a ttl nor --permanent, nothing is made.
    let (status, _) = api
        .call(
            &alice,
            Method::POST,
            "/delegations",
            Some(json!({"delegate": "acme/carol", "role": "workspace_manager",
                "scope": {"level": "workspace", "tenant": "acme", "workspace": "eng"}, "ttl_secs": 60})),
        )
        .await;
    assert_eq!(status, 400);

    // Another one, for carol, for an hour; then alice's role is revoked: it ends at once.
    let d = api
        .ok(
            &alice,
            Method::POST,
            "/delegations",
            Some(
                json!({"delegate": "acme/carol", "role": "workspace_manager",
                "scope": {"level": "workspace", "tenant": "acme", "workspace": "eng"},
                "ttl_secs": 3600, "justification": "release week"}),
            ),
        )
        .await;
    assert_eq!(d["status"], "active", "{d}");
    assert_eq!(d["delegator"], "acme/alice", "{d}");
    assert_eq!(d["in_force"], true, "{d}");
    api.ok(&carol, Method::GET, eng, None).await;
    let seen = api
        .ok(
            &carol,
            Method::GET,
            "/delegations?delegate=acme/carol",
            None,
        )
        .await;
    assert_eq!(
        seen["delegations"].as_array().map(Vec::len),
        Some(1),
        "{seen}"
    );
    // Revoking the delegator's role is acknowledged only after the revocation bound, so the
    // very next request is refused.
    api.ok(
        &root,
        Method::DELETE,
        &format!("/roles/{alice_binding}"),
        None,
    )
    .await;
    let (status, v) = api.call(&carol, Method::GET, eng, None).await;
    assert_eq!(status, 403, "{v}");

    // A permanent delegation waits for a higher authority.
    let made = ctl(
        Some(&base),
        Some(&mgr),
        &[
            "--json",
            "--justification",
            "joins the docs team",
            "delegations",
            "create",
            "--to",
            "acme/dave",
            "--role",
            "standard_user",
            "--tenant",
            "acme",
            "--workspace",
            "docs",
            "--permanent",
        ],
    )
    .json();
    assert_eq!(made["status"], "pending_approval", "{made}");
    assert_eq!(made["in_force"], false, "{made}");
    assert_eq!(made["kind"], "permanent", "{made}");
    let id = made["id"].as_u64().expect("an id");
    // The delegator cannot approve it; an enterprise admin (above a workspace manager) can.
    let (status, _) = api
        .call(
            &mgr,
            Method::POST,
            &format!("/delegations/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let approved = ctl(
        Some(&base),
        Some(&ea1),
        &["delegations", "approve", &id.to_string()],
    );
    assert!(approved.ok, "{}", approved.stderr);
    assert!(approved.stdout.contains("active"), "{}", approved.stdout);
    let d = api
        .ok(&ea1, Method::GET, &format!("/delegations/{id}"), None)
        .await;
    let approved_at = d["approved_at_ms"].as_u64().expect("approved");
    assert_eq!(
        d["review_due_at_ms"].as_u64(),
        Some(approved_at + 90 * 24 * 3600 * 1000),
        "{d}"
    );
    assert_eq!(d["review_due"], false, "{d}");
    let due = api
        .ok(&ea1, Method::GET, "/delegations?review_due=true", None)
        .await;
    assert_eq!(
        due["delegations"].as_array().map(Vec::len),
        Some(0),
        "{due}"
    );
    let listed = ctl(
        Some(&base),
        Some(&ea1),
        &["delegations", "list", "--delegate", "acme/dave"],
    );
    assert!(
        listed.ok && listed.stdout.contains("permanent"),
        "{}",
        listed.stdout
    );
    // Revoked at once by its delegator.
    let revoked = ctl(
        Some(&base),
        Some(&mgr),
        &["delegations", "revoke", &id.to_string()],
    );
    assert!(revoked.ok, "{}", revoked.stderr);
    let (status, _) = api
        .call(&ea1, Method::GET, &format!("/delegations/{id}"), None)
        .await;
    assert_eq!(status, 404);
}

/// An admin request to `node` of `c` with `token`, expecting a status in `want`.
async fn on_node(
    c: &cluster_common::TestCluster,
    node: u64,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: u16,
) -> Value {
    let answer = cluster_common::admin_request(
        &cluster_common::client(),
        &c.url(node),
        token,
        method.clone(),
        path,
        body,
        Duration::from_secs(20),
    )
    .await;
    match answer {
        cluster_common::Answer::Status(code, v) if code == want => v,
        other => panic!("{method} {path} on node {node}: want {want}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_three_nodes_a_request_made_on_one_is_approved_on_the_others_and_executes_once() {
    let c = cluster_common::start(3, false).await;
    let ids = c.ids();
    c.wait_leader(ids[0], None, Duration::from_secs(20))
        .await
        .unwrap();
    let root = c.cluster.status.admin_token.clone();
    let (n1, n2, n3) = (ids[0], ids[1], ids[2]);
    let mut tokens = std::collections::BTreeMap::new();
    for (who, role) in [
        ("ea1", "enterprise_admin"),
        ("ea2", "enterprise_admin"),
        ("co1", "compliance_officer"),
        ("sec1", "security_admin"),
    ] {
        let body = json!({"id": who, "display_name": who});
        on_node(&c, n1, &root, Method::POST, "/principals", Some(body), 201).await;
        let body = json!({"subject": who, "role": role, "scope": {"level": "global"}});
        on_node(&c, n1, &root, Method::POST, "/roles", Some(body), 201).await;
        let body = json!({"display_name": who, "subject": who});
        let v = on_node(
            &c,
            n1,
            &root,
            Method::POST,
            "/admin-tokens",
            Some(body),
            201,
        )
        .await;
        tokens.insert(who, v["token"].as_str().expect("a secret").to_owned());
    }
    let tok = |who: &str| tokens[who].clone();

    on_node(
        &c,
        n2,
        &tok("ea1"),
        Method::PUT,
        "/sod-policy",
        Some(json!({"enabled": true})),
        200,
    )
    .await;
    // Requested on node 2 ...
    let v = on_node(
        &c,
        n2,
        &tok("ea1"),
        Method::POST,
        "/tenants",
        Some(json!({"id": "sod-beta", "display_name": "Beta", "justification": "pilot customer"})),
        202,
    )
    .await;
    let id = v["approval"]["id"].as_u64().expect("an id");
    // ... refused to its requester on node 3, approved on node 3 and node 1.
    on_node(
        &c,
        n3,
        &tok("ea1"),
        Method::POST,
        &format!("/approvals/{id}/approve"),
        None,
        403,
    )
    .await;
    let first = on_node(
        &c,
        n3,
        &tok("co1"),
        Method::POST,
        &format!("/approvals/{id}/approve"),
        None,
        200,
    )
    .await;
    assert_eq!(first["status"], "pending", "{first}");
    on_node(&c, n1, &root, Method::GET, "/tenants/sod-beta", None, 404).await;
    let done = on_node(
        &c,
        n1,
        &tok("ea2"),
        Method::POST,
        &format!("/approvals/{id}/approve"),
        None,
        200,
    )
    .await;
    assert_eq!(done["status"], "executed", "{done}");
    // Every node applied the same: the tenant exists, and the request reads alike.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for &node in &ids {
        loop {
            let answer = cluster_common::admin_request(
                &cluster_common::client(),
                &c.url(node),
                &root,
                Method::GET,
                &format!("/approvals/{id}?consistency=local"),
                None,
                Duration::from_secs(5),
            )
            .await;
            if let cluster_common::Answer::Status(200, v) = &answer
                && v["status"] == "executed"
            {
                let by: Vec<&str> = v["approvals"]
                    .as_array()
                    .expect("approvals")
                    .iter()
                    .filter_map(|a| a["by"].as_str())
                    .collect();
                assert_eq!(by, ["co1", "ea2"], "node {node}: {v}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} did not apply the approval: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        on_node(
            &c,
            node,
            &root,
            Method::GET,
            "/tenants/sod-beta?consistency=local",
            None,
            200,
        )
        .await;
        let verified = on_node(
            &c,
            node,
            &root,
            Method::GET,
            "/audit/verify?consistency=local",
            None,
            200,
        )
        .await;
        assert_eq!(verified["ok"], true, "node {node}: {verified}");
    }
}

/// What a `tools/call` answered: `Some(code)` of a tool error, `None` for a result, or
/// `Some("http-<status>")` when the request itself failed.
async fn call_code(s: &mut Session) -> Option<String> {
    match s
        .request(
            "tools/call",
            json!({"name": "notion-get-self", "arguments": {}}),
        )
        .await
    {
        Ok((200, body)) => {
            let msg = message_of(&body).unwrap_or_default();
            if msg["result"]["isError"] == json!(true) {
                Some(
                    msg["result"]["structuredContent"]["code"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_owned(),
                )
            } else {
                None
            }
        }
        Ok((status, _)) => Some(format!("http-{status}")),
        Err(e) => Some(format!("transport: {e}")),
    }
}

const DENIED: &str = "permission_denied";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_delegation_stops_tool_calls_on_every_node() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::time::Instant;

    let c = cluster_common::start(3, false).await;
    let ids = c.ids();
    let leader = c
        .wait_leader(ids[0], None, Duration::from_secs(20))
        .await
        .unwrap();
    let root = c.cluster.status.admin_token.clone();
    // helper: a principal of the demo tenant with no workspace and no role; lead: the
    // tenant's admin, who lends helper notion.read in the demo workspace.
    for p in ["helper", "lead"] {
        let body = json!({"id": p, "display_name": p});
        on_node(
            &c,
            leader,
            &root,
            Method::POST,
            "/tenants/demo/principals",
            Some(body),
            201,
        )
        .await;
    }
    let body = json!({"subject": "demo/lead", "role": "tenant_admin",
        "scope": {"level": "tenant", "tenant": "demo"}});
    on_node(&c, leader, &root, Method::POST, "/roles", Some(body), 201).await;
    let body = json!({"display_name": "lead", "subject": "demo/lead"});
    let lead = on_node(
        &c,
        leader,
        &root,
        Method::POST,
        "/admin-tokens",
        Some(body),
        201,
    )
    .await;
    let lead = lead["token"].as_str().expect("a secret").to_owned();
    // A JWT of the built-in issuer names its workspace without membership: only roles and
    // delegations decide what it may do there.
    let body = json!({"principal": "helper", "workspace": "demo", "ttl_secs": 600});
    let jwt = on_node(
        &c,
        leader,
        &root,
        Method::POST,
        "/tenants/demo/jwt",
        Some(body),
        201,
    )
    .await;
    let jwt = jwt["token"].as_str().expect("a JWT").to_owned();
    let mut sessions = Vec::new();
    for &id in &ids {
        let mut s = Session::open(
            &reqwest::Client::new(),
            &c.url(id),
            &jwt,
            "delegation-test",
            Some(CLUSTER_DEADLINES),
        )
        .await
        .unwrap();
        assert_eq!(
            call_code(&mut s).await.as_deref(),
            Some(DENIED),
            "node {id}"
        );
        sessions.push((id, s));
    }

    let delegate = |ttl_secs: u64| {
        json!({"delegate": "demo/helper", "permission": "notion.read",
            "scope": {"level": "workspace", "tenant": "demo", "workspace": "demo"},
            "ttl_secs": ttl_secs, "justification": "helps with the migration"})
    };
    let revoking_node = *ids.iter().find(|&&id| id != leader).unwrap();
    let d = on_node(
        &c,
        revoking_node,
        &lead,
        Method::POST,
        "/delegations",
        Some(delegate(3600)),
        201,
    )
    .await;
    let delegation = d["id"].as_u64().expect("an id");
    assert_eq!(d["in_force"], true, "{d}");
    // Allowed on every node once it applied there.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, s) in &mut sessions {
        while call_code(s).await.as_deref() == Some(DENIED) {
            assert!(
                Instant::now() < deadline,
                "node {id} never honoured the delegation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Agents call through the other nodes while the delegation is revoked on one.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for (id, mut s) in sessions.into_iter().filter(|(id, _)| *id != revoking_node) {
        let stop = stop.clone();
        hammers.push(tokio::spawn(async move {
            let mut seen: Vec<(Instant, Option<String>)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let code = call_code(&mut s).await;
                seen.push((sent, code));
            }
            (id, seen, s)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    on_node(
        &c,
        revoking_node,
        &lead,
        Method::DELETE,
        &format!("/delegations/{delegation}"),
        None,
        200,
    )
    .await;
    let acked = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut sessions = Vec::new();
    for h in hammers {
        let (id, seen, s) = h.await.unwrap();
        let allowed_before = seen
            .iter()
            .filter(|(t, code)| *t < started && code.as_deref() != Some(DENIED))
            .count();
        let after: Vec<&Option<String>> = seen
            .iter()
            .filter(|(t, _)| *t >= acked)
            .map(|(_, code)| code)
            .collect();
        println!(
            "node {id}: {} calls, {allowed_before} not denied before the revocation, {} sent after its acknowledgement",
            seen.len(),
            after.len()
        );
        assert!(allowed_before > 0, "node {id}: nothing was allowed before");
        assert!(
            !after.is_empty(),
            "node {id}: nothing was sent after the acknowledgement"
        );
        assert!(
            after.iter().all(|code| code.as_deref() == Some(DENIED)),
            "node {id} allowed a call sent after the acknowledged revocation: {after:?}"
        );
        sessions.push((id, s));
    }

    // A short delegation: in force, then refused everywhere once it expired.
    let d = on_node(
        &c,
        leader,
        &lead,
        Method::POST,
        "/delegations",
        Some(delegate(3)),
        201,
    )
    .await;
    let expires_at_ms = d["expires_at_ms"].as_u64().expect("an expiry");
    let created_at_ms = d["created_at_ms"].as_u64().expect("a time");
    let made = Instant::now();
    let deadline = made + Duration::from_secs(15);
    let (id, s) = &mut sessions[0];
    while call_code(s).await.as_deref() == Some(DENIED) {
        assert!(
            Instant::now() < deadline,
            "node {id} never honoured the delegation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(expires_at_ms - created_at_ms + 500)).await;
    for (id, s) in &mut sessions {
        assert_eq!(
            call_code(s).await.as_deref(),
            Some(DENIED),
            "node {id} after the expiry"
        );
    }
}
