//! `GET /usage?tenant=&workspace=&principal=&since=&until=&group_by=tenant|workspace|principal`:
//! tool calls, errors, refusals, Notion requests and latency percentiles over
//! `[since, until)` (ms since the Unix epoch; the last 24 hours by default), computed from the
//! audit trail this node has applied (`quire_raft::usage`).
//!
//! Who sees what: `reports.enterprise` (globally) every tenant; `tenant.usage.read` on a
//! tenant all of it; `workspace.analytics.read` on a workspace that workspace. A request that
//! names a tenant or workspace the caller may not see answers 403 (audited); without one, the
//! report holds what the caller may see. The scan stops at `quire_raft::usage::MAX_USAGE_SCAN`
//! records and the answer says so (`capped`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;

use quire_raft::audit::AuditRecord;
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::rbac::{Permission, RoleScope};
use quire_raft::state::State as ControlState;
use quire_raft::usage::{self, GroupBy, MAX_USAGE_SCAN, UsageQuery};

use super::AdminCaller;
use super::access::{self, Denial};
use super::body::{Query, ReadParams};
use super::error::AdminError;
use super::routes::{ApiResult, Caller, Shared, ok, read, refuse};
use crate::app::App;

/// The default period: the last 24 hours.
pub const DEFAULT_PERIOD_MS: u64 = 24 * 3600 * 1000;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/usage", get(usage_report))
}

/// What of a tenant's usage the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sight {
    All,
    Workspaces(Vec<String>),
    Nothing(Denial),
}

fn sight(caller: &AdminCaller, state: &ControlState, tenant: &str, now_ms: u64) -> Sight {
    if access::may(
        caller,
        state,
        Permission::ReportsEnterprise,
        &RoleScope::Global,
        now_ms,
    ) {
        return Sight::All;
    }
    let Ok(tenant_id) = TenantId::new(tenant) else {
        // The cluster's own chain: enterprise reports only.
        return match access::check(
            caller,
            state,
            Permission::ReportsEnterprise,
            &RoleScope::Global,
            now_ms,
        ) {
            Ok(()) => Sight::All,
            Err(d) => Sight::Nothing(d),
        };
    };
    let denial = match access::check(
        caller,
        state,
        Permission::TenantUsageRead,
        &access::tenant_scope(&tenant_id),
        now_ms,
    ) {
        Ok(()) => return Sight::All,
        Err(d) => d,
    };
    let visible: Vec<String> = state
        .workspaces(&tenant_id)
        .filter(|w| {
            access::may(
                caller,
                state,
                Permission::WorkspaceAnalyticsRead,
                &access::workspace_scope(&tenant_id, &w.id),
                now_ms,
            )
        })
        .map(|w| w.id.as_str().to_owned())
        .collect();
    if visible.is_empty() {
        Sight::Nothing(denial)
    } else {
        Sight::Workspaces(visible)
    }
}

/// `GET /usage`.
pub(super) async fn usage_report(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(
        q.as_deref(),
        &[
            "tenant",
            "workspace",
            "principal",
            "since",
            "until",
            "group_by",
        ],
    )?;
    let now_ms = app.clock.now_ms();
    let until_ms = q.opt_u64("until", 0, u64::MAX)?.unwrap_or(now_ms);
    let since_ms = q
        .opt_u64("since", 0, u64::MAX)?
        .unwrap_or(until_ms.saturating_sub(DEFAULT_PERIOD_MS));
    if since_ms >= until_ms {
        return Err(AdminError::invalid("since", "must be before until"));
    }
    let group_by = match q.get("group_by") {
        Some(g) => g
            .parse::<GroupBy>()
            .map_err(|e| AdminError::invalid("group_by", e))?,
        None => GroupBy::Tenant,
    };
    let tenant = q.get("tenant").map(str::to_owned);
    let workspace = q.get("workspace").map(str::to_owned);
    if let Some(t) = &tenant {
        TenantId::new(t).map_err(|e| AdminError::invalid_id("tenant", &e))?;
    }
    if let Some(w) = &workspace {
        WorkspaceId::new(w).map_err(|e| AdminError::invalid_id("workspace", &e))?;
        if tenant.is_none() {
            return Err(AdminError::invalid("workspace", "needs tenant too"));
        }
    }
    let query = UsageQuery {
        tenant: tenant.clone(),
        workspace: workspace.clone(),
        principal: q.get("principal").map(str::to_owned),
        since_ms,
        until_ms,
        group_by,
        max_scanned: MAX_USAGE_SCAN,
    };
    let params = ReadParams {
        consistency: q.consistency,
        limit: 1,
        after: None,
    };
    let what = format!(
        "GET /usage?tenant={}&workspace={}",
        tenant.as_deref().unwrap_or(""),
        workspace.as_deref().unwrap_or("")
    );
    let report = read(&app, &params, |s| {
        // A tenant or workspace named in the request must be in sight.
        if let Some(t) = &tenant {
            match sight(&caller, s, t, now_ms) {
                Sight::Nothing(d) => return Err(d),
                Sight::Workspaces(ws) => {
                    if let Some(w) = &workspace
                        && !ws.contains(w)
                    {
                        let (Ok(tid), Ok(wid)) = (TenantId::new(t), WorkspaceId::new(w)) else {
                            return Err(Denial {
                                permission: Permission::WorkspaceAnalyticsRead,
                                target: RoleScope::Global,
                                reason: "not a valid workspace".into(),
                            });
                        };
                        return Err(Denial {
                            permission: Permission::WorkspaceAnalyticsRead,
                            target: access::workspace_scope(&tid, &wid),
                            reason: "the caller holds no role that grants it there".into(),
                        });
                    }
                }
                Sight::All => {}
            }
        }
        let sights: RefCell<BTreeMap<String, Sight>> = RefCell::new(BTreeMap::new());
        let visible = |r: &AuditRecord| {
            let mut cache = sights.borrow_mut();
            let sight = cache
                .entry(r.chain.clone())
                .or_insert_with(|| sight(&caller, s, &r.chain, now_ms));
            match sight {
                Sight::All => true,
                Sight::Workspaces(ws) => r.event.workspace.as_ref().is_some_and(|w| ws.contains(w)),
                Sight::Nothing(_) => false,
            }
        };
        Ok(usage::report(s.audit(), &query, visible))
    })
    .await?
    .map_err(|d| refuse(&app, &caller, d, &what))?;
    tracing::info!(admin_token = %caller.token_id, scanned = report.scanned, "usage report");
    Ok(ok(json!(report)))
}
