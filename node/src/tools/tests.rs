use super::*;
use quire_actors::notion::{HttpMethod, NotionError};
use serde_json::json;
use std::sync::Mutex;

type Answer = dyn Fn(&NotionRequest) -> Result<Value, CallError> + Send + Sync;

/// A scripted gateway: answers from a function of the request and records every request.
struct Mock {
    log: Mutex<Vec<NotionRequest>>,
    answer: Box<Answer>,
}

impl Mock {
    fn new(
        answer: impl Fn(&NotionRequest) -> Result<Value, CallError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            log: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    fn requests(&self) -> Vec<NotionRequest> {
        self.log.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

impl NotionGateway for Mock {
    fn call(
        &self,
        req: NotionRequest,
    ) -> impl std::future::Future<Output = Result<Value, CallError>> + Send {
        let answer = (self.answer)(&req);
        self.log.lock().unwrap().push(req);
        async move { answer }
    }
}

fn not_found() -> CallError {
    CallError::Notion(NotionError::Api {
        status: 404,
        code: "object_not_found".into(),
        message: "Could not find object".into(),
        request_id: None,
        retry_after: None,
    })
}

const P: &str = "11111111-1111-4111-8111-111111111111";
const P_PLAIN: &str = "11111111111141118111111111111111";
const D: &str = "22222222-2222-4222-8222-222222222222";

fn rt(text: &str) -> Value {
    json!([{ "type": "text", "plain_text": text, "text": { "content": text } }])
}

fn page(id: &str, title: &str) -> Value {
    json!({
        "object": "page", "id": id, "url": format!("https://www.notion.so/{}", id.replace('-', "")),
        "properties": {
            "Name": { "id": "title", "type": "title", "title": rt(title) },
            "Done": { "id": "d", "type": "checkbox", "checkbox": true },
        },
    })
}

fn list(results: Vec<Value>) -> Value {
    json!({ "object": "list", "results": results, "has_more": false, "next_cursor": null })
}

fn blk(id: &str, ty: &str, text: &str, has_children: bool) -> Value {
    json!({ "object": "block", "id": id, "type": ty, "has_children": has_children, ty: { "rich_text": rt(text) } })
}

fn no_requests() -> Mock {
    Mock::new(|r| panic!("no request expected, got {} {}", r.path, r.query.len()))
}

// ---------------------------------------------------------------- catalogue

#[test]
fn catalog_lists_every_tool_once() {
    let names: Vec<&str> = catalog().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "notion-search",
            "notion-fetch",
            "notion-create-pages",
            "notion-update-page",
            "notion-move-pages",
            "notion-create-database",
            "notion-update-database",
            "notion-query-data-source",
            "notion-append-blocks",
            "notion-get-block-children",
            "notion-create-comment",
            "notion-get-comments",
            "notion-get-users",
            "notion-get-user",
            "notion-get-self",
        ]
    );
}

fn check_schema(tool: &str, path: &str, schema: &Value) {
    let ty = schema["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{tool} {path}: no type"));
    assert!(
        ["object", "string", "integer", "number", "boolean", "array"].contains(&ty),
        "{tool} {path}: type {ty}"
    );
    if let Some(props) = schema.get("properties") {
        let props = props.as_object().unwrap();
        assert_eq!(
            schema["additionalProperties"], false,
            "{tool} {path}: closed objects"
        );
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(
                props.contains_key(req.as_str().unwrap()),
                "{tool} {path}: required {req} is not a property"
            );
        }
        for (k, v) in props {
            check_schema(tool, &format!("{path}.{k}"), v);
        }
    }
    if let Some(items) = schema.get("items") {
        check_schema(tool, &format!("{path}[]"), items);
    }
}

#[test]
fn schemas_are_closed_objects_naming_their_required_fields() {
    for spec in catalog() {
        let s = &spec.input_schema;
        assert_eq!(s["type"], "object", "{}", spec.name);
        assert!(s["properties"].is_object(), "{}", spec.name);
        assert!(s["required"].is_array(), "{}", spec.name);
        check_schema(spec.name, "", s);
        for (k, v) in s["properties"].as_object().unwrap() {
            let d = v["description"].as_str().unwrap_or("");
            assert!(d.len() > 5, "{}.{k} has no description", spec.name);
        }
        assert!(
            !spec.title.is_empty() && spec.description.len() > 20,
            "{}",
            spec.name
        );
        if spec.read_only {
            assert!(!spec.destructive && spec.idempotent, "{}", spec.name);
        }
        // The schema's own validation accepts an input made only of ... nothing, exactly
        // when nothing is required.
        let empty_ok = validate::validate(s, &json!({})).is_ok();
        assert_eq!(
            empty_ok,
            s["required"].as_array().unwrap().is_empty(),
            "{}",
            spec.name
        );
    }
}

