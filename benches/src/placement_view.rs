//! What the placement scenarios read from a node's public APIs: the shard map of
//! `GET /admin/v1/placement` (each node's shard count and drain flag, every shard's owner and
//! epoch, the moves a round would make now) and counters from `GET /metrics` (the Prometheus
//! text format).

use serde_json::Value;

use crate::admin_writes;
use crate::raft_commit::BenchError;

/// `GET /admin/v1/placement` on `node_http` (the map as that node applied it).
pub async fn fetch(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
) -> Result<Value, BenchError> {
    let url = format!("{node_http}/admin/v1/placement");
    let answer = admin_writes::request(http, reqwest::Method::GET, &url, token, None)
        .await
        .map_err(BenchError::Step)?;
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(BenchError::Step(answer.describe(&format!("GET {url}"))))
    }
}

/// The owner and epoch of `shard` (written `group#index`) in a placement answer; `None`
/// when the map holds no owner for it.
pub fn owner_of(placement: &Value, shard: &str) -> Option<(u64, u64)> {
    placement["shards"]
        .as_array()?
        .iter()
        .find(|s| s["shard"].as_str() == Some(shard))
        .and_then(|s| Some((s["owner"].as_u64()?, s["epoch"].as_u64().unwrap_or(0))))
}

/// How many shards `node` owns in a placement answer (`None` when the node is not listed).
pub fn shards_on(placement: &Value, node: u64) -> Option<u64> {
    placement["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(node))
        .and_then(|n| n["shards"].as_u64())
}

/// Each listed node's shard count, by node id.
pub fn shards_per_node(placement: &Value) -> Vec<(u64, u64)> {
    placement["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| Some((n["id"].as_u64()?, n["shards"].as_u64().unwrap_or(0))))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves a round planned now would make (proposed now or left for later rounds).
pub fn pending_moves(placement: &Value) -> usize {
    placement["pending_moves"].as_array().map_or(0, Vec::len)
}

/// Occupied shards without an owner.
pub fn unassigned(placement: &Value) -> u64 {
    placement["unassigned"].as_u64().unwrap_or(0)
}

/// Shards a drain cannot move (their residency allows no other live node).
pub fn drain_blocked(placement: &Value) -> usize {
    placement["drain_blocked"].as_array().map_or(0, Vec::len)
}

/// The node's `/metrics` page.
pub async fn metrics(http: &reqwest::Client, node_http: &str) -> Result<String, BenchError> {
    let url = format!("{node_http}/metrics");
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| BenchError::Step(format!("GET {url}: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| BenchError::Step(format!("GET {url}: {e}")))?;
    if !status.is_success() {
        return Err(BenchError::Step(format!("GET {url} answered {status}")));
    }
    Ok(text)
}

/// The value of the sample `name{labels}` (labels written as in the page, e.g.
/// `outcome="ok"`; empty for none) in a Prometheus text page, 0 when absent.
pub fn sample(page: &str, name: &str, labels: &str) -> f64 {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k.trim() == key).then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placement_answers_are_read() {
        let p = json!({
            "unassigned": 2,
            "nodes": [{"id": 1, "shards": 7}, {"id": 2, "shards": 0}, {"id": 3}],
            "shards": [{"shard": "*#4", "owner": 2, "epoch": 3},
                       {"shard": "*#9", "owner": null, "epoch": 1}],
            "pending_moves": [{"shard": "*#9"}],
            "drain_blocked": [],
        });
        assert_eq!(owner_of(&p, "*#4"), Some((2, 3)));
        assert_eq!(owner_of(&p, "*#9"), None);
        assert_eq!(owner_of(&p, "*#5"), None);
        assert_eq!(shards_on(&p, 1), Some(7));
        assert_eq!(shards_on(&p, 3), None);
        assert_eq!(shards_on(&p, 4), None);
        assert_eq!(shards_per_node(&p), vec![(1, 7), (2, 0), (3, 0)]);
        assert_eq!(pending_moves(&p), 1);
        assert_eq!(unassigned(&p), 2);
        assert_eq!(drain_blocked(&p), 0);
        assert_eq!(pending_moves(&json!({})), 0);
    }

    #[test]
    fn prometheus_samples_are_read() {
        let page = "# HELP quire_forwarded_calls_total x\n# TYPE quire_forwarded_calls_total counter\n\
                    quire_forwarded_calls_total{outcome=\"ok\"} 41\n\
                    quire_forwarded_calls_total{outcome=\"error\"} 2\n\
                    quire_fenced_calls_total 3\n";
        assert_eq!(
            sample(page, "quire_forwarded_calls_total", "outcome=\"ok\""),
            41.0
        );
        assert_eq!(
            sample(page, "quire_forwarded_calls_total", "outcome=\"busy\""),
            0.0
        );
        assert_eq!(sample(page, "quire_fenced_calls_total", ""), 3.0);
        assert_eq!(sample("", "quire_fenced_calls_total", ""), 0.0);
    }
}
