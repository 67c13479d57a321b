//! The admin API and `quire ctl` against the real `quire` binary (`serve --sandbox` on
//! loopback): provisioning through `ctl --json`, the issued token working at /mcp until it is
//! revoked, bad input and bad credentials refused with clear errors and no change, and the
//! Notion token never showing up in a response or in the node's log.

mod cluster_common;

use std::path::Path;
use std::process::Command;

use cluster_common::ctl::{Ctl, CtlOut};
use cluster_common::mcp::send_initialize;
use cluster_common::process::{self, Node, start_sandbox};
use serde_json::{Value, json};

/// A Notion token no response or log line may ever contain.
const NOTION_SECRET: &str = "ntn_QUIRETESTSECRET_7c1e5a";
const NOTION_SECRET_ROTATED: &str = "ntn_QUIRETESTROTATED_93b2d0";

/// A sandbox node logging at info: the admin API's own log lines are written, so the leak
/// check below means something.
fn start_node(dir: &Path) -> Node {
    start_sandbox(dir, "info")
}

/// The node's base URL, admin token and MCP token, once it wrote client.json (with a base URL
/// other than `previous`, after a restart) and answers /readyz.
async fn wait_ready(node: &mut Node, previous: Option<&str>) -> (String, String, String) {
    let ready = process::wait_ready(node, &reqwest::Client::new(), previous).await;
    (ready.base, ready.admin_token, ready.token)
}

/// Everything any client saw, to check for leaked secrets at the end.
#[derive(Default)]
struct Seen(String);

fn ctl(seen: &mut Seen, base: &str, token: &str, env: &[(&str, &str)], args: &[&str]) -> CtlOut {
    let mut ctl = Ctl::new(Some(base), Some(token), 20);
    ctl.command.env_remove("QUIRE_NOTION_TOKEN");
    for (k, v) in env {
        ctl.command.env(k, v);
    }
    let result = ctl.run(args);
    seen.0.push_str(&result.stdout);
    seen.0.push_str(&result.stderr);
    result
}

async fn call(
    seen: &mut Seen,
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("admin API request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("admin API body");
    seen.0.push_str(&text);
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, headers)
}

