//! A faithful local stand-in for Notion's public API v1: in memory, seeded, with Notion's
//! validation limits, error objects, pagination, per-integration sharing and rate limits.
//! Tests, benchmarks, the simulator and `quire serve --sandbox` use it; Notion itself is
//! never reached from those.
//!
//! The crate owns the sandbox's whole workspace model (pages, blocks, databases and their
//! data sources per API version 2025-09-03, comments, users, integrations and their shares),
//! its HTTP surface (an axum router) and its observability (`/__sandbox/stats`). Time comes
//! from `tokio::time` (so a paused clock drives rate limits and latency) and timestamps count
//! from a fixed epoch; randomness comes from one RNG seeded by [`SandboxConfig::seed`]. It
//! knows nothing of Quire's cluster, tenants, actors or MCP: it only imitates Notion.

mod demo;
mod errors;
mod query;
mod ratelimit;
mod routes;
mod store;
mod time;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use ratelimit::{MAX_REQUESTS_PER_SECOND, RateLimitConfig, parse_rate_limit};
pub use validate::{
    MAX_ARRAY_ELEMENTS, MAX_BLOCKS_PER_REQUEST, MAX_PAGE_SIZE, MAX_PAYLOAD_BYTES,
    MAX_RICH_TEXT_CHARS,
};

use errors::ApiError;
use ratelimit::{SlidingWindow, TokenBucket};
use routes::{Admission, Ctx};
use store::{Integration, Parent, Store};

/// The Notion API version the sandbox models (and the oldest it accepts).
pub const NOTION_VERSION: &str = "2025-09-03";
/// Request bodies above this are refused by axum before the handler sees them; bodies
/// between [`MAX_PAYLOAD_BYTES`] and this get Notion's own `validation_error`.
pub const BODY_LIMIT_BYTES: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
/// Status codes the sandbox can inject when none are configured.
pub const DEFAULT_ERROR_STATUSES: &[u16] = &[500, 503, 529];
/// Longest injected latency, whatever the configuration says.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// How the sandbox behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Seeds every id, demo content, latency and error draw.
    pub seed: u64,
    /// Per-integration token bucket; `None` turns rate limiting off.
    pub rate_limit: Option<RateLimitConfig>,
    /// Latency added to each authenticated request, drawn uniformly from `min..=max` ms.
    pub latency_ms: Option<(u64, u64)>,
    /// Probability (0..=1) that an authenticated, admitted request fails with one of
    /// `error_statuses`.
    pub error_rate: f64,
    /// Statuses to inject (500, 502, 503, 504, 529); empty means [`DEFAULT_ERROR_STATUSES`].
    pub error_statuses: Vec<u16>,
    /// Build the demo workspace; without it each integration shares one empty root page.
    pub demo_content: bool,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            seed: 1,
            rate_limit: Some(RateLimitConfig::default()),
            latency_ms: None,
            error_rate: 0.0,
            error_statuses: Vec::new(),
            demo_content: true,
        }
    }
}

/// One integration (a bot with a token and its own shares and rate limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxIntegration {
    pub name: String,
    pub token: String,
    pub bot_user_id: String,
}

/// Counters of one integration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationStats {
    /// Requests admitted (not answered 429).
    pub requests: u64,
    /// Requests answered 429 `rate_limited`.
    pub rate_limited: u64,
    /// Most requests admitted within any one-second window.
    pub max_per_second: u64,
    /// Distinct senders of admitted requests: the [`CLIENT_HEADER`] if a request has one,
    /// else the address the request came from (one per host, whatever the port).
    #[serde(default)]
    pub senders: u64,
    /// Admitted requests whose sender was not that of the admitted request just before (in
    /// the order they arrived): with one sender at a time (a shard's owner, then the next),
    /// one per change of sender; two sending at once switch back and forth.
    #[serde(default)]
    pub sender_switches: u64,
}

/// What `GET /__sandbox/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// By integration name.
    pub integrations: BTreeMap<String, IntegrationStats>,
}