#[test]
fn annotations() {
    let by = |n: &str| catalog().into_iter().find(|s| s.name == n).unwrap();
    for n in [
        "notion-search",
        "notion-fetch",
        "notion-query-data-source",
        "notion-get-self",
    ] {
        assert!(by(n).read_only, "{n}");
    }
    for n in [
        "notion-create-pages",
        "notion-append-blocks",
        "notion-create-comment",
    ] {
        let s = by(n);
        assert!(!s.read_only && !s.idempotent, "{n}");
    }
    assert!(by("notion-update-page").destructive);
    assert!(by("notion-update-database").destructive);
}

#[test]
fn call_tool_futures_are_send() {
    // rmcp runs tool calls on a multi-threaded runtime; this only has to type-check.
    fn assert_send<T: Send>(_: &T) {}
    let g = no_requests();
    for spec in catalog() {
        let fut = call_tool(&g, spec.name, json!({}));
        assert_send(&fut);
    }
}

// ---------------------------------------------------------------- validation before requests

async fn invalid(name: &str, args: Value, needle: &str) {
    let g = no_requests();
    let err = call_tool(&g, name, args.clone())
        .await
        .expect_err(&format!("{name} {args}"));
    assert_eq!(err.code, "invalid_input", "{name} {args}: {err}");
    assert!(
        err.message.contains(needle),
        "{name} {args}: {} lacks {needle}",
        err.message
    );
    assert!(g.requests().is_empty());
}

#[tokio::test]
async fn unknown_tools_are_named() {
    let g = no_requests();
    let err = call_tool(&g, "notion-delete-everything", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "unknown_tool");
    assert!(err.message.contains("notion-delete-everything"));
    assert!(err.message.contains("notion-search"), "{}", err.message);
    let long = "x".repeat(10_000);
    let err = call_tool(&g, &long, json!({})).await.unwrap_err();
    assert!(err.message.len() < 1_000, "the name is clipped");
}

