//! The admin API, mounted at `/admin/v1`: operators manage tenants, workspaces, Notion
//! integrations, principals, roles, restrictions, API tokens and admin tokens over JSON, and
//! read the audit trail, authenticated with an admin token (`Authorization: Bearer qa_...`).
//!
//! An admin token is either a root token (no subject: every permission) or acts as a
//! principal (`tenant/principal` or a global principal), whose roles decide what it may do.
//! Every change is a control-plane command proposed through [`App::write`], wrapped in
//! `AsAdmin` so that `apply` authorises it against the token's subject at the command's log
//! index and audits the decision; ids, names and scopes are validated here first, so bad
//! input never reaches the log. Reads are authorised here, against the state they read
//! (see [`access`]); a denial answers 403 and is audited. Reads are linearizable unless the
//! request asks for `?consistency=local`. Secrets (Notion tokens, token secrets) are sealed or
//! hashed before they leave the handler, shown once when issued, and never logged or echoed
//! in an error.

pub mod access;
pub mod approvals;
pub mod audit;
mod backup;
mod body;
mod delegations;
mod error;
mod jwt;
mod keys;
mod placement;
mod rbac;
mod routes;
mod templates;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use quire_raft::command::{Command, JUSTIFICATION_MAX_CHARS, check_display_name};
use quire_raft::ids::TokenId;
use quire_raft::rbac::Subject;

use crate::app::App;
use crate::auth::{self, AuthFailure};

pub use body::{Consistency, DEFAULT_PAGE_ITEMS, MAX_BODY_BYTES, MAX_PAGE_ITEMS, ReadParams};
pub use error::{ADMIN_REALM_CHALLENGE, AdminError};

/// Prefix of admin token secrets.
pub const ADMIN_TOKEN_PREFIX: &str = "qa_";
/// Prefix of API (MCP) token secrets.
pub const API_TOKEN_PREFIX: &str = "qk_";
/// Longest token lifetime accepted (`ttl_secs`): ten years.
pub const MAX_TTL_SECS: u64 = 10 * 366 * 24 * 3600;
/// Default of `limits.admin_max_in_flight`: most admin requests a node serves at once; more
/// get 503 at once rather than queueing.
pub const MAX_ADMIN_IN_FLIGHT: usize = 64;

/// An operator authenticated by an admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller {
    /// Id of the admin token used.
    pub token_id: TokenId,
    /// Its display name.
    pub display_name: String,
    /// The principal it acts as; `None` for a root token (every permission).
    pub subject: Option<Subject>,
}

impl AdminCaller {
    /// Who the caller is, as the audit trail names it (`root` for a root token).
    pub fn actor(&self) -> String {
        self.subject.as_ref().map_or_else(
            || quire_raft::command::ROOT_PRINCIPAL.to_owned(),
            Subject::to_string,
        )
    }
}

/// The admin API. Mount it with `.nest_service("/admin/v1", admin::router(app))`: every
/// route (and every unknown path) is behind admin-token authentication.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.limits.admin_max_in_flight;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limit));
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_admin,
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let permit = in_flight.clone().try_acquire_owned();
                async move {
                    let Ok(_permit) = permit else {
                        return AdminError::unavailable(format!(
                            "this node is already serving {limit} admin requests; retry shortly"
                        ))
                        .into_response();
                    };
                    next.run(request).await
                }
            },
        ))
        .with_state(app)
}

/// Resolves an admin bearer secret to its caller, against this node's applied state.
/// API (MCP) tokens are not admin tokens: they resolve to `None`.
pub fn authenticate_admin(app: &App, secret: &str) -> Option<AdminCaller> {
    let hash = quire_raft::hash_api_token(secret);
    let now_ms = app.clock.now_ms();
    app.control.read_applied(|state| {
        let token = state.admin_token_by_hash(&hash)?;
        token.is_valid_at(now_ms).then(|| AdminCaller {
            token_id: token.token_id.clone(),
            display_name: token.display_name.clone(),
            subject: token.subject.clone(),
        })
    })
}