/// Ids of demo objects tests can use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoIds {
    /// "Quire Demo", shared with alpha (without demo content: an empty root shared with all).
    pub root_page_id: String,
    /// A few pages below the root (team spaces and some of their topic pages).
    pub page_ids: Vec<String>,
    /// The "Tasks" database.
    pub database_id: String,
    /// Its only data source (rows: `demo::DEMO_TASK_ROWS`).
    pub data_source_id: String,
    /// "Engineering": visible to alpha, not to beta.
    pub alpha_only_page_id: String,
    /// "Product": shared with beta (and visible to alpha through the root).
    pub beta_page_id: String,
    /// The five people of the workspace.
    pub user_ids: Vec<String>,
}

/// Rows in the demo "Tasks" data source.
pub const DEMO_TASK_ROWS: usize = demo::DEMO_TASK_ROWS;

/// A fault switched on and off at run time (the simulator's Notion faults), on top of the
/// configured error rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotionFault {
    /// Every authenticated request is answered 429 `rate_limited` with this `Retry-After`.
    RateLimited {
        /// Seconds sent in `Retry-After` (at least 1).
        retry_after_s: u64,
    },
    /// Every authenticated request fails with one of these statuses (500, 502, 503, 504,
    /// 529), drawn from the seeded RNG.
    ServerErrors {
        /// The statuses to draw from; empty means [`DEFAULT_ERROR_STATUSES`].
        statuses: Vec<u16>,
    },
}

/// One authenticated request as the sandbox answered it (see [`Sandbox::set_observer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSeen {
    /// The integration's name.
    pub integration: String,
    /// The answer's status.
    pub status: u16,
    /// The answer's `Retry-After`, seconds.
    pub retry_after_s: Option<u64>,
    /// The request's [`CLIENT_HEADER`], if it had one: a test harness names the sender of
    /// each request with it (Notion has no such header; the sandbox only reports it).
    pub client: Option<String>,
}

/// The header a test harness may set to name a request's sender in [`RequestSeen::client`].
pub const CLIENT_HEADER: &str = "x-sandbox-client";

/// Called once per authenticated request, when its answer is ready.
pub type RequestObserver = Arc<dyn Fn(RequestSeen) + Send + Sync>;

struct Inner {
    config: SandboxConfig,
    store: Mutex<Store>,
    fault: Mutex<Option<NotionFault>>,
    observer: Mutex<Option<RequestObserver>>,
}

/// A running sandbox's state; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const INTEGRATIONS: &[(&str, &str)] = &[
    ("alpha", "secret_sandbox_alpha"),
    ("beta", "secret_sandbox_beta"),
];

