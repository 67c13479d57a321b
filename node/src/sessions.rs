//! MCP sessions that continue on any node: rmcp's `SessionStore` backed by the replicated
//! session table (`quire_raft::sessions`), and the axum layer that binds every session to
//! the principal that opened it.
//!
//! - **store**: after a successful `initialize`, rmcp stores the client's `initialize`
//!   parameters. The node proposes `PutMcpSession` (bound to the caller's tenant and
//!   principal) and returns once it committed, so the session id the client receives is
//!   known to every node. If the table is full or the write fails, the layer closes the
//!   session it just opened and answers the `initialize` with 503 and the reason.
//! - **load**: a node that does not hold a session in memory restores it from the table and
//!   replays the handshake into a fresh handler. The layer has already found the entry for
//!   this request (the node's applied state, or a linearizable read when it is not there
//!   yet), so a session stored on another node a moment ago is found.
//! - **delete**: `DELETE /mcp` proposes `DeleteMcpSession`; the next request for that id on
//!   any node gets 404 (a node that held it in memory drops it at its idle timeout).
//! - **binding**: on every request that names a session, the caller's tenant and principal
//!   must be the ones the session is bound to; otherwise the answer is 404 "Session not
//!   found", exactly as for an unknown id (so a session id is no capability on its own and
//!   a guesser learns nothing), and the refusal is audited.
//! - **expiry**: an entry lives 1.25 × `mcp.session_idle_timeout_secs` past its last refresh.
//!   A request that uses a session refreshes it (in the background) once more than a quarter
//!   of that timeout has passed since the last refresh, so an entry always outlives the last
//!   request by at least the timeout and costs at most one write per quarter timeout.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use quire_raft::command::{ApplyError, Command};
use quire_raft::control::WriteError;
use quire_raft::ids::TenantId;
use quire_raft::sessions::{McpSession, SessionLimits};

use crate::app::App;
use crate::auth::Caller;

/// The header that names a session.
const SESSION_HEADER: &str = "mcp-session-id";
/// The stateless protocol revision: its requests carry no session.
const STATELESS_VERSION: &str = "2026-07-28";

tokio::task_local! {
    /// The caller of the request being served, for the store that rmcp calls inline.
    static REQUEST: Arc<RequestScope>;
}

/// What the layer knows about the request that rmcp is serving.
struct RequestScope {
    tenant: TenantId,
    principal: String,
    /// The session entry the layer found for this request's session id.
    found: Option<McpSession>,
    /// Why storing a new session failed: its id and the error.
    store_failed: Mutex<Option<(String, SessionError)>>,
}

/// The node's MCP sessions: its in-memory sessions (rmcp's manager) over the replicated
/// table.
pub struct McpSessions {
    app: Arc<App>,
    manager: Arc<LocalSessionManager>,
    /// Sessions whose refresh is being proposed (one at a time per session).
    refreshing: Mutex<BTreeSet<String>>,
    idle_timeout_ms: u64,
}

/// Why a session could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the request has no authenticated caller")]
    NoCaller,
    #[error("the session table is full: {0}")]
    Full(String),
    #[error("the session could not be stored: {0}")]
    Write(String),
    #[error("the session table could not be read: {0}")]
    Read(String),
    #[error("the stored session does not decode: {0}")]
    Decode(String),
}

impl McpSessions {
    pub fn new(app: Arc<App>, manager: Arc<LocalSessionManager>) -> Arc<Self> {
        let idle_timeout_ms = app
            .config
            .mcp
            .session_idle_timeout_secs
            .saturating_mul(1000);
        Arc::new(Self {
            app,
            manager,
            refreshing: Mutex::new(BTreeSet::new()),
            idle_timeout_ms,
        })
    }

    fn now_ms(&self) -> u64 {
        self.app.clock.now_ms()
    }

