//! Usage reports (`GET /admin/v1/usage`, `quire ctl usage`) against the real `quire` binary
//! (`serve --sandbox`): two principals call tools, the report counts each one's calls,
//! errors and Notion requests, and a workspace manager sees its own workspace and is refused
//! another.

mod cluster_common;

use cluster_common::admin::Api;
use cluster_common::ctl::ctl;
use cluster_common::mcp::Session;
use cluster_common::process::{start_sandbox, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

/// Opens an MCP session and calls each of `calls` (tool, arguments) in it.
async fn call_tools(http: &reqwest::Client, base: &str, token: &str, calls: &[(&str, Value)]) {
    let session = Session::initialize(http, base, token, "usage-test", None)
        .await
        .expect("initialize");
    let status = session.initialized().await.expect("initialized");
    assert!((200..300).contains(&status));
    for (i, (tool, arguments)) in calls.iter().enumerate() {
        let (status, body) = session
            .call_tool(i as u64 + 1, tool, arguments)
            .await
            .expect("tools/call");
        assert_eq!(status, 200, "tools/call {tool}");
        assert!(body.contains("\"result\""), "{body}");
    }
}

fn row<'a>(report: &'a Value, group: &str) -> Option<&'a Value> {
    report["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["group"] == group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_each_principals_calls_and_stays_in_the_managers_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_sandbox(dir.path(), "warn");
    let http = reqwest::Client::new();
    let ready = wait_ready(&mut node, &http, None).await;
    let (base, root, demo_token) = (ready.base, ready.admin_token, ready.token);
    let api = Api {
        http: http.clone(),
        base: base.clone(),
    };

    // bob works in the demo workspace too; mgr manages another workspace, "other".
    api.ok(
        &root,
        Method::POST,
        "/tenants/demo/workspaces",
        Some(json!({"id": "other", "display_name": "other", "integration": "sandbox-alpha"})),
    )
    .await;
    for p in ["bob", "mgr"] {
        api.ok(
            &root,
            Method::POST,
            "/tenants/demo/principals",
            Some(json!({"id": p, "display_name": p})),
        )
        .await;
    }
    api.ok(
        &root,
        Method::POST,
        "/tenants/demo/principals/bob/workspaces",
        Some(json!({"workspace": "demo"})),
    )
    .await;
    let bob = api
        .ok(
            &root,
            Method::POST,
            "/tenants/demo/tokens",
            Some(json!({"principal": "bob", "workspace": "demo"})),
        )
        .await;
    let bob_token = bob["token"].as_str().expect("bob's token").to_owned();
    api.ok(
        &root,
        Method::POST,
        "/roles",
        Some(json!({"subject": "demo/mgr", "role": "workspace_manager",
                    "scope": {"level": "workspace", "tenant": "demo", "workspace": "other"}})),
    )
    .await;
    let mgr = api
        .ok(
            &root,
            Method::POST,
            "/admin-tokens",
            Some(json!({"display_name": "mgr", "subject": "demo/mgr"})),
        )
        .await;
    let mgr_token = mgr["token"].as_str().expect("mgr's admin token").to_owned();

    // demo-user: three calls, one of them an error (no such page); bob: two calls.
    call_tools(
        &http,
        &base,
        &demo_token,
        &[
            ("notion-get-self", json!({})),
            ("notion-get-self", json!({})),
            (
                "notion-fetch",
                json!({"id": "00000000000000000000000000000000"}),
            ),
        ],
    )
    .await;
    call_tools(
        &http,
        &base,
        &bob_token,
        &[
            ("notion-get-self", json!({})),
            ("notion-get-self", json!({})),
        ],
    )
    .await;

    // Root (every permission): one row per principal.
    let report = api
        .ok(
            &root,
            Method::GET,
            "/usage?tenant=demo&group_by=principal",
            None,
        )
        .await;
    let user = row(&report, "demo/demo-user").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(user["calls"], 3, "{report}");
    assert_eq!(user["errors"], 1, "{report}");
    assert!(
        user["p50_ms"].is_u64() && user["p99_ms"].is_u64(),
        "{report}"
    );
    let b = row(&report, "demo/bob").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(b["calls"], 2, "{report}");
    assert_eq!(b["errors"], 0, "{report}");
    // Each of bob's calls sent one request to Notion; demo-user's failed fetch sent at least one.
    assert_eq!(b["notion_requests"], 2, "{report}");
    assert!(user["notion_requests"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["capped"], false);

    // Filtered to one principal, by workspace.
    let report = api
        .ok(
            &root,
            Method::GET,
            "/usage?tenant=demo&principal=demo%2Fbob&group_by=workspace",
            None,
        )
        .await;
    assert_eq!(report["rows"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(row(&report, "demo/demo").unwrap()["calls"], 2, "{report}");

    // The workspace manager of "other": the demo workspace is refused, with the permission
    // named; its own is allowed (and empty); without a filter it sees none of demo's calls.
    let (status, v) = api
        .call(
            &mgr_token,
            Method::GET,
            "/usage?tenant=demo&workspace=demo",
            None,
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace.analytics.read"),
        "{v}"
    );
    let own = api
        .ok(
            &mgr_token,
            Method::GET,
            "/usage?tenant=demo&workspace=other&group_by=workspace",
            None,
        )
        .await;
    assert_eq!(own["rows"], json!([]), "{own}");
    let all = api
        .ok(&mgr_token, Method::GET, "/usage?group_by=principal", None)
        .await;
    assert_eq!(all["rows"], json!([]), "{all}");
    // A tool-calling principal's admin rights are nil: bob has no admin token at all.

    // quire ctl usage: a table, and --json.
    let out = ctl(
        Some(&base),
        Some(&root),
        &["usage", "--tenant", "demo", "--group-by", "principal"],
    );
    let text = &out.stdout;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        text.contains("demo/demo-user") && text.contains("demo/bob"),
        "{text}"
    );
    let out = ctl(
        Some(&base),
        Some(&root),
        &[
            "--json",
            "usage",
            "--tenant",
            "demo",
            "--group-by",
            "tenant",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(row(&report, "demo").unwrap()["calls"], 5, "{report}");
}
