//! `quire ctl placement show|rebalance`, `quire ctl nodes drain|undrain` and `quire ctl
//! tenants set-residency`: the shard map, one placement round on request, moving every shard
//! off a node, and where a tenant's data may live.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::table::{Table, cell};
use super::{Client, View, seg};

/// `quire ctl placement ...`
#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Each node's region, health and shard count; unplaceable and held shards; the moves a
    /// round would make now (`--json` lists every shard with its owner and epoch).
    Show,
    /// Run one placement round now and apply its moves.
    Rebalance,
}

/// `--regions` and `--preferred-region` of `tenants create` and `tenants set-residency`.
#[derive(Debug, Clone, Args)]
pub struct ResidencyArgs {
    /// Regions the tenant's data may live in, comma-separated (none: any region).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// The region its shards live in while a node of it is up (one of --regions).
    #[arg(long)]
    pub preferred_region: Option<String>,
}

impl ResidencyArgs {
    /// The admin API's fields.
    pub fn json(&self) -> Value {
        json!({
            "regions": self.regions,
            "preferred_region": self.preferred_region,
        })
    }
}

/// `tenants set-residency ID --regions ... --preferred-region ...`.
pub async fn set_residency(
    c: &Client,
    tenant: &str,
    residency: &ResidencyArgs,
) -> anyhow::Result<(Value, View)> {
    let v = c
        .call(
            Method::PUT,
            &format!("/tenants/{}/residency", seg(tenant)),
            Some(residency.json()),
        )
        .await?;
    let msg = format!(
        "tenant {tenant}: {}",
        residency_text(&json!({
            "regions": v["regions"],
            "preferred_region": v["preferred_region"],
        }))
    );
    Ok((v, View::Message(msg)))
}

/// `regions eu-west,eu-central, preferred eu-west`, or `any region`.
pub fn residency_text(r: &Value) -> String {
    let regions = r["regions"].as_array().map_or(0, Vec::len);
    let mut text = if regions == 0 {
        "any region".to_owned()
    } else {
        format!("regions {}", cell(&r["regions"]))
    };
    if let Some(p) = r["preferred_region"].as_str() {
        text.push_str(&format!(", preferred {p}"));
    }
    text
}

/// Runs a `placement` command.
pub async fn placement(c: &Client, command: PlacementCommand) -> anyhow::Result<(Value, View)> {
    Ok(match command {
        PlacementCommand::Show => {
            let v = c.call(Method::GET, "/placement", None).await?;
            let text = show_text(&v)?;
            (v, View::Message(text))
        }
        PlacementCommand::Rebalance => {
            let v = c.call(Method::POST, "/placement/rebalance", None).await?;
            let moves = v["moves"].as_array().map_or(0, Vec::len);
            let mut text = if moves == 0 {
                "placement is settled: no moves".to_owned()
            } else if v["applied"] == Value::Bool(true) {
                format!("moved {moves} shard(s)")
            } else {
                format!("{moves} move(s) lost to a concurrent round; run it again")
            };
            let pending = v["pending_moves"].as_u64().unwrap_or(0);
            if pending > 0 {
                text.push_str(&format!(
                    "; {pending} more left for the next rounds (placement.max_moves_per_round)"
                ));
            }
            text.push_str(&list_line("unplaceable", &v["unplaceable"]));
            text.push_str(&list_line(
                "held (node within its grace period)",
                &v["held"],
            ));
            (v, View::Message(text))
        }
    })
}

/// How often `nodes drain` reads the placement while it waits.
const DRAIN_POLL: Duration = Duration::from_secs(1);

