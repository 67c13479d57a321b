//! The HTTP client for Notion's public API: headers, error objects, bounded retries with
//! seeded jitter, a timeout per request and a cap on the response size.
//!
//! The client never retries 429 `rate_limited` or 529 `service_overload`: it returns them
//! (with `Retry-After`) so the integration's rate limiter can pause every caller at once.
//!
//! Bytes move through an [`HttpTransport`] chosen at construction (reqwest in production,
//! [`NotionClient::new`]; the simulator's own with [`NotionClient::with_transport`]); every
//! rule above stays here, whatever the transport.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde_json::Value;

use super::http::{HttpBody, HttpRequest, HttpTransport, ReqwestTransport};
use super::pagination;
use super::request::{NotionError, NotionRequest, NotionToken};

/// The Notion API version Quire speaks (data sources).
pub const NOTION_VERSION: &str = "2025-09-03";

/// Longest `Retry-After` honoured; a larger value is clamped (a typo in a proxy must not
/// stop an integration for a day).
pub const MAX_RETRY_AFTER_S: u64 = 3600;

/// Longest backoff between two retries of a 5xx.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// How a [`NotionClient`] talks to Notion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotionClientConfig {
    /// `https://api.notion.com`, or a sandbox (`http://127.0.0.1:port`). No trailing `/v1`.
    pub base_url: String,
    /// Sent as `Notion-Version`.
    pub notion_version: String,
    /// Limit on one HTTP exchange (connect, send, read the whole answer).
    pub request_timeout_ms: u64,
    /// Retries of 500/502/503/504 (not of 429/529, not of timeouts).
    pub max_retries: u32,
    /// First backoff; doubled each retry, plus seeded jitter of up to as much again.
    pub retry_base_ms: u64,
    /// Largest answer body read; a larger one is a [`NotionError::Decode`].
    pub max_response_bytes: usize,
    /// The local address requests leave from (a host with several, whose Notion egress must
    /// be one an allowlist names); `None`: the system's choice.
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for NotionClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.notion.com".to_string(),
            notion_version: NOTION_VERSION.to_string(),
            request_timeout_ms: 30_000,
            max_retries: 3,
            retry_base_ms: 250,
            max_response_bytes: 8 * 1024 * 1024,
            local_address: None,
        }
    }
}

/// A Notion API client. Cheap to clone (shares its transport and jitter RNG).
#[derive(Clone)]
pub struct NotionClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn HttpTransport>,
    base_url: String,
    config: NotionClientConfig,
    rng: Mutex<ChaCha8Rng>,
}

impl std::fmt::Debug for NotionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotionClient")
            .field("base_url", &self.inner.base_url)
            .field("notion_version", &self.inner.config.notion_version)
            .finish()
    }
}

impl NotionClient {
    /// Builds a client over reqwest; `seed` drives the retry jitter.
    pub fn new(config: NotionClientConfig, seed: u64) -> Result<NotionClient, NotionError> {
        let transport =
            ReqwestTransport::new(config.local_address).map_err(NotionError::invalid_config)?;
        Self::with_transport(config, seed, Arc::new(transport))
    }

    /// Builds a client that sends through `transport` (the simulator's network, for one).
    pub fn with_transport(
        config: NotionClientConfig,
        seed: u64,
        transport: Arc<dyn HttpTransport>,
    ) -> Result<NotionClient, NotionError> {
        let base_url = validate_base_url(&config.base_url)?;
        if config.notion_version.trim().is_empty()
            || HeaderValue::from_str(&config.notion_version).is_err()
        {
            return Err(NotionError::invalid_config(format!(
                "notion_version {:?} is not a usable header value; use e.g. {NOTION_VERSION:?}",
                config.notion_version
            )));
        }
        if config.request_timeout_ms == 0 {
            return Err(NotionError::invalid_config(
                "request_timeout_ms must be at least 1",
            ));
        }
        if config.max_response_bytes == 0 {
            return Err(NotionError::invalid_config(
                "max_response_bytes must be at least 1",
            ));
        }
        if config.max_retries > 10 {
            return Err(NotionError::invalid_config(format!(
                "max_retries {} is above the limit of 10",
                config.max_retries
            )));
        }
        Ok(NotionClient {
            inner: Arc::new(Inner {
                transport,
                base_url,
                config,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            }),
        })
    }

    pub fn config(&self) -> &NotionClientConfig {
        &self.inner.config
    }

