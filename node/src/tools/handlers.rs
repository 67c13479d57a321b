//! The tools' implementations: turn validated arguments into Notion requests and render
//! the answers. Every id and every Markdown document is checked before the first request.

use std::collections::VecDeque;

use quire_actors::notion::NotionRequest;
use serde_json::{Map, Value, json};

use super::error::ToolError;
use super::ids::{notion_url, parse_id, parse_id_or_url};
use super::markdown::{
    self, MarkdownError, blocks_to_markdown, inline_to_rich_text, object_title, plain_rich_text,
    property_to_text,
};
use super::{NotionGateway, ToolOutput};

/// How deep `notion-fetch` reads nested blocks (top-level blocks are depth 1).
pub const MAX_FETCH_DEPTH: usize = 3;
/// The most blocks `notion-fetch` reads for one page.
pub const MAX_FETCH_BLOCKS: usize = 1000;
/// The most block-children requests `notion-fetch` sends for one page.
pub const MAX_FETCH_REQUESTS: usize = 50;
/// Notion's limit on the children of one append or create request.
pub const MAX_CHILDREN_PER_REQUEST: usize = 100;
/// The longest property value shown in a row of a query result.
const MAX_VALUE_CHARS: usize = 200;

pub async fn run<G: NotionGateway>(
    g: &G,
    name: &str,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    match name {
        "notion-search" => search(g, args).await,
        "notion-fetch" => fetch(g, args).await,
        "notion-create-pages" => create_pages(g, args).await,
        "notion-update-page" => update_page(g, args).await,
        "notion-move-pages" => move_pages(g, args).await,
        "notion-create-database" => create_database(g, args).await,
        "notion-update-database" => update_database(g, args).await,
        "notion-query-data-source" => query_data_source(g, args).await,
        "notion-append-blocks" => append_blocks(g, args).await,
        "notion-get-block-children" => get_block_children(g, args).await,
        "notion-create-comment" => create_comment(g, args).await,
        "notion-get-comments" => get_comments(g, args).await,
        "notion-get-users" => get_users(g, args).await,
        "notion-get-user" => get_user(g, args).await,
        "notion-get-self" => get_self(g).await,
        other => Err(ToolError::unknown_tool(other)),
    }
}

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

