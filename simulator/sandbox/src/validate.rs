//! Input checks with Notion's limits, and normalisation of rich text and block payloads.

use rand::RngCore;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;

/// Largest request body Notion accepts (500 KB).
pub const MAX_PAYLOAD_BYTES: usize = 500 * 1000;
/// Most blocks in one request, counting nested children.
pub const MAX_BLOCKS_PER_REQUEST: usize = 1000;
/// Most elements in any array of a request (children, rich text, multi-select, people...).
pub const MAX_ARRAY_ELEMENTS: usize = 100;
/// Longest `text.content` (and `text.link.url`) of one rich text object.
pub const MAX_RICH_TEXT_CHARS: usize = 2000;
/// Largest `page_size`; also the default.
pub const MAX_PAGE_SIZE: usize = 100;
/// Nesting of `children` inside one request: a block, its children and grandchildren.
pub const MAX_NESTING_LEVELS: usize = 3;
/// Deepest JSON the sandbox walks (serde_json stops at 128 anyway).
const MAX_JSON_DEPTH: usize = 64;

/// A fresh version-4 UUID from the seeded RNG, in dashed form.
pub(crate) fn new_uuid(rng: &mut impl RngCore) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Accepts a UUID with or without dashes; answers the lower-case dashed form.
pub(crate) fn normalize_id(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let hex: String = if raw.len() == 36 {
        let bytes = raw.as_bytes();
        if [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
            return None;
        }
        raw.chars().filter(|c| *c != '-').collect()
    } else if raw.len() == 32 {
        raw.to_string()
    } else {
        return None;
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A path id, or Notion's "path failed validation" error.
pub(crate) fn path_id(raw: &str, name: &str) -> Result<String, ApiError> {
    normalize_id(raw).ok_or_else(|| {
        ApiError::validation(format!(
            "path failed validation: path.{name} should be a valid uuid, instead was `{}`.",
            truncate(raw, 64)
        ))
    })
}

/// An id inside a body, or a validation error naming where it was.
pub(crate) fn body_id(value: Option<&Value>, at: &str) -> Result<String, ApiError> {
    let raw = value.and_then(Value::as_str).ok_or_else(|| {
        ApiError::validation(format!(
            "body failed validation: {at} should be a string uuid."
        ))
    })?;
    normalize_id(raw).ok_or_else(|| {
        ApiError::validation(format!(
            "body failed validation: {at} should be a valid uuid, instead was `{}`.",
            truncate(raw, 64)
        ))
    })
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// `page_size` from a query string or body: 1..=100, default 100.
pub(crate) fn page_size(value: Option<&Value>) -> Result<usize, ApiError> {
    let n = match value {
        None | Some(Value::Null) => return Ok(MAX_PAGE_SIZE),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (1..=MAX_PAGE_SIZE as u64).contains(&n) => Ok(n as usize),
        Some(n) if n > MAX_PAGE_SIZE as u64 => Err(ApiError::validation(format!(
            "page_size should be ≤ `{MAX_PAGE_SIZE}`, instead was `{n}`."
        ))),
        _ => Err(ApiError::validation(format!(
            "page_size should be an integer between 1 and {MAX_PAGE_SIZE}, instead was `{}`.",
            value
                .map(|v| truncate(&v.to_string(), 64))
                .unwrap_or_default()
        ))),
    }
}

/// `start_cursor`, if any, as a dashed id.
pub(crate) fn start_cursor(value: Option<&Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => normalize_id(s).map(Some).ok_or_else(|| {
            ApiError::validation(format!(
                "start_cursor provided is invalid: {}",
                truncate(s, 64)
            ))
        }),
        Some(other) => Err(ApiError::validation(format!(
            "start_cursor provided is invalid: {}",
            truncate(&other.to_string(), 64)
        ))),
    }
}

/// Walks a request body for Notion's generic limits: array lengths and rich text sizes.
pub(crate) fn check_limits(value: &Value) -> Result<(), ApiError> {
    walk(value, "body", 0)
}

fn walk(value: &Value, path: &str, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_JSON_DEPTH {
        return Err(ApiError::validation(format!(
            "body failed validation: {path} is nested more than {MAX_JSON_DEPTH} levels deep."
        )));
    }
    match value {
        Value::Array(items) => {
            if items.len() > MAX_ARRAY_ELEMENTS {
                return Err(ApiError::validation(format!(
                    "body failed validation: {path}.length should be ≤ `{MAX_ARRAY_ELEMENTS}`, instead was `{}`.",
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
        Value::Object(map) => {
            if let Some(Value::Object(text)) = map.get("text") {
                if let Some(Value::String(content)) = text.get("content") {
                    let n = content.chars().count();
                    if n > MAX_RICH_TEXT_CHARS {
                        return Err(ApiError::validation(format!(
                            "body failed validation: {path}.text.content.length should be ≤ `{MAX_RICH_TEXT_CHARS}`, instead was `{n}`."
                        )));
                    }
                }
                if let Some(Value::Object(link)) = text.get("link")
                    && let Some(Value::String(url)) = link.get("url")
                {
                    let n = url.chars().count();
                    if n > MAX_RICH_TEXT_CHARS {
                        return Err(ApiError::validation(format!(
                            "body failed validation: {path}.text.link.url.length should be ≤ `{MAX_RICH_TEXT_CHARS}`, instead was `{n}`."
                        )));
                    }
                }
            }
            for (key, item) in map {
                walk(item, &format!("{path}.{key}"), depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn default_annotations() -> Value {
    json!({"bold": false, "italic": false, "strikethrough": false, "underline": false, "code": false, "color": "default"})
}

/// A rich text array in Notion's full response shape, from plain text.
pub(crate) fn rich_text(content: &str) -> Value {
    json!([{
        "type": "text",
        "text": {"content": content, "link": null},
        "annotations": default_annotations(),
        "plain_text": content,
        "href": null,
    }])
}

/// The concatenated `plain_text` of a normalised rich text array.
pub(crate) fn plain_text(rich: &Value) -> String {
    rich.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("plain_text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Normalises a request's rich text array into the response shape.
pub(crate) fn normalize_rich_text(value: &Value, path: &str) -> Result<Value, ApiError> {
    let items = value.as_array().ok_or_else(|| {
        ApiError::validation(format!(
            "body failed validation: {path} should be an array."
        ))
    })?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let obj = item.as_object().ok_or_else(|| {
            ApiError::validation(format!("body failed validation: {at} should be an object."))
        })?;
        let kind = match obj.get("type").and_then(Value::as_str) {
            Some(k) => k,
            None if obj.contains_key("text") => "text",
            None if obj.contains_key("equation") => "equation",
            None if obj.contains_key("mention") => "mention",
            None => {
                return Err(ApiError::validation(format!(
                    "body failed validation: {at} should define one of `text`, `mention`, `equation`."
                )));
            }
        };
        let mut annotations = default_annotations();
        if let Some(given) = obj.get("annotations") {
            let given = given.as_object().ok_or_else(|| {
                ApiError::validation(format!(
                    "body failed validation: {at}.annotations should be an object."
                ))
            })?;
            for (key, v) in given {
                match (key.as_str(), v) {
                    (
                        "bold" | "italic" | "strikethrough" | "underline" | "code",
                        Value::Bool(_),
                    )
                    | ("color", Value::String(_)) => {
                        annotations[key.as_str()] = v.clone();
                    }
                    _ => {
                        return Err(ApiError::validation(format!(
                            "body failed validation: {at}.annotations.{key} is not a valid annotation."
                        )));
                    }
                }
            }
        }
        let normalized = match kind {
            "text" => {
                let text = obj.get("text").and_then(Value::as_object).ok_or_else(|| {
                    ApiError::validation(format!(
                        "body failed validation: {at}.text should be an object."
                    ))
                })?;
                let content = text.get("content").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::validation(format!(
                        "body failed validation: {at}.text.content should be a string."
                    ))
                })?;
                let link = match text.get("link") {
                    None | Some(Value::Null) => Value::Null,
                    Some(Value::Object(l)) => match l.get("url").and_then(Value::as_str) {
                        Some(url) => json!({"url": url}),
                        None => {
                            return Err(ApiError::validation(format!(
                                "body failed validation: {at}.text.link.url should be a string."
                            )));
                        }
                    },
                    Some(_) => {
                        return Err(ApiError::validation(format!(
                            "body failed validation: {at}.text.link should be an object or null."
                        )));
                    }
                };
                let href = link.get("url").cloned().unwrap_or(Value::Null);
                json!({"type": "text", "text": {"content": content, "link": link}, "annotations": annotations, "plain_text": content, "href": href})
            }
            "equation" => {
                let expr = obj
                    .get("equation")
                    .and_then(|e| e.get("expression"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "body failed validation: {at}.equation.expression should be a string."
                        ))
                    })?;
                if expr.chars().count() > 1000 {
                    return Err(ApiError::validation(format!(
                        "body failed validation: {at}.equation.expression.length should be ≤ `1000`."
                    )));
                }
                json!({"type": "equation", "equation": {"expression": expr}, "annotations": annotations, "plain_text": expr, "href": null})
            }
            "mention" => {
                let mention = obj
                    .get("mention")
                    .filter(|m| m.get("type").and_then(Value::as_str).is_some())
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "body failed validation: {at}.mention should be an object with a `type`."
                        ))
                    })?;
                let plain = obj.get("plain_text").and_then(Value::as_str).unwrap_or("");
                json!({"type": "mention", "mention": mention, "annotations": annotations, "plain_text": plain, "href": null})
            }
            other => {
                return Err(ApiError::validation(format!(
                    "body failed validation: {at}.type should be `text`, `mention` or `equation`, instead was `{}`.",
                    truncate(other, 64)
                )));
            }
        };
        out.push(normalized);
    }
    Ok(Value::Array(out))
}

/// Block types the sandbox can create, and whether each may hold children.
const BLOCK_TYPES: &[(&str, bool)] = &[
    ("paragraph", true),
    ("heading_1", true),
    ("heading_2", true),
    ("heading_3", true),
    ("bulleted_list_item", true),
    ("numbered_list_item", true),
    ("to_do", true),
    ("toggle", true),
    ("quote", true),
    ("callout", true),
    ("code", false),
    ("divider", false),
    ("bookmark", false),
    ("equation", false),
    ("table_of_contents", false),
    ("breadcrumb", false),
];

pub(crate) fn block_supports_children(kind: &str) -> bool {
    BLOCK_TYPES.iter().any(|(k, c)| *k == kind && *c) || kind == "child_page"
}

/// A validated block from a request, not yet stored.
#[derive(Debug, Clone)]
pub(crate) struct NormBlock {
    pub kind: String,
    pub content: Value,
    pub children: Vec<NormBlock>,
}

/// Normalises a `children` array; `count` accumulates blocks across the whole request.
pub(crate) fn normalize_blocks(
    value: &Value,
    path: &str,
    level: usize,
    count: &mut usize,
) -> Result<Vec<NormBlock>, ApiError> {
    let items = value.as_array().ok_or_else(|| {
        ApiError::validation(format!(
            "body failed validation: {path} should be an array."
        ))
    })?;
    if level > MAX_NESTING_LEVELS {
        return Err(ApiError::validation(format!(
            "body failed validation: {path} nests children more than {} levels deep; append deeper children in a separate request.",
            MAX_NESTING_LEVELS
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        *count += 1;
        if *count > MAX_BLOCKS_PER_REQUEST {
            return Err(ApiError::validation(format!(
                "body failed validation: a request may contain at most {MAX_BLOCKS_PER_REQUEST} blocks, counting nested children."
            )));
        }
        out.push(normalize_block(
            item,
            &format!("{path}[{i}]"),
            level,
            count,
        )?);
    }
    Ok(out)
}

fn normalize_block(
    value: &Value,
    at: &str,
    level: usize,
    count: &mut usize,
) -> Result<NormBlock, ApiError> {
    let obj = value.as_object().ok_or_else(|| {
        ApiError::validation(format!("body failed validation: {at} should be an object."))
    })?;
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some(k) => k.to_string(),
        None => obj
            .keys()
            .find(|k| {
                BLOCK_TYPES.iter().any(|(t, _)| t == k)
                    || *k == "child_page"
                    || *k == "child_database"
            })
            .cloned()
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "body failed validation: {at} should define a block type such as `paragraph`."
                ))
            })?,
    };
    if kind == "child_page" || kind == "child_database" {
        return Err(ApiError::validation(format!(
            "body failed validation: {at} is a `{kind}`; create pages with POST /v1/pages and databases with POST /v1/databases."
        )));
    }
    let Some((_, can_nest)) = BLOCK_TYPES.iter().find(|(t, _)| *t == kind) else {
        return Err(ApiError::validation(format!(
            "body failed validation: {at}.type `{}` is not a block type the sandbox supports.",
            truncate(&kind, 64)
        )));
    };
    let empty = Map::new();
    let body = match obj.get(&kind) {
        Some(Value::Object(b)) => b,
        None if matches!(
            kind.as_str(),
            "divider" | "breadcrumb" | "table_of_contents"
        ) =>
        {
            &empty
        }
        _ => {
            return Err(ApiError::validation(format!(
                "body failed validation: {at}.{kind} should be an object."
            )));
        }
    };
    let inner = format!("{at}.{kind}");
    let mut content = Map::new();
    let color = match body.get("color") {
        None => "default".to_string(),
        Some(Value::String(c)) => c.clone(),
        Some(_) => {
            return Err(ApiError::validation(format!(
                "body failed validation: {inner}.color should be a string."
            )));
        }
    };
    match kind.as_str() {
        "paragraph" | "heading_1" | "heading_2" | "heading_3" | "bulleted_list_item"
        | "numbered_list_item" | "to_do" | "toggle" | "quote" | "callout" | "code" => {
            let rt = body.get("rich_text").ok_or_else(|| {
                ApiError::validation(format!(
                    "body failed validation: {inner}.rich_text should be defined, instead was `undefined`."
                ))
            })?;
            content.insert(
                "rich_text".into(),
                normalize_rich_text(rt, &format!("{inner}.rich_text"))?,
            );
            if kind != "code" {
                content.insert("color".into(), Value::String(color));
            }
        }
        "table_of_contents" => {
            content.insert("color".into(), Value::String(color));
        }
        _ => {}
    }
    match kind.as_str() {
        "to_do" => {
            let checked = match body.get("checked") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::validation(format!(
                        "body failed validation: {inner}.checked should be a boolean."
                    )));
                }
            };
            content.insert("checked".into(), Value::Bool(checked));
        }
        "heading_1" | "heading_2" | "heading_3" => {
            let t = body
                .get("is_toggleable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            content.insert("is_toggleable".into(), Value::Bool(t));
        }
        "code" => {
            let lang = body
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or("plain text");
            content.insert("language".into(), Value::String(lang.into()));
            let caption = match body.get("caption") {
                Some(c) => normalize_rich_text(c, &format!("{inner}.caption"))?,
                None => json!([]),
            };
            content.insert("caption".into(), caption);
        }
        "callout" => {
            let icon = body
                .get("icon")
                .cloned()
                .unwrap_or_else(|| json!({"type": "emoji", "emoji": "💡"}));
            content.insert("icon".into(), icon);
        }
        "bookmark" => {
            let url = body.get("url").and_then(Value::as_str).ok_or_else(|| {
                ApiError::validation(format!(
                    "body failed validation: {inner}.url should be a string."
                ))
            })?;
            content.insert("url".into(), Value::String(url.into()));
            let caption = match body.get("caption") {
                Some(c) => normalize_rich_text(c, &format!("{inner}.caption"))?,
                None => json!([]),
            };
            content.insert("caption".into(), caption);
        }
        "equation" => {
            let expr = body
                .get("expression")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "body failed validation: {inner}.expression should be a string."
                    ))
                })?;
            content.insert("expression".into(), Value::String(expr.into()));
        }
        _ => {}
    }
    let children = match body.get("children").or_else(|| obj.get("children")) {
        None => Vec::new(),
        Some(c) => {
            if !can_nest {
                return Err(ApiError::validation(format!(
                    "body failed validation: {inner} (`{kind}`) does not support children."
                )));
            }
            normalize_blocks(c, &format!("{inner}.children"), level + 1, count)?
        }
    };
    Ok(NormBlock {
        kind,
        content: Value::Object(content),
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_and_without_dashes() {
        let dashed = "3f1b7c2a-1d2e-4f60-8a9b-0c1d2e3f4a5b";
        assert_eq!(normalize_id(dashed).as_deref(), Some(dashed));
        assert_eq!(
            normalize_id("3F1B7C2A1D2E4F608A9B0C1D2E3F4A5B").as_deref(),
            Some(dashed)
        );
        assert_eq!(normalize_id("not-an-id"), None);
        assert_eq!(normalize_id("3f1b7c2a-1d2e-4f60-8a9b-0c1d2e3f4a5g"), None);
    }

    #[test]
    fn limits_catch_long_text_and_arrays() {
        let long = "x".repeat(2001);
        let body =
            json!({"children": [{"paragraph": {"rich_text": [{"text": {"content": long}}]}}]});
        let err = check_limits(&body).unwrap_err();
        assert!(
            err.message.contains("text.content.length"),
            "{}",
            err.message
        );
        let many: Vec<Value> = (0..101).map(|_| json!({"divider": {}})).collect();
        assert!(check_limits(&json!({"children": many})).is_err());
    }

    #[test]
    fn blocks_normalise_and_count() {
        let mut count = 0;
        let blocks = normalize_blocks(
            &json!([{"toggle": {"rich_text": [{"text": {"content": "t"}}], "children": [{"to_do": {"rich_text": []}}]}}]),
            "body.children",
            1,
            &mut count,
        )
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(blocks[0].children[0].content["checked"], json!(false));
        let mut count = 0;
        assert!(
            normalize_blocks(&json!([{"divider": {"children": []}}]), "c", 1, &mut count).is_err()
        );
    }
}