async fn initialize(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    send_initialize(http, base, token, "admin-test", None)
        .await
        .expect("POST /mcp")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_provisions_a_tenant_whose_token_works_at_mcp_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    let (base, admin, _) = wait_ready(&mut node, None).await;
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    let token_file = dir.path().join("notion-token");
    std::fs::write(&token_file, format!("{NOTION_SECRET}\n")).unwrap();
    let token_file = token_file.to_str().unwrap().to_owned();

    let status = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "cluster", "status"],
    )
    .json();
    assert!(status["node_id"].is_u64(), "{status}");
    assert_eq!(status["leader"], status["node_id"], "a node of one leads");
    let members = status["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m["role"] == "leader" && m["applied_index"].is_u64()),
        "{status}"
    );

    let t = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tenants", "create", "acme", "--name", "Acme Corp"],
    )
    .json();
    assert_eq!(t, json!({"id": "acme", "display_name": "Acme Corp"}));

    let i = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "integrations",
            "add",
            "--tenant",
            "acme",
            "main",
            "--notion-token-file",
            &token_file,
            "--requests-per-second",
            "2",
        ],
    )
    .json();
    assert_eq!(i["id"], "main");
    assert_eq!(i["budget"]["requests_per_second"], 2);
    assert!(i.get("notion_token").is_none(), "{i}");

    let w = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "workspaces",
            "create",
            "--tenant",
            "acme",
            "docs",
            "--integration",
            "main",
        ],
    )
    .json();
    assert_eq!(w["integration"], "main");
    ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "principals", "create", "--tenant", "acme", "bot"],
    )
    .json();
    let g = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "principals",
            "grant",
            "--tenant",
            "acme",
            "bot",
            "--workspace",
            "docs",
        ],
    )
    .json();
    assert_eq!(g["changed"], true);

    let issued = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "tokens",
            "issue",
            "--tenant",
            "acme",
            "--principal",
            "bot",
            "--workspace",
            "docs",
        ],
    )
    .json();
    let secret = issued["token"].as_str().unwrap().to_owned();
    let token_id = issued["token_id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("qk_") && secret.len() == 67, "{secret}");
    assert_eq!(
        issued["scopes"],
        json!([
            "mcp_server_access",
            "notion_workspace_read",
            "notion_workspace_write"
        ])
    );

    assert_eq!(initialize(&http, &base, &secret).await, 200);

    // The tenant's view: counts, lists without secrets, and the human-readable table.
    let got = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tenants", "get", "acme"],
    )
    .json();
    assert_eq!(
        (
            &got["workspaces"],
            &got["integrations"],
            &got["principals"],
            &got["tokens"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    let tokens = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tokens", "list", "--tenant", "acme"],
    );
    assert!(!tokens.stdout.contains(&secret), "the secret is shown once");
    assert!(!tokens.stdout.contains("hash"), "{}", tokens.stdout);
    assert_eq!(tokens.json()["tokens"][0]["token_id"], token_id.as_str());
    let table = ctl(&mut seen, &base, &admin, &[], &["tenants", "list"]);
    assert!(table.ok, "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("WORKSPACES"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("acme") && l.contains("Acme Corp")),
        "{}",
        table.stdout
    );
    let local = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "integrations",
            "list",
            "--tenant",
            "acme",
            "--local",
        ],
    )
    .json();
    assert_eq!(local["integrations"][0]["workspaces"], json!(["docs"]));

    // Paging: one tenant per page, in id order, with a cursor.
    let first = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tenants", "list", "--limit", "1"],
    )
    .json();
    assert_eq!(first["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(first["tenants"][0]["id"], "acme");
    assert_eq!(first["next_after"], "acme");
    let second = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json", "tenants", "list", "--limit", "1", "--after", "acme",
        ],
    )
    .json();
    assert_eq!(second["tenants"][0]["id"], "demo");
    assert_eq!(second["next_after"], Value::Null);

    // Rotate the Notion token (from the environment this time).
    let r = ctl(
        &mut seen,
        &base,
        &admin,
        &[("QUIRE_NOTION_TOKEN", NOTION_SECRET_ROTATED)],
        &[
            "--json",
            "integrations",
            "rotate",
            "--tenant",
            "acme",
            "main",
        ],
    )
    .json();
    assert_eq!(r["rotated"], true);

    // Revoke: the token stops working at /mcp.
    let revoked = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tokens", "revoke", "--tenant", "acme", &token_id],
    )
    .json();
    assert_eq!(revoked["changed"], true);
    assert_eq!(initialize(&http, &base, &secret).await, 401);

    // Admin tokens: a new one works, is listed without its secret, and stops working when revoked.
    let a = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "admin-tokens",
            "issue",
            "--name",
            "second operator",
        ],
    )
    .json();
    let admin2 = a["token"].as_str().unwrap().to_owned();
    let admin2_id = a["token_id"].as_str().unwrap().to_owned();
    assert!(admin2.starts_with("qa_"), "{admin2}");
    let list = ctl(
        &mut seen,
        &base,
        &admin2,
        &[],
        &["--json", "admin-tokens", "list"],
    );
    assert!(!list.stdout.contains(&admin2) && !list.stdout.contains(&admin));
    assert_eq!(list.json()["admin_tokens"].as_array().unwrap().len(), 2);
    ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "admin-tokens", "revoke", &admin2_id],
    )
    .json();
    let refused = ctl(&mut seen, &base, &admin2, &[], &["tenants", "list"]);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("not a valid admin token"),
        "{}",
        refused.stderr
    );

    // Remove the workspace's integration: refused while the workspace uses it.
    let busy = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["integrations", "remove", "--tenant", "acme", "main"],
    );
    assert!(!busy.ok);
    assert!(
        busy.stderr.contains("used by workspace") && busy.stderr.contains("409"),
        "{}",
        busy.stderr
    );

    // An unused integration is removed; granting twice changes nothing; an empty tenant goes.
    ctl(
        &mut seen,
        &base,
        &admin,
        &[("QUIRE_NOTION_TOKEN", NOTION_SECRET)],
        &["--json", "integrations", "add", "--tenant", "acme", "spare"],
    )
    .json();
    let removed = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "integrations",
            "remove",
            "--tenant",
            "acme",
            "spare",
        ],
    )
    .json();
    assert_eq!(removed["removed"], true);
    let again = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "--json",
            "principals",
            "grant",
            "--tenant",
            "acme",
            "bot",
            "--workspace",
            "docs",
        ],
    )
    .json();
    assert_eq!(again["changed"], false);
    ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tenants", "create", "empty"],
    )
    .json();
    ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["--json", "tenants", "delete", "empty"],
    )
    .json();
    let gone = ctl(&mut seen, &base, &admin, &[], &["tenants", "get", "empty"]);
    assert!(!gone.ok && gone.stderr.contains("404"), "{}", gone.stderr);

    // The Notion tokens never came back, and never reached the log.
    for secret in [NOTION_SECRET, NOTION_SECRET_ROTATED] {
        assert!(
            !seen.0.contains(secret),
            "a response carried the Notion token"
        );
        assert!(
            !node.stderr().contains(secret),
            "the node logged the Notion token"
        );
    }
    assert!(
        node.stderr().contains("admin change applied"),
        "the admin API logs its changes (else the leak check proves nothing)"
    );
    // Not even an error echoes it: a Notion token where a number belongs.
    let (status, body, _) = call(
        &mut seen,
        &http,
        reqwest::Method::POST,
        &format!("{base}/admin/v1/tenants/acme/integrations"),
        Some(&admin),
        Some(&format!(
            r#"{{"id": "other", "display_name": "Other", "notion_token": "{NOTION_SECRET}", "burst": "{NOTION_SECRET}"}}"#
        )),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "burst");
    assert!(!seen.0.contains(NOTION_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_bad_credentials_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    let (base, admin, mcp_token) = wait_ready(&mut node, None).await;
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    let api = |path: &str| format!("{base}/admin/v1{path}");
    use reqwest::Method;

    // Credentials: none, garbage, an MCP token: 401 with the admin challenge, no data.
    for token in [None, Some("qa_nonsense"), Some(mcp_token.as_str())] {
        let (status, body, headers) =
            call(&mut seen, &http, Method::GET, &api("/tenants"), token, None).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="quire-admin""#,
            "{token:?}"
        );
        assert!(body.get("tenants").is_none());
        assert!(body["message"].as_str().unwrap().contains("admin token"));
    }
    // Unknown paths are behind authentication too.
    let (status, _, _) = call(&mut seen, &http, Method::GET, &api("/nope"), None, None).await;
    assert_eq!(status, 401);
    let (status, body, _) = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/nope"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let tenants_before = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants"),
        Some(&admin),
        None,
    )
    .await
    .1;
    assert_eq!(
        tenants_before["tenants"][0]["id"], "demo",
        "{tenants_before}"
    );

    let bad_tenants: [(&str, &str, &str); 6] = [
        (
            r#"{"id": "Bad Id", "display_name": "x"}"#,
            "id",
            "tenant id",
        ),
        (
            r#"{"id": "ok", "display_name": "x", "colour": "red"}"#,
            "colour",
            "unknown field",
        ),
        (r#"{"id": "ok"}"#, "display_name", "missing field"),
        (
            r#"{"id": "ok", "display_name": "  "}"#,
            "display_name",
            "blank",
        ),
        (r#"{"id": 5, "display_name": "x"}"#, "id", "string"),
        (r#"{"id": "ok", "display_name": "x""#, "", "not valid JSON"),
    ];
    for (body, field, words) in bad_tenants {
        let (status, answer, _) = call(
            &mut seen,
            &http,
            Method::POST,
            &api("/tenants"),
            Some(&admin),
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_input", "{answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{answer}");
        }
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
    // Too large a body: 413, as JSON.
    let huge = format!(
        r#"{{"id": "big", "display_name": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::POST,
        &api("/tenants"),
        Some(&admin),
        Some(&huge),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");
    // Through ctl: a non-zero exit with the server's message.
    let out = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &["tenants", "create", "Not/Valid"],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("invalid tenant id"), "{}", out.stderr);
    // A duplicate: 409.
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::POST,
        &api("/tenants"),
        Some(&admin),
        Some(r#"{"id": "demo", "display_name": "Again"}"#),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("already_exists"))
    );
    let tenants_after = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants"),
        Some(&admin),
        None,
    )
    .await
    .1;
    assert_eq!(
        tenants_before, tenants_after,
        "bad input changed the tenants"
    );

    // A workspace whose integration does not exist: 404 naming it, no workspace made.
    let ws_before = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants/demo/workspaces"),
        Some(&admin),
        None,
    )
    .await
    .1;
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::POST,
        &api("/tenants/demo/workspaces"),
        Some(&admin),
        Some(r#"{"id": "w2", "display_name": "W2", "integration": "ghost"}"#),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("ghost"),
        "{answer}"
    );
    let ws_after = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants/demo/workspaces?consistency=local"),
        Some(&admin),
        None,
    )
    .await
    .1;
    assert_eq!(ws_before, ws_after);

    // Tokens: an unknown scope, a bad ttl, an ungranted principal: refused, nothing issued.
    let tokens_before = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants/demo/tokens"),
        Some(&admin),
        None,
    )
    .await
    .1;
    for (body, status_expected, words) in [
        (
            r#"{"principal": "demo-user", "workspace": "demo", "scopes": ["root"]}"#,
            400,
            "unknown scope",
        ),
        (
            r#"{"principal": "demo-user", "workspace": "demo", "ttl_secs": 0}"#,
            400,
            "ttl_secs",
        ),
        (
            r#"{"principal": "nobody", "workspace": "demo"}"#,
            404,
            "nobody",
        ),
    ] {
        let (status, answer, _) = call(
            &mut seen,
            &http,
            Method::POST,
            &api("/tenants/demo/tokens"),
            Some(&admin),
            Some(body),
        )
        .await;
        assert_eq!(status, status_expected, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(words),
            "{body}: {answer}"
        );
    }
    let out = ctl(
        &mut seen,
        &base,
        &admin,
        &[],
        &[
            "tokens",
            "issue",
            "--tenant",
            "demo",
            "--principal",
            "demo-user",
            "--workspace",
            "demo",
            "--scope",
            "admin",
        ],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("unknown scope"), "{}", out.stderr);
    let tokens_after = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants/demo/tokens"),
        Some(&admin),
        None,
    )
    .await
    .1;
    assert_eq!(tokens_before, tokens_after);

    // The last valid admin token cannot be revoked (no lock-out).
    let list = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/admin-tokens"),
        Some(&admin),
        None,
    )
    .await
    .1;
    let only = list["admin_tokens"][0]["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::DELETE,
        &api(&format!("/admin-tokens/{only}")),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let (status, _, _) = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "the admin token still works");

    // A bad consistency value, and a missing tenant.
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants?consistency=eventual"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("consistency"))
    );
    let (status, answer, _) = call(
        &mut seen,
        &http,
        Method::GET,
        &api("/tenants/ghost/principals"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")));

    // A restart keeps the sandbox's admin token (it still authenticates).
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status();
    let status = node.child.wait().expect("wait for quire");
    assert!(status.success(), "quire stopped with {status} on SIGTERM");
    let mut node = start_node(dir.path());
    let (base2, admin2, _) = wait_ready(&mut node, Some(&base)).await;
    assert_eq!(admin2, admin, "the admin token of the first start is kept");
    let (status, _, _) = call(
        &mut seen,
        &http,
        Method::GET,
        &format!("{base2}/admin/v1/admin-tokens"),
        Some(&admin2),
        None,
    )
    .await;
    assert_eq!(status, 200);
}
