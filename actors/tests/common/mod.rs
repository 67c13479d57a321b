//! A tiny Notion stand-in for client tests: error objects, Retry-After, flaky and slow
//! endpoints, and cursor pagination. It counts the requests each path received.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct Stub {
    hits: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Stub {
    pub fn hits(&self, key: &str) -> u64 {
        self.hits
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn hit(&self, key: &str) -> u64 {
        let mut h = self.hits.lock().expect("lock");
        let n = h.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({
        "object": "error", "status": status, "code": code, "message": message,
        "request_id": format!("req-{code}"),
    });
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The error answer when the headers are not what Notion expects.
fn refused(headers: &HeaderMap) -> Option<Response> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some("Bearer secret_test") {
        return Some(error(401, "unauthorized", "API token is invalid."));
    }
    if headers.get("notion-version").and_then(|v| v.to_str().ok()) != Some("2025-09-03") {
        return Some(error(
            400,
            "missing_version",
            "Notion-Version header missing.",
        ));
    }
    None
}

const USERS: usize = 7;

fn page(start: usize, size: usize) -> Value {
    let end = (start + size).min(USERS);
    let results: Vec<Value> = (start..end)
        .map(|i| json!({"object": "user", "id": format!("u{i}")}))
        .collect();
    let has_more = end < USERS;
    json!({
        "object": "list", "results": results, "has_more": has_more,
        "next_cursor": if has_more { Value::String(format!("c{end}")) } else { Value::Null },
    })
}

fn cursor_start(c: Option<&str>) -> usize {
    c.and_then(|c| c.strip_prefix('c'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn special(
    State(stub): State<Stub>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    let n = stub.hit(&name);
    match name.as_str() {
        "me" => (
            StatusCode::OK,
            axum::Json(json!({"object": "user", "id": "bot"})),
        )
            .into_response(),
        "missing" => error(404, "object_not_found", "Could not find page."),
        "limited" => {
            let mut r = error(429, "rate_limited", "You have been rated limited.");
            r.headers_mut()
                .insert("retry-after", "7".parse().expect("hv"));
            r
        }
        "limited_once" if n == 1 => {
            let mut r = error(429, "rate_limited", "slow down");
            r.headers_mut()
                .insert("retry-after", "1".parse().expect("hv"));
            r
        }
        "limited_once" => {
            axum::Json(json!({"object": "user", "id": "after-pause"})).into_response()
        }
        "overload" => {
            let mut r = error(529, "service_overload", "overloaded");
            r.headers_mut()
                .insert("retry-after", "3".parse().expect("hv"));
            r
        }
        "always502" => (StatusCode::BAD_GATEWAY, "<html>upstream down</html>").into_response(),
        "flaky" if n <= 2 => error(503, "service_unavailable", "try again"),
        "flaky" => {
            axum::Json(json!({"object": "user", "id": "flaky-ok", "attempt": n})).into_response()
        }
        "bad_request" => error(400, "validation_error", "body failed validation"),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            axum::Json(json!({"slow": true})).into_response()
        }
        "slow_limited" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut r = error(429, "rate_limited", "You have been rated limited.");
            r.headers_mut()
                .insert("retry-after", "7".parse().expect("hv"));
            r
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            axum::Json(json!({"delayed": true})).into_response()
        }
        "big" => axum::Json(json!({"blob": "x".repeat(10_000)})).into_response(),
        "notjson" => (StatusCode::OK, "hello").into_response(),
        _ => error(404, "object_not_found", "no such stub path"),
    }
}

async fn users(
    State(stub): State<Stub>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    stub.hit("users");
    let size: usize = q
        .get("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    axum::Json(page(
        cursor_start(q.get("start_cursor").map(String::as_str)),
        size,
    ))
    .into_response()
}

async fn search(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return error(400, "invalid_json", "content-type must be JSON");
    }
    stub.hit("search");
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_json", "body is not JSON");
    };
    let size = body.get("page_size").and_then(Value::as_u64).unwrap_or(100) as usize;
    let start = cursor_start(body.get("start_cursor").and_then(Value::as_str));
    axum::Json(page(start, size)).into_response()
}

/// Serves the stub on a loopback port; returns its base URL and counters.
pub async fn serve_stub() -> (String, Stub) {
    let stub = Stub::default();
    let app = Router::new()
        .route("/v1/users", get(users))
        .route("/v1/search", post(search))
        .route("/v1/stub/{name}", get(special))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), stub)
}
