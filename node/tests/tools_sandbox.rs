//! Every MCP tool against the Notion sandbox over real HTTP, through a small reqwest
//! gateway (Bearer token, `Notion-Version: 2025-09-03`), with valid and bad input.

use std::time::Duration;

use quire_actors::call::CallError;
use quire_actors::notion::{HttpMethod, NotionError, NotionRequest};
use quire_node::tools::{NotionGateway, ToolError, ToolOutput, call_tool, catalog};
use quire_sandbox::{RateLimitConfig, Sandbox, SandboxConfig};
use serde_json::{Value, json};

struct HttpGateway {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl HttpGateway {
    async fn send(&self, req: NotionRequest) -> Result<Value, CallError> {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.base, req.path))
            .map_err(|e| NotionError::Transport(e.to_string()))?;
        if !req.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &req.query {
                pairs.append_pair(k, v);
            }
        }
        let method = match req.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .client
            .request(method, url)
            .bearer_auth(&self.token)
            .header("Notion-Version", "2025-09-03");
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| NotionError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = resp
            .json()
            .await
            .map_err(|e| NotionError::Decode(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Err(CallError::Notion(NotionError::Api {
            status,
            code: text("code"),
            message: text("message"),
            request_id: body
                .get("request_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            retry_after,
        }))
    }
}

impl NotionGateway for HttpGateway {
    fn call(
        &self,
        req: NotionRequest,
    ) -> impl std::future::Future<Output = Result<Value, CallError>> + Send {
        self.send(req)
    }
}

struct Env {
    sandbox: Sandbox,
    alpha: HttpGateway,
    beta: HttpGateway,
    bad: HttpGateway,
}

async fn start() -> Env {
    start_with(SandboxConfig {
        rate_limit: None,
        ..Default::default()
    })
    .await
}

async fn start_with(config: SandboxConfig) -> Env {
    let sandbox = Sandbox::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the sandbox");
    let base = format!("http://{}", listener.local_addr().expect("sandbox address"));
    tokio::spawn(quire_sandbox::serve(sandbox.clone(), listener));
    let token = |name: &str| {
        sandbox
            .integrations()
            .into_iter()
            .find(|i| i.name.contains(name))
            .unwrap_or_else(|| panic!("no integration {name}"))
            .token
    };
    let gw = |token: String| HttpGateway {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client"),
        base: base.clone(),
        token,
    };
    Env {
        alpha: gw(token("alpha")),
        beta: gw(token("beta")),
        bad: gw("secret_not_a_token".into()),
        sandbox,
    }
}

async fn ok(g: &HttpGateway, name: &str, args: Value) -> ToolOutput {
    match call_tool(g, name, args.clone()).await {
        Ok(out) => {
            assert!(!out.text.is_empty(), "{name}: empty text");
            assert!(
                out.structured.is_object(),
                "{name}: structured is not an object"
            );
            out
        }
        Err(e) => panic!("{name} {args}: {e}"),
    }
}

async fn err(g: &HttpGateway, name: &str, args: Value) -> ToolError {
    match call_tool(g, name, args.clone()).await {
        Ok(out) => panic!("{name} {args} should fail, got {}", out.text),
        Err(e) => e,
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

#[tokio::test]
async fn every_tool_against_the_sandbox() {
    let env = start().await;
    let demo = env.sandbox.demo();
    let g = &env.alpha;
    let mut called = std::collections::BTreeSet::new();

    // Users.
    let me = ok(g, "notion-get-self", json!({})).await;
    assert_eq!(me.structured["type"], "bot");
    let users = ok(g, "notion-get-users", json!({"page_size": 50})).await;
    assert!(!users.structured["users"].as_array().unwrap().is_empty());
    let bot_id = s(&me.structured["id"]);
    let user = ok(g, "notion-get-user", json!({"user_id": bot_id})).await;
    assert_eq!(user.structured["id"], me.structured["id"]);
    called.extend(["notion-get-self", "notion-get-users", "notion-get-user"]);

    // Search, both kinds.
    let found = ok(
        g,
        "notion-search",
        json!({"query": "Quire Demo", "filter": "page"}),
    )
    .await;
    let ids: Vec<String> = found.structured["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["id"]))
        .collect();
    assert!(ids.contains(&demo.root_page_id), "{}", found.text);
    let sources = ok(
        g,
        "notion-search",
        json!({"filter": "data_source", "page_size": 100}),
    )
    .await;
    assert!(
        sources.text.contains(&demo.data_source_id),
        "{}",
        sources.text
    );
    called.insert("notion-search");

    // Fetch a page by URL, a database and a data source by id.
    let url = format!(
        "https://www.notion.so/acme/Quire-Demo-{}",
        demo.root_page_id.replace('-', "")
    );
    let root = ok(g, "notion-fetch", json!({"id": url})).await;
    assert!(root.text.starts_with("# Quire Demo"), "{}", root.text);
    assert_eq!(root.structured["object"], "page");
    let db = ok(g, "notion-fetch", json!({"id": demo.database_id})).await;
    assert_eq!(db.structured["object"], "database");
    assert_eq!(
        db.structured["data_sources"][0]["id"],
        demo.data_source_id.as_str()
    );
    let ds = ok(g, "notion-fetch", json!({"id": demo.data_source_id})).await;
    assert_eq!(ds.structured["object"], "data_source");
    assert!(ds.text.contains("| title |"), "{}", ds.text);
    called.insert("notion-fetch");

    // Query with paging.
    let q1 = ok(
        g,
        "notion-query-data-source",
        json!({"data_source_id": demo.data_source_id, "page_size": 5}),
    )
    .await;
    assert_eq!(q1.structured["rows"].as_array().unwrap().len(), 5);
    assert_eq!(q1.structured["has_more"], true);
    let q2 = ok(
        g,
        "notion-query-data-source",
        json!({"data_source_id": demo.data_source_id, "page_size": 5,
               "start_cursor": q1.structured["next_cursor"]}),
    )
    .await;
    assert_ne!(
        q1.structured["rows"][0]["id"],
        q2.structured["rows"][0]["id"]
    );
    called.insert("notion-query-data-source");

    // Create a page with Markdown content, and read it back.
    let content = "## Agenda\n\nShip **the** *tools* with `code` and [a link](https://example.com).\n\n\
                   - one\n  - one.a\n- two\n\n1. first\n2. second\n\n- [x] done\n\n> quoted\n\n\
                   ```rust\nfn main() {}\n```\n\n---";
    let created = ok(
        g,
        "notion-create-pages",
        json!({"parent": {"page_id": demo.root_page_id},
               "pages": [{"title": "Tool test", "content": content}, {"title": "Second"}]}),
    )
    .await;
    let new_pages = created.structured["pages"].as_array().unwrap();
    assert_eq!(new_pages.len(), 2);
    let page_id = s(&new_pages[0]["id"]);
    let second_id = s(&new_pages[1]["id"]);
    let fetched = ok(g, "notion-fetch", json!({"id": page_id})).await;
    assert!(fetched.text.starts_with("# Tool test"), "{}", fetched.text);
    assert_eq!(fetched.structured["markdown"], content, "{}", fetched.text);
    called.insert("notion-create-pages");

    // A row in the data source, with its title property found from the schema.
    let row = ok(
        g,
        "notion-create-pages",
        json!({"parent": {"data_source_id": demo.data_source_id}, "pages": [{"title": "Row from a tool"}]}),
    )
    .await;
    assert_eq!(row.structured["pages"][0]["title"], "Row from a tool");

    // Append more than one request's worth of blocks, after the first block.
    let first_block = ok(
        g,
        "notion-get-block-children",
        json!({"block_id": page_id, "page_size": 1}),
    )
    .await;
    let first_block_id = s(&first_block.structured["blocks"][0]["id"]);
    let md: String = (0..150).map(|i| format!("para {i}\n\n")).collect();
    let appended = ok(
        g,
        "notion-append-blocks",
        json!({"block_id": page_id, "markdown": md, "after": first_block_id}),
    )
    .await;
    assert_eq!(appended.structured["blocks"], 150);
    let kids = ok(
        g,
        "notion-get-block-children",
        json!({"block_id": page_id, "page_size": 3}),
    )
    .await;
    let texts: Vec<String> = kids.structured["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| s(&b["markdown"]))
        .collect();
    assert_eq!(texts, ["## Agenda", "para 0", "para 1"]);
    assert_eq!(kids.structured["has_more"], true);
    called.extend(["notion-append-blocks", "notion-get-block-children"]);

    // Update, move, trash and restore.
    let upd = ok(
        g,
        "notion-update-page",
        json!({"page_id": page_id, "title": "Renamed"}),
    )
    .await;
    assert_eq!(upd.structured["title"], "Renamed");
    ok(
        g,
        "notion-move-pages",
        json!({"page_ids": [second_id], "new_parent": {"page_id": page_id}}),
    )
    .await;
    let moved = ok(g, "notion-fetch", json!({"id": page_id})).await;
    assert!(moved.text.contains("[Second]"), "{}", moved.text);
    let trashed = ok(
        g,
        "notion-update-page",
        json!({"page_id": second_id, "in_trash": true}),
    )
    .await;
    assert_eq!(trashed.structured["in_trash"], true);
    called.extend(["notion-update-page", "notion-move-pages"]);

    // Databases and data sources.
    let newdb = ok(
        g,
        "notion-create-database",
        json!({"parent_page_id": page_id, "title": "Bugs",
               "properties": {"Title": {"title": {}}, "Fixed": {"checkbox": {}}}}),
    )
    .await;
    let newdb_id = s(&newdb.structured["id"]);
    let newds_id = s(&newdb.structured["data_sources"][0]["id"]);
    ok(
        g,
        "notion-update-database",
        json!({"database_id": newdb_id, "title": "Bugs (renamed)", "description": "Known **bugs**"}),
    )
    .await;
    let schema = ok(
        g,
        "notion-update-database",
        json!({"data_source_id": newds_id, "properties": {"Severity": {"select": {"options": [{"name": "high"}]}}}}),
    )
    .await;
    assert!(
        schema.text.contains("| Severity | select | high |"),
        "{}",
        schema.text
    );
    let db_again = ok(g, "notion-fetch", json!({"id": newdb_id})).await;
    assert!(
        db_again.text.starts_with("# Bugs (renamed)"),
        "{}",
        db_again.text
    );
    called.extend(["notion-create-database", "notion-update-database"]);

    // Comments.
    let c = ok(
        g,
        "notion-create-comment",
        json!({"page_id": page_id, "text": "Looks **good**"}),
    )
    .await;
    let discussion = s(&c.structured["discussion_id"]);
    ok(
        g,
        "notion-create-comment",
        json!({"discussion_id": discussion, "text": "Agreed"}),
    )
    .await;
    let comments = ok(g, "notion-get-comments", json!({"block_id": page_id})).await;
    let texts: Vec<String> = comments.structured["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| s(&c["text"]))
        .collect();
    assert_eq!(texts, ["Looks **good**", "Agreed"]);
    called.extend(["notion-create-comment", "notion-get-comments"]);

    let all: std::collections::BTreeSet<&str> = catalog().iter().map(|t| t.name).collect();
    assert_eq!(called, all, "every tool was called");
}

#[tokio::test]
async fn bad_input_and_notions_errors_reach_the_agent_clearly() {
    let env = start().await;
    let demo = env.sandbox.demo();

    // Ours: rejected before Notion is asked.
    let e = err(&env.alpha, "notion-search", json!({"page_size": 500})).await;
    assert_eq!(e.code, "invalid_input");
    let e = err(
        &env.alpha,
        "notion-fetch",
        json!({"id": "https://example.com/x"}),
    )
    .await;
    assert_eq!(e.code, "invalid_input");

    // Notion's: an id nobody has, a page not shared with beta, a bad token.
    let e = err(
        &env.alpha,
        "notion-fetch",
        json!({"id": "00000000-0000-4000-8000-000000000000"}),
    )
    .await;
    assert_eq!(e.code, "object_not_found", "{e}");
    assert!(e.message.contains("share"), "{e}");
    let e = err(
        &env.beta,
        "notion-fetch",
        json!({"id": demo.alpha_only_page_id}),
    )
    .await;
    assert_eq!(e.code, "object_not_found", "{e}");
    let e = err(&env.bad, "notion-get-self", json!({})).await;
    assert_eq!(e.code, "unauthorized", "{e}");

    // Notion rejects a property that does not exist, and says which.
    let e = err(
        &env.alpha,
        "notion-create-pages",
        json!({"parent": {"data_source_id": demo.data_source_id},
               "pages": [{"title": "x", "properties": {"No such property": {"checkbox": true}}}]}),
    )
    .await;
    assert_eq!(e.code, "validation_error", "{e}");
    assert!(e.message.contains("No such property"), "{e}");
    assert_eq!(e.to_json()["code"], "validation_error");
}

#[tokio::test]
async fn notions_rate_limits_and_outages_become_retryable_errors() {
    let env = start_with(SandboxConfig {
        rate_limit: Some(RateLimitConfig {
            requests_per_second: 0.1,
            capacity: 1,
        }),
        ..Default::default()
    })
    .await;
    ok(&env.alpha, "notion-get-self", json!({})).await;
    let e = err(&env.alpha, "notion-get-self", json!({})).await;
    assert_eq!(e.code, "rate_limited", "{e}");
    assert!(e.retry_after_seconds.is_some_and(|s| s >= 1), "{e:?}");
    assert!(e.to_json()["retry_after_seconds"].is_u64());

    let env = start_with(SandboxConfig {
        rate_limit: None,
        error_rate: 1.0,
        error_statuses: vec![503],
        ..Default::default()
    })
    .await;
    let e = err(&env.alpha, "notion-search", json!({})).await;
    assert_eq!(e.code, "notion_unavailable", "{e}");
    assert!(e.message.contains("safe to retry reads"), "{e}");
}