#[tokio::test]
async fn bad_arguments_are_rejected_before_any_request() {
    invalid(
        "notion-search",
        json!({"query": 5}),
        "`query`: expected a string",
    )
    .await;
    invalid("notion-search", json!({"page_size": 101}), "`page_size`").await;
    invalid("notion-search", json!({"page_size": 0}), "`page_size`").await;
    invalid("notion-search", json!({"filter": "database"}), "`filter`").await;
    invalid(
        "notion-search",
        json!({"querry": "x"}),
        "`querry`: unknown argument",
    )
    .await;
    invalid("notion-search", json!("text"), "expected an object").await;
    invalid("notion-fetch", json!({}), "`id`: this argument is required").await;
    invalid(
        "notion-fetch",
        json!({"id": "https://example.com/11111111111141118111111111111111"}),
        "`id`",
    )
    .await;
    invalid(
        "notion-fetch",
        json!({"id": "not-an-id-not-an-id-not-an-id-xx"}),
        "`id`",
    )
    .await;
    invalid(
        "notion-create-pages",
        json!({"parent": {"page_id": P}, "pages": []}),
        "`pages`",
    )
    .await;
    let many: Vec<Value> = (0..21).map(|i| json!({"title": format!("p{i}")})).collect();
    invalid(
        "notion-create-pages",
        json!({"parent": {"page_id": P}, "pages": many}),
        "at most 20",
    )
    .await;
    invalid(
        "notion-create-pages",
        json!({"parent": {"page_id": P, "data_source_id": D}, "pages": [{}]}),
        "`parent`",
    )
    .await;
    invalid(
        "notion-create-pages",
        json!({"parent": {}, "pages": [{}]}),
        "`parent`",
    )
    .await;
    invalid(
        "notion-create-pages",
        json!({"parent": {"page_id": "x".repeat(32)}, "pages": [{}]}),
        "`parent.page_id`",
    )
    .await;
    invalid(
        "notion-create-pages",
        json!({"parent": {"page_id": P}, "pages": [{"title": 1}]}),
        "`pages[0].title`",
    )
    .await;
    invalid("notion-create-pages", json!({"parent": {"page_id": P}, "pages": [{"content": "x".repeat(markdown::MAX_MARKDOWN_BYTES + 1)}]}), "`pages[0].content`").await;
    invalid("notion-create-pages", json!({"parent": {"page_id": P}, "pages": [{"title": "a"}, {"title": "b", "content": "x\n\n".repeat(1001)}]}), "`pages[1].content`").await;
    invalid(
        "notion-update-page",
        json!({"page_id": P}),
        "at least one of",
    )
    .await;
    invalid(
        "notion-update-page",
        json!({"page_id": P, "in_trash": "yes"}),
        "`in_trash`: expected a boolean",
    )
    .await;
    invalid("notion-move-pages", json!({"page_ids": [P, "nope-nope-nope-nope-nope-nope-nope"], "new_parent": {"page_id": P}}), "`page_ids[1]`").await;
    invalid(
        "notion-create-database",
        json!({"parent_page_id": P}),
        "`title`",
    )
    .await;
    invalid(
        "notion-create-database",
        json!({"parent_page_id": P, "title": "t", "properties": []}),
        "`properties`",
    )
    .await;
    invalid(
        "notion-update-database",
        json!({"title": "t"}),
        "exactly one of",
    )
    .await;
    invalid(
        "notion-update-database",
        json!({"database_id": P, "data_source_id": D, "title": "t"}),
        "exactly one of",
    )
    .await;
    invalid(
        "notion-update-database",
        json!({"database_id": P, "properties": {}}),
        "`properties`",
    )
    .await;
    invalid(
        "notion-update-database",
        json!({"data_source_id": D, "description": "d"}),
        "`description`",
    )
    .await;
    invalid(
        "notion-update-database",
        json!({"data_source_id": D}),
        "give properties",
    )
    .await;
    invalid(
        "notion-query-data-source",
        json!({"data_source_id": D, "sorts": {}}),
        "`sorts`",
    )
    .await;
    invalid(
        "notion-query-data-source",
        json!({"data_source_id": D, "filter": "Done"}),
        "`filter`",
    )
    .await;
    invalid(
        "notion-append-blocks",
        json!({"block_id": P, "markdown": ""}),
        "`markdown`",
    )
    .await;
    invalid(
        "notion-append-blocks",
        json!({"block_id": P, "markdown": "x", "after": "1"}),
        "`after`",
    )
    .await;
    invalid(
        "notion-get-block-children",
        json!({"block_id": P, "start_cursor": ""}),
        "`start_cursor`",
    )
    .await;
    invalid(
        "notion-create-comment",
        json!({"text": "hi"}),
        "exactly one of",
    )
    .await;
    invalid(
        "notion-create-comment",
        json!({"page_id": P, "discussion_id": D, "text": "hi"}),
        "exactly one of",
    )
    .await;
    invalid(
        "notion-create-comment",
        json!({"page_id": P, "text": ""}),
        "`text`",
    )
    .await;
    invalid("notion-get-user", json!({}), "`user_id`").await;
    invalid("notion-get-self", json!({"x": 1}), "`x`: unknown argument").await;
}

// ---------------------------------------------------------------- requests and rendering

#[tokio::test]
async fn null_arguments_count_as_empty() {
    let g = Mock::new(|_| {
        Ok(
            json!({"object": "user", "id": P, "type": "bot", "name": "Quire", "bot": {"workspace_name": "Acme"}}),
        )
    });
    let out = call_tool(&g, "notion-get-self", Value::Null).await.unwrap();
    assert_eq!(g.paths(), ["/v1/users/me"]);
    assert!(
        out.text.contains("Quire (bot)") && out.text.contains("workspace Acme"),
        "{}",
        out.text
    );
    assert_eq!(out.structured["workspace_name"], "Acme");
}

