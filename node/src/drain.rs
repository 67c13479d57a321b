//! The HTTP front's drain: a stopping node answers new requests 503 and waits for the ones
//! it already took to finish before it ends its MCP sessions.
//!
//! A request counts as in flight until its whole response body has been sent (or the client
//! went away), so a tool call answered on a POST's event stream counts until that stream
//! ends. An agent's standalone `GET /mcp` stream is not counted: it carries no answer and
//! lives as long as the session, so waiting for it would hold every stop for the whole grace
//! period.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether the HTTP front still takes new requests, and how many it is still answering.
#[derive(Clone, Debug, Default)]
pub struct Drain(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    draining: AtomicBool,
    in_flight: AtomicU64,
}

impl Drain {
    /// From now on, new requests answer 503.
    pub fn start(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Drain::start`] was called.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Requests taken and not yet answered in full (standalone MCP streams excluded).
    pub fn in_flight(&self) -> u64 {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    fn track(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One request in flight; dropped when its response body is done.
#[derive(Debug)]
struct InFlight(Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        (self.0).0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight until it ends or is dropped.
struct Tracked {
    inner: Body,
    guard: Option<InFlight>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The middleware: while the node drains, a request that still reaches it (on a connection
/// opened before the listener closed) answers 503 with `Retry-After`, so its client retries
/// on another node; `/healthz` and `/readyz` still answer. Otherwise the request is counted
/// in flight until its response has been sent.
pub async fn gate(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    if drain.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1"), (header::CONNECTION, "close")],
            axum::Json(serde_json::json!({
                "error": "shutting_down",
                "message": "this node is stopping; send the request to another node of the cluster",
            })),
        )
            .into_response();
    }
    let standalone_stream = request.method() == Method::GET && path.starts_with("/mcp");
    if standalone_stream {
        return next.run(request).await;
    }
    let guard = drain.track();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Tracked {
            inner: body,
            guard: Some(guard),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(drain: &Drain) -> Router {
        Router::new()
            .route("/work", post(|| async { "done" }))
            .route("/mcp", get(|| async { "stream" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(drain.clone(), gate))
    }

    #[tokio::test]
    async fn a_request_counts_until_its_body_is_read_then_draining_refuses_new_ones() {
        let drain = Drain::default();
        let router = app(&drain);
        let response = router
            .clone()
            .oneshot(Request::post("/work").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(drain.in_flight(), 1, "the body has not been sent yet");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done");
        assert_eq!(drain.in_flight(), 0);

        // A standalone stream is not counted.
        let stream = router
            .clone()
            .oneshot(Request::get("/mcp").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(drain.in_flight(), 0);
        drop(stream);

        // A response dropped unsent (the client went away) stops counting too.
        let response = router
            .clone()
            .oneshot(Request::post("/work").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(drain.in_flight(), 1);
        drop(response);
        assert_eq!(drain.in_flight(), 0);

        drain.start();
        let refused = router
            .clone()
            .oneshot(Request::post("/work").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        let health = router
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
}