async fn send<G: NotionGateway>(g: &G, req: NotionRequest) -> Result<Value, ToolError> {
    g.call(req).await.map_err(ToolError::from)
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

const ID_EXPECTED: &str = "expected a Notion id: 32 hexadecimal digits, with or without dashes";

fn id_at(value: Option<&Value>, path: &str) -> Result<Option<String>, ToolError> {
    match value {
        None => Ok(None),
        Some(v) => {
            let s = v
                .as_str()
                .ok_or_else(|| ToolError::invalid_input(path, ID_EXPECTED))?;
            parse_id(s)
                .map(Some)
                .ok_or_else(|| ToolError::invalid_input(path, format!("{ID_EXPECTED}, got {s:?}")))
        }
    }
}

fn required_id(args: &Value, key: &str) -> Result<String, ToolError> {
    id_at(args.get(key), key)?
        .ok_or_else(|| ToolError::invalid_input(key, "this argument is required"))
}

fn optional_id(args: &Value, key: &str) -> Result<Option<String>, ToolError> {
    id_at(args.get(key), key)
}

fn markdown_error(path: &str, e: MarkdownError) -> ToolError {
    ToolError::invalid_input(path, format!("{e}; split it across several calls"))
}

/// `?page_size=&start_cursor=` for GET listings.
fn with_paging(mut req: NotionRequest, args: &Value) -> NotionRequest {
    if let Some(n) = args.get("page_size").and_then(Value::as_u64) {
        req = req.with_query("page_size", n.to_string());
    }
    if let Some(c) = str_arg(args, "start_cursor") {
        req = req.with_query("start_cursor", c);
    }
    req
}

/// `page_size` / `start_cursor` in a POST body.
fn paging_body(body: &mut Map<String, Value>, args: &Value) {
    for key in ["page_size", "start_cursor"] {
        if let Some(v) = args.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
}

fn url_of(obj: &Value) -> String {
    obj.get("url")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| notion_url(obj.get("id").and_then(Value::as_str).unwrap_or("")))
}

fn id_of(obj: &Value) -> String {
    obj.get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn display_title(t: &str) -> &str {
    if t.trim().is_empty() { "Untitled" } else { t }
}

fn results(resp: &Value) -> &[Value] {
    resp.get("results")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn paging_of(resp: &Value) -> (bool, Value) {
    let has_more = resp
        .get("has_more")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let next = resp.get("next_cursor").cloned().unwrap_or(Value::Null);
    (has_more, next)
}

fn more_line(resp: &Value) -> String {
    match paging_of(resp) {
        (true, Value::String(c)) => {
            format!("\n\nMore results: call again with start_cursor \"{c}\".")
        }
        _ => String::new(),
    }
}

fn clip(s: &str, max_chars: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

/// The name of the `title`-typed property in a schema or a page's properties.
fn title_property_name(properties: Option<&Value>) -> Option<String> {
    properties?
        .as_object()?
        .iter()
        .find(|(_, p)| p.get("type").and_then(Value::as_str) == Some("title"))
        .map(|(k, _)| k.clone())
}

// ---------------------------------------------------------------------------------------
// search and fetch
// ---------------------------------------------------------------------------------------

async fn search<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let mut body = Map::new();
    body.insert("query".into(), json!(str_arg(args, "query").unwrap_or("")));
    if let Some(f) = str_arg(args, "filter") {
        body.insert("filter".into(), json!({ "property": "object", "value": f }));
    }
    paging_body(&mut body, args);
    let resp = send(g, NotionRequest::post("/v1/search", Value::Object(body))).await?;
    let items: Vec<Value> = results(&resp)
        .iter()
        .map(|r| {
            json!({
                "id": id_of(r),
                "type": r.get("object").and_then(Value::as_str).unwrap_or(""),
                "title": object_title(r),
                "url": url_of(r),
            })
        })
        .collect();
    let mut text = if items.is_empty() {
        "No results.".to_string()
    } else {
        let mut t = format!("{} result(s):", items.len());
        for it in &items {
            t.push_str(&format!(
                "\n- [{}]({}) ({}) `{}`",
                display_title(it["title"].as_str().unwrap_or("")),
                it["url"].as_str().unwrap_or(""),
                it["type"].as_str().unwrap_or(""),
                it["id"].as_str().unwrap_or("")
            ));
        }
        t
    };
    text.push_str(&more_line(&resp));
    let (has_more, next_cursor) = paging_of(&resp);
    Ok(ToolOutput {
        text,
        structured: json!({ "results": items, "has_more": has_more, "next_cursor": next_cursor }),
    })
}

fn fetch_falls_through(e: &ToolError) -> bool {
    e.code == "object_not_found" || e.code == "validation_error"
}

async fn fetch<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let raw = str_arg(args, "id").unwrap_or("");
    let id = parse_id_or_url(raw).ok_or_else(|| {
        ToolError::invalid_input(
            "id",
            "expected a Notion id (32 hexadecimal digits, with or without dashes) or a \
             notion.so / notion.site URL containing one",
        )
    })?;
    let page_err = match send(g, NotionRequest::get(format!("/v1/pages/{id}"))).await {
        Ok(page) => return render_page(g, &page).await,
        Err(e) if fetch_falls_through(&e) => e,
        Err(e) => return Err(e),
    };
    match send(g, NotionRequest::get(format!("/v1/data_sources/{id}"))).await {
        Ok(ds) => return Ok(render_data_source(&ds)),
        Err(e) if fetch_falls_through(&e) => {}
        Err(e) => return Err(e),
    }
    match send(g, NotionRequest::get(format!("/v1/databases/{id}"))).await {
        Ok(db) => Ok(render_database(&db)),
        Err(e) if fetch_falls_through(&e) => Err(ToolError {
            code: "object_not_found",
            message: format!(
                "no page, data source or database with id {id} is visible to the integration; \
                 check the id, or share the page with the integration in Notion \
                 (Notion said: {})",
                page_err.message
            ),
            retry_after_seconds: None,
        }),
        Err(e) => Err(e),
    }
}

struct Fetched {
    blocks: Vec<Value>,
    truncated: bool,
    requests: usize,
}

/// Reads a page's blocks breadth first, up to [`MAX_FETCH_DEPTH`] levels,
/// [`MAX_FETCH_BLOCKS`] blocks and [`MAX_FETCH_REQUESTS`] requests. Children are requested
/// only for blocks that have them (and never inside child pages or databases). The
/// children found are attached under `block[type].children`.
async fn fetch_blocks<G: NotionGateway>(g: &G, root: &str) -> Result<Fetched, ToolError> {
    // nodes[i] = (block, children indices); parent None = the page itself.
    let mut nodes: Vec<(Value, Vec<usize>)> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut queue: VecDeque<(Option<usize>, String, usize)> = VecDeque::new();
    queue.push_back((None, root.to_string(), 1));
    let mut requests = 0;
    let mut truncated = false;
    'outer: while let Some((parent, block_id, depth)) = queue.pop_front() {
        let mut cursor: Option<String> = None;
        loop {
            if requests >= MAX_FETCH_REQUESTS || nodes.len() >= MAX_FETCH_BLOCKS {
                truncated = true;
                break 'outer;
            }
            let mut req = NotionRequest::get(format!("/v1/blocks/{block_id}/children"))
                .with_query("page_size", "100");
            if let Some(c) = &cursor {
                req = req.with_query("start_cursor", c.clone());
            }
            requests += 1;
            let resp = send(g, req).await?;
            for block in results(&resp) {
                if nodes.len() >= MAX_FETCH_BLOCKS {
                    truncated = true;
                    break 'outer;
                }
                let idx = nodes.len();
                let ty = block.get("type").and_then(Value::as_str).unwrap_or("");
                let has_children = block
                    .get("has_children")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if has_children && !matches!(ty, "child_page" | "child_database") {
                    if depth < MAX_FETCH_DEPTH {
                        if let Some(id) = block.get("id").and_then(Value::as_str) {
                            queue.push_back((Some(idx), id.to_string(), depth + 1));
                        }
                    } else {
                        truncated = true;
                    }
                }
                nodes.push((block.clone(), Vec::new()));
                match parent {
                    Some(p) => nodes[p].1.push(idx),
                    None => roots.push(idx),
                }
            }
            match paging_of(&resp) {
                (true, Value::String(c)) => cursor = Some(c),
                _ => break,
            }
        }
    }
    fn build(nodes: &[(Value, Vec<usize>)], idx: usize) -> Value {
        let (block, kids) = &nodes[idx];
        let mut block = block.clone();
        if !kids.is_empty() {
            let children: Vec<Value> = kids.iter().map(|k| build(nodes, *k)).collect();
            let ty = block
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(body) = block.get_mut(&ty).and_then(Value::as_object_mut) {
                body.insert("children".into(), Value::Array(children));
            }
        }
        block
    }
    Ok(Fetched {
        blocks: roots.iter().map(|r| build(&nodes, *r)).collect(),
        truncated,
        requests,
    })
}

async fn render_page<G: NotionGateway>(g: &G, page: &Value) -> Result<ToolOutput, ToolError> {
    let id = id_of(page);
    let title = object_title(page);
    let url = url_of(page);
    let mut props = Map::new();
    let mut text = format!("# {}\n\n", display_title(&title));
    text.push_str(&format!("Page `{id}` · {url}"));
    if page.get("in_trash").and_then(Value::as_bool) == Some(true)
        || page.get("archived").and_then(Value::as_bool) == Some(true)
    {
        text.push_str(" · in trash");
    }
    text.push('\n');
    if let Some(p) = page.get("properties").and_then(Value::as_object) {
        let rows: Vec<(String, String)> = p
            .iter()
            .filter(|(_, v)| v.get("type").and_then(Value::as_str) != Some("title"))
            .map(|(k, v)| (k.clone(), property_to_text(v)))
            .collect();
        for (k, v) in p {
            props.insert(k.clone(), json!(property_to_text(v)));
        }
        if !rows.is_empty() {
            text.push_str("\n| Property | Value |\n| --- | --- |\n");
            for (k, v) in rows {
                text.push_str(&format!(
                    "| {} | {} |\n",
                    k.replace('|', "\\|"),
                    v.replace('|', "\\|").replace('\n', " ")
                ));
            }
        }
    }
    let fetched = fetch_blocks(g, &id).await?;
    let content = blocks_to_markdown(&fetched.blocks);
    if !content.is_empty() {
        text.push('\n');
        text.push_str(&content);
        text.push('\n');
    }
    if fetched.truncated {
        text.push_str(&format!(
            "\n_(Content truncated at {MAX_FETCH_DEPTH} levels, {MAX_FETCH_BLOCKS} blocks or \
             {MAX_FETCH_REQUESTS} requests; read deeper blocks with notion-get-block-children.)_\n"
        ));
    }
    Ok(ToolOutput {
        text,
        structured: json!({
            "object": "page",
            "id": id,
            "url": url,
            "title": title,
            "properties": props,
            "markdown": content,
            "truncated": fetched.truncated,
            "block_requests": fetched.requests,
        }),
    })
}

fn schema_detail(p: &Value) -> String {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
    let body = p.get(ty).unwrap_or(&Value::Null);
    match ty {
        "select" | "multi_select" | "status" => body
            .get("options")
            .and_then(Value::as_array)
            .map(|opts| {
                opts.iter()
                    .filter_map(|o| o.get("name").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        "number" => body
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        "relation" => body
            .get("data_source_id")
            .or_else(|| body.get("database_id"))
            .and_then(Value::as_str)
            .map(|id| format!("→ {id}"))
            .unwrap_or_default(),
        "formula" => body
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

fn render_data_source(ds: &Value) -> ToolOutput {
    let id = id_of(ds);
    let title = object_title(ds);
    let database_id = ds
        .pointer("/parent/database_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut text = format!("# {}\n\nData source `{id}`", display_title(&title));
    if !database_id.is_empty() {
        text.push_str(&format!(" of database `{database_id}`"));
    }
    text.push_str(". Query its rows with notion-query-data-source.\n\n## Schema\n\n| Property | Type | Details |\n| --- | --- | --- |\n");
    let mut schema = Map::new();
    if let Some(props) = ds.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            let detail = schema_detail(p);
            text.push_str(&format!(
                "| {} | {ty} | {} |\n",
                name.replace('|', "\\|"),
                detail.replace('|', "\\|")
            ));
            schema.insert(name.clone(), json!({ "type": ty, "details": detail }));
        }
    }
    ToolOutput {
        text,
        structured: json!({
            "object": "data_source",
            "id": id,
            "title": title,
            "database_id": database_id,
            "properties": schema,
        }),
    }
}

fn render_database(db: &Value) -> ToolOutput {
    let id = id_of(db);
    let title = object_title(db);
    let url = url_of(db);
    let description = markdown::plain_text(db.get("description").unwrap_or(&Value::Null));
    let mut text = format!("# {}\n\nDatabase `{id}` · {url}\n", display_title(&title));
    if !description.is_empty() {
        text.push_str(&format!("\n{description}\n"));
    }
    let sources: Vec<Value> = db
        .get("data_sources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| json!({ "id": id_of(s), "name": s.get("name").and_then(Value::as_str).unwrap_or("") }))
                .collect()
        })
        .unwrap_or_default();
    text.push_str("\n## Data sources\n\n");
    if sources.is_empty() {
        text.push_str("None visible.\n");
    }
    for s in &sources {
        text.push_str(&format!(
            "- {} `{}`\n",
            display_title(s["name"].as_str().unwrap_or("")),
            s["id"].as_str().unwrap_or("")
        ));
    }
    text.push_str("\nFetch a data source's id for its schema, or query its rows with notion-query-data-source.\n");
    ToolOutput {
        text,
        structured: json!({
            "object": "database",
            "id": id,
            "url": url,
            "title": title,
            "description": description,
            "data_sources": sources,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// pages
// ---------------------------------------------------------------------------------------

enum Parent {
    Page(String),
    DataSource(String),
}

impl Parent {
    fn parse(v: Option<&Value>, path: &str) -> Result<Self, ToolError> {
        let v = v.ok_or_else(|| ToolError::invalid_input(path, "this argument is required"))?;
        if let Some(id) = id_at(v.get("page_id"), &format!("{path}.page_id"))? {
            return Ok(Parent::Page(id));
        }
        if let Some(id) = id_at(v.get("data_source_id"), &format!("{path}.data_source_id"))? {
            return Ok(Parent::DataSource(id));
        }
        Err(ToolError::invalid_input(
            path,
            "expected exactly one of page_id or data_source_id",
        ))
    }

    fn to_json(&self) -> Value {
        match self {
            Parent::Page(id) => json!({ "type": "page_id", "page_id": id }),
            Parent::DataSource(id) => json!({ "type": "data_source_id", "data_source_id": id }),
        }
    }
}

struct NewPage {
    title: Option<String>,
    properties: Map<String, Value>,
    blocks: Vec<Value>,
}

fn chunks(blocks: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for b in blocks {
        cur.push(b);
        if cur.len() == MAX_CHILDREN_PER_REQUEST {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Appends blocks to `block_id` in chunks of at most 100; with `after`, each chunk goes
/// after the last block the previous chunk created. Returns the created top-level blocks.
async fn append_in_chunks<G: NotionGateway>(
    g: &G,
    block_id: &str,
    blocks: Vec<Value>,
    mut after: Option<String>,
) -> Result<Vec<Value>, ToolError> {
    let mut created = Vec::new();
    let total = chunks(blocks);
    let n = total.len();
    for (i, chunk) in total.into_iter().enumerate() {
        let chunk_len = chunk.len();
        let mut body = Map::new();
        body.insert("children".into(), Value::Array(chunk));
        if let Some(a) = &after {
            body.insert("after".into(), json!(a));
        }
        let resp = send(
            g,
            NotionRequest::patch(
                format!("/v1/blocks/{block_id}/children"),
                Value::Object(body),
            ),
        )
        .await
        .map_err(|mut e| {
            if i > 0 {
                e.message = format!(
                    "{} (the first {} of {n} chunks of blocks were already appended)",
                    e.message, i
                );
            }
            e
        })?;
        let res = results(&resp);
        // Notion answers with the new blocks; take the last `chunk_len` in case it answers
        // with more of the parent's children.
        let new = &res[res.len().saturating_sub(chunk_len)..];
        if after.is_some() {
            after = new.last().map(id_of).or(after);
        }
        created.extend(new.iter().cloned());
    }
    Ok(created)
}

async fn create_pages<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let parent = Parent::parse(args.get("parent"), "parent")?;
    let mut pages = Vec::new();
    for (i, p) in args
        .get("pages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let blocks = match str_arg(p, "content") {
            Some(md) => markdown::markdown_to_blocks(md)
                .map_err(|e| markdown_error(&format!("pages[{i}].content"), e))?,
            None => Vec::new(),
        };
        pages.push(NewPage {
            title: str_arg(p, "title").map(str::to_string),
            properties: p
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            blocks,
        });
    }
    // Where the title goes: "title" under a page; the schema's title property under a
    // data source (read once, only when a title is given).
    let title_key = match &parent {
        Parent::Page(_) => "title".to_string(),
        Parent::DataSource(id) if pages.iter().any(|p| p.title.is_some()) => {
            let ds = send(g, NotionRequest::get(format!("/v1/data_sources/{id}"))).await?;
            title_property_name(ds.get("properties")).ok_or_else(|| {
                ToolError::internal(format!("data source {id} has no title property"))
            })?
        }
        Parent::DataSource(_) => "title".to_string(),
    };
    for (i, p) in pages.iter().enumerate() {
        if p.title.is_some() && p.properties.contains_key(&title_key) {
            return Err(ToolError::invalid_input(
                &format!("pages[{i}].title"),
                format!(
                    "the properties already set the title property `{title_key}`; give one or the other"
                ),
            ));
        }
    }
    let mut created: Vec<Value> = Vec::new();
    for (i, page) in pages.into_iter().enumerate() {
        let mut properties = page.properties;
        if let Some(t) = &page.title {
            properties.insert(title_key.clone(), json!({ "title": plain_rich_text(t) }));
        }
        let mut blocks = chunks(page.blocks).into_iter();
        let mut body = Map::new();
        body.insert("parent".into(), parent.to_json());
        body.insert("properties".into(), Value::Object(properties));
        if let Some(first) = blocks.next() {
            body.insert("children".into(), Value::Array(first));
        }
        let fail = |mut e: ToolError, created: &[Value]| {
            if !created.is_empty() {
                let ids: Vec<&str> = created.iter().filter_map(|c| c["id"].as_str()).collect();
                e.message = format!(
                    "{} (pages[{i}] failed; pages already created: {})",
                    e.message,
                    ids.join(", ")
                );
            }
            e
        };
        let resp = match send(g, NotionRequest::post("/v1/pages", Value::Object(body))).await {
            Ok(r) => r,
            Err(e) => return Err(fail(e, &created)),
        };
        let id = id_of(&resp);
        let rest: Vec<Value> = blocks.flatten().collect();
        if !rest.is_empty()
            && let Err(e) = append_in_chunks(g, &id, rest, None).await
        {
            created.push(json!({ "id": id }));
            return Err(fail(e, &created));
        }
        created.push(json!({
            "id": id,
            "url": url_of(&resp),
            "title": object_title(&resp),
        }));
    }
    let mut text = format!("Created {} page(s):", created.len());
    for c in &created {
        text.push_str(&format!(
            "\n- [{}]({}) `{}`",
            display_title(c["title"].as_str().unwrap_or("")),
            c["url"].as_str().unwrap_or(""),
            c["id"].as_str().unwrap_or("")
        ));
    }
    Ok(ToolOutput {
        text,
        structured: json!({ "pages": created }),
    })
}

async fn update_page<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let id = required_id(args, "page_id")?;
    let title = str_arg(args, "title");
    let mut properties = args
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let in_trash = args.get("in_trash").and_then(Value::as_bool);
    if title.is_none() && args.get("properties").is_none() && in_trash.is_none() {
        return Err(ToolError::invalid_input(
            "arguments",
            "give at least one of title, properties or in_trash",
        ));
    }
    if let Some(t) = title {
        let page = send(g, NotionRequest::get(format!("/v1/pages/{id}"))).await?;
        let key = title_property_name(page.get("properties")).unwrap_or_else(|| "title".into());
        if properties.contains_key(&key) {
            return Err(ToolError::invalid_input(
                "title",
                format!(
                    "the properties already set the title property `{key}`; give one or the other"
                ),
            ));
        }
        properties.insert(key, json!({ "title": plain_rich_text(t) }));
    }
    let mut body = Map::new();
    if !properties.is_empty() {
        body.insert("properties".into(), Value::Object(properties));
    }
    if let Some(t) = in_trash {
        body.insert("in_trash".into(), json!(t));
    }
    let resp = send(
        g,
        NotionRequest::patch(format!("/v1/pages/{id}"), Value::Object(body)),
    )
    .await?;
    let trashed = resp
        .get("in_trash")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let title = object_title(&resp);
    let url = url_of(&resp);
    let text = format!(
        "Updated page [{}]({url}) `{}`{}",
        display_title(&title),
        id_of(&resp),
        if trashed { " (now in the trash)" } else { "" }
    );
    Ok(ToolOutput {
        text,
        structured: json!({ "id": id_of(&resp), "url": url, "title": title, "in_trash": trashed }),
    })
}

async fn move_pages<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let parent = Parent::parse(args.get("new_parent"), "new_parent")?;
    let mut ids = Vec::new();
    for (i, v) in args
        .get("page_ids")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let id = id_at(Some(v), &format!("page_ids[{i}]"))?.unwrap_or_default();
        ids.push(id);
    }
    let mut moved: Vec<String> = Vec::new();
    for id in &ids {
        let body = json!({ "parent": parent.to_json() });
        if let Err(mut e) = send(g, NotionRequest::post(format!("/v1/pages/{id}/move"), body)).await
        {
            e.message = format!(
                "{} (moving page {id}; pages already moved: {})",
                e.message,
                if moved.is_empty() {
                    "none".to_string()
                } else {
                    moved.join(", ")
                }
            );
            return Err(e);
        }
        moved.push(id.clone());
    }
    let target = match &parent {
        Parent::Page(p) => format!("page `{p}`"),
        Parent::DataSource(d) => format!("data source `{d}`"),
    };
    Ok(ToolOutput {
        text: format!(
            "Moved {} page(s) to {target}: {}",
            moved.len(),
            moved.join(", ")
        ),
        structured: json!({ "moved": moved }),
    })
}

// ---------------------------------------------------------------------------------------
// databases and data sources
// ---------------------------------------------------------------------------------------

async fn create_database<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let parent = required_id(args, "parent_page_id")?;
    let title = str_arg(args, "title").unwrap_or("");
    let properties = args
        .get("properties")
        .cloned()
        .unwrap_or_else(|| json!({ "Name": { "title": {} } }));
    let body = json!({
        "parent": { "type": "page_id", "page_id": parent },
        "title": plain_rich_text(title),
        "initial_data_source": { "properties": properties },
    });
    let resp = send(g, NotionRequest::post("/v1/databases", body)).await?;
    let id = id_of(&resp);
    let url = url_of(&resp);
    let sources: Vec<Value> = resp
        .get("data_sources")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| json!({ "id": id_of(s), "name": s.get("name").cloned().unwrap_or(Value::Null) })).collect())
        .unwrap_or_default();
    let ds_ids: Vec<String> = sources
        .iter()
        .map(|s| s["id"].as_str().unwrap_or("").to_string())
        .collect();
    Ok(ToolOutput {
        text: format!(
            "Created database [{}]({url}) `{id}`; data source(s): {}",
            display_title(title),
            ds_ids.join(", ")
        ),
        structured: json!({ "id": id, "url": url, "data_sources": sources }),
    })
}

async fn update_database<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let database_id = optional_id(args, "database_id")?;
    let data_source_id = optional_id(args, "data_source_id")?;
    let title = str_arg(args, "title");
    match (database_id, data_source_id) {
        (Some(_), Some(_)) | (None, None) => Err(ToolError::invalid_input(
            "arguments",
            "give exactly one of database_id (to change title / description) or \
             data_source_id (to change properties / title)",
        )),
        (Some(id), None) => {
            if args.get("properties").is_some() {
                return Err(ToolError::invalid_input(
                    "properties",
                    "a database's properties belong to its data source; pass data_source_id instead of database_id",
                ));
            }
            let mut body = Map::new();
            if let Some(t) = title {
                body.insert("title".into(), json!(plain_rich_text(t)));
            }
            if let Some(d) = str_arg(args, "description") {
                body.insert("description".into(), json!(inline_to_rich_text(d)));
            }
            if body.is_empty() {
                return Err(ToolError::invalid_input(
                    "arguments",
                    "give title and/or description to change",
                ));
            }
            let resp = send(
                g,
                NotionRequest::patch(format!("/v1/databases/{id}"), Value::Object(body)),
            )
            .await?;
            let title = object_title(&resp);
            Ok(ToolOutput {
                text: format!(
                    "Updated database {} `{}`",
                    display_title(&title),
                    id_of(&resp)
                ),
                structured: json!({ "object": "database", "id": id_of(&resp), "title": title }),
            })
        }
        (None, Some(id)) => {
            if args.get("description").is_some() {
                return Err(ToolError::invalid_input(
                    "description",
                    "a description belongs to a database; pass database_id instead of data_source_id",
                ));
            }
            let mut body = Map::new();
            if let Some(t) = title {
                body.insert("title".into(), json!(plain_rich_text(t)));
            }
            if let Some(p) = args.get("properties") {
                body.insert("properties".into(), p.clone());
            }
            if body.is_empty() {
                return Err(ToolError::invalid_input(
                    "arguments",
                    "give properties and/or title to change",
                ));
            }
            let resp = send(
                g,
                NotionRequest::patch(format!("/v1/data_sources/{id}"), Value::Object(body)),
            )
            .await?;
            let mut out = render_data_source(&resp);
            out.text = format!("Updated data source.\n\n{}", out.text);
            Ok(out)
        }
    }
}

async fn query_data_source<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let id = required_id(args, "data_source_id")?;
    let mut body = Map::new();
    for key in ["filter", "sorts"] {
        if let Some(v) = args.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    paging_body(&mut body, args);
    let resp = send(
        g,
        NotionRequest::post(format!("/v1/data_sources/{id}/query"), Value::Object(body)),
    )
    .await?;
    let mut rows = Vec::new();
    let mut text = String::new();
    for (n, r) in results(&resp).iter().enumerate() {
        let title = object_title(r);
        let mut props = Map::new();
        let mut parts = Vec::new();
        if let Some(p) = r.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                let t = property_to_text(v);
                if v.get("type").and_then(Value::as_str) != Some("title") && !t.is_empty() {
                    parts.push(format!("{k}: {}", clip(&t, MAX_VALUE_CHARS)));
                }
                props.insert(k.clone(), json!(t));
            }
        }
        text.push_str(&format!(
            "{}. [{}]({}) `{}`",
            n + 1,
            display_title(&title),
            url_of(r),
            id_of(r)
        ));
        if !parts.is_empty() {
            text.push_str(" — ");
            text.push_str(&parts.join(" · "));
        }
        text.push('\n');
        rows.push(json!({ "id": id_of(r), "url": url_of(r), "title": title, "properties": props }));
    }
    if rows.is_empty() {
        text.push_str("No rows.");
    }
    text.push_str(&more_line(&resp));
    let (has_more, next_cursor) = paging_of(&resp);
    Ok(ToolOutput {
        text: text.trim_end().to_string(),
        structured: json!({ "rows": rows, "has_more": has_more, "next_cursor": next_cursor }),
    })
}

