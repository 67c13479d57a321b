//! Admin routes of the audit trail: the chains and their heads, a query (and tail) of one
//! chain, an export as JSON lines that `quire ctl audit verify --file` checks offline, a
//! verification of every chain the caller may read, and the retention setting.
//!
//! Reading a chain needs `audit.read` on its tenant (`reports.enterprise` for `_cluster`)
//! and the scope `audit_access` (see [`super::access`]).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use quire_raft::audit::{AuditChain, AuditRecord, CLUSTER_CHAIN, GENESIS_HASH, verify_chain};
use quire_raft::command::{Command, MAX_AUDIT_RETENTION};
use quire_raft::state::State as ControlState;

use super::AdminCaller;
use super::access::{self, Denial};
use super::body::{Body, Query, ReadParams};
use super::error::AdminError;
use super::routes::{ApiResult, Caller, Shared, bytes, justification, ok, read, refuse, write};
use crate::app::App;
use crate::mcp::SCOPE_AUDIT;

/// Records in one page of `GET /audit/records` when the request does not say.
pub const DEFAULT_AUDIT_PAGE: u64 = 100;
/// Most records in one page of `GET /audit/records`.
pub const MAX_AUDIT_PAGE: u64 = 1_000;

/// The first line of an export: where the chain starts (the retention anchor) and where it
/// ends, so an offline check can tell a truncated file too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportHeader {
    /// The chain: a tenant id or `_cluster`.
    pub chain: String,
    /// Sequence number of the last record dropped by retention (0 if none).
    pub anchor_seq: u64,
    /// Its hash (the genesis hash if none): the first exported record links to it.
    pub anchor_hash: String,
    /// Sequence number of the newest record.
    pub head_seq: u64,
    /// Hash of the newest record.
    pub head_hash: String,
    /// Records that follow this line.
    pub records: u64,
}

impl ExportHeader {
    /// The header of `chain` as it stands.
    pub fn of(name: &str, chain: &AuditChain) -> Self {
        Self {
            chain: name.to_owned(),
            anchor_seq: chain.anchor_seq,
            anchor_hash: anchor_hash(chain).to_owned(),
            head_seq: chain.head_seq(),
            head_hash: chain.head_hash().to_owned(),
            records: chain.records.len() as u64,
        }
    }
}

fn anchor_hash(chain: &AuditChain) -> &str {
    if chain.anchor_hash.is_empty() {
        GENESIS_HASH
    } else {
        &chain.anchor_hash
    }
}

fn require_audit_scope(caller: &AdminCaller) -> Result<(), AdminError> {
    if access::has_scope(caller, SCOPE_AUDIT) {
        Ok(())
    } else {
        Err(access::insufficient_scope(SCOPE_AUDIT))
    }
}

/// The chain a request names (`tenant=`), or by default the caller's own tenant (the
/// cluster's chain for a root or global token).
fn chain_name(q: &Query, caller: &AdminCaller) -> Result<String, AdminError> {
    let name = match q.get("tenant") {
        Some(t) => t.to_owned(),
        None => caller
            .subject
            .as_ref()
            .and_then(|s| s.tenant.as_ref())
            .map_or_else(|| CLUSTER_CHAIN.to_owned(), |t| t.as_str().to_owned()),
    };
    if access::audit_requirement(&name).is_none() {
        return Err(AdminError::invalid(
            "tenant",
            format!("must be a tenant id or {CLUSTER_CHAIN:?}"),
        ));
    }
    Ok(name)
}

/// Reads one chain (after checking the caller may) and runs `f` on it (`None` if the chain
/// has no record yet).
async fn chain_read<R>(
    app: &App,
    caller: &AdminCaller,
    q: &Query,
    name: &str,
    what: &str,
    f: impl FnOnce(&ControlState, Option<&AuditChain>) -> R,
) -> Result<R, AdminError> {
    require_audit_scope(caller)?;
    let now_ms = app.clock.now_ms();
    let params = ReadParams {
        consistency: q.consistency,
        limit: 1,
        after: None,
    };
    read(app, &params, |s| {
        access::check_audit(caller, s, name, now_ms)?;
        Ok::<_, Denial>(f(s, s.audit().chain(name)))
    })
    .await?
    .map_err(|d| refuse(app, caller, d, what))
}

fn chain_json(name: &str, chain: &AuditChain) -> Value {
    json!({
        "chain": name,
        "head_seq": chain.head_seq(),
        "head_hash": chain.head_hash(),
        "anchor_seq": chain.anchor_seq,
        "anchor_hash": anchor_hash(chain),
        "records": chain.records.len(),
    })
}

/// `GET /audit/chains`: every chain the caller may read, with its head and anchor.
pub(super) async fn chains(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    require_audit_scope(&caller)?;
    let q = Query::parse(q.as_deref(), &[])?;
    let now_ms = app.clock.now_ms();
    let params = ReadParams {
        consistency: q.consistency,
        limit: 1,
        after: None,
    };
    let (list, retention) = read(&app, &params, |s| {
        let list = s
            .audit()
            .chains()
            .filter(|(name, _)| access::check_audit(&caller, s, name, now_ms).is_ok())
            .map(|(name, chain)| chain_json(name, chain))
            .collect::<Vec<_>>();
        (list, s.audit().max_records_per_chain())
    })
    .await?;
    Ok(ok(json!({
        "chains": list,
        "max_records_per_chain": retention,
    })))
}

