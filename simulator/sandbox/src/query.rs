//! Data source query filters (compound and/or, per-type conditions) and sorts.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::store::{DataSource, Page};
use crate::time;
use crate::validate::truncate;

/// Notion allows compound filters nested two levels deep.
const MAX_FILTER_DEPTH: usize = 2;

#[derive(Debug, Clone)]
pub(crate) enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Property {
        name: String,
        kind: String,
        op: String,
        arg: Value,
    },
    Timestamp {
        created: bool,
        op: String,
        arg: Value,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum SortTarget {
    Property { name: String, kind: String },
    Timestamp { created: bool },
}

#[derive(Debug, Clone)]
pub(crate) struct SortKey {
    target: SortTarget,
    descending: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::validation(format!("body failed validation: {}", msg.into()))
}

fn ops_for(kind: &str) -> &'static [&'static str] {
    match kind {
        "title" | "rich_text" | "url" | "email" | "phone_number" => &[
            "equals",
            "does_not_equal",
            "contains",
            "does_not_contain",
            "starts_with",
            "ends_with",
            "is_empty",
            "is_not_empty",
        ],
        "number" => &[
            "equals",
            "does_not_equal",
            "greater_than",
            "less_than",
            "greater_than_or_equal_to",
            "less_than_or_equal_to",
            "is_empty",
            "is_not_empty",
        ],
        "checkbox" => &["equals", "does_not_equal"],
        "select" | "status" => &["equals", "does_not_equal", "is_empty", "is_not_empty"],
        "multi_select" | "people" | "created_by" | "last_edited_by" => {
            &["contains", "does_not_contain", "is_empty", "is_not_empty"]
        }
        "date" | "created_time" | "last_edited_time" => &[
            "equals",
            "before",
            "after",
            "on_or_before",
            "on_or_after",
            "is_empty",
            "is_not_empty",
        ],
        _ => &[],
    }
}

/// Which filter keys are accepted for a property type.
fn filter_key_matches(kind: &str, key: &str) -> bool {
    key == kind
        || (matches!(kind, "title" | "rich_text") && matches!(key, "title" | "rich_text"))
        || (matches!(kind, "created_by" | "last_edited_by") && key == "people")
        || (matches!(kind, "created_time" | "last_edited_time") && key == "date")
}

fn check_arg(kind: &str, op: &str, arg: &Value, at: &str) -> Result<(), ApiError> {
    if matches!(op, "is_empty" | "is_not_empty") {
        return if arg == &Value::Bool(true) {
            Ok(())
        } else {
            Err(bad(format!("{at}.{op} should be `true`.")))
        };
    }
    let ok = match kind {
        "title" | "rich_text" | "url" | "email" | "phone_number" | "select" | "status"
        | "multi_select" => arg.is_string(),
        "number" => arg.as_f64().is_some(),
        "checkbox" => arg.is_boolean(),
        "date" | "created_time" | "last_edited_time" => {
            arg.as_str().and_then(time::parse_ms).is_some()
        }
        "people" | "created_by" | "last_edited_by" => arg.is_string(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{at}.{op} has a value of the wrong type for a `{kind}` filter."
        )))
    }
}

fn single_condition(cond: &Value, kind: &str, at: &str) -> Result<(String, Value), ApiError> {
    let cond = cond
        .as_object()
        .ok_or_else(|| bad(format!("{at} should be an object.")))?;
    if cond.len() != 1 {
        return Err(bad(format!("{at} should have exactly one condition.")));
    }
    let Some((op, arg)) = cond.iter().next() else {
        return Err(bad(format!("{at} should have exactly one condition.")));
    };
    if !ops_for(kind).contains(&op.as_str()) {
        return Err(bad(format!(
            "{at}.{} is not a valid condition for a `{kind}` property.",
            truncate(op, 64)
        )));
    }
    check_arg(kind, op, arg, at)?;
    Ok((op.clone(), arg.clone()))
}

