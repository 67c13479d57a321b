//! `quire ctl usage`: tool calls, errors, refusals, Notion requests and latency percentiles
//! per tenant, workspace or principal over a period (`GET /admin/v1/usage`), as a table or
//! `--json`.

use std::io::Write;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::table::{Table, cell, utc};
use super::{Client, seg};

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this workspace (with --tenant).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only this principal, as the audit trail names it (`tenant/principal`).
    #[arg(long)]
    pub principal: Option<String>,
    /// Start of the period, ms since the Unix epoch (default: 24 hours before --until).
    #[arg(long)]
    pub since: Option<u64>,
    /// End of the period (excluded), ms since the Unix epoch (default: now).
    #[arg(long)]
    pub until: Option<u64>,
    /// One row per tenant, workspace or principal.
    #[arg(long, default_value = "tenant", value_parser = ["tenant", "workspace", "principal"])]
    pub group_by: String,
}

/// The query string of `args`.
pub fn query(args: &UsageArgs) -> String {
    let mut params = vec![format!("group_by={}", seg(&args.group_by))];
    for (k, v) in [
        ("tenant", &args.tenant),
        ("workspace", &args.workspace),
        ("principal", &args.principal),
    ] {
        if let Some(v) = v {
            params.push(format!("{k}={}", seg(v)));
        }
    }
    for (k, v) in [("since", args.since), ("until", args.until)] {
        if let Some(v) = v {
            params.push(format!("{k}={v}"));
        }
    }
    params.join("&")
}

/// Writes a report as a table.
pub fn render(report: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let since = report["since_ms"].as_u64().map_or_else(|| "-".into(), utc);
    let until = report["until_ms"].as_u64().map_or_else(|| "-".into(), utc);
    writeln!(out, "usage from {since} to {until}")?;
    let group = report["group_by"].as_str().unwrap_or("group");
    let mut table = Table::new([
        group,
        "calls",
        "errors",
        "denied",
        "notion reqs",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ]);
    let rows = report["rows"].as_array().map_or(&[][..], Vec::as_slice);
    for r in rows {
        table.row(
            [
                "group",
                "calls",
                "errors",
                "denied",
                "notion_requests",
                "p50_ms",
                "p95_ms",
                "p99_ms",
            ]
            .iter()
            .map(|k| cell(&r[*k])),
        );
    }
    // An empty table says "(none)".
    table.write(out)?;
    if report["capped"] == Value::Bool(true) {
        writeln!(
            out,
            "(capped: only the newest {} records were scanned; the period's oldest calls are missing)",
            cell(&report["scanned"])
        )?;
    }
    Ok(())
}

/// `quire ctl usage`.
pub(super) async fn usage(
    client: &Client,
    args: &UsageArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let report = client
        .call(Method::GET, &format!("/usage?{}", query(args)), None)
        .await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        render(&report, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_renders_as_a_table_and_says_when_capped() {
        let report = serde_json::json!({
            "since_ms": 0, "until_ms": 86_400_000, "group_by": "principal",
            "rows": [{"group": "acme/alice", "calls": 3, "errors": 1, "denied": 0,
                      "p50_ms": 12, "p95_ms": 40, "p99_ms": 40}],
            "scanned": 10, "capped": true,
        });
        let mut out = Vec::new();
        render(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("acme/alice"), "{text}");
        assert!(text.contains("principal"), "{text}");
        assert!(text.contains("capped"), "{text}");
    }

    #[test]
    fn the_query_names_only_what_was_given() {
        let args = UsageArgs {
            tenant: Some("acme".into()),
            workspace: None,
            principal: Some("acme/alice".into()),
            since: Some(5),
            until: None,
            group_by: "workspace".into(),
        };
        assert_eq!(
            query(&args),
            "group_by=workspace&tenant=acme&principal=acme%2Falice&since=5"
        );
    }
}