    /// When an entry stored or refreshed at `now_ms` expires.
    fn expires_at(&self, now_ms: u64) -> u64 {
        now_ms
            .saturating_add(self.idle_timeout_ms)
            .saturating_add(self.idle_timeout_ms / 4)
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_per_tenant: self.app.config.mcp.max_sessions_per_tenant,
            max_total: self.app.config.mcp.max_sessions,
        }
    }

    /// The live entry `id`: from this node's applied state, or, when it is not there (yet),
    /// by a linearizable read, which sees every session stored before it started.
    pub async fn lookup(&self, id: &str) -> Result<Option<McpSession>, SessionError> {
        let now_ms = self.now_ms();
        let local = self
            .app
            .control
            .read_applied(|state| state.mcp_sessions().live(id, now_ms).cloned());
        if local.is_some() {
            return Ok(local);
        }
        self.app
            .router
            .read(|state| state.mcp_sessions().live(id, now_ms).cloned())
            .await
            .map_err(|e| SessionError::Read(e.to_string()))
    }

    /// Refreshes `entry` in the background once a quarter of the idle timeout has passed
    /// since its last refresh.
    fn refresh_if_due(self: &Arc<Self>, entry: &McpSession) {
        let now_ms = self.now_ms();
        if entry.expires_at_ms.saturating_sub(now_ms) >= self.idle_timeout_ms {
            return;
        }
        {
            let mut busy = self
                .refreshing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !busy.insert(entry.id.clone()) {
                return;
            }
        }
        let me = self.clone();
        let mut session = entry.clone();
        tokio::spawn(async move {
            let at_ms = me.now_ms();
            session.expires_at_ms = me.expires_at(at_ms);
            let id = session.id.clone();
            let cmd = Command::PutMcpSession {
                session,
                at_ms,
                limits: me.limits(),
            };
            if let Err(e) = me.app.router.write(cmd).await {
                tracing::warn!("MCP session not refreshed (retried on its next request): {e}");
            }
            me.refreshing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }

    async fn store(&self, id: &str, state: &SessionState) -> Result<(), SessionError> {
        let scope = REQUEST
            .try_with(Arc::clone)
            .map_err(|_| SessionError::NoCaller)?;
        match self.put(&scope, id, state).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // rmcp only logs a failed store; the layer answers for it.
                let reported = match &e {
                    SessionError::Full(m) => SessionError::Full(m.clone()),
                    other => SessionError::Write(other.to_string()),
                };
                *scope
                    .store_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((id.to_owned(), reported));
                Err(e)
            }
        }
    }

    async fn put(
        &self,
        scope: &RequestScope,
        id: &str,
        state: &SessionState,
    ) -> Result<(), SessionError> {
        let state_json =
            serde_json::to_string(state).map_err(|e| SessionError::Write(e.to_string()))?;
        let at_ms = self.now_ms();
        let cmd = Command::PutMcpSession {
            session: McpSession {
                id: id.to_owned(),
                tenant: scope.tenant.clone(),
                principal: scope.principal.clone(),
                state_json,
                created_at_ms: at_ms,
                refreshed_at_ms: at_ms,
                expires_at_ms: self.expires_at(at_ms),
            },
            at_ms,
            limits: self.limits(),
        };
        match self.app.router.write(cmd).await {
            Ok(_) => Ok(()),
            Err(WriteError::Rejected(ApplyError::LimitReached(m))) => Err(SessionError::Full(m)),
            Err(e) => Err(SessionError::Write(e.to_string())),
        }
    }

    async fn load(&self, id: &str) -> Result<Option<SessionState>, SessionError> {
        // Without a caller there is no one to bind the session to: it is not restored.
        let Ok(scope) = REQUEST.try_with(Arc::clone) else {
            return Ok(None);
        };
        let entry = match &scope.found {
            Some(found) if found.id == id => Some(found.clone()),
            _ => self.lookup(id).await?,
        };
        let Some(entry) = entry.filter(|e| e.is_bound_to(&scope.tenant, &scope.principal)) else {
            return Ok(None);
        };
        serde_json::from_str(&entry.state_json)
            .map(Some)
            .map_err(|e| SessionError::Decode(e.to_string()))
    }

    async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let scope = REQUEST
            .try_with(Arc::clone)
            .map_err(|_| SessionError::NoCaller)?;
        let cmd = Command::DeleteMcpSession {
            id: id.to_owned(),
            tenant: scope.tenant.clone(),
            principal: scope.principal.clone(),
            at_ms: self.now_ms(),
        };
        self.app
            .router
            .write(cmd)
            .await
            .map(|_| ())
            .map_err(|e| SessionError::Write(e.to_string()))
    }
}

/// rmcp's session store over the replicated table (see the module docs).
pub struct ClusterSessionStore(pub Arc<McpSessions>);

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SessionStoreError>> + Send + 'a>>;

fn boxed(e: SessionError) -> SessionStoreError {
    Box::new(e)
}

// The trait is declared with `async_trait`; this is its expanded form.
impl SessionStore for ClusterSessionStore {
    fn load<'a, 'b, 'c>(&'a self, session_id: &'b str) -> StoreFuture<'c, Option<SessionState>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move { self.0.load(session_id).await.map_err(boxed) })
    }

    fn store<'a, 'b, 'd, 'c>(
        &'a self,
        session_id: &'b str,
        state: &'d SessionState,
    ) -> StoreFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
        Self: 'c,
    {
        Box::pin(async move { self.0.store(session_id, state).await.map_err(boxed) })
    }

    fn delete<'a, 'b, 'c>(&'a self, session_id: &'b str) -> StoreFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move { self.0.delete(session_id).await.map_err(boxed) })
    }
}

