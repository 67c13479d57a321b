//! Notion inside the simulation: the sandbox (`quire-sandbox`'s axum app) served on its own
//! turmoil host, the HTTP transport the nodes' Notion clients use to reach it (hyper over
//! turmoil TCP, plugged into `quire_actors`' transport seam), and the log of every request
//! the sandbox received, stamped with simulated time, that the budget checker reads.
//!
//! Each request names the node that sent it (the sandbox's client header), so the budget
//! checker can tell a budget overspent by one node from one overspent across a handoff of the
//! integration's shard between nodes. Agents send each integration's calls to one entry
//! node ([`designated_node`]: integration index mod node count, stable for the run), which
//! forwards its Notion requests to the shard's owner ([`crate::forward`]); a call sent while
//! the entry node is down fails (recorded, not a violation).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use quire_actors::call::Budget;
use quire_actors::notion::HttpMethod;
use quire_actors::notion::http::{BoxFuture, HttpBody, HttpRequest, HttpResponse, HttpTransport};
use quire_raft::NodeId;
use quire_sandbox::{NotionFault, RequestSeen, Sandbox, SandboxConfig};

use crate::trace::{Trace, sim_now};

/// The sandbox's turmoil host name.
pub const NOTION_HOST: &str = "notion";
/// The port it serves on.
pub const NOTION_PORT: u16 = 80;

/// The base URL the nodes' Notion clients use.
pub fn base_url() -> String {
    format!("http://{NOTION_HOST}:{NOTION_PORT}")
}

/// The simulated integrations: the sandbox's two bots, each with Quire's default budget.
pub const INTEGRATIONS: [(&str, &str); 2] = [
    ("alpha", "secret_sandbox_alpha"),
    ("beta", "secret_sandbox_beta"),
];

/// The budget every simulated integration has (Quire's default: 3/s, burst 5).
pub fn budget() -> Budget {
    Budget::default()
}

/// The node agents send `integration`'s calls to (see the module docs).
pub fn designated_node(integration: usize, nodes: u64) -> NodeId {
    1 + (integration as u64) % nodes.max(1)
}

/// One request the sandbox received and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotionEvent {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// Index into [`INTEGRATIONS`].
    pub integration: usize,
    /// The answer's status.
    pub status: u16,
    /// The answer's `Retry-After`, seconds.
    pub retry_after_s: Option<u64>,
    /// The node that sent it.
    pub node: Option<NodeId>,
}

/// Every request the sandbox received, in order.
#[derive(Clone, Default)]
pub struct NotionLog(Arc<Mutex<Vec<NotionEvent>>>);

impl NotionLog {
    fn lock(&self) -> MutexGuard<'_, Vec<NotionEvent>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of every event.
    pub fn events(&self) -> Vec<NotionEvent> {
        self.lock().clone()
    }
}

/// The sandbox, once its host has built it (inside the host, so its clock is the host's).
#[derive(Clone, Default)]
pub struct SandboxHandle(Arc<Mutex<Option<Sandbox>>>);

impl SandboxHandle {
    fn lock(&self) -> MutexGuard<'_, Option<Sandbox>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches a Notion fault on or off (no-op before the sandbox is up).
    pub fn set_fault(&self, fault: Option<NotionFault>) {
        if let Some(sandbox) = self.lock().as_ref() {
            sandbox.set_fault(fault);
        }
    }
}

/// What the sandbox host needs.
#[derive(Clone)]
pub struct SandboxSetup {
    /// Seeds the sandbox's ids and draws.
    pub seed: u64,
    /// Where the sandbox is published.
    pub handle: SandboxHandle,
    /// Where its requests are recorded.
    pub log: NotionLog,
    /// The run's trace.
    pub trace: Trace,
}

struct TurmoilListener(turmoil::net::TcpListener);

impl axum::serve::Listener for TurmoilListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The sandbox host's software: builds the sandbox on its first run and serves it.
pub async fn run_sandbox(setup: SandboxSetup) -> turmoil::Result {
    let sandbox = {
        let mut slot = setup.handle.lock();
        match slot.as_ref() {
            Some(sandbox) => sandbox.clone(),
            None => {
                let sandbox = Sandbox::new(SandboxConfig {
                    seed: setup.seed,
                    // Notion's own limit (3/s, bursts of 10) stays on: Quire's budget is
                    // below it, so it only answers 429 when Quire overspends.
                    latency_ms: None,
                    ..SandboxConfig::default()
                });
                let log = setup.log.clone();
                let trace = setup.trace.clone();
                sandbox.set_observer(Some(Arc::new(move |seen: RequestSeen| {
                    let at = sim_now();
                    let Some(integration) = INTEGRATIONS
                        .iter()
                        .position(|(n, _)| *n == seen.integration)
                    else {
                        return;
                    };
                    trace.record(
                        at,
                        "notion",
                        format!(
                            "{} {}{} from {}",
                            seen.integration,
                            seen.status,
                            seen.retry_after_s
                                .map(|s| format!(" retry-after {s} s"))
                                .unwrap_or_default(),
                            seen.client.as_deref().unwrap_or("?")
                        ),
                    );
                    log.lock().push(NotionEvent {
                        at_ms: at.as_millis() as u64,
                        integration,
                        status: seen.status,
                        retry_after_s: seen.retry_after_s,
                        node: seen
                            .client
                            .as_deref()
                            .and_then(|c| c.strip_prefix('n'))
                            .and_then(|n| n.parse().ok()),
                    });
                })));
                *slot = Some(sandbox.clone());
                sandbox
            }
        }
    };
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NOTION_PORT)).await?;
    quire_sandbox::serve_on(sandbox, TurmoilListener(listener)).await?;
    Ok(())
}

/// A node's HTTP transport to the sandbox: one HTTP/1.1 connection per request over turmoil
/// TCP (hyper), each request naming the node in the sandbox's client header. Only bytes move
/// here; the client's rules stay in `quire_actors`.
pub struct TurmoilHttp {
    /// The node that sends.
    pub node: NodeId,
}

struct HyperBody(hyper::body::Incoming);

impl HttpBody for HyperBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            loop {
                match self.0.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data.to_vec()));
                        }
                    }
                }
            }
        })
    }
}

impl HttpTransport for TurmoilHttp {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async move {
            let uri: hyper::Uri = request
                .url
                .parse()
                .map_err(|e| format!("bad URL {:?}: {e}", request.url))?;
            let host = uri.host().ok_or("the URL has no host")?.to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect(format!("{host}:{port}"))
                .await
                .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let method = match request.method {
                HttpMethod::Get => hyper::Method::GET,
                HttpMethod::Post => hyper::Method::POST,
                HttpMethod::Patch => hyper::Method::PATCH,
                HttpMethod::Delete => hyper::Method::DELETE,
            };
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut builder = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{host}:{port}"))
                .header(quire_sandbox::CLIENT_HEADER, format!("n{}", self.node));
            for (name, value) in &request.headers {
                builder = builder.header(*name, value.as_str());
            }
            let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
            let req = builder
                .body(body)
                .map_err(|e| format!("building the request: {e}"))?;
            let response = sender
                .send_request(req)
                .await
                .map_err(|e| format!("sending the request: {e}"))?;
            let header = |name: hyper::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after = header(hyper::header::RETRY_AFTER);
            let content_length =
                header(hyper::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
            Ok(HttpResponse {
                status: response.status().as_u16(),
                retry_after,
                content_length,
                body: Box::new(HyperBody(response.into_body())),
            })
        })
    }
}