// ---------------------------------------------------------------------------------------
// blocks, comments, users
// ---------------------------------------------------------------------------------------

async fn append_blocks<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let block_id = required_id(args, "block_id")?;
    let after = optional_id(args, "after")?;
    let md = str_arg(args, "markdown").unwrap_or("");
    let blocks = markdown::markdown_to_blocks(md).map_err(|e| markdown_error("markdown", e))?;
    if blocks.is_empty() {
        return Err(ToolError::invalid_input(
            "markdown",
            "expected some content; the Markdown is empty",
        ));
    }
    let count = markdown::count_blocks(&blocks);
    let created = append_in_chunks(g, &block_id, blocks, after).await?;
    let ids: Vec<String> = created.iter().map(id_of).collect();
    Ok(ToolOutput {
        text: format!(
            "Appended {count} block(s) to `{block_id}` ({} at the top level).",
            ids.len()
        ),
        structured: json!({ "block_id": block_id, "blocks": count, "created_ids": ids }),
    })
}

async fn get_block_children<G: NotionGateway>(
    g: &G,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    let id = required_id(args, "block_id")?;
    let req = with_paging(
        NotionRequest::get(format!("/v1/blocks/{id}/children")),
        args,
    );
    let resp = send(g, req).await?;
    let mut items = Vec::new();
    let mut text = String::new();
    for b in results(&resp) {
        let ty = b.get("type").and_then(Value::as_str).unwrap_or("");
        let has_children = b
            .get("has_children")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let md = blocks_to_markdown(std::slice::from_ref(b));
        text.push_str(&format!(
            "- `{}` {ty}{}: {}\n",
            id_of(b),
            if has_children { " (has children)" } else { "" },
            clip(&md, 500)
        ));
        items.push(
            json!({ "id": id_of(b), "type": ty, "has_children": has_children, "markdown": md }),
        );
    }
    if items.is_empty() {
        text.push_str("No child blocks.");
    }
    text.push_str(&more_line(&resp));
    let (has_more, next_cursor) = paging_of(&resp);
    Ok(ToolOutput {
        text: text.trim_end().to_string(),
        structured: json!({ "blocks": items, "has_more": has_more, "next_cursor": next_cursor }),
    })
}

