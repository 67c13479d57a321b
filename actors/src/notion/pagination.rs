//! Notion's cursor pagination as pure functions: where the next page's cursor goes, and the
//! bounds on `page_size`.

use serde_json::Value;

use super::request::{HttpMethod, NotionError, NotionRequest};

/// Largest `page_size` Notion accepts.
pub const MAX_PAGE_SIZE: u64 = 100;

/// Longest cursor accepted from an answer (Notion's are UUID-sized).
const MAX_CURSOR_BYTES: usize = 1024;

/// The request for the page after `response`, or `None` when `response` is the last page
/// (`has_more` false or absent, no usable `next_cursor`, or a cursor equal to the one just
/// sent, which would loop forever). GET and DELETE carry `start_cursor` in the query;
/// POST and PATCH in the JSON body.
pub fn next_page(req: &NotionRequest, response: &Value) -> Option<NotionRequest> {
    if response.get("has_more").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let cursor = response.get("next_cursor").and_then(Value::as_str)?;
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_BYTES {
        return None;
    }
    if current_cursor(req) == Some(cursor) {
        return None;
    }
    let mut next = req.clone();
    match req.method {
        HttpMethod::Get | HttpMethod::Delete => {
            next.query.retain(|(k, _)| k != "start_cursor");
            next.query
                .push(("start_cursor".to_string(), cursor.to_string()));
        }
        HttpMethod::Post | HttpMethod::Patch => {
            let mut body = match next.body.take() {
                Some(Value::Object(map)) => map,
                None | Some(Value::Null) => serde_json::Map::new(),
                // A non-object body cannot carry a cursor: this is not a paginated request.
                Some(_) => return None,
            };
            body.insert(
                "start_cursor".to_string(),
                Value::String(cursor.to_string()),
            );
            next.body = Some(Value::Object(body));
        }
    }
    Some(next)
}

fn current_cursor(req: &NotionRequest) -> Option<&str> {
    match req.method {
        HttpMethod::Get | HttpMethod::Delete => req
            .query
            .iter()
            .rev()
            .find(|(k, _)| k == "start_cursor")
            .map(|(_, v)| v.as_str()),
        HttpMethod::Post | HttpMethod::Patch => req
            .body
            .as_ref()
            .and_then(|b| b.get("start_cursor"))
            .and_then(Value::as_str),
    }
}

/// Checks `page_size` where the request carries it (query for GET/DELETE, body for
/// POST/PATCH): a whole number in `1..=100`.
pub fn validate_page_size(req: &NotionRequest) -> Result<(), NotionError> {
    match req.method {
        HttpMethod::Get | HttpMethod::Delete => {
            for (k, v) in &req.query {
                if k == "page_size" {
                    let n: u64 = v.trim().parse().map_err(|_| {
                        NotionError::invalid_request(format!(
                            "page_size {v:?} is not a whole number; use 1..={MAX_PAGE_SIZE}"
                        ))
                    })?;
                    check(n)?;
                }
            }
            Ok(())
        }
        HttpMethod::Post | HttpMethod::Patch => {
            match req.body.as_ref().and_then(|b| b.get("page_size")) {
                None => Ok(()),
                Some(v) => {
                    let n = v.as_u64().ok_or_else(|| {
                        NotionError::invalid_request(format!(
                            "page_size {v} is not a whole number; use 1..={MAX_PAGE_SIZE}"
                        ))
                    })?;
                    check(n)
                }
            }
        }
    }
}

fn check(n: u64) -> Result<(), NotionError> {
    if (1..=MAX_PAGE_SIZE).contains(&n) {
        Ok(())
    } else {
        Err(NotionError::invalid_request(format!(
            "page_size {n} is outside 1..={MAX_PAGE_SIZE}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn get_cursor_goes_into_query() {
        let req = NotionRequest::get("/v1/users").with_query("page_size", "2");
        let next = next_page(&req, &json!({"has_more": true, "next_cursor": "c1"})).unwrap();
        assert_eq!(
            next.query,
            vec![
                ("page_size".into(), "2".into()),
                ("start_cursor".into(), "c1".into())
            ]
        );
        let next2 = next_page(&next, &json!({"has_more": true, "next_cursor": "c2"})).unwrap();
        assert_eq!(
            next2
                .query
                .iter()
                .filter(|(k, _)| k == "start_cursor")
                .count(),
            1
        );
        assert_eq!(next2.query[1].1, "c2");
    }

    #[test]
    fn post_cursor_goes_into_body() {
        let req = NotionRequest::post("/v1/search", json!({"query": "x", "page_size": 10}));
        let next = next_page(&req, &json!({"has_more": true, "next_cursor": "abc"})).unwrap();
        assert_eq!(
            next.body,
            Some(json!({"query": "x", "page_size": 10, "start_cursor": "abc"}))
        );
    }

    #[test]
    fn last_page_and_loops_end() {
        let req = NotionRequest::get("/v1/users");
        assert!(next_page(&req, &json!({"has_more": false, "next_cursor": null})).is_none());
        assert!(next_page(&req, &json!({"has_more": true, "next_cursor": null})).is_none());
        assert!(next_page(&req, &json!({"results": []})).is_none());
        let same = req.with_query("start_cursor", "c");
        assert!(next_page(&same, &json!({"has_more": true, "next_cursor": "c"})).is_none());
    }

    #[test]
    fn page_size_bounds() {
        let ok = NotionRequest::get("/v1/users").with_query("page_size", "100");
        assert!(validate_page_size(&ok).is_ok());
        for bad in ["0", "101", "x", "-1"] {
            let r = NotionRequest::get("/v1/users").with_query("page_size", bad);
            assert!(
                matches!(
                    validate_page_size(&r),
                    Err(NotionError::Api { status: 400, .. })
                ),
                "{bad}"
            );
        }
        let bad = NotionRequest::post("/v1/search", json!({"page_size": 500}));
        assert!(validate_page_size(&bad).is_err());
        let bad = NotionRequest::post("/v1/search", json!({"page_size": "5"}));
        assert!(validate_page_size(&bad).is_err());
        assert!(validate_page_size(&NotionRequest::post("/v1/search", json!({}))).is_ok());
    }
}
