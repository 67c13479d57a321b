//! Request bodies and query strings of the admin API, read field by field so that every
//! error names the field at fault and never echoes a value (a body may carry a Notion token).

use serde_json::{Map, Value};

use super::error::AdminError;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most entries in a list field (e.g. `scopes`).
pub const MAX_LIST_ITEMS: usize = 64;
/// Longest query string considered, in bytes.
const MAX_QUERY_BYTES: usize = 1024;

/// A JSON object body whose fields are taken one at a time.
pub struct Body {
    fields: Map<String, Value>,
}

impl Body {
    /// Parses `bytes` as a JSON object whose keys are all in `allowed`. An empty body is an
    /// empty object (for requests whose fields are all optional).
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Self, AdminError> {
        if bytes.len() > MAX_BODY_BYTES {
            return Err(AdminError::too_large(MAX_BODY_BYTES));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { fields: Map::new() });
        }
        // serde_json's syntax errors name a line and column, never the text around it.
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            AdminError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        let Value::Object(fields) = value else {
            return Err(AdminError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(64).collect();
            return Err(AdminError::invalid(
                &shown,
                format!(
                    "unknown field; this request accepts only: {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Self { fields })
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        match self.fields.remove(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required string field.
    pub fn string(&mut self, name: &str) -> Result<String, AdminError> {
        self.opt_string(name)?
            .ok_or_else(|| AdminError::invalid(name, "missing field (a string is required)"))
    }

    /// An optional string field.
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, AdminError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AdminError::invalid(name, "must be a string")),
        }
    }

    /// An optional non-negative integer field, at most `max`.
    pub fn opt_u64(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, AdminError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(AdminError::invalid(
                    name,
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
            Some(_) => Err(AdminError::invalid(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    /// An optional list of strings, at most [`MAX_LIST_ITEMS`] long.
    pub fn opt_strings(&mut self, name: &str) -> Result<Option<Vec<String>>, AdminError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > MAX_LIST_ITEMS {
                    return Err(AdminError::invalid(
                        name,
                        format!("has more than {MAX_LIST_ITEMS} entries"),
                    ));
                }
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s),
                        _ => Err(AdminError::invalid(name, "must be a list of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(_) => Err(AdminError::invalid(name, "must be a list of strings")),
        }
    }
}

/// How a GET reads the control state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed with a quorum: sees every acknowledged write (the default).
    Linearizable,
    /// This node's applied state, with no round trip: may be stale on a follower.
    Local,
}

/// Parses the query string of a GET: only `consistency=linearizable|local` is accepted.
pub fn consistency(query: Option<&str>) -> Result<Consistency, AdminError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(Consistency::Linearizable);
    };
    if query.len() > MAX_QUERY_BYTES {
        return Err(AdminError::bad_request(format!(
            "the query string is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let mut result = Consistency::Linearizable;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("consistency", "linearizable") => result = Consistency::Linearizable,
            ("consistency", "local") => result = Consistency::Local,
            ("consistency", _) => {
                return Err(AdminError::invalid(
                    "consistency",
                    "must be \"linearizable\" (the default) or \"local\"",
                ));
            }
            _ => {
                let shown: String = key.chars().take(64).collect();
                return Err(AdminError::bad_request(format!(
                    "unknown query parameter {shown:?}; only consistency=linearizable|local is accepted"
                )));
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_and_values_never_echoed() {
        let mut b = Body::parse(
            br#"{"id": "acme", "n": "s3cret-value", "list": ["a", 1]}"#,
            &["id", "n", "list"],
        )
        .unwrap();
        assert_eq!(b.string("id").unwrap(), "acme");
        let e = b.opt_u64("n", 1, 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        let e = b.opt_strings("list").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("list"));
        let e = b.string("missing").unwrap_err();
        assert!(e.message.contains("missing field"), "{}", e.message);

        let e = Body::parse(br#"{"id": "a", "extra": 1}"#, &["id"])
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("extra"));
        assert!(e.message.contains("unknown field"), "{}", e.message);

        let e = Body::parse(br#"{"id": "secret_abc"#, &["id"])
            .err()
            .unwrap();
        assert!(!e.message.contains("secret_abc"), "{}", e.message);
        assert!(Body::parse(b"[1]", &[]).is_err());
        assert!(Body::parse(b"", &[]).is_ok());
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(Body::parse(&big, &[]).err().unwrap().status.as_u16(), 413);
    }

    #[test]
    fn consistency_query() {
        assert_eq!(consistency(None).unwrap(), Consistency::Linearizable);
        assert_eq!(
            consistency(Some("consistency=local")).unwrap(),
            Consistency::Local
        );
        assert!(consistency(Some("consistency=eventual")).is_err());
        assert!(consistency(Some("limit=5")).is_err());
    }
}