fn matches(r: &AuditRecord, q: &Query) -> bool {
    let field = |name: &str, value: &str| q.get(name).is_none_or(|want| want == value);
    field("kind", &r.event.kind)
        && field("principal", &r.event.principal)
        && field("outcome", &r.event.outcome)
        && field("action", &r.event.action)
}

/// `GET /audit/records?tenant=T&after_seq=N&limit=L&kind=&principal=&outcome=&action=`:
/// records of one chain after `after_seq` that match every filter given, oldest first.
/// `last_seq` is where the next poll resumes (`after_seq=last_seq`).
pub(super) async fn records(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(
        q.as_deref(),
        &[
            "tenant",
            "after_seq",
            "limit",
            "kind",
            "principal",
            "outcome",
            "action",
        ],
    )?;
    let name = chain_name(&q, &caller)?;
    let after = q.opt_u64("after_seq", 0, u64::MAX)?.unwrap_or(0);
    let limit = q
        .opt_u64("limit", 1, MAX_AUDIT_PAGE)?
        .unwrap_or(DEFAULT_AUDIT_PAGE) as usize;
    let what = format!("GET /audit/records?tenant={name}");
    let body = chain_read(&app, &caller, &q, &name, &what, |_, chain| {
        let Some(chain) = chain else {
            return json!({
                "chain": name, "records": [], "head_seq": 0, "anchor_seq": 0,
                "last_seq": after, "more": false,
            });
        };
        let mut found: Vec<&AuditRecord> = chain
            .records
            .iter()
            .filter(|r| r.seq > after && matches(r, &q))
            .take(limit + 1)
            .collect();
        let more = found.len() > limit;
        found.truncate(limit);
        let last_seq = if more {
            found.last().map_or(after, |r| r.seq)
        } else {
            chain.head_seq().max(after)
        };
        json!({
            "chain": name,
            "records": found,
            "head_seq": chain.head_seq(),
            "anchor_seq": chain.anchor_seq,
            "last_seq": last_seq,
            "more": more,
        })
    })
    .await?;
    Ok(ok(body))
}

/// `GET /audit/export?tenant=T`: the whole retained chain as JSON lines, after a first line
/// with the [`ExportHeader`].
pub(super) async fn export(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let name = chain_name(&q, &caller)?;
    let what = format!("GET /audit/export?tenant={name}");
    // Copied under the state's lock, serialised after it is released.
    let chain = chain_read(&app, &caller, &q, &name, &what, |_, chain| {
        chain.cloned().unwrap_or_default()
    })
    .await?;
    let mut text = String::new();
    let header = ExportHeader::of(&name, &chain);
    text.push_str(&serde_json::to_string(&header).unwrap_or_default());
    text.push('\n');
    for r in &chain.records {
        text.push_str(&serde_json::to_string(r).unwrap_or_default());
        text.push('\n');
    }
    tracing::info!(admin_token = %caller.token_id, chain = %name, "audit chain exported");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        text,
    )
        .into_response())
}

/// Verifies one chain from its anchor.
pub fn verify_json(name: &str, chain: &AuditChain) -> Value {
    let mut v = chain_json(name, chain);
    match verify_chain(&chain.records, Some((chain.anchor_seq, anchor_hash(chain)))) {
        Ok(_) => v["ok"] = json!(true),
        Err(e) => {
            v["ok"] = json!(false);
            v["error"] = json!({"seq": e.seq, "problem": e.problem, "message": e.to_string()});
        }
    }
    v
}

/// `GET /audit/verify`: verifies every chain the caller may read, on this node's copy.
pub(super) async fn verify(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    require_audit_scope(&caller)?;
    let q = Query::parse(q.as_deref(), &[])?;
    let now_ms = app.clock.now_ms();
    let params = ReadParams {
        consistency: q.consistency,
        limit: 1,
        after: None,
    };
    // Copied under the state's lock, hashed after it is released.
    let chains = read(&app, &params, |s| {
        s.audit()
            .chains()
            .filter(|(name, _)| access::check_audit(&caller, s, name, now_ms).is_ok())
            .map(|(name, chain)| (name.clone(), chain.clone()))
            .collect::<Vec<_>>()
    })
    .await?;
    let list = chains
        .iter()
        .map(|(name, chain)| verify_json(name, chain))
        .collect::<Vec<_>>();
    let all_ok = list.iter().all(|c| c["ok"] == json!(true));
    Ok(ok(json!({"ok": all_ok, "chains": list})))
}

/// `PUT /audit/retention {max_records_per_chain, justification?}`.
pub(super) async fn set_retention(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(&bytes(body)?, &["max_records_per_chain", "justification"])?;
    let max = b
        .opt_u64("max_records_per_chain", 1, MAX_AUDIT_RETENTION)?
        .ok_or_else(|| {
            AdminError::invalid(
                "max_records_per_chain",
                "missing field (a whole number is required)",
            )
        })?;
    let why = justification(&mut b)?;
    let changed = write(
        &app,
        &caller,
        Command::SetAuditRetention {
            max_records_per_chain: max,
        },
        why,
    )
    .await?;
    Ok(ok(
        json!({"max_records_per_chain": max, "changed": changed}),
    ))
}
