//! The axum router: a gate (auth, rate limit, version, latency, injected failures) in front
//! of handlers that parse the request, run one store operation under the lock, and answer.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tokio::time::Duration;

use crate::Sandbox;
use crate::errors::ApiError;
use crate::store::Store;
use crate::validate::{self, MAX_PAYLOAD_BYTES};

/// Who is calling, and the id every answer to this request carries.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub integ: usize,
    pub bot_user_id: String,
    pub request_id: String,
}

/// The outcome of the gate for one request.
pub(crate) struct Admission {
    pub ctx: Ctx,
    pub delay_ms: u64,
    pub inject: Option<u16>,
}

type Body = Result<Bytes, BytesRejection>;
type Id = Result<Path<String>, PathRejection>;

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

pub(crate) async fn gate(State(sb): State<Sandbox>, mut req: Request, next: Next) -> Response {
    let token = bearer(req.headers());
    let version = req
        .headers()
        .get("notion-version")
        .map(|v| v.to_str().unwrap_or("(not ASCII)").to_string());
    let integration = token.as_deref().and_then(|t| sb.integration_of(t));
    let client = req
        .headers()
        .get(crate::CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The sender: as the harness names it, else the peer's address (served by `serve`).
    let sender = client.clone().or_else(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string())
    });
    let response = match sb.admit(token.as_deref(), version.as_deref(), sender.as_deref()) {
        Err((err, request_id)) => err.render(&request_id),
        Ok(admission) => {
            if admission.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(admission.delay_ms)).await;
            }
            if let Some(status) = admission.inject {
                ApiError::injected(status).render(&admission.ctx.request_id)
            } else {
                req.extensions_mut().insert(admission.ctx);
                next.run(req).await
            }
        }
    };
    if let Some(integration) = integration {
        let retry_after_s = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        sb.observe(crate::RequestSeen {
            integration,
            status: response.status().as_u16(),
            retry_after_s,
            client,
        });
    }
    response
}

/// Checks the `Notion-Version` header: the sandbox models 2025-09-03 and later.
pub(crate) fn check_version(version: Option<&str>) -> Result<(), ApiError> {
    let Some(v) = version else {
        return Err(ApiError::missing_version());
    };
    let well_formed = v.len() == 10 && crate::time::parse_ms(v).is_some();
    if !well_formed {
        return Err(ApiError::validation(format!(
            "Notion-Version header failed validation: should be a date such as `2025-09-03`, instead was `{}`.",
            validate::truncate(v, 40)
        )));
    }
    if v < crate::NOTION_VERSION {
        return Err(ApiError::validation(format!(
            "Notion-Version `{v}` is older than {}; the sandbox models data sources (API version {} and later).",
            crate::NOTION_VERSION,
            crate::NOTION_VERSION
        )));
    }
    Ok(())
}

fn run(
    sb: &Sandbox,
    ctx: &Ctx,
    op: impl FnOnce(&mut Store, &Ctx) -> Result<Value, ApiError>,
) -> Response {
    let result = {
        let mut store = sb.lock();
        op(&mut store, ctx)
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::debug!(code = e.code, message = %e.message, "sandbox answered an error");
            e.render(&ctx.request_id)
        }
    }
}

fn id(path: Id, name: &str) -> Result<String, ApiError> {
    match path {
        Ok(Path(raw)) => validate::path_id(&raw, name),
        Err(_) => Err(ApiError::validation(format!(
            "path failed validation: path.{name} should be a valid uuid."
        ))),
    }
}

/// Reads a JSON body with Notion's size limit and generic array/text limits.
fn json_body(body: Body) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::validation(format!(
                "Request body too large: the limit is {MAX_PAYLOAD_BYTES} bytes."
            ))
        } else {
            ApiError::invalid_json(format!("Error reading the request body: {}", e.body_text()))
        }
    })?;
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::validation(format!(
            "Request body too large: {} bytes, the limit is {MAX_PAYLOAD_BYTES} bytes.",
            bytes.len()
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_json(format!("Error parsing JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::validation(
            "body failed validation: body should be an object.",
        ));
    }
    validate::check_limits(&value)?;
    Ok(value)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters; the last value of a repeated key wins.
fn query_map(raw: Option<String>) -> BTreeMap<String, String> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .take(64)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn paging(q: &BTreeMap<String, String>) -> Result<(Option<String>, usize), ApiError> {
    let size = validate::page_size(
        q.get("page_size")
            .map(|s| Value::String(s.clone()))
            .as_ref(),
    )?;
    let cursor = validate::start_cursor(
        q.get("start_cursor")
            .map(|s| Value::String(s.clone()))
            .as_ref(),
    )?;
    Ok((cursor, size))
}

pub(crate) async fn search(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| s.search(c.integ, &json_body(body)?))
}