/// 404 as rmcp answers an unknown session: a foreign session looks exactly the same.
fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
}

/// 503 with a JSON-RPC error and `Retry-After: 1` (a passing condition).
fn unavailable(message: String) -> Response {
    with_retry(refused(message))
}

/// 503 with a JSON-RPC error.
fn refused(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32000, "message": message},
        })),
    )
        .into_response()
}

fn with_retry(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A short, non-reusable mention of a session id for logs and the audit trail.
fn id_hint(id: &str) -> String {
    format!("mcp_session:{}…", id.chars().take(8).collect::<String>())
}

/// axum middleware inside `/mcp` (after bearer authentication): checks that a request naming
/// a session comes from the principal the session is bound to, refreshes the session when
/// due, and makes the caller known to the session store for the request.
pub async fn bind_session(
    State(sessions): State<Arc<McpSessions>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        // Bearer authentication runs first; without a caller nothing is stored or restored.
        return next.run(request).await;
    };
    let Ok(tenant) = TenantId::new(&caller.tenant_id) else {
        return next.run(request).await;
    };
    let stateless = request
        .headers()
        .get("mcp-protocol-version")
        .is_some_and(|v| v.as_bytes() == STATELESS_VERSION.as_bytes());
    let session_id = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !stateless)
        .map(str::to_owned);
    let found = match session_id {
        None => None,
        Some(id) => match sessions.lookup(&id).await {
            Ok(Some(entry)) if entry.is_bound_to(&tenant, &caller.principal_id) => {
                sessions.refresh_if_due(&entry);
                Some(entry)
            }
            Ok(Some(_)) => {
                refuse_foreign(&sessions.app, &caller, &id);
                return session_not_found();
            }
            Ok(None) => return session_not_found(),
            Err(e) => {
                return unavailable(format!(
                    "this node cannot read the MCP session table ({e}); retry shortly or use another node"
                ));
            }
        },
    };
    let scope = Arc::new(RequestScope {
        tenant,
        principal: caller.principal_id.clone(),
        found,
        store_failed: Mutex::new(None),
    });
    let response = REQUEST.scope(scope.clone(), next.run(request)).await;
    let failed = scope
        .store_failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((id, error)) = failed {
        // A session only this node knows would break on the next node: close it and say why.
        let _ = sessions.manager.close_session(&id.into()).await;
        tracing::warn!("MCP session not opened: {error}");
        let message = format!("the MCP session could not be opened: {error}");
        // A full table stays full until sessions close or expire; a failed write may pass.
        return match error {
            SessionError::Full(_) => refused(message),
            _ => unavailable(message),
        };
    }
    response
}

/// Logs and audits a request that named a session bound to another principal.
fn refuse_foreign(app: &App, caller: &Caller, id: &str) {
    tracing::warn!(
        tenant = %caller.tenant_id,
        principal = %caller.principal_id,
        "refused a request for an MCP session bound to another principal"
    );
    let mut event = app.audit_event(
        caller,
        "session",
        "resume",
        Some(id_hint(id)),
        "denied".to_owned(),
        None,
    );
    event.severity = quire_raft::audit::Severity::Warning;
    event.justification = Some("the MCP session is bound to another principal".to_owned());
    if let Err(e) = app.audit.record(event) {
        tracing::warn!("session refusal not audited: {e}");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(edit: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        edit(&mut config);
        match config.validate() {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn session_settings_are_validated() {
        assert!(!problems(|_| {}).contains("mcp."), "defaults are valid");
        for edit in [
            (|c: &mut Config| c.mcp.max_sessions_per_tenant = 0) as fn(&mut Config),
            |c| c.mcp.max_sessions_per_tenant = c.mcp.max_sessions + 1,
            |c| {
                c.mcp.max_sessions = quire_raft::sessions::MAX_SESSIONS_TOTAL + 1;
                c.mcp.max_sessions_per_tenant = 1;
            },
        ] {
            let found = problems(edit);
            assert!(
                found.contains("mcp.max_sessions_per_tenant and mcp.max_sessions"),
                "{found}"
            );
        }
        assert!(
            problems(|c| c.mcp.session_idle_timeout_secs = 8 * 24 * 3600)
                .contains("mcp.session_idle_timeout_secs must be at most")
        );
    }
}