#[tokio::test]
async fn search_sends_notions_filter_and_lists_results() {
    let g = Mock::new(|_| {
        Ok(json!({
            "object": "list", "has_more": true, "next_cursor": "c2",
            "results": [
                page(P, "Roadmap"),
                { "object": "data_source", "id": D, "title": rt("Tasks"), "properties": {} },
            ],
        }))
    });
    let out = call_tool(
        &g,
        "notion-search",
        json!({"query": "road", "filter": "page", "page_size": 10}),
    )
    .await
    .unwrap();
    let req = &g.requests()[0];
    assert_eq!(req.method, HttpMethod::Post);
    assert_eq!(req.path, "/v1/search");
    assert_eq!(
        req.body,
        Some(
            json!({"query": "road", "filter": {"property": "object", "value": "page"}, "page_size": 10})
        )
    );
    assert!(
        out.text
            .contains("[Roadmap](https://www.notion.so/11111111111141118111111111111111) (page)"),
        "{}",
        out.text
    );
    assert!(out.text.contains("Tasks") && out.text.contains("(data_source)"));
    assert!(out.text.contains("start_cursor \"c2\""));
    assert_eq!(out.structured["results"][1]["type"], "data_source");
    assert_eq!(out.structured["next_cursor"], "c2");
}

#[tokio::test]
async fn fetch_renders_a_page_reading_children_only_where_they_exist() {
    let g = Mock::new(|r| match r.path.as_str() {
        p if p == format!("/v1/pages/{P}") => Ok(page(P, "Plan")),
        p if p == format!("/v1/blocks/{P}/children") => Ok(list(vec![
            blk("b1", "heading_1", "Goals", false),
            blk("b2", "bulleted_list_item", "ship", true),
            json!({"object": "block", "id": "b3", "type": "child_page", "has_children": true, "child_page": {"title": "Sub"}}),
        ])),
        "/v1/blocks/b2/children" => {
            Ok(list(vec![blk("b21", "bulleted_list_item", "tests", false)]))
        }
        other => panic!("unexpected {other}"),
    });
    let out = call_tool(
        &g,
        "notion-fetch",
        json!({"id": format!("https://www.notion.so/acme/Plan-{P_PLAIN}")}),
    )
    .await
    .unwrap();
    assert_eq!(
        g.paths(),
        [
            format!("/v1/pages/{P}"),
            format!("/v1/blocks/{P}/children"),
            "/v1/blocks/b2/children".to_string()
        ]
    );
    assert!(out.text.starts_with("# Plan\n"), "{}", out.text);
    assert!(out.text.contains("| Done | Yes |"), "{}", out.text);
    assert!(
        out.text
            .contains("# Goals\n\n- ship\n  - tests\n\n📄 [Sub]"),
        "{}",
        out.text
    );
    assert_eq!(out.structured["truncated"], false);
    assert_eq!(out.structured["properties"]["Name"], "Plan");
}

#[tokio::test]
async fn fetch_stops_at_the_depth_limit() {
    // Every block has one child that has children: an endless chain.
    let g = Mock::new(|r| {
        if r.path.starts_with("/v1/pages/") {
            return Ok(page(P, "Deep"));
        }
        let parent = r
            .path
            .trim_start_matches("/v1/blocks/")
            .trim_end_matches("/children");
        Ok(list(vec![blk(
            &format!("{parent}x"),
            "toggle",
            "level",
            true,
        )]))
    });
    let out = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap();
    // The page's children (depth 1), and two more levels.
    assert_eq!(g.requests().len(), 1 + handlers::MAX_FETCH_DEPTH);
    assert_eq!(out.structured["truncated"], true);
    assert!(out.text.contains("Content truncated"));
}

#[tokio::test]
async fn fetch_stops_at_the_request_limit() {
    // 100 top-level toggles with children: one more request per toggle.
    let g = Mock::new(|r| {
        if r.path.starts_with("/v1/pages/") {
            return Ok(page(P, "Wide"));
        }
        if r.path == format!("/v1/blocks/{P}/children") {
            let toggles = (0..100).map(|i| blk(&format!("t{i}"), "toggle", "t", true));
            return Ok(list(toggles.collect()));
        }
        Ok(list(vec![blk("leaf", "paragraph", "leaf", false)]))
    });
    let out = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap();
    assert_eq!(g.requests().len(), 1 + handlers::MAX_FETCH_REQUESTS);
    assert_eq!(out.structured["truncated"], true);
    let md = out.structured["markdown"].as_str().unwrap();
    assert_eq!(md.matches("leaf").count(), handlers::MAX_FETCH_REQUESTS - 1);
}

