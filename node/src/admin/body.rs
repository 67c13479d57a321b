//! Request bodies and query strings of the admin API, read field by field so that every
//! error names the field at fault and never echoes a value (a body may carry a Notion token).

use std::collections::BTreeMap;

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

    /// An optional field of any JSON type, checked by the caller.
    pub fn opt_value(&mut self, name: &str) -> Option<Value> {
        self.take(name)
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

    /// An optional JSON object field.
    pub fn opt_object(&mut self, name: &str) -> Result<Option<Map<String, Value>>, AdminError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(AdminError::invalid(name, "must be a JSON object")),
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

/// Most items in one page of a list.
pub const MAX_PAGE_ITEMS: usize = 1_000;
/// Items in a page when the request does not say.
pub const DEFAULT_PAGE_ITEMS: usize = 500;

/// The query parameters of a GET: `consistency=linearizable|local`, and for lists
/// `limit=N` (1..=1000, default 500) and `after=ID` (the `next_after` of the previous page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadParams {
    /// How to read.
    pub consistency: Consistency,
    /// Most items to return.
    pub limit: usize,
    /// Return only items whose id sorts after this one.
    pub after: Option<String>,
}

impl ReadParams {
    /// Parses a query string; `paged` says whether `limit` and `after` are accepted.
    pub fn parse(query: Option<&str>, paged: bool) -> Result<Self, AdminError> {
        let mut params = ReadParams {
            consistency: Consistency::Linearizable,
            limit: DEFAULT_PAGE_ITEMS,
            after: None,
        };
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(params);
        };
        if query.len() > MAX_QUERY_BYTES {
            return Err(AdminError::bad_request(format!(
                "the query string is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "consistency" => {
                    params.consistency = match value {
                        "linearizable" => Consistency::Linearizable,
                        "local" => Consistency::Local,
                        _ => {
                            return Err(AdminError::invalid(
                                "consistency",
                                "must be \"linearizable\" (the default) or \"local\"",
                            ));
                        }
                    }
                }
                "limit" if paged => {
                    params.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_ITEMS).contains(n))
                        .ok_or_else(|| {
                            AdminError::invalid(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_PAGE_ITEMS}"),
                            )
                        })?;
                }
                "after" if paged => {
                    quire_raft::ids::validate_id("after", value)
                        .map_err(|e| AdminError::invalid("after", e.to_string()))?;
                    params.after = Some(value.to_owned());
                }
                _ => {
                    let shown: String = key.chars().take(64).collect();
                    let accepted = if paged {
                        "consistency, limit and after"
                    } else {
                        "only consistency"
                    };
                    return Err(AdminError::bad_request(format!(
                        "unknown query parameter {shown:?}; {accepted} are accepted"
                    )));
                }
            }
        }
        Ok(params)
    }

    /// One page of `items` (sorted by `key`): those after `after`, at most `limit`, and the
    /// cursor of the next page if more remain.
    pub fn page<T>(
        &self,
        items: impl Iterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Option<String>) {
        let mut page: Vec<T> = items
            .skip_while(|item| {
                self.after
                    .as_deref()
                    .is_some_and(|after| key(item) <= after)
            })
            .take(self.limit + 1)
            .collect();
        if page.len() > self.limit {
            page.truncate(self.limit);
            let next = page.last().map(|item| key(item).to_owned());
            (page, next)
        } else {
            (page, None)
        }
    }
}

/// The query string of a route with its own parameters: `consistency` and the names the
/// route accepts, each at most once, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// How to read.
    pub consistency: Consistency,
    values: BTreeMap<String, String>,
}

impl Query {
    /// Parses `query`, accepting `consistency` and the parameters in `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, AdminError> {
        let mut q = Query {
            consistency: Consistency::Linearizable,
            values: BTreeMap::new(),
        };
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(q);
        };
        if query.len() > MAX_QUERY_BYTES {
            return Err(AdminError::bad_request(format!(
                "the query string is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw)
                .ok_or_else(|| AdminError::invalid(key, "is not a valid percent-encoded value"))?;
            if key == "consistency" {
                q.consistency = match value.as_str() {
                    "linearizable" => Consistency::Linearizable,
                    "local" => Consistency::Local,
                    _ => {
                        return Err(AdminError::invalid(
                            "consistency",
                            "must be \"linearizable\" (the default) or \"local\"",
                        ));
                    }
                };
                continue;
            }
            if !allowed.contains(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(AdminError::bad_request(format!(
                    "unknown query parameter {shown:?}; accepted: consistency, {}",
                    allowed.join(", ")
                )));
            }
            if q.values.insert(key.to_owned(), value).is_some() {
                return Err(AdminError::invalid(key, "is given more than once"));
            }
        }
        Ok(q)
    }

    /// A parameter, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A whole-number parameter from `min` to `max`, if given.
    pub fn opt_u64(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, AdminError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        v.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                AdminError::invalid(name, format!("must be a whole number from {min} to {max}"))
            })
    }
}

/// Decodes `%XX` escapes and `+` (a space); `None` on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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
    fn read_params_and_paging() {
        let p = ReadParams::parse(None, true).unwrap();
        assert_eq!(p.consistency, Consistency::Linearizable);
        assert_eq!(p.limit, DEFAULT_PAGE_ITEMS);
        let p = ReadParams::parse(Some("consistency=local&limit=2&after=b"), true).unwrap();
        assert_eq!(p.consistency, Consistency::Local);
        assert!(ReadParams::parse(Some("consistency=eventual"), true).is_err());
        assert!(ReadParams::parse(Some("limit=5"), false).is_err());
        assert!(ReadParams::parse(Some("limit=0"), true).is_err());
        assert!(ReadParams::parse(Some("limit=1001"), true).is_err());
        assert!(ReadParams::parse(Some("after=Bad%20Id"), true).is_err());
        assert!(ReadParams::parse(Some("color=red"), true).is_err());

        let ids = ["a", "b", "c", "d", "e"];
        let (page, next) = p.page(ids.iter(), |s| s);
        assert_eq!(page, [&"c", &"d"]);
        assert_eq!(next.as_deref(), Some("d"));
        let last = ReadParams {
            after: next,
            ..p.clone()
        };
        let (page, next) = last.page(ids.iter(), |s| s);
        assert_eq!((page, next), (vec![&"e"], None));
    }

    #[test]
    fn route_queries_decode_and_refuse_unknown_names() {
        let q = Query::parse(
            Some("subject=acme%2Falice&limit=5&consistency=local&kind=a+b"),
            &["subject", "limit", "kind"],
        )
        .unwrap();
        assert_eq!(q.get("subject"), Some("acme/alice"));
        assert_eq!(q.get("kind"), Some("a b"));
        assert_eq!(q.opt_u64("limit", 1, 10).unwrap(), Some(5));
        assert!(q.opt_u64("limit", 6, 10).is_err());
        assert_eq!(q.consistency, Consistency::Local);
        assert_eq!(q.get("missing"), None);
        assert!(Query::parse(Some("color=red"), &["subject"]).is_err());
        assert!(Query::parse(Some("subject=a&subject=b"), &["subject"]).is_err());
        assert!(Query::parse(Some("subject=%zz"), &["subject"]).is_err());
        assert!(Query::parse(Some("consistency=eventual"), &[]).is_err());
    }
}
