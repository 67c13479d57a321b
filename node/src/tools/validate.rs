//! Strict validation of tool arguments against the tool's own input schema, so that the
//! schema an agent reads and the checks it meets are one and the same.
//!
//! Supports the JSON Schema subset the catalogue uses: `type` (object, string, integer,
//! number, boolean, array), `properties`, `required`, `additionalProperties: false`,
//! `enum`, `minimum` / `maximum`, `minLength` / `maxLength`, `minItems` / `maxItems`,
//! `items`, `minProperties` / `maxProperties`, and two formats of its own: `notion-id`
//! (32 hex digits, dashed or not) and `notion-id-or-url` (also a notion.so / notion.site
//! URL containing one). Objects without `properties` (raw Notion
//! filters, property values) are only checked to be objects.

use serde_json::Value;

use super::error::ToolError;
use super::ids::{parse_id, parse_id_or_url};

/// Shows at most 80 characters of a bad value in an error.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Validates `value` against `schema`; the error names the argument's path.
pub fn validate(schema: &Value, value: &Value) -> Result<(), ToolError> {
    check(schema, value, "")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(ty: &str) -> &'static str {
    match ty {
        "object" => "an object",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "an array",
        _ => "a value",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        _ => true,
    }
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), ToolError> {
    if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !type_matches(ty, value)
    {
        return Err(ToolError::invalid_input(
            path,
            format!("expected {}, got {}", describe(ty), kind(value)),
        ));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(ToolError::invalid_input(
            path,
            format!(
                "expected one of {}, got {}",
                list.join(", "),
                clip(&value.to_string())
            ),
        ));
    }
    match value {
        Value::Object(map) => {
            if let Some(n) = schema.get("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at least {n} field(s){}", field_list(schema)),
                ));
            }
            if let Some(n) = schema.get("maxProperties").and_then(Value::as_u64)
                && (map.len() as u64) > n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at most {n} field(s){}", field_list(schema)),
                ));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        let what = props
                            .and_then(|p| p.get(name))
                            .and_then(|s| s.get("description"))
                            .and_then(Value::as_str)
                            .unwrap_or("a value");
                        return Err(ToolError::invalid_input(
                            &join(path, name),
                            format!("this argument is required: {what}"),
                        ));
                    }
                }
            }
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (key, v) in map {
                match props.and_then(|p| p.get(key)) {
                    Some(sub) => check(sub, v, &join(path, key))?,
                    None if closed => {
                        return Err(ToolError::invalid_input(
                            &join(path, key),
                            format!("unknown argument{}", field_list(schema)),
                        ));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(n) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at least {n} item(s), got {}", items.len()),
                ));
            }
            if let Some(n) = schema.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at most {n} item(s), got {}", items.len()),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::String(s) => {
            match schema.get("format").and_then(Value::as_str) {
                Some("notion-id") if parse_id(s).is_none() => {
                    return Err(ToolError::invalid_input(
                        path,
                        format!(
                            "expected a Notion id (32 hexadecimal digits, with or without \
                             dashes), got {:?}",
                            clip(s)
                        ),
                    ));
                }
                Some("notion-id-or-url") if parse_id_or_url(s).is_none() => {
                    return Err(ToolError::invalid_input(
                        path,
                        format!(
                            "expected a Notion id (32 hexadecimal digits, with or without \
                             dashes) or a notion.so / notion.site URL containing one, got {:?}",
                            clip(s)
                        ),
                    ));
                }
                _ => {}
            }
            let len = s.chars().count() as u64;
            if let Some(n) = schema.get("minLength").and_then(Value::as_u64)
                && len < n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at least {n} character(s)"),
                ));
            }
            if let Some(n) = schema.get("maxLength").and_then(Value::as_u64)
                && len > n
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected at most {n} characters, got {len}"),
                ));
            }
        }
        Value::Number(n) => {
            if let (Some(min), Some(x)) =
                (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
                && x < min
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected a value of at least {min}, got {n}"),
                ));
            }
            if let (Some(max), Some(x)) =
                (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
                && x > max
            {
                return Err(ToolError::invalid_input(
                    path,
                    format!("expected a value of at most {max}, got {n}"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn field_list(schema: &Value) -> String {
    match schema.get("properties").and_then(Value::as_object) {
        Some(p) if !p.is_empty() => {
            let names: Vec<&str> = p.keys().map(String::as_str).collect();
            format!("; expected fields: {}", names.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "pages"],
            "properties": {
                "id": {"type": "string", "description": "the page id", "minLength": 1, "maxLength": 5},
                "size": {"type": "integer", "minimum": 1, "maximum": 100},
                "kind": {"type": "string", "enum": ["page", "data_source"]},
                "flag": {"type": "boolean"},
                "raw": {"type": "object"},
                "pid": {"type": "string", "format": "notion-id"},
                "url": {"type": "string", "format": "notion-id-or-url"},
                "pages": {
                    "type": "array", "minItems": 1, "maxItems": 2,
                    "items": {
                        "type": "object", "additionalProperties": false,
                        "required": ["title"],
                        "properties": {"title": {"type": "string"}}
                    }
                },
                "parent": {
                    "type": "object", "additionalProperties": false,
                    "minProperties": 1, "maxProperties": 1,
                    "properties": {"page_id": {"type": "string"}, "data_source_id": {"type": "string"}}
                }
            }
        })
    }

    fn err(v: Value) -> String {
        let e = validate(&schema(), &v).expect_err("should be rejected");
        assert_eq!(e.code, "invalid_input");
        e.message
    }

    #[test]
    fn accepts_valid_input() {
        validate(
            &schema(),
            &json!({"id": "abc", "size": 100, "kind": "page", "flag": true,
                    "raw": {"anything": [1, 2]}, "pages": [{"title": "x"}],
                    "pid": "11111111-1111-4111-8111-111111111111",
                    "url": "https://www.notion.so/Page-11111111111141118111111111111111",
                    "parent": {"page_id": "p"}}),
        )
        .unwrap();
    }

    #[test]
    fn names_the_argument_and_expectation() {
        assert!(
            err(json!({"pages": [{"title": "x"}]}))
                .contains("`id`: this argument is required: the page id")
        );
        assert!(
            err(json!({"id": 5, "pages": [{"title": "x"}]}))
                .contains("`id`: expected a string, got an integer")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "bogus": 1}))
                .contains("`bogus`: unknown argument")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "size": 0}))
                .contains("`size`: expected a value of at least 1")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "size": 101})).contains("at most 100")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "size": 1.5}))
                .contains("expected an integer, got a number")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "kind": "database"}))
                .contains("`kind`: expected one of \"page\", \"data_source\"")
        );
        assert!(err(json!({"id": "a", "pages": []})).contains("`pages`: expected at least 1 item"));
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}, {"title": "y"}, {"title": "z"}]}))
                .contains("at most 2 item")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}, {"title": 3}]}))
                .contains("`pages[1].title`: expected a string")
        );
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x", "extra": 1}]}))
                .contains("`pages[0].extra`")
        );
        assert!(
            err(json!({"id": "abcdef", "pages": [{"title": "x"}]}))
                .contains("at most 5 characters")
        );
        assert!(err(json!({"id": "", "pages": [{"title": "x"}]})).contains("at least 1 character"));
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "parent": {}}))
                .contains("`parent`: expected at least 1 field")
        );
        assert!(err(json!({"id": "a", "pages": [{"title": "x"}], "parent": {"page_id": "p", "data_source_id": "d"}})).contains("at most 1 field"));
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "raw": []}))
                .contains("`raw`: expected an object, got an array")
        );
        assert!(err(json!(["not", "an", "object"])).contains("`arguments`: expected an object"));
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "pid": "123"}))
                .contains("`pid`: expected a Notion id")
        );
        assert!(err(json!({"id": "a", "pages": [{"title": "x"}], "pid": "https://www.notion.so/11111111111141118111111111111111"})).contains("`pid`: expected a Notion id"));
        assert!(err(json!({"id": "a", "pages": [{"title": "x"}], "url": "https://evil.example/11111111111141118111111111111111"})).contains("`url`: expected a Notion id"));
        let long = "z".repeat(500);
        assert!(
            err(json!({"id": "a", "pages": [{"title": "x"}], "url": long})).len() < 300,
            "bad values are clipped"
        );
    }
}