async fn create_comment<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let page_id = optional_id(args, "page_id")?;
    let discussion_id = optional_id(args, "discussion_id")?;
    let rich = inline_to_rich_text(str_arg(args, "text").unwrap_or(""));
    if rich.len() > markdown::MAX_RICH_TEXT_ITEMS {
        return Err(ToolError::invalid_input(
            "text",
            "the comment makes more than 100 rich text pieces; shorten it or use less formatting",
        ));
    }
    let mut body = Map::new();
    match (page_id, discussion_id) {
        (Some(p), None) => {
            body.insert("parent".into(), json!({ "page_id": p }));
        }
        (None, Some(d)) => {
            body.insert("discussion_id".into(), json!(d));
        }
        _ => {
            return Err(ToolError::invalid_input(
                "arguments",
                "give exactly one of page_id (new discussion) or discussion_id (reply)",
            ));
        }
    }
    body.insert("rich_text".into(), Value::Array(rich));
    let resp = send(g, NotionRequest::post("/v1/comments", Value::Object(body))).await?;
    let discussion = resp.get("discussion_id").cloned().unwrap_or(Value::Null);
    Ok(ToolOutput {
        text: format!(
            "Comment `{}` added (discussion `{}`).",
            id_of(&resp),
            discussion.as_str().unwrap_or("")
        ),
        structured: json!({ "id": id_of(&resp), "discussion_id": discussion }),
    })
}