/// `nodes drain ID [--no-wait] [--timeout 10m]`: marks the node draining, then (unless
/// `no_wait`) reads `GET /placement` every second, printing a line on stderr each time the
/// count changes, until the node owns no shard. Fails naming the shards that cannot leave it
/// (residency), or at `timeout_secs`.
pub async fn drain(
    c: &Client,
    node: u64,
    no_wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<(Value, View)> {
    let v = c
        .call(Method::POST, &format!("/nodes/{node}/drain"), None)
        .await?;
    if v["draining"] != Value::Bool(true) {
        // Held for approval (202): nothing to follow until it is approved; running the
        // command again then shows the progress.
        let msg = v["message"].as_str().map_or_else(
            || format!("node {node}: the drain was not applied: {v}"),
            |m| {
                format!(
                    "{m}\nonce it is approved, `quire ctl nodes drain {node}` follows the progress"
                )
            },
        );
        return Ok((v, View::Message(msg)));
    }
    let mut total = v["shards"].as_u64().unwrap_or(0);
    if no_wait {
        let msg = format!(
            "node {node} is draining: it owns {total} shard(s); `quire ctl placement show` shows the progress"
        );
        return Ok((v, View::Message(msg)));
    }
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    let mut last: Option<u64> = None;
    loop {
        let p = c.call(Method::GET, "/placement", None).await?;
        let entry = p["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"].as_u64() == Some(node))
            .cloned()
            .unwrap_or(Value::Null);
        if entry["draining"] != Value::Bool(true) {
            anyhow::bail!("node {node} is no longer draining (undrained meanwhile?)");
        }
        let owned = entry["shards"].as_u64().unwrap_or(0);
        total = total.max(owned);
        if last != Some(owned) {
            eprintln!(
                "node {node}: {} of {total} shards moved",
                total.saturating_sub(owned)
            );
            last = Some(owned);
        }
        if owned == 0 {
            let msg = format!(
                "node {node} is drained: it owns no shard ({total} moved in {}s)",
                started.elapsed().as_secs()
            );
            return Ok((p, View::Message(msg)));
        }
        let blocked: Vec<String> = entry["drain_blocked"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        if !blocked.is_empty() && blocked.len() as u64 >= owned {
            const SHOWN: usize = 20;
            let mut names = blocked
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if blocked.len() > SHOWN {
                names.push_str(&format!(" and {} more", blocked.len() - SHOWN));
            }
            anyhow::bail!(
                "node {node} cannot be drained: {} shard(s) have no other allowed live node (residency) and stay on it: {names}",
                blocked.len()
            );
        }
        if tokio::time::Instant::now() + DRAIN_POLL > deadline {
            anyhow::bail!(
                "node {node} still owns {owned} of {total} shard(s) after {timeout_secs}s; it stays draining (`quire ctl nodes undrain {node}` to cancel)"
            );
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// `nodes undrain ID`.
pub async fn undrain(c: &Client, node: u64) -> anyhow::Result<(Value, View)> {
    let v = c
        .call(Method::DELETE, &format!("/nodes/{node}/drain"), None)
        .await?;
    let msg = if v["changed"] == Value::Bool(true) {
        format!(
            "node {node} is no longer draining; it receives shards again on the next placement rounds"
        )
    } else {
        format!("node {node} was not draining")
    };
    Ok((v, View::Message(msg)))
}

fn list_line(what: &str, list: &Value) -> String {
    match list.as_array() {
        Some(items) if !items.is_empty() => format!("\n{what}: {}", cell(list)),
        _ => String::new(),
    }
}

fn show_text(v: &Value) -> anyhow::Result<String> {
    let mut table = Table::new([
        "NODE", "REGION", "ZONE", "CAPACITY", "HEALTH", "DRAINING", "SHARDS",
    ]);
    for n in v["nodes"].as_array().into_iter().flatten() {
        table.row([
            cell(&n["id"]),
            cell(&n["region"]),
            cell(&n["zone"]),
            cell(&n["capacity"]),
            cell(&n["health"]),
            cell(&n["draining"]),
            cell(&n["shards"]),
        ]);
    }
    let mut out = Vec::new();
    table.write(&mut out)?;
    let mut text = String::from_utf8_lossy(&out).trim_end().to_owned();
    let pending = v["pending_moves"].as_array().map_or(0, Vec::len);
    text.push_str(&format!(
        "\n\n{} shard(s) occupied ({} per residency group), {} unassigned, {} move(s) pending",
        cell(&v["occupied"]),
        cell(&v["shards_per_group"]),
        cell(&v["unassigned"]),
        pending
    ));
    text.push_str(&list_line(
        "unplaceable (no allowed node is up; they stay where they are)",
        &v["unplaceable"],
    ));
    text.push_str(&list_line(
        "held (owner within its grace period)",
        &v["held"],
    ));
    text.push_str(&list_line(
        "blocking a drain (no other allowed node is up)",
        &v["drain_blocked"],
    ));
    Ok(text)
}
