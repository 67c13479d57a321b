//! Usage reports from the audit trail: tool calls, errors, refusals, latency percentiles and
//! Notion requests sent per tenant, workspace or principal over a period `[since, until)`.
//!
//! Every tool call leaves one record (`kind: tool`; `outcome` `ok`, `error:<code>` or
//! `denied`) with its latency, so the report is computed from the replicated records alone
//! and is the same on every node that has applied them. The work is bounded: at most
//! `max_scanned` records are looked at, newest first, and the report says when it stopped
//! there (its oldest figures are then missing).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, AuditState};

/// Most records one report looks at unless told fewer.
pub const MAX_USAGE_SCAN: usize = 200_000;

/// What a report's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One row per tenant.
    Tenant,
    /// One row per `tenant/workspace`.
    Workspace,
    /// One row per principal (`tenant/principal`).
    Principal,
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tenant" => Ok(GroupBy::Tenant),
            "workspace" => Ok(GroupBy::Workspace),
            "principal" => Ok(GroupBy::Principal),
            other => Err(format!(
                "group_by {other:?} is not tenant, workspace or principal"
            )),
        }
    }
}

/// Which tool calls a report counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this tenant's chain (all chains otherwise).
    pub tenant: Option<String>,
    /// Only this workspace (its id inside the tenant).
    pub workspace: Option<String>,
    /// Only this principal (`tenant/principal`, as records name it).
    pub principal: Option<String>,
    /// From (inclusive, ms since the Unix epoch, the serving node's clock at the call).
    pub since_ms: u64,
    /// To (exclusive).
    pub until_ms: u64,
    pub group_by: GroupBy,
    /// Most records looked at.
    pub max_scanned: usize,
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The tenant, `tenant/workspace`, or `tenant/principal`.
    pub group: String,
    /// Tool calls, refused ones included.
    pub calls: u64,
    /// Calls that ended with a tool error (`error:<code>`).
    pub errors: u64,
    /// Calls refused by a scope or role check.
    pub denied: u64,
    /// Requests the calls sent to Notion, retries included (the integration's budget they
    /// used). Records from before the count was kept add nothing.
    pub notion_requests: u64,
    /// Latency percentiles (ms) of the calls that carry one (nearest rank).
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// A usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub since_ms: u64,
    pub until_ms: u64,
    pub group_by: GroupBy,
    /// Rows, by group.
    pub rows: Vec<UsageRow>,
    /// Records looked at.
    pub scanned: u64,
    /// Whether the scan stopped at `max_scanned` before the start of the period: the
    /// report then misses the period's oldest calls.
    pub capped: bool,
}

#[derive(Default)]
struct Acc {
    calls: u64,
    errors: u64,
    denied: u64,
    notion_requests: u64,
    latencies: Vec<u64>,
}

/// The `p`-th percentile (0 < p ≤ 100) of sorted `values`, by nearest rank.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

fn workspace_of(r: &AuditRecord) -> &str {
    r.event.workspace.as_deref().unwrap_or("-")
}