impl Sandbox {
    /// Builds the workspace from `config.seed`. Out-of-range settings are clamped: the error
    /// rate to 0..=1, latency to [`MAX_LATENCY_MS`]; unknown error statuses answer 500.
    pub fn new(mut config: SandboxConfig) -> Sandbox {
        if !config.error_rate.is_finite() {
            config.error_rate = 0.0;
        }
        config.error_rate = config.error_rate.clamp(0.0, 1.0);
        if config.error_statuses.is_empty() {
            config.error_statuses = DEFAULT_ERROR_STATUSES.to_vec();
        }
        if let Some((lo, hi)) = config.latency_ms {
            let lo = lo.min(MAX_LATENCY_MS);
            config.latency_ms = Some((lo, hi.clamp(lo, MAX_LATENCY_MS)));
        }
        let start = Instant::now();
        let mut store = Store {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            start,
            seq: 0,
            pages: BTreeMap::new(),
            blocks: BTreeMap::new(),
            databases: BTreeMap::new(),
            data_sources: BTreeMap::new(),
            comments: BTreeMap::new(),
            users: BTreeMap::new(),
            integrations: Vec::new(),
            demo: DemoIds::default(),
        };
        for (name, token) in INTEGRATIONS {
            let bot = store.add_user(&format!("Quire sandbox bot ({name})"), None);
            store.integrations.push(Integration {
                name: (*name).to_string(),
                token: (*token).to_string(),
                bot_user_id: bot,
                shares: BTreeSet::new(),
                bucket: config.rate_limit.map(|r| TokenBucket::new(r, start)),
                window: SlidingWindow::default(),
                requests: 0,
                rate_limited: 0,
                senders: Default::default(),
            });
        }
        store.demo = if config.demo_content {
            demo::build(&mut store, 0, 1)
        } else {
            let root = store.new_id();
            let meta = store::Meta {
                created_ms: time::EPOCH_MS,
                edited_ms: time::EPOCH_MS,
                created_by: store.integrations[0].bot_user_id.clone(),
                edited_by: store.integrations[0].bot_user_id.clone(),
                in_trash: false,
            };
            let mut values = BTreeMap::new();
            values.insert("title".to_string(), validate::rich_text("Quire Sandbox"));
            store.pages.insert(
                root.clone(),
                store::Page {
                    id: root.clone(),
                    parent: Parent::Workspace,
                    values,
                    icon: serde_json::Value::Null,
                    cover: serde_json::Value::Null,
                    meta,
                    children: Vec::new(),
                },
            );
            for i in &mut store.integrations {
                i.shares.insert(root.clone());
            }
            DemoIds {
                root_page_id: root,
                ..DemoIds::default()
            }
        };
        Sandbox {
            inner: Arc::new(Inner {
                config,
                store: Mutex::new(store),
                fault: Mutex::new(None),
                observer: Mutex::new(None),
            }),
        }
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied change: operations
        // validate first and mutate last. Keep serving.
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn request_id(&self) -> String {
        self.lock().new_id()
    }

    /// The `/v1` API and `/__sandbox/stats`, ready to serve.
    pub fn router(&self) -> Router {
        let v1 = Router::new()
            .route("/v1/search", post(routes::search))
            .route("/v1/pages", post(routes::create_page))
            .route(
                "/v1/pages/{id}",
                get(routes::get_page).patch(routes::update_page),
            )
            .route(
                "/v1/pages/{id}/properties/{property_id}",
                get(routes::get_page_property),
            )
            .route("/v1/pages/{id}/move", post(routes::move_page))
            .route(
                "/v1/blocks/{id}",
                get(routes::get_block)
                    .patch(routes::update_block)
                    .delete(routes::delete_block),
            )
            .route(
                "/v1/blocks/{id}/children",
                get(routes::list_children).patch(routes::append_children),
            )
            .route("/v1/databases", post(routes::create_database))
            .route(
                "/v1/databases/{id}",
                get(routes::get_database).patch(routes::update_database),
            )
            .route("/v1/data_sources", post(routes::create_data_source))
            .route(
                "/v1/data_sources/{id}",
                get(routes::get_data_source).patch(routes::update_data_source),
            )
            .route(
                "/v1/data_sources/{id}/query",
                post(routes::query_data_source),
            )
            .route(
                "/v1/comments",
                get(routes::list_comments).post(routes::create_comment),
            )
            .route("/v1/users", get(routes::list_users))
            .route("/v1/users/me", get(routes::me))
            .route("/v1/users/{id}", get(routes::get_user))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                routes::gate,
            ))
            .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
        let admin = Router::new()
            .route("/__sandbox/stats", get(routes::stats))
            .route("/__sandbox/stats/reset", post(routes::reset_stats));
        v1.merge(admin)
            .fallback(routes::invalid_url)
            .method_not_allowed_fallback(routes::invalid_url)
            .with_state(self.clone())
    }

    /// The integrations, in a fixed order (alpha, beta).
    pub fn integrations(&self) -> Vec<SandboxIntegration> {
        self.lock()
            .integrations
            .iter()
            .map(|i| SandboxIntegration {
                name: i.name.clone(),
                token: i.token.clone(),
                bot_user_id: i.bot_user_id.clone(),
            })
            .collect()
    }

    /// The same data as `GET /__sandbox/stats`.
    pub fn stats(&self) -> SandboxStats {
        SandboxStats {
            integrations: self.lock().stats(),
        }
    }

    /// Zeroes every integration's counters (as `POST /__sandbox/stats/reset`).
    pub fn reset_stats(&self) {
        let mut store = self.lock();
        for i in &mut store.integrations {
            i.requests = 0;
            i.rate_limited = 0;
            i.window.reset();
            i.senders.reset();
        }
    }

    /// Switches a run-time fault on (`Some`) or off (`None`).
    pub fn set_fault(&self, fault: Option<NotionFault>) {
        *self.inner.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The run-time fault in effect.
    pub fn fault(&self) -> Option<NotionFault> {
        self.inner
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls `observer` for every authenticated request once its answer is ready (the
    /// simulator records what Notion received this way); `None` stops.
    pub fn set_observer(&self, observer: Option<RequestObserver>) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = observer;
    }

    pub(crate) fn observe(&self, seen: RequestSeen) {
        let observer = self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(observer) = observer {
            observer(seen);
        }
    }

    /// The name of the integration whose token this is.
    pub(crate) fn integration_of(&self, token: &str) -> Option<String> {
        self.lock()
            .integrations
            .iter()
            .find(|i| i.token == token)
            .map(|i| i.name.clone())
    }

    /// Ids of demo objects tests can use.
    pub fn demo(&self) -> DemoIds {
        self.lock().demo.clone()
    }

    /// Auth, rate limit, version check, then latency and failure draws, under one lock.
    pub(crate) fn admit(
        &self,
        token: Option<&str>,
        version: Option<&str>,
        sender: Option<&str>,
    ) -> Result<Admission, (ApiError, String)> {
        let config = &self.inner.config;
        let mut store = self.lock();
        let request_id = store.new_id();
        let Some(integ) = token.and_then(|t| store.integrations.iter().position(|i| i.token == t))
        else {
            return Err((ApiError::unauthorized(), request_id));
        };
        let now = Instant::now();
        let fault = self.fault();
        let integration = &mut store.integrations[integ];
        if let Some(NotionFault::RateLimited { retry_after_s }) = fault {
            integration.rate_limited += 1;
            return Err((ApiError::rate_limited(retry_after_s), request_id));
        }
        if let Some(bucket) = integration.bucket.as_mut()
            && let Err(retry_after_s) = bucket.try_take(now)
        {
            integration.rate_limited += 1;
            return Err((ApiError::rate_limited(retry_after_s), request_id));
        }
        integration.requests += 1;
        integration.window.record(now);
        if let Some(sender) = sender {
            integration.senders.record(sender);
        }
        let bot_user_id = integration.bot_user_id.clone();
        routes::check_version(version).map_err(|e| (e, request_id.clone()))?;
        let delay_ms = match config.latency_ms {
            Some((lo, hi)) if hi > 0 => store.rng.random_range(lo..=hi),
            _ => 0,
        };
        let inject = if let Some(NotionFault::ServerErrors { statuses }) = &fault {
            let statuses = if statuses.is_empty() {
                DEFAULT_ERROR_STATUSES
            } else {
                statuses.as_slice()
            };
            let i = store.rng.random_range(0..statuses.len());
            statuses.get(i).copied()
        } else if config.error_rate > 0.0 && store.rng.random_bool(config.error_rate) {
            let i = store.rng.random_range(0..config.error_statuses.len());
            config.error_statuses.get(i).copied()
        } else {
            None
        };
        Ok(Admission {
            ctx: Ctx {
                integ,
                bot_user_id,
                request_id,
            },
            delay_ms,
            inject,
        })
    }
}

/// Serves the sandbox on `listener` until the task is dropped or aborted.
pub async fn serve(sandbox: Sandbox, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    // TCP_NODELAY, as Notion's own front has: without it, a response written in pieces
    // waits for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        sandbox
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}

/// Serves the sandbox on any axum listener (the simulator's simulated TCP, for one).
pub async fn serve_on<L>(sandbox: Sandbox, listener: L) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, sandbox.router()).await
}