#[tokio::test]
async fn fetch_follows_pagination_within_the_block_budget() {
    let g = Mock::new(|r| {
        if r.path.starts_with("/v1/pages/") {
            return Ok(page(P, "Long"));
        }
        let start: usize = r
            .query
            .iter()
            .find(|(k, _)| k == "start_cursor")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let results: Vec<Value> = (start..start + 100)
            .map(|i| blk(&format!("b{i}"), "paragraph", "p", false))
            .collect();
        Ok(
            json!({"object": "list", "results": results, "has_more": true, "next_cursor": (start + 100).to_string()}),
        )
    });
    let out = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap();
    assert_eq!(g.requests().len(), 1 + handlers::MAX_FETCH_BLOCKS / 100);
    assert_eq!(out.structured["truncated"], true);
    assert_eq!(
        out.structured["markdown"]
            .as_str()
            .unwrap()
            .matches('p')
            .count(),
        handlers::MAX_FETCH_BLOCKS
    );
}

#[tokio::test]
async fn fetch_falls_back_to_data_source_then_database() {
    let g = Mock::new(|r| {
        if r.path.starts_with("/v1/databases/") {
            Ok(
                json!({"object": "database", "id": P, "title": rt("Projects"), "data_sources": [{"id": D, "name": "Projects"}]}),
            )
        } else {
            Err(not_found())
        }
    });
    let out = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap();
    assert_eq!(
        g.paths(),
        [
            format!("/v1/pages/{P}"),
            format!("/v1/data_sources/{P}"),
            format!("/v1/databases/{P}")
        ]
    );
    assert!(
        out.text.contains("# Projects") && out.text.contains(D),
        "{}",
        out.text
    );
    assert_eq!(out.structured["data_sources"][0]["id"], D);

    let g = Mock::new(|r| {
        if r.path.starts_with("/v1/data_sources/") {
            Ok(
                json!({"object": "data_source", "id": D, "title": rt("Tasks"), "parent": {"type": "database_id", "database_id": P},
                      "properties": {"Name": {"type": "title", "title": {}}, "Tag": {"type": "select", "select": {"options": [{"name": "a"}, {"name": "b"}]}}}}),
            )
        } else {
            Err(not_found())
        }
    });
    let out = call_tool(&g, "notion-fetch", json!({"id": D}))
        .await
        .unwrap();
    assert_eq!(g.requests().len(), 2);
    assert!(out.text.contains("| Tag | select | a, b |"), "{}", out.text);

    let g = Mock::new(|_| Err(not_found()));
    let err = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "object_not_found");
    assert!(err.message.contains("share"), "{}", err.message);
    assert_eq!(g.requests().len(), 3);
}