pub(crate) fn compile_filter(v: &Value, ds: &DataSource, depth: usize) -> Result<Filter, ApiError> {
    let at = "body.filter";
    let map = v
        .as_object()
        .ok_or_else(|| bad(format!("{at} should be an object.")))?;
    for (key, is_and) in [("and", true), ("or", false)] {
        if let Some(list) = map.get(key) {
            if depth >= MAX_FILTER_DEPTH {
                return Err(bad(format!(
                    "{at}: compound filters may be nested at most {MAX_FILTER_DEPTH} levels deep."
                )));
            }
            let items = list
                .as_array()
                .ok_or_else(|| bad(format!("{at}.{key} should be an array.")))?;
            let parts = items
                .iter()
                .map(|i| compile_filter(i, ds, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if is_and {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            });
        }
    }
    if let Some(ts) = map.get("timestamp").and_then(Value::as_str) {
        let created = match ts {
            "created_time" => true,
            "last_edited_time" => false,
            other => {
                return Err(bad(format!(
                    "{at}.timestamp should be `created_time` or `last_edited_time`, instead was `{}`.",
                    truncate(other, 64)
                )));
            }
        };
        let cond = map
            .get(ts)
            .ok_or_else(|| bad(format!("{at}.{ts} should be defined.")))?;
        let (op, arg) = single_condition(cond, ts, &format!("{at}.{ts}"))?;
        return Ok(Filter::Timestamp { created, op, arg });
    }
    let key = map.get("property").and_then(Value::as_str).ok_or_else(|| {
        bad(format!(
            "{at} should define `property`, `timestamp`, `and` or `or`."
        ))
    })?;
    let (name, prop) = ds
        .properties
        .get_key_value(key)
        .or_else(|| ds.properties.iter().find(|(_, p)| p.id == key))
        .ok_or_else(|| {
            ApiError::validation(format!(
                "Could not find property with name or id: {}",
                truncate(key, 100)
            ))
        })?;
    let (fkey, cond) = map
        .iter()
        .find(|(k, _)| k.as_str() != "property")
        .ok_or_else(|| {
            bad(format!(
                "{at} should define a condition for property {name}."
            ))
        })?;
    if !filter_key_matches(&prop.kind, fkey) {
        return Err(bad(format!(
            "{at}: property {name} is a `{}` property; a `{}` filter does not apply.",
            prop.kind,
            truncate(fkey, 64)
        )));
    }
    let (op, arg) = single_condition(cond, &prop.kind, &format!("{at}.{fkey}"))?;
    Ok(Filter::Property {
        name: name.clone(),
        kind: prop.kind.clone(),
        op,
        arg,
    })
}

pub(crate) fn compile_sorts(v: &Value, ds: &DataSource) -> Result<Vec<SortKey>, ApiError> {
    let items = v
        .as_array()
        .ok_or_else(|| bad("body.sorts should be an array."))?;
    let mut out = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let at = format!("body.sorts[{i}]");
        let dir = s.get("direction").and_then(Value::as_str);
        let descending = match dir {
            Some("ascending") => false,
            Some("descending") => true,
            _ => {
                return Err(bad(format!(
                    "{at}.direction should be `ascending` or `descending`."
                )));
            }
        };
        let key = if let Some(p) = s.get("property").and_then(Value::as_str) {
            let (name, prop) = ds
                .properties
                .get_key_value(p)
                .or_else(|| ds.properties.iter().find(|(_, x)| x.id == p))
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "Could not find sort property with name or id: {}",
                        truncate(p, 100)
                    ))
                })?;
            SortTarget::Property {
                name: name.clone(),
                kind: prop.kind.clone(),
            }
        } else {
            match s.get("timestamp").and_then(Value::as_str) {
                Some("created_time") => SortTarget::Timestamp { created: true },
                Some("last_edited_time") => SortTarget::Timestamp { created: false },
                _ => {
                    return Err(bad(format!(
                        "{at} should define `property` or `timestamp`."
                    )));
                }
            }
        };
        out.push(SortKey {
            target: key,
            descending,
        });
    }
    Ok(out)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("plain_text").and_then(Value::as_str))
            .collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn inner<'a>(props: &'a Map<String, Value>, name: &str, kind: &str) -> &'a Value {
    props
        .get(name)
        .and_then(|p| p.get(kind))
        .unwrap_or(&Value::Null)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => {
            a.is_empty() || text_of(v).is_empty() && a.iter().all(|i| i.get("plain_text").is_some())
        }
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn date_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => time::parse_ms(s),
        Value::Object(o) => o
            .get("start")
            .and_then(Value::as_str)
            .and_then(time::parse_ms),
        _ => None,
    }
}

