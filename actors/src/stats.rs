//! Counters the data plane keeps for the node's metrics: Notion requests by integration and
//! status, calls waiting for a rate-limiter permit, how long they waited, and tenant
//! supervisors started and passivated.
//!
//! One [`NotionStats`] per [`crate::supervisor::DataPlane`] (never process-wide: the
//! simulator runs many nodes in one process). The node reads it at scrape time through
//! [`crate::supervisor::DataPlane::notion_stats`]; the actors only add to it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::notion::NotionError;

/// Bucket upper bounds (seconds) of the rate-limiter wait histogram.
pub const WAIT_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with fixed bucket bounds, as Prometheus exposes it (cumulative on render).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over ascending `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Cumulative counts per bound, then the `+Inf` count (equal to [`Histogram::count`]).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.counts
            .iter()
            .map(|c| {
                total += c;
                total
            })
            .collect()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What one integration's requests and waits look like on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationStats {
    /// Requests sent to Notion by how they ended: the HTTP status (`"200"`, `"429"`, `"529"`,
    /// ...) or `"timeout"`, `"transport"`, `"decode"` when no status came back.
    pub requests_by_status: BTreeMap<String, u64>,
    /// Calls waiting for a permit from the integration's limiter now.
    pub waiting: u64,
    /// How long calls waited for a permit (granted or refused), in seconds.
    pub wait_seconds: Histogram,
}

impl Default for IntegrationStats {
    fn default() -> Self {
        Self {
            requests_by_status: BTreeMap::new(),
            waiting: 0,
            wait_seconds: Histogram::new(&WAIT_BUCKETS_SECONDS),
        }
    }
}

/// The data plane's counters, per integration (`tenant/integration`), and the tenant
/// supervisors' lifecycle.
#[derive(Debug, Default)]
pub struct NotionStats {
    integrations: Mutex<BTreeMap<String, IntegrationStats>>,
    tenants_started: AtomicU64,
    tenants_passivated: AtomicU64,
    tenants_retired: AtomicU64,
}

/// How many tenant supervisors this data plane started, passivated and retired since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounts {
    /// Every start: a tenant's first call, the first call after a passivation, and a
    /// restart after a failure.
    pub started: u64,
    /// Tenant supervisors stopped because they were idle (never a failure).
    pub passivated: u64,
    /// Tenant supervisors stopped because the node serves none of their shards any more.
    pub retired: u64,
}

/// The label a request's outcome is counted under.
pub fn status_label(result: &Result<serde_json::Value, NotionError>) -> String {
    match result {
        Ok(_) => "200".to_owned(),
        Err(NotionError::Api { status, .. }) => status.to_string(),
        Err(NotionError::Timeout { .. }) => "timeout".to_owned(),
        Err(NotionError::Transport(_)) => "transport".to_owned(),
        Err(NotionError::Decode(_)) => "decode".to_owned(),
    }
}

impl NotionStats {
    fn with<R>(&self, integration: &str, f: impl FnOnce(&mut IntegrationStats) -> R) -> R {
        let mut map = self.integrations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(integration) {
            return f(entry);
        }
        f(map.entry(integration.to_owned()).or_default())
    }

    /// A request to Notion for `integration` ended with `status` (see [`status_label`]).
    pub fn request_sent(&self, integration: &str, status: String) {
        self.with(integration, |s| {
            *s.requests_by_status.entry(status).or_default() += 1;
        });
    }

    /// A call started waiting for a permit.
    pub fn wait_started(&self, integration: &str) {
        self.with(integration, |s| s.waiting += 1);
    }

    /// A call stopped waiting for a permit after `waited`.
    pub fn wait_ended(&self, integration: &str, waited: Duration) {
        self.with(integration, |s| {
            s.waiting = s.waiting.saturating_sub(1);
            s.wait_seconds.observe(waited.as_secs_f64());
        });
    }

    /// A tenant supervisor started.
    pub fn tenant_started(&self) {
        self.tenants_started.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle tenant supervisor was passivated.
    pub fn tenant_passivated(&self) {
        self.tenants_passivated.fetch_add(1, Ordering::Relaxed);
    }

    /// A tenant supervisor was retired (the node serves none of its shards any more).
    pub fn tenant_retired(&self) {
        self.tenants_retired.fetch_add(1, Ordering::Relaxed);
    }

    /// Tenant supervisors started, passivated and retired so far.
    pub fn tenants(&self) -> TenantCounts {
        TenantCounts {
            started: self.tenants_started.load(Ordering::Relaxed),
            passivated: self.tenants_passivated.load(Ordering::Relaxed),
            retired: self.tenants_retired.load(Ordering::Relaxed),
        }
    }

    /// A copy of every integration's counters.
    pub fn snapshot(&self) -> BTreeMap<String, IntegrationStats> {
        self.integrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_last() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(7.0);
        assert_eq!(h.cumulative(), vec![1, 3, 4]);
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 8.05).abs() < 1e-9);
    }

    #[test]
    fn requests_are_counted_per_integration_and_status() {
        let s = NotionStats::default();
        s.request_sent("t/a", "200".into());
        s.request_sent("t/a", "429".into());
        s.request_sent("t/a", "200".into());
        s.request_sent("t/b", "529".into());
        s.wait_started("t/a");
        let snap = s.snapshot();
        assert_eq!(snap["t/a"].requests_by_status["200"], 2);
        assert_eq!(snap["t/a"].requests_by_status["429"], 1);
        assert_eq!(snap["t/b"].requests_by_status["529"], 1);
        assert_eq!(snap["t/a"].waiting, 1);
        s.wait_ended("t/a", Duration::from_millis(30));
        let snap = s.snapshot();
        assert_eq!(snap["t/a"].waiting, 0);
        assert_eq!(snap["t/a"].wait_seconds.count(), 1);
    }
}
