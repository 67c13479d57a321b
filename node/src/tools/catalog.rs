//! The tool catalogue: names, descriptions, JSON input schemas and behaviour annotations.

use serde_json::{Value, json};

use super::ToolSpec;
use super::markdown::MAX_MARKDOWN_BYTES;

/// Most pages, or page ids, one create / move call takes.
pub const MAX_PAGES_PER_CALL: u64 = 20;
/// The longest comment text accepted.
pub const MAX_COMMENT_CHARS: u64 = 20_000;
/// The longest title accepted (Notion's rich text limit, times a few items).
pub const MAX_TITLE_CHARS: u64 = 2_000;
/// The longest search query accepted.
pub const MAX_QUERY_CHARS: u64 = 1_000;
/// The longest pagination cursor accepted.
pub const MAX_CURSOR_CHARS: u64 = 512;

fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

fn id(description: &str) -> Value {
    json!({
        "type": "string",
        "format": "notion-id",
        "maxLength": 36,
        "description": format!("{description} (32 hexadecimal digits, with or without dashes)"),
    })
}

fn page_size() -> Value {
    json!({
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "How many results to return, 1 to 100 (Notion's default is 100)",
    })
}

fn cursor() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CURSOR_CHARS,
        "description": "The next_cursor of a previous call, to read the next page of results",
    })
}

fn parent() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
        "description": "Where the pages go: exactly one of page_id or data_source_id",
        "properties": {
            "page_id": id("A parent page"),
            "data_source_id": id("A parent data source (a database's table)"),
        },
    })
}

fn title(description: &str) -> Value {
    json!({ "type": "string", "maxLength": MAX_TITLE_CHARS, "description": description })
}

fn raw_object(description: &str) -> Value {
    json!({ "type": "object", "description": description })
}