fn eval(kind: &str, op: &str, value: &Value, arg: &Value) -> bool {
    match op {
        "is_empty" => return is_empty(value),
        "is_not_empty" => return !is_empty(value),
        _ => {}
    }
    match kind {
        "title" | "rich_text" | "url" | "email" | "phone_number" => {
            let have = text_of(value).to_lowercase();
            let want = arg.as_str().unwrap_or("").to_lowercase();
            match op {
                "equals" => have == want,
                "does_not_equal" => have != want,
                "contains" => have.contains(&want),
                "does_not_contain" => !have.contains(&want),
                "starts_with" => have.starts_with(&want),
                "ends_with" => have.ends_with(&want),
                _ => false,
            }
        }
        "number" => {
            let (Some(have), Some(want)) = (value.as_f64(), arg.as_f64()) else {
                return op == "does_not_equal";
            };
            match op {
                "equals" => have == want,
                "does_not_equal" => have != want,
                "greater_than" => have > want,
                "less_than" => have < want,
                "greater_than_or_equal_to" => have >= want,
                "less_than_or_equal_to" => have <= want,
                _ => false,
            }
        }
        "checkbox" => {
            let have = value.as_bool().unwrap_or(false);
            let want = arg.as_bool().unwrap_or(false);
            if op == "equals" {
                have == want
            } else {
                have != want
            }
        }
        "select" | "status" => {
            let have = value.get("name").and_then(Value::as_str);
            let want = arg.as_str();
            if op == "equals" {
                have.is_some() && have == want
            } else {
                have != want
            }
        }
        "multi_select" | "people" | "created_by" | "last_edited_by" => {
            let want = arg.as_str().unwrap_or("");
            let list: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                Value::Object(_) => vec![value],
                _ => Vec::new(),
            };
            let field = if kind == "multi_select" { "name" } else { "id" };
            let has = list
                .iter()
                .any(|i| i.get(field).and_then(Value::as_str) == Some(want));
            if op == "contains" { has } else { !has }
        }
        "date" | "created_time" | "last_edited_time" => {
            let Some(have) = date_ms(value) else {
                return false;
            };
            let Some(s) = arg.as_str() else {
                return false;
            };
            let Some(want) = time::parse_ms(s) else {
                return false;
            };
            // A date-only argument compares whole days.
            let (have, want) = if s.len() == 10 {
                (have.div_euclid(86_400_000), want.div_euclid(86_400_000))
            } else {
                (have, want)
            };
            match op {
                "equals" => have == want,
                "before" => have < want,
                "after" => have > want,
                "on_or_before" => have <= want,
                "on_or_after" => have >= want,
                _ => false,
            }
        }
        _ => false,
    }
}

pub(crate) fn matches(f: &Filter, props: &Map<String, Value>, page: &Page) -> bool {
    match f {
        Filter::And(parts) => parts.iter().all(|p| matches(p, props, page)),
        Filter::Or(parts) => parts.iter().any(|p| matches(p, props, page)),
        Filter::Property {
            name,
            kind,
            op,
            arg,
        } => eval(kind, op, inner(props, name, kind), arg),
        Filter::Timestamp { created, op, arg } => {
            let ms = if *created {
                page.meta.created_ms
            } else {
                page.meta.edited_ms
            };
            eval("created_time", op, &Value::String(time::iso(ms)), arg)
        }
    }
}

#[derive(Debug, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Text(String),
}

fn sort_key(kind: &str, value: &Value) -> Option<Key> {
    match kind {
        "title" | "rich_text" | "url" | "email" | "phone_number" => {
            let t = text_of(value);
            (!t.is_empty()).then(|| Key::Text(t.to_lowercase()))
        }
        "number" => value.as_f64().map(Key::Num),
        "checkbox" => Some(Key::Num(if value.as_bool() == Some(true) {
            1.0
        } else {
            0.0
        })),
        "select" | "status" => value
            .get("name")
            .and_then(Value::as_str)
            .map(|s| Key::Text(s.to_lowercase())),
        "multi_select" => value
            .as_array()
            .and_then(|a| a.first())
            .and_then(|o| o.get("name"))
            .and_then(Value::as_str)
            .map(|s| Key::Text(s.to_lowercase())),
        "people" => value
            .as_array()
            .and_then(|a| a.first())
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .map(|s| Key::Text(s.to_string())),
        "created_by" | "last_edited_by" => value
            .get("id")
            .and_then(Value::as_str)
            .map(|s| Key::Text(s.to_string())),
        "date" | "created_time" | "last_edited_time" => date_ms(value).map(|m| Key::Num(m as f64)),
        _ => None,
    }
}

fn cmp_keys(a: &Option<Key>, b: &Option<Key>, descending: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        // Empty values sort last in either direction.
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let o = match (x, y) {
                (Key::Num(p), Key::Num(q)) => p.total_cmp(q),
                (Key::Text(p), Key::Text(q)) => p.cmp(q),
                (Key::Num(_), Key::Text(_)) => Ordering::Less,
                (Key::Text(_), Key::Num(_)) => Ordering::Greater,
            };
            if descending { o.reverse() } else { o }
        }
    }
}

/// Sorts rows by the given keys, then by creation time and id so the order is total.
pub(crate) fn sort_rows(rows: &mut [(&Page, Map<String, Value>)], sorts: &[SortKey]) {
    rows.sort_by(|(pa, a), (pb, b)| {
        for s in sorts {
            let o = match &s.target {
                SortTarget::Timestamp { created } => {
                    let (x, y) = if *created {
                        (pa.meta.created_ms, pb.meta.created_ms)
                    } else {
                        (pa.meta.edited_ms, pb.meta.edited_ms)
                    };
                    if s.descending { y.cmp(&x) } else { x.cmp(&y) }
                }
                SortTarget::Property { name, kind } => cmp_keys(
                    &sort_key(kind, inner(a, name, kind)),
                    &sort_key(kind, inner(b, name, kind)),
                    s.descending,
                ),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        pa.meta
            .created_ms
            .cmp(&pb.meta.created_ms)
            .then_with(|| pa.id.cmp(&pb.id))
    });
}