/// Aggregates the tool-call records of `audit` that `q` selects and `visible` lets the caller
/// see. Chains are scanned newest first; a chain is left once its records are older than
/// `since_ms` (records are appended in commit order, so a record stamped before the period
/// marks its start, give or take the nodes' clock skew: the scan goes on for one more
/// minute of stamps before it stops).
pub fn report(
    audit: &AuditState,
    q: &UsageQuery,
    visible: impl Fn(&AuditRecord) -> bool,
) -> UsageReport {
    const SKEW_MS: u64 = 60_000;
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut scanned = 0usize;
    let mut capped = false;
    let chains = audit
        .chains()
        .filter(|(name, _)| q.tenant.as_deref().is_none_or(|t| t == name.as_str()));
    'chains: for (name, chain) in chains {
        for r in chain.records.iter().rev() {
            if scanned >= q.max_scanned {
                capped = true;
                break 'chains;
            }
            scanned += 1;
            if r.event.at_ms.saturating_add(SKEW_MS) < q.since_ms {
                continue 'chains;
            }
            if r.event.kind != "tool" || r.event.at_ms < q.since_ms || r.event.at_ms >= q.until_ms {
                continue;
            }
            if q.workspace.as_deref().is_some_and(|w| w != workspace_of(r))
                || q.principal
                    .as_deref()
                    .is_some_and(|p| p != r.event.principal)
                || !visible(r)
            {
                continue;
            }
            let group = match q.group_by {
                GroupBy::Tenant => name.clone(),
                GroupBy::Workspace => format!("{name}/{}", workspace_of(r)),
                GroupBy::Principal => r.event.principal.clone(),
            };
            let acc = groups.entry(group).or_default();
            acc.calls += 1;
            if r.event.outcome == "denied" {
                acc.denied += 1;
            } else if r.event.outcome.starts_with("error:") {
                acc.errors += 1;
            }
            acc.notion_requests += u64::from(r.event.notion_requests.unwrap_or(0));
            if let Some(ms) = r.event.latency_ms {
                acc.latencies.push(ms);
            }
        }
    }
    let rows = groups
        .into_iter()
        .map(|(group, mut acc)| {
            acc.latencies.sort_unstable();
            UsageRow {
                group,
                calls: acc.calls,
                errors: acc.errors,
                denied: acc.denied,
                notion_requests: acc.notion_requests,
                p50_ms: percentile(&acc.latencies, 50),
                p95_ms: percentile(&acc.latencies, 95),
                p99_ms: percentile(&acc.latencies, 99),
            }
        })
        .collect();
    UsageReport {
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        group_by: q.group_by,
        rows,
        scanned: scanned as u64,
        capped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Severity};
    use crate::ids::TenantId;

    fn call(
        tenant: &str,
        workspace: &str,
        principal: &str,
        at_ms: u64,
        outcome: &str,
        latency_ms: Option<u64>,
    ) -> AuditEvent {
        AuditEvent {
            at_ms,
            node: 1,
            principal: format!("{tenant}/{principal}"),
            tenant: TenantId::new(tenant).ok(),
            workspace: Some(workspace.to_owned()),
            kind: "tool".to_owned(),
            action: "notion-search".to_owned(),
            resource: None,
            outcome: outcome.to_owned(),
            latency_ms,
            // One request per call that ran (refused calls send none).
            notion_requests: latency_ms.map(|_| 1),
            justification: None,
            severity: Severity::Info,
        }
    }

    fn trail() -> AuditState {
        let mut a = AuditState::default();
        let mut index = 0;
        let mut add = |e: AuditEvent| {
            index += 1;
            a.append(index, e);
        };
        // Before the period.
        add(call("acme", "eng", "alice", 500, "ok", Some(1)));
        for i in 0..100 {
            add(call("acme", "eng", "alice", 1_000 + i, "ok", Some(i + 1)));
        }
        add(call(
            "acme",
            "eng",
            "alice",
            1_200,
            "error:rate_limited",
            Some(400),
        ));
        add(call("acme", "ops", "bob", 1_300, "ok", Some(7)));
        add(call("acme", "ops", "bob", 1_301, "denied", None));
        let mut admin = call("acme", "ops", "bob", 1_302, "allowed", None);
        admin.kind = "admin".to_owned();
        add(admin);
        add(call("beta", "main", "carol", 1_400, "ok", Some(3)));
        // At the end of the period: excluded.
        add(call("beta", "main", "carol", 2_000, "ok", Some(3)));
        a
    }

    fn query(group_by: GroupBy) -> UsageQuery {
        UsageQuery {
            tenant: None,
            workspace: None,
            principal: None,
            since_ms: 1_000,
            until_ms: 2_000,
            group_by,
            max_scanned: MAX_USAGE_SCAN,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn calls_errors_and_latencies_per_principal_in_the_period() {
        let r = report(&trail(), &query(GroupBy::Principal), |_| true);
        assert!(!r.capped);
        let rows: BTreeMap<&str, &UsageRow> =
            r.rows.iter().map(|row| (row.group.as_str(), row)).collect();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let alice = rows["acme/alice"];
        assert_eq!((alice.calls, alice.errors, alice.denied), (101, 1, 0));
        assert_eq!(alice.notion_requests, 101);
        assert_eq!(alice.p50_ms, Some(51));
        assert_eq!(alice.p95_ms, Some(96));
        assert_eq!(alice.p99_ms, Some(100));
        let bob = rows["acme/bob"];
        assert_eq!((bob.calls, bob.errors, bob.denied), (2, 0, 1));
        assert_eq!(bob.notion_requests, 1);
        assert_eq!(bob.p50_ms, Some(7));
        assert_eq!(rows["beta/carol"].calls, 1);
    }

    #[test]
    fn groups_filters_and_visibility() {
        let a = trail();
        let r = report(&a, &query(GroupBy::Tenant), |_| true);
        let calls: Vec<(&str, u64)> = r.rows.iter().map(|r| (r.group.as_str(), r.calls)).collect();
        assert_eq!(calls, vec![("acme", 103), ("beta", 1)]);

        let r = report(&a, &query(GroupBy::Workspace), |_| true);
        let calls: Vec<(&str, u64)> = r.rows.iter().map(|r| (r.group.as_str(), r.calls)).collect();
        assert_eq!(
            calls,
            vec![("acme/eng", 101), ("acme/ops", 2), ("beta/main", 1)]
        );

        let mut q = query(GroupBy::Workspace);
        q.tenant = Some("acme".into());
        q.workspace = Some("ops".into());
        let r = report(&a, &q, |_| true);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].group, "acme/ops");

        // A workspace manager of acme/ops sees that workspace only.
        let r = report(&a, &query(GroupBy::Workspace), |rec| {
            rec.chain == "acme" && rec.event.workspace.as_deref() == Some("ops")
        });
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].group, "acme/ops");
    }

    #[test]
    fn the_scan_is_bounded_and_says_so() {
        let mut q = query(GroupBy::Tenant);
        q.max_scanned = 10;
        let r = report(&trail(), &q, |_| true);
        assert!(r.capped);
        assert_eq!(r.scanned, 10);
    }
}
