//! The one seam between the Notion client and the network: "send one HTTP request, get the
//! status, the `Retry-After` header and the body in chunks". Production uses reqwest
//! ([`ReqwestTransport`]); the simulator plugs in a client over its simulated TCP.
//!
//! A transport only moves bytes. Every rule — retries and their backoff, `Retry-After`
//! parsing, the cap on the answer's size, the timeout of an exchange, error objects — stays
//! in [`super::client::NotionClient`], the same code path whatever the transport.

use std::future::Future;
use std::pin::Pin;

use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::request::HttpMethod;

/// A boxed, sendable future (the transport trait stays object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request, fully formed by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: HttpMethod,
    /// Absolute URL (`http://host:port/v1/...?query`).
    pub url: String,
    /// Header names in lower case. `authorization` carries the integration's token: a
    /// transport must not log it.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

/// The answer's body, read chunk by chunk (the client stops reading past its size cap).
pub trait HttpBody: Send {
    /// The next chunk, `None` at the end; an error says why the body could not be read.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
}

/// The head of an answer and its body.
pub struct HttpResponse {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The announced `Content-Length`, if any.
    pub content_length: Option<u64>,
    pub body: Box<dyn HttpBody>,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Sends one HTTP request (no retries, no timeout: the client owns both).
pub trait HttpTransport: Send + Sync {
    /// The head of the answer, or why the exchange failed (connect, send, read the head).
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>>;
}

/// The production transport: reqwest, no redirects, no proxy.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

impl ReqwestTransport {
    /// Builds the reqwest client; its connections leave from `local_address` when given.
    pub fn new(local_address: Option<std::net::IpAddr>) -> Result<ReqwestTransport, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .local_address(local_address)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ReqwestTransport { http })
    }
}

struct ReqwestBody(reqwest::Response);

impl HttpBody for ReqwestBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            self.0
                .chunk()
                .await
                .map(|c| c.map(|b| b.to_vec()))
                .map_err(|e| error_chain(&e))
        })
    }
}

impl HttpTransport for ReqwestTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async move {
            let method = match request.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Patch => reqwest::Method::PATCH,
                HttpMethod::Delete => reqwest::Method::DELETE,
            };
            let mut builder = self.http.request(method, &request.url);
            for (name, value) in &request.headers {
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| format!("header {name} is not a valid header value"))?;
                if *name == "authorization" {
                    value.set_sensitive(true);
                }
                builder = builder.header(HeaderName::from_static(name), value);
            }
            if let Some(body) = request.body {
                builder = builder.body(body);
            }
            let response = builder.send().await.map_err(|e| error_chain(&e))?;
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok(HttpResponse {
                status: response.status().as_u16(),
                retry_after,
                content_length: response.content_length(),
                body: Box::new(ReqwestBody(response)),
            })
        })
    }
}

/// An error and its sources, joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