fn markdown(description: &str) -> Value {
    json!({
        "type": "string",
        "maxLength": MAX_MARKDOWN_BYTES,
        "description": format!(
            "{description}. Markdown: # headings, paragraphs, - / 1. / - [ ] lists (nested by \
             indentation), > quotes, ``` fenced code, --- dividers, **bold**, *italic*, \
             ~~strike~~, `code`, [links](https://...). At most {MAX_MARKDOWN_BYTES} bytes"
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn spec(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    input_schema: Value,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        input_schema,
        read_only,
        destructive,
        idempotent,
    }
}

/// Every tool, in a stable order.
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        spec(
            "notion-search",
            "Search Notion",
            "Search the pages and data sources shared with the integration by title. Returns \
             titles, ids, URLs and types; pass next_cursor back as start_cursor for more.",
            object(
                &[],
                json!({
                    "query": { "type": "string", "maxLength": MAX_QUERY_CHARS,
                               "description": "Text to look for in titles; empty or absent lists everything" },
                    "filter": { "type": "string", "enum": ["page", "data_source"],
                                "description": "Only return this kind of object" },
                    "page_size": page_size(),
                    "start_cursor": cursor(),
                }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-fetch",
            "Fetch a Notion page, database or data source",
            "Read a page as Markdown (title, properties, and its content up to 3 levels deep \
             and 1000 blocks), a database (title and its data sources) or a data source (its \
             property schema). Accepts an id or a notion.so / notion.site URL.",
            object(
                &["id"],
                json!({
                    "id": { "type": "string", "format": "notion-id-or-url", "maxLength": 2048,
                            "description": "A Notion id (32 hexadecimal digits, with or without dashes) or a notion.so / notion.site URL that contains one" },
                }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-create-pages",
            "Create Notion pages",
            "Create 1 to 20 pages under one parent page or data source, each with a title, \
             optional raw Notion property values and optional Markdown content. Returns the \
             new pages' ids and URLs.",
            object(
                &["parent", "pages"],
                json!({
                    "parent": parent(),
                    "pages": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_PAGES_PER_CALL,
                        "description": "The pages to create",
                        "items": object(&[], json!({
                            "title": title("The page's title"),
                            "properties": raw_object("Raw Notion property values keyed by property name, for pages in a data source (e.g. {\"Status\": {\"status\": {\"name\": \"Done\"}}})"),
                            "content": markdown("The page's content"),
                        })),
                    },
                }),
            ),
            false,
            false,
            false,
        ),
        spec(
            "notion-update-page",
            "Update a Notion page",
            "Change a page's title or property values, or move it to / restore it from the \
             trash (in_trash). Give at least one of title, properties, in_trash.",
            object(
                &["page_id"],
                json!({
                    "page_id": id("The page to update"),
                    "title": title("The new title"),
                    "properties": raw_object("Raw Notion property values to set, keyed by property name"),
                    "in_trash": { "type": "boolean", "description": "true moves the page to the trash, false restores it" },
                }),
            ),
            false,
            true,
            true,
        ),
        spec(
            "notion-move-pages",
            "Move Notion pages",
            "Move 1 to 20 pages under a new parent page or data source.",
            object(
                &["page_ids", "new_parent"],
                json!({
                    "page_ids": {
                        "type": "array", "minItems": 1, "maxItems": MAX_PAGES_PER_CALL,
                        "description": "The pages to move",
                        "items": id("A page to move"),
                    },
                    "new_parent": parent(),
                }),
            ),
            false,
            false,
            true,
        ),
        spec(
            "notion-create-database",
            "Create a Notion database",
            "Create a database (with its first data source) inside a page. properties is a \
             Notion property schema, e.g. {\"Name\": {\"title\": {}}, \"Done\": {\"checkbox\": \
             {}}}; without it the database gets a single title property \"Name\".",
            object(
                &["parent_page_id", "title"],
                json!({
                    "parent_page_id": id("The page the database goes in"),
                    "title": title("The database's title"),
                    "properties": raw_object("Notion property schema keyed by property name; exactly one property of type title"),
                }),
            ),
            false,
            false,
            false,
        ),
        spec(
            "notion-update-database",
            "Update a Notion database or data source",
            "Either rename / describe a database (database_id with title and/or description), \
             or change a data source's schema (data_source_id with properties and/or title; a \
             property set to null is removed).",
            object(
                &[],
                json!({
                    "database_id": id("The database to update"),
                    "data_source_id": id("The data source whose schema to update"),
                    "title": title("The new title"),
                    "description": { "type": "string", "maxLength": MAX_TITLE_CHARS,
                                     "description": "The database's new description (with database_id)" },
                    "properties": raw_object("Property schema changes keyed by property name (with data_source_id)"),
                }),
            ),
            false,
            true,
            true,
        ),
        spec(
            "notion-query-data-source",
            "Query a Notion data source",
            "List the rows (pages) of a data source, optionally filtered and sorted with \
             Notion's filter and sort objects. Returns each row's title and property values, \
             and next_cursor / has_more for paging.",
            object(
                &["data_source_id"],
                json!({
                    "data_source_id": id("The data source to query"),
                    "filter": raw_object("A Notion filter object, e.g. {\"property\": \"Done\", \"checkbox\": {\"equals\": true}}"),
                    "sorts": { "type": "array", "maxItems": 100, "items": { "type": "object" },
                               "description": "Notion sort objects, e.g. [{\"property\": \"Due\", \"direction\": \"ascending\"}]" },
                    "page_size": page_size(),
                    "start_cursor": cursor(),
                }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-append-blocks",
            "Append content to a Notion page or block",
            "Convert Markdown to Notion blocks and append them to a page or block, at the end \
             or after a given child block.",
            object(
                &["block_id", "markdown"],
                json!({
                    "block_id": id("The page or block to append to"),
                    "markdown": markdown("The content to append"),
                    "after": id("Insert after this child block instead of at the end"),
                }),
            ),
            false,
            false,
            false,
        ),
        spec(
            "notion-get-block-children",
            "List a Notion block's children",
            "List the direct children of a page or block, with their ids, types and text as \
             Markdown. Use it to read deeper than notion-fetch goes.",
            object(
                &["block_id"],
                json!({
                    "block_id": id("The page or block whose children to list"),
                    "page_size": page_size(),
                    "start_cursor": cursor(),
                }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-create-comment",
            "Comment on a Notion page",
            "Add a comment to a page (page_id, starts a new discussion) or reply in an existing \
             discussion (discussion_id). Give exactly one of them. Inline Markdown is kept.",
            object(
                &["text"],
                json!({
                    "page_id": id("The page to comment on"),
                    "discussion_id": id("The discussion to reply in"),
                    "text": { "type": "string", "minLength": 1, "maxLength": MAX_COMMENT_CHARS,
                              "description": "The comment's text" },
                }),
            ),
            false,
            false,
            false,
        ),
        spec(
            "notion-get-comments",
            "List comments",
            "List the open comments on a page or block.",
            object(
                &["block_id"],
                json!({
                    "block_id": id("The page or block whose comments to list"),
                    "page_size": page_size(),
                    "start_cursor": cursor(),
                }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-get-users",
            "List workspace users",
            "List the people and bots in the Notion workspace.",
            object(
                &[],
                json!({ "page_size": page_size(), "start_cursor": cursor() }),
            ),
            true,
            false,
            true,
        ),
        spec(
            "notion-get-user",
            "Get a workspace user",
            "Read one user (person or bot) by id.",
            object(&["user_id"], json!({ "user_id": id("The user") })),
            true,
            false,
            true,
        ),
        spec(
            "notion-get-self",
            "Get the integration's bot user",
            "Read the bot user of the Notion integration Quire calls through, and its workspace.",
            object(&[], json!({})),
            true,
            false,
            true,
        ),
    ]
}