async fn get_comments<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let id = required_id(args, "block_id")?;
    let req = with_paging(
        NotionRequest::get("/v1/comments").with_query("block_id", id),
        args,
    );
    let resp = send(g, req).await?;
    let mut items = Vec::new();
    let mut text = String::new();
    for c in results(&resp) {
        let author = c
            .pointer("/created_by/name")
            .or_else(|| c.pointer("/created_by/id"))
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let when = c.get("created_time").and_then(Value::as_str).unwrap_or("");
        let body = markdown::rich_text_to_markdown(c.get("rich_text").unwrap_or(&Value::Null));
        let discussion = c.get("discussion_id").and_then(Value::as_str).unwrap_or("");
        text.push_str(&format!(
            "- **{author}** {when} (discussion `{discussion}`): {}\n",
            clip(&body, 2000)
        ));
        items.push(json!({
            "id": id_of(c), "discussion_id": discussion, "author": author,
            "created_time": when, "text": body,
        }));
    }
    if items.is_empty() {
        text.push_str("No comments.");
    }
    text.push_str(&more_line(&resp));
    let (has_more, next_cursor) = paging_of(&resp);
    Ok(ToolOutput {
        text: text.trim_end().to_string(),
        structured: json!({ "comments": items, "has_more": has_more, "next_cursor": next_cursor }),
    })
}