    /// Sends `req`, retrying 500/502/503/504 up to `max_retries` times with backoff.
    /// 429 and 529 come back as [`NotionError::Api`] with `retry_after` set.
    pub async fn send(
        &self,
        token: &NotionToken,
        req: &NotionRequest,
    ) -> Result<Value, NotionError> {
        let mut attempt = 0u32;
        loop {
            match self.send_once(token, req).await {
                Err(e) if is_retryable(&e) && attempt < self.inner.config.max_retries => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying Notion call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One HTTP exchange, no retries. Validates the request first (nothing is sent if it is
    /// malformed).
    pub async fn send_once(
        &self,
        token: &NotionToken,
        req: &NotionRequest,
    ) -> Result<Value, NotionError> {
        validate_request(req)?;
        let timeout_ms = self.inner.config.request_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), self.exchange(token, req))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(NotionError::Timeout { timeout_ms }),
        }
    }

    /// The wait before retry number `attempt + 1`: `retry_base_ms * 2^attempt` plus seeded
    /// jitter in `[0, that)`, at most [`MAX_BACKOFF_MS`].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .config
            .retry_base_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(MAX_BACKOFF_MS);
        let jitter = if base == 0 {
            0
        } else {
            // A poisoned lock only means another caller panicked mid-draw; the RNG is
            // still usable.
            let mut rng = self.inner.rng.lock().unwrap_or_else(|p| p.into_inner());
            rng.random_range(0..base)
        };
        Duration::from_millis(base.saturating_add(jitter).min(MAX_BACKOFF_MS))
    }

    fn url(&self, req: &NotionRequest) -> Result<Url, NotionError> {
        let mut url = Url::parse(&format!("{}{}", self.inner.base_url, req.path)).map_err(|e| {
            NotionError::invalid_request(format!("path {:?} does not form a URL: {e}", req.path))
        })?;
        if !req.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &req.query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn exchange(
        &self,
        token: &NotionToken,
        req: &NotionRequest,
    ) -> Result<Value, NotionError> {
        let url = self.url(req)?;
        let auth = format!("Bearer {}", token.expose());
        if HeaderValue::from_str(&auth).is_err() {
            return Err(NotionError::invalid_request(
                "the integration's token contains characters not allowed in a header".to_string(),
            ));
        }
        let mut headers = vec![
            ("authorization", auth),
            ("notion-version", self.inner.config.notion_version.clone()),
        ];
        let body = match &req.body {
            Some(body) => {
                let bytes = serde_json::to_vec(body)
                    .map_err(|e| NotionError::invalid_request(format!("body is not JSON: {e}")))?;
                headers.push(("content-type", "application/json".to_string()));
                Some(bytes)
            }
            None => None,
        };
        let request = HttpRequest {
            method: req.method,
            url: url.to_string(),
            headers,
            body,
        };
        let mut response = self
            .inner
            .transport
            .send(request)
            .await
            .map_err(NotionError::Transport)?;
        let status = response.status;
        let retry_after = parse_retry_after(response.retry_after.as_deref());
        let body = read_capped(
            response.content_length,
            response.body.as_mut(),
            self.inner.config.max_response_bytes,
        )
        .await?;
        if (200..300).contains(&status) {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&body).map_err(|e| {
                NotionError::Decode(format!("HTTP {status} answer is not JSON: {e}"))
            });
        }
        Err(api_error(status, &body, retry_after))
    }
}

/// Whether the client retries this error itself (500, 502, 503, 504).
pub fn is_retryable(e: &NotionError) -> bool {
    matches!(
        e,
        NotionError::Api {
            status: 500 | 502 | 503 | 504,
            ..
        }
    )
}

/// Whether Notion asked the whole integration to slow down (429, 529).
pub fn is_rate_limit(e: &NotionError) -> bool {
    matches!(
        e,
        NotionError::Api {
            status: 429 | 529,
            ..
        }
    )
}

fn validate_base_url(raw: &str) -> Result<String, NotionError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| {
        NotionError::invalid_config(format!(
            "base_url {raw:?} is not a URL ({e}); use e.g. \"https://api.notion.com\""
        ))
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(NotionError::invalid_config(format!(
            "base_url {raw:?} must use http or https, not {:?}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(NotionError::invalid_config(format!(
            "base_url {raw:?} has no host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(NotionError::invalid_config(format!(
            "base_url {raw:?} must not carry a query or fragment"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NotionError::invalid_config(format!(
            "base_url {raw:?} must not carry credentials"
        )));
    }
    if url.path().trim_end_matches('/').ends_with("/v1") {
        return Err(NotionError::invalid_config(format!(
            "base_url {raw:?} must not end in /v1: request paths already begin with /v1/"
        )));
    }
    Ok(trimmed.to_string())
}

/// Longest request path accepted.
pub const MAX_PATH_BYTES: usize = 2048;

/// Checks what the client can check before sending: the path shape and `page_size`.
pub fn validate_request(req: &NotionRequest) -> Result<(), NotionError> {
    if !req.path.starts_with("/v1/") {
        return Err(NotionError::invalid_request(format!(
            "path {:?} must begin with /v1/",
            req.path
        )));
    }
    if req.path.len() > MAX_PATH_BYTES {
        return Err(NotionError::invalid_request(format!(
            "path is {} bytes, above the limit of {MAX_PATH_BYTES}",
            req.path.len()
        )));
    }
    if req.path.contains("..")
        || req
            .path
            .chars()
            .any(|c| c.is_control() || c == '?' || c == '#' || c.is_whitespace())
    {
        return Err(NotionError::invalid_request(format!(
            "path {:?} contains '..', '?', '#', whitespace or control characters; pass query \
             parameters in `query`",
            req.path
        )));
    }
    pagination::validate_page_size(req)
}

fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let text = value?.trim();
    // Notion sends whole seconds; accept fractional seconds too, round up.
    let seconds: f64 = text.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let ms = (seconds * 1000.0)
        .ceil()
        .min((MAX_RETRY_AFTER_S * 1000) as f64) as u64;
    Some(Duration::from_millis(ms))
}