#[tokio::test]
async fn errors_other_than_not_found_stop_the_fetch() {
    let g = Mock::new(|_| {
        Err(CallError::RateLimited {
            retry_after_seconds: 4,
        })
    });
    let err = call_tool(&g, "notion-fetch", json!({"id": P}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "rate_limited");
    assert_eq!(err.retry_after_seconds, Some(4));
    assert_eq!(g.requests().len(), 1);
}

#[tokio::test]
async fn create_pages_in_a_data_source_uses_its_title_property_and_chunks_content() {
    let g = Mock::new(|r| match (r.method, r.path.as_str()) {
        (HttpMethod::Get, p) if p == format!("/v1/data_sources/{D}") => Ok(
            json!({"object": "data_source", "id": D, "properties": {"Task": {"type": "title", "title": {}}}}),
        ),
        (HttpMethod::Post, "/v1/pages") => Ok(page(P, "New")),
        (HttpMethod::Patch, p) if p == format!("/v1/blocks/{P}/children") => {
            let n = r.body.as_ref().unwrap()["children"]
                .as_array()
                .unwrap()
                .len();
            Ok(list(
                (0..n)
                    .map(|i| blk(&format!("n{i}"), "paragraph", "x", false))
                    .collect(),
            ))
        }
        other => panic!("unexpected {other:?}"),
    });
    let content = "para\n\n".repeat(250);
    let out = call_tool(
        &g,
        "notion-create-pages",
        json!({"parent": {"data_source_id": D}, "pages": [{"title": "New", "properties": {"Done": {"checkbox": true}}, "content": content}]}),
    )
    .await
    .unwrap();
    let reqs = g.requests();
    assert_eq!(reqs.len(), 1 + 1 + 2, "{:?}", g.paths());
    let create = reqs[1].body.as_ref().unwrap();
    assert_eq!(
        create["parent"],
        json!({"type": "data_source_id", "data_source_id": D})
    );
    assert_eq!(
        create["properties"]["Task"]["title"][0]["text"]["content"],
        "New"
    );
    assert_eq!(create["properties"]["Done"], json!({"checkbox": true}));
    assert_eq!(create["children"].as_array().unwrap().len(), 100);
    assert_eq!(
        reqs[2].body.as_ref().unwrap()["children"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(
        reqs[3].body.as_ref().unwrap()["children"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    assert!(reqs[3].body.as_ref().unwrap().get("after").is_none());
    assert_eq!(out.structured["pages"][0]["id"], P);
}

#[tokio::test]
async fn create_pages_reports_what_was_created_before_a_failure() {
    let calls = Mutex::new(0);
    let g = Mock::new(move |_| {
        let mut n = calls.lock().unwrap();
        *n += 1;
        if *n == 2 {
            Err(not_found())
        } else {
            Ok(page(P, "first"))
        }
    });
    let err = call_tool(
        &g,
        "notion-create-pages",
        json!({"parent": {"page_id": D}, "pages": [{"title": "a"}, {"title": "b"}, {"title": "c"}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "object_not_found");
    assert!(
        err.message.contains("pages[1] failed") && err.message.contains(P),
        "{}",
        err.message
    );
    assert_eq!(g.requests().len(), 2);
    let first = g.requests()[0].body.clone().unwrap();
    assert_eq!(
        first["properties"]["title"]["title"][0]["text"]["content"],
        "a"
    );
}

#[tokio::test]
async fn update_page_finds_the_title_property() {
    let g = Mock::new(|r| match r.method {
        HttpMethod::Get => Ok(page(P, "Old")),
        _ => {
            let mut p = page(P, "New");
            p["in_trash"] = json!(true);
            Ok(p)
        }
    });
    let out = call_tool(
        &g,
        "notion-update-page",
        json!({"page_id": P_PLAIN, "title": "New", "in_trash": true}),
    )
    .await
    .unwrap();
    let reqs = g.requests();
    assert_eq!(reqs[1].path, format!("/v1/pages/{P}"));
    assert_eq!(
        reqs[1].body,
        Some(
            json!({"properties": {"Name": {"title": [{"type": "text", "text": {"content": "New"}}]}}, "in_trash": true})
        )
    );
    assert!(out.text.contains("in the trash"));
}

#[tokio::test]
async fn append_blocks_chains_after_across_chunks() {
    let g = Mock::new(|r| {
        let n = r.body.as_ref().unwrap()["children"]
            .as_array()
            .unwrap()
            .len();
        let base = r
            .body
            .as_ref()
            .unwrap()
            .get("after")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(list(
            (0..n)
                .map(|i| blk(&format!("{base}-{i}"), "paragraph", "x", false))
                .collect(),
        ))
    });
    let md = "- item\n".repeat(150);
    let out = call_tool(
        &g,
        "notion-append-blocks",
        json!({"block_id": P, "markdown": md, "after": D}),
    )
    .await
    .unwrap();
    let reqs = g.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, HttpMethod::Patch);
    assert_eq!(reqs[0].body.as_ref().unwrap()["after"], D);
    assert_eq!(reqs[1].body.as_ref().unwrap()["after"], format!("{D}-99"));
    assert_eq!(out.structured["blocks"], 150);
}

#[tokio::test]
async fn query_renders_rows_and_paging() {
    let g = Mock::new(|_| {
        Ok(
            json!({"object": "list", "results": [page(P, "Row one")], "has_more": true, "next_cursor": "n1"}),
        )
    });
    let out = call_tool(
        &g,
        "notion-query-data-source",
        json!({"data_source_id": D, "filter": {"property": "Done", "checkbox": {"equals": true}}, "sorts": [{"property": "Name", "direction": "ascending"}], "page_size": 5}),
    )
    .await
    .unwrap();
    let req = &g.requests()[0];
    assert_eq!(req.path, format!("/v1/data_sources/{D}/query"));
    assert_eq!(req.body.as_ref().unwrap()["page_size"], 5);
    assert_eq!(req.body.as_ref().unwrap()["filter"]["property"], "Done");
    assert!(out.text.starts_with("1. [Row one]"), "{}", out.text);
    assert!(out.text.contains("Done: Yes"));
    assert_eq!(out.structured["has_more"], true);
    assert_eq!(out.structured["next_cursor"], "n1");
}

#[tokio::test]
async fn listings_pass_paging_as_query_parameters() {
    let g = Mock::new(|_| Ok(list(vec![])));
    call_tool(
        &g,
        "notion-get-comments",
        json!({"block_id": P, "page_size": 3, "start_cursor": "abc"}),
    )
    .await
    .unwrap();
    call_tool(&g, "notion-get-users", json!({"page_size": 7}))
        .await
        .unwrap();
    call_tool(&g, "notion-get-block-children", json!({"block_id": P}))
        .await
        .unwrap();
    let reqs = g.requests();
    assert_eq!(reqs[0].path, "/v1/comments");
    let q: Vec<(&str, &str)> = reqs[0]
        .query
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        q,
        [("block_id", P), ("page_size", "3"), ("start_cursor", "abc")]
    );
    assert_eq!(reqs[1].query, [("page_size".to_string(), "7".to_string())]);
    assert_eq!(reqs[2].path, format!("/v1/blocks/{P}/children"));
}

#[tokio::test]
async fn comments_and_moves_build_notions_bodies() {
    let g = Mock::new(|_| Ok(json!({"object": "comment", "id": "c1", "discussion_id": "d1"})));
    call_tool(
        &g,
        "notion-create-comment",
        json!({"page_id": P, "text": "see **this**"}),
    )
    .await
    .unwrap();
    call_tool(
        &g,
        "notion-create-comment",
        json!({"discussion_id": D, "text": "ok"}),
    )
    .await
    .unwrap();
    call_tool(
        &g,
        "notion-move-pages",
        json!({"page_ids": [P, D], "new_parent": {"data_source_id": D}}),
    )
    .await
    .unwrap();
    let reqs = g.requests();
    let b0 = reqs[0].body.as_ref().unwrap();
    assert_eq!(b0["parent"], json!({"page_id": P}));
    assert_eq!(b0["rich_text"][1]["annotations"]["bold"], true);
    assert_eq!(reqs[1].body.as_ref().unwrap()["discussion_id"], D);
    assert_eq!(reqs[2].path, format!("/v1/pages/{P}/move"));
    assert_eq!(reqs[3].path, format!("/v1/pages/{D}/move"));
    assert_eq!(
        reqs[3].body,
        Some(json!({"parent": {"type": "data_source_id", "data_source_id": D}}))
    );
}

#[tokio::test]
async fn databases_are_created_with_an_initial_data_source() {
    let g = Mock::new(|r| match r.method {
        HttpMethod::Post => {
            Ok(json!({"object": "database", "id": D, "data_sources": [{"id": P, "name": "Tasks"}]}))
        }
        _ => Ok(
            json!({"object": "data_source", "id": P, "title": rt("Tasks"), "properties": {"Name": {"type": "title", "title": {}}}}),
        ),
    });
    let out = call_tool(
        &g,
        "notion-create-database",
        json!({"parent_page_id": P, "title": "Tasks"}),
    )
    .await
    .unwrap();
    assert_eq!(out.structured["data_sources"][0]["id"], P);
    let body = g.requests()[0].body.clone().unwrap();
    assert_eq!(body["parent"], json!({"type": "page_id", "page_id": P}));
    assert_eq!(
        body["initial_data_source"]["properties"],
        json!({"Name": {"title": {}}})
    );
    call_tool(
        &g,
        "notion-update-database",
        json!({"data_source_id": P, "properties": {"Due": {"date": {}}}}),
    )
    .await
    .unwrap();
    let req = &g.requests()[1];
    assert_eq!(req.method, HttpMethod::Patch);
    assert_eq!(req.path, format!("/v1/data_sources/{P}"));
    assert_eq!(req.body, Some(json!({"properties": {"Due": {"date": {}}}})));
}