fn user_summary(u: &Value) -> Value {
    let ty = u.get("type").and_then(Value::as_str).unwrap_or("");
    let mut s = json!({
        "id": id_of(u),
        "type": ty,
        "name": u.get("name").cloned().unwrap_or(Value::Null),
    });
    if let Some(email) = u.pointer("/person/email") {
        s["email"] = email.clone();
    }
    if let Some(ws) = u.pointer("/bot/workspace_name") {
        s["workspace_name"] = ws.clone();
    }
    s
}

fn user_line(s: &Value) -> String {
    let mut line = format!(
        "{} ({}) `{}`",
        s["name"].as_str().unwrap_or("unnamed"),
        s["type"].as_str().unwrap_or(""),
        s["id"].as_str().unwrap_or("")
    );
    if let Some(e) = s.get("email").and_then(Value::as_str) {
        line.push_str(&format!(" <{e}>"));
    }
    if let Some(w) = s.get("workspace_name").and_then(Value::as_str) {
        line.push_str(&format!(" · workspace {w}"));
    }
    line
}

async fn get_users<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let resp = send(g, with_paging(NotionRequest::get("/v1/users"), args)).await?;
    let users: Vec<Value> = results(&resp).iter().map(user_summary).collect();
    let mut text: String = users
        .iter()
        .map(|u| format!("- {}\n", user_line(u)))
        .collect();
    if users.is_empty() {
        text.push_str("No users.");
    }
    text.push_str(&more_line(&resp));
    let (has_more, next_cursor) = paging_of(&resp);
    Ok(ToolOutput {
        text: text.trim_end().to_string(),
        structured: json!({ "users": users, "has_more": has_more, "next_cursor": next_cursor }),
    })
}

async fn get_user<G: NotionGateway>(g: &G, args: &Value) -> Result<ToolOutput, ToolError> {
    let id = required_id(args, "user_id")?;
    let resp = send(g, NotionRequest::get(format!("/v1/users/{id}"))).await?;
    let s = user_summary(&resp);
    Ok(ToolOutput {
        text: user_line(&s),
        structured: s,
    })
}

async fn get_self<G: NotionGateway>(g: &G) -> Result<ToolOutput, ToolError> {
    let resp = send(g, NotionRequest::get("/v1/users/me")).await?;
    let s = user_summary(&resp);
    Ok(ToolOutput {
        text: user_line(&s),
        structured: s,
    })
}