/// axum middleware: 401 with `WWW-Authenticate: Bearer realm="quire-admin"` unless the
/// request carries a valid admin token; the [`AdminCaller`] travels on as an extension.
async fn require_admin(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let caller = match auth::bearer(request.headers()) {
        Ok(secret) => authenticate_admin(&app, secret),
        Err(AuthFailure::Missing) => {
            return AdminError::unauthorized(
                "an admin token is required: send 'Authorization: Bearer <admin token>' (see `quire ctl --token`)",
            )
            .into_response();
        }
        Err(_) => None,
    };
    let Some(caller) = caller else {
        return AdminError::unauthorized(
            "the bearer token is not a valid admin token (unknown, revoked or expired; an MCP token is not an admin token)",
        )
        .into_response();
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// A freshly drawn secret: `prefix` + 64 hex characters (32 bytes from the OS).
pub(crate) fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    StdRng::from_os_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// A fresh public token id: `prefix` + 12 hex characters.
pub(crate) fn new_token_id(prefix: &str) -> Result<TokenId, AdminError> {
    let mut bytes = [0u8; 6];
    StdRng::from_os_rng().fill_bytes(&mut bytes);
    TokenId::new(format!("{prefix}{}", hex::encode(bytes)))
        .map_err(|e| AdminError::internal(format!("generated token id is invalid: {e}")))
}

/// An admin token just issued: its secret is shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAdminToken {
    /// Public id.
    pub token_id: String,
    /// The secret (`qa_...`); stored nowhere but here.
    pub secret: String,
    /// Issue time.
    pub issued_at_ms: u64,
    /// Expiry, if any.
    pub expires_at_ms: Option<u64>,
}

/// Wraps `cmd` so that `apply` checks `caller`'s admin token (and the permission the command
/// needs, for a token with a subject) at the command's log index, and records the decision
/// with `justification` in the audit trail.
pub fn as_admin(
    app: &App,
    caller: &AdminCaller,
    cmd: Command,
    justification: Option<String>,
) -> Command {
    Command::AsAdmin {
        admin_token: caller.token_id.clone(),
        at_ms: app.clock.now_ms(),
        command: Box::new(cmd),
        node: app.config.node.id,
        justification,
    }
}

/// Checks an operator's justification: at most [`JUSTIFICATION_MAX_CHARS`] characters, no
/// control characters but line breaks. An empty one counts as none.
pub fn check_justification(text: Option<String>) -> Result<Option<String>, AdminError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > JUSTIFICATION_MAX_CHARS {
        return Err(AdminError::invalid(
            "justification",
            format!("is longer than {JUSTIFICATION_MAX_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AdminError::invalid(
            "justification",
            "must not contain control characters (line breaks are fine)",
        ));
    }
    Ok(Some(text))
}

/// What an admin token to issue is: its holder, lifetime and the principal it acts as.
#[derive(Debug, Clone, Default)]
pub struct AdminTokenRequest {
    /// Who or what holds it, for humans.
    pub display_name: String,
    /// Lifetime in seconds; `None` never expires.
    pub ttl_secs: Option<u64>,
    /// The principal it acts as; `None` makes a root token.
    pub subject: Option<Subject>,
    /// Why (recorded in the audit trail with the change).
    pub justification: Option<String>,
}

/// Issues an admin token with an optional lifetime, through the control plane; `by` is the
/// admin making it (`None` only for the bootstrap token of a new cluster or sandbox).
pub async fn issue_admin_token_with_ttl(
    app: &App,
    display_name: &str,
    ttl_secs: Option<u64>,
    by: Option<&AdminCaller>,
) -> Result<IssuedAdminToken, AdminError> {
    issue_admin_token_for(
        app,
        AdminTokenRequest {
            display_name: display_name.to_owned(),
            ttl_secs,
            ..AdminTokenRequest::default()
        },
        by,
    )
    .await
}

/// Issues an admin token as `request` describes; `by` is the admin making it (`None` only
/// for the bootstrap token of a new cluster or sandbox).
pub async fn issue_admin_token_for(
    app: &App,
    request: AdminTokenRequest,
    by: Option<&AdminCaller>,
) -> Result<IssuedAdminToken, AdminError> {
    let AdminTokenRequest {
        display_name,
        ttl_secs,
        subject,
        justification,
    } = request;
    let display_name = display_name.as_str();
    check_display_name("admin token", display_name)
        .map_err(|e| AdminError::invalid("display_name", e.to_string()))?;
    let issued_at_ms = app.clock.now_ms();
    let expires_at_ms = expiry(issued_at_ms, ttl_secs)?;
    let token_id = new_token_id("adm-")?;
    let secret = new_secret(ADMIN_TOKEN_PREFIX);
    let cmd = Command::IssueAdminToken {
        token_id: token_id.clone(),
        secret_hash: quire_raft::hash_api_token(&secret),
        display_name: display_name.to_owned(),
        issued_at_ms,
        expires_at_ms,
        subject,
    };
    let cmd = match by {
        Some(caller) => as_admin(app, caller, cmd, justification),
        None => cmd,
    };
    if let quire_raft::command::CommandOutput::Pending { approval } = app.write(cmd).await? {
        // Held for approval (separation of duties): the secret is shown now, and works once
        // the request is approved.
        let extra = serde_json::json!({
            "token_id": token_id.as_str(),
            "token": secret,
            "note": "the token is shown once; store it now: it is valid once the request is approved",
        });
        return Err(approvals::pending(app, approval, "issue_admin_token", Some(extra)).await);
    }
    Ok(IssuedAdminToken {
        token_id: token_id.as_str().to_owned(),
        secret,
        issued_at_ms,
        expires_at_ms,
    })
}

/// Issues a non-expiring admin token and returns its secret (for `quire init` and
/// `serve --sandbox`, which make the bootstrap admin token).
pub async fn issue_admin_token(app: &App, display_name: &str) -> Result<String, AdminError> {
    Ok(issue_admin_token_with_ttl(app, display_name, None, None)
        .await?
        .secret)
}

/// `issued_at_ms + ttl_secs`, checked.
pub(crate) fn expiry(issued_at_ms: u64, ttl_secs: Option<u64>) -> Result<Option<u64>, AdminError> {
    let Some(ttl) = ttl_secs else {
        return Ok(None);
    };
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(AdminError::invalid(
            "ttl_secs",
            format!("must be a whole number from 1 to {MAX_TTL_SECS}"),
        ));
    }
    ttl.checked_mul(1000)
        .and_then(|ms| issued_at_ms.checked_add(ms))
        .map(Some)
        .ok_or_else(|| AdminError::invalid("ttl_secs", "is too large"))
}