pub(crate) async fn create_page(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.create_page(c.integ, &c.bot_user_id, &json_body(body)?)
    })
}

pub(crate) async fn get_page(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, c| s.get_page(c.integ, &id(path, "page_id")?))
}

pub(crate) async fn update_page(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let pid = id(path, "page_id")?;
        s.update_page(c.integ, &c.bot_user_id, &pid, &json_body(body)?)
    })
}

pub(crate) async fn get_page_property(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let Ok(Path((page, prop))) = path else {
            return Err(ApiError::validation("path failed validation."));
        };
        let pid = validate::path_id(&page, "page_id")?;
        s.get_page_property(c.integ, &pid, &prop, &query_map(raw))
    })
}

pub(crate) async fn move_page(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let pid = id(path, "page_id")?;
        s.move_page(c.integ, &c.bot_user_id, &pid, &json_body(body)?)
    })
}

pub(crate) async fn get_block(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.get_block(c.integ, &id(path, "block_id")?)
    })
}

pub(crate) async fn update_block(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let bid = id(path, "block_id")?;
        s.update_block(c.integ, &c.bot_user_id, &bid, &json_body(body)?)
    })
}

pub(crate) async fn delete_block(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.delete_block(c.integ, &c.bot_user_id, &id(path, "block_id")?)
    })
}

pub(crate) async fn list_children(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    RawQuery(raw): RawQuery,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let bid = id(path, "block_id")?;
        let (cursor, size) = paging(&query_map(raw))?;
        s.list_children(c.integ, &bid, cursor.as_deref(), size)
    })
}

pub(crate) async fn append_children(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let bid = id(path, "block_id")?;
        s.append_children(c.integ, &c.bot_user_id, &bid, &json_body(body)?)
    })
}

pub(crate) async fn create_database(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.create_database(c.integ, &c.bot_user_id, &json_body(body)?)
    })
}

pub(crate) async fn get_database(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.get_database(c.integ, &id(path, "database_id")?)
    })
}

pub(crate) async fn update_database(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let did = id(path, "database_id")?;
        s.update_database(c.integ, &c.bot_user_id, &did, &json_body(body)?)
    })
}

pub(crate) async fn create_data_source(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.create_data_source(c.integ, &c.bot_user_id, &json_body(body)?)
    })
}

pub(crate) async fn get_data_source(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.get_data_source(c.integ, &id(path, "data_source_id")?)
    })
}

pub(crate) async fn update_data_source(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let did = id(path, "data_source_id")?;
        s.update_data_source(c.integ, &c.bot_user_id, &did, &json_body(body)?)
    })
}

pub(crate) async fn query_data_source(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let did = id(path, "data_source_id")?;
        s.query_data_source(c.integ, &did, &json_body(body)?)
    })
}

pub(crate) async fn list_comments(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(raw): RawQuery,
) -> Response {
    run(&sb, &ctx, |s, c| {
        let q = query_map(raw);
        let block = q.get("block_id").ok_or_else(|| {
            ApiError::validation("query failed validation: query.block_id should be defined, instead was `undefined`.")
        })?;
        let bid = validate::normalize_id(block).ok_or_else(|| {
            ApiError::validation(format!(
                "query failed validation: query.block_id should be a valid uuid, instead was `{}`.",
                validate::truncate(block, 64)
            ))
        })?;
        let (cursor, size) = paging(&q)?;
        s.list_comments(c.integ, &bid, cursor.as_deref(), size)
    })
}

pub(crate) async fn create_comment(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    body: Body,
) -> Response {
    run(&sb, &ctx, |s, c| {
        s.create_comment(c.integ, &c.bot_user_id, &json_body(body)?)
    })
}

pub(crate) async fn list_users(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(raw): RawQuery,
) -> Response {
    run(&sb, &ctx, |s, _| {
        let (cursor, size) = paging(&query_map(raw))?;
        s.list_users(cursor.as_deref(), size)
    })
}

pub(crate) async fn me(State(sb): State<Sandbox>, Extension(ctx): Extension<Ctx>) -> Response {
    run(&sb, &ctx, |s, c| s.get_user(&c.bot_user_id))
}

pub(crate) async fn get_user(
    State(sb): State<Sandbox>,
    Extension(ctx): Extension<Ctx>,
    path: Id,
) -> Response {
    run(&sb, &ctx, |s, _| s.get_user(&id(path, "user_id")?))
}

pub(crate) async fn stats(State(sb): State<Sandbox>) -> Response {
    Json(sb.stats()).into_response()
}

pub(crate) async fn reset_stats(State(sb): State<Sandbox>) -> Response {
    sb.reset_stats();
    Json(sb.stats()).into_response()
}

pub(crate) async fn invalid_url(State(sb): State<Sandbox>) -> Response {
    ApiError::invalid_url().render(&sb.request_id())
}