async fn read_capped(
    content_length: Option<u64>,
    body_chunks: &mut dyn HttpBody,
    max: usize,
) -> Result<Vec<u8>, NotionError> {
    if let Some(len) = content_length
        && len > max as u64
    {
        return Err(NotionError::Decode(format!(
            "answer of {len} bytes is above the limit of {max} bytes (max_response_bytes)"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = body_chunks
        .next_chunk()
        .await
        .map_err(|e| NotionError::Transport(format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > max {
            return Err(NotionError::Decode(format!(
                "answer is above the limit of {max} bytes (max_response_bytes)"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest excerpt of a non-JSON error body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 200;

fn api_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> NotionError {
    let retry_after = if status == 429 || status == 529 {
        retry_after
    } else {
        None
    };
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body)
        && obj.get("object").and_then(Value::as_str) == Some("error")
    {
        let code = obj
            .get("code")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| default_code(status).to_string());
        let message = obj
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string();
        let request_id = obj
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        return NotionError::Api {
            status,
            code,
            message,
            request_id,
            retry_after,
        };
    }
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    let message = if excerpt.trim().is_empty() {
        format!("HTTP {status} with an empty body (not a Notion error object)")
    } else {
        format!("HTTP {status} with a body that is not a Notion error object: {excerpt:?}")
    };
    NotionError::Api {
        status,
        code: default_code(status).to_string(),
        message,
        request_id: None,
        retry_after,
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "restricted_resource",
        404 => "object_not_found",
        409 => "conflict_error",
        429 => "rate_limited",
        500 => "internal_server_error",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        529 => "service_overload",
        _ => "unexpected_status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_validation() {
        assert!(validate_base_url("https://api.notion.com/").is_ok());
        assert_eq!(
            validate_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "",
            "api.notion.com",
            "ftp://x",
            "https://api.notion.com/v1",
            "https://u:p@x",
            "https://x/?a=1",
        ] {
            let e = validate_base_url(bad).unwrap_err();
            assert!(matches!(e, NotionError::Transport(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn request_validation() {
        assert!(validate_request(&NotionRequest::get("/v1/users")).is_ok());
        assert!(validate_request(&NotionRequest::get("v1/users")).is_err());
        assert!(validate_request(&NotionRequest::get("/v1/../admin")).is_err());
        assert!(validate_request(&NotionRequest::get("/v1/users?x=1")).is_err());
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(Some(" 0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(Some("soon")), None);
        assert_eq!(
            parse_retry_after(Some("99999999")),
            Some(Duration::from_secs(MAX_RETRY_AFTER_S))
        );
    }

    #[test]
    fn error_object_and_plain_bodies() {
        let body = br#"{"object":"error","status":404,"code":"object_not_found","message":"nope","request_id":"r1"}"#;
        match api_error(404, body, None) {
            NotionError::Api {
                status,
                code,
                message,
                request_id,
                retry_after,
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (404, "object_not_found", "nope")
                );
                assert_eq!(request_id.as_deref(), Some("r1"));
                assert_eq!(retry_after, None);
            }
            other => panic!("{other:?}"),
        }
        match api_error(
            502,
            b"<html>bad gateway</html>",
            Some(Duration::from_secs(3)),
        ) {
            NotionError::Api {
                code,
                message,
                retry_after,
                ..
            } => {
                assert_eq!(code, "bad_gateway");
                assert!(message.contains("not a Notion error object"), "{message}");
                assert_eq!(retry_after, None, "Retry-After only kept on 429/529");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_is_bounded_seeded_and_growing() {
        let cfg = NotionClientConfig {
            retry_base_ms: 100,
            ..Default::default()
        };
        let a = NotionClient::new(cfg.clone(), 7).unwrap();
        let b = NotionClient::new(cfg, 7).unwrap();
        for attempt in 0..12 {
            let da = a.backoff(attempt);
            assert_eq!(da, b.backoff(attempt), "same seed, same jitter");
            let base = (100u64 << attempt).min(MAX_BACKOFF_MS);
            assert!(da.as_millis() as u64 >= base && da.as_millis() as u64 <= MAX_BACKOFF_MS);
        }
    }
}
