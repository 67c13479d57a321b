//! `quire ctl audit tail|export|verify --file`: the audit commands that stream or work
//! offline. An export is JSON lines: a header (the chain, its retention anchor and its head)
//! and then every retained record, oldest first; [`verify_export`] re-checks the hash chain
//! from the anchor, so a changed, removed or reordered record is caught without a server.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use quire_raft::audit::{AuditRecord, verify_chain};

use super::table::{cell, utc};
use super::{Client, seg};
use crate::admin::audit::ExportHeader;

/// Largest export read or written, in bytes.
const MAX_EXPORT_BYTES: usize = 1024 * 1024 * 1024;

/// One record as a line of text: sequence number, time, who, what, outcome, on what.
pub fn record_line(r: &Value) -> String {
    let time = r["at_ms"].as_u64().map_or_else(|| "-".to_owned(), utc);
    let mut line = format!(
        "#{} {time} node {} {} {} {} {}",
        cell(&r["seq"]),
        cell(&r["node"]),
        cell(&r["principal"]),
        cell(&r["kind"]),
        cell(&r["action"]),
        cell(&r["outcome"]),
    );
    if let Some(resource) = r["resource"].as_str() {
        line.push_str(&format!(" on {resource}"));
    }
    if let Some(workspace) = r["workspace"].as_str() {
        line.push_str(&format!(" in {workspace}"));
    }
    if let Some(why) = r["justification"].as_str() {
        line.push_str(&format!(" ({})", why.replace('\n', " ")));
    }
    line
}

/// Options of `audit tail`.
#[derive(Debug, Clone)]
pub struct TailOpts {
    /// The chain (`None`: the server picks the token's own).
    pub tenant: Option<String>,
    /// Records shown first.
    pub lines: u64,
    /// Keep polling.
    pub follow: bool,
    /// Poll interval.
    pub interval: Duration,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// `audit tail`: the last `lines` records, then (with `follow`) new ones as they commit.
pub(super) async fn tail(
    client: &Client,
    opts: &TailOpts,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use reqwest::Method;
    let chain = opts
        .tenant
        .as_deref()
        .map(|t| format!("tenant={}&", seg(t)))
        .unwrap_or_default();
    let first = client
        .call(Method::GET, &format!("/audit/records?{chain}limit=1"), None)
        .await?;
    let head = first["head_seq"].as_u64().unwrap_or(0);
    let mut after = head.saturating_sub(opts.lines);
    loop {
        let page = client
            .call(
                Method::GET,
                &format!("/audit/records?{chain}after_seq={after}&limit=1000"),
                None,
            )
            .await?;
        for r in page["records"].as_array().into_iter().flatten() {
            if opts.json {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            } else {
                writeln!(out, "{}", record_line(r))?;
            }
        }
        out.flush()?;
        after = page["last_seq"].as_u64().unwrap_or(after);
        if page["more"] == Value::Bool(true) {
            continue;
        }
        if !opts.follow {
            return Ok(());
        }
        tokio::time::sleep(opts.interval).await;
    }
}

/// `audit export`: the chain as JSON lines, to `file` or `out`.
pub(super) async fn export(
    client: &Client,
    tenant: &str,
    file: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let method = reqwest::Method::GET;
    let (status, bytes, url) = client
        .send(
            method.clone(),
            &format!("/audit/export?tenant={}", seg(tenant)),
            None,
            MAX_EXPORT_BYTES,
        )
        .await?;
    if !status.is_success() {
        return Err(super::refused(&method, &url, status, &bytes));
    }
    match file {
        None => out.write_all(&bytes)?,
        Some(path) => {
            std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let records = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                .saturating_sub(1);
            writeln!(
                out,
                "exported {records} records of chain {tenant} to {}",
                path.display()
            )?;
        }
    }
    Ok(())
}

/// What an export that verifies holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Its header.
    pub header: ExportHeader,
    /// Records checked.
    pub records: u64,
}

/// Why an export does not verify: the first broken line and record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExportBreak {
    /// Line of the file (from 1) where it breaks, if one line is at fault.
    pub line: Option<usize>,
    /// Sequence number of the record at fault, if known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// Checks an export: its header, every record's hash, every link from the anchor on, and
/// that it ends at the head its header names.
pub fn verify_export(text: &str) -> Result<ExportSummary, ExportBreak> {
    let brk =
        |line: Option<usize>, seq: Option<u64>, message: String| ExportBreak { line, seq, message };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((first, header_line)) = lines.next() else {
        return Err(brk(None, None, "the export is empty".to_owned()));
    };
    let header: ExportHeader = serde_json::from_str(header_line).map_err(|e| {
        brk(
            Some(first),
            None,
            format!("line {first}: not an export header ({e})"),
        )
    })?;
    let mut records = Vec::new();
    let mut line_of = Vec::new();
    for (n, line) in lines {
        let r: AuditRecord = serde_json::from_str(line).map_err(|e| {
            brk(
                Some(n),
                None,
                format!("line {n}: not an audit record ({e})"),
            )
        })?;
        if r.chain != header.chain {
            return Err(brk(
                Some(n),
                Some(r.seq),
                format!(
                    "line {n}: record {} belongs to chain {:?}, not {:?}",
                    r.seq, r.chain, header.chain
                ),
            ));
        }
        records.push(r);
        line_of.push(n);
    }
    if let Err(e) = verify_chain(
        &records,
        Some((header.anchor_seq, header.anchor_hash.as_str())),
    ) {
        let at = records
            .iter()
            .position(|r| r.seq == e.seq)
            .and_then(|i| line_of.get(i).copied());
        let place = at.map(|l| format!(" (line {l})")).unwrap_or_default();
        return Err(brk(
            at,
            Some(e.seq),
            format!(
                "chain {:?}, record {}{place}: {}",
                e.chain, e.seq, e.problem
            ),
        ));
    }
    let (last_seq, last_hash) = records
        .last()
        .map_or((header.anchor_seq, header.anchor_hash.as_str()), |r| {
            (r.seq, r.hash.as_str())
        });
    if last_seq != header.head_seq || last_hash != header.head_hash {
        return Err(brk(
            None,
            Some(last_seq + 1),
            format!(
                "chain {:?}: the export ends at record {last_seq} but its header names record {} as the head: records were removed from the end",
                header.chain, header.head_seq
            ),
        ));
    }
    let count = records.len() as u64;
    if count != header.records {
        return Err(brk(
            None,
            None,
            format!(
                "chain {:?}: the export holds {count} records, its header says {}",
                header.chain, header.records
            ),
        ));
    }
    Ok(ExportSummary {
        header,
        records: count,
    })
}

/// `audit verify --file`: reads an export and verifies it offline.
pub(super) fn verify_file(path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_EXPORT_BYTES as u64 {
        bail!(
            "{} is {size} bytes, more than {MAX_EXPORT_BYTES}",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match verify_export(&text) {
        Ok(summary) => {
            let h = &summary.header;
            if json {
                let v = serde_json::json!({
                    "ok": true,
                    "chain": h.chain,
                    "records": summary.records,
                    "anchor_seq": h.anchor_seq,
                    "head_seq": h.head_seq,
                    "head_hash": h.head_hash,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(
                    out,
                    "chain {}: {} records verify from anchor {} to head {} ({})",
                    h.chain, summary.records, h.anchor_seq, h.head_seq, h.head_hash
                )?;
            }
            Ok(())
        }
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::audit::{AuditEvent, GENESIS_HASH, Severity, record_hash};

    fn export(n: u64) -> String {
        let mut prev = GENESIS_HASH.to_owned();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let mut r = AuditRecord {
                chain: "acme".into(),
                seq,
                log_index: 10 + seq,
                event: AuditEvent {
                    at_ms: 1_000 + seq,
                    node: 1,
                    principal: "acme/alice".into(),
                    tenant: Some(quire_raft::ids::TenantId::new("acme").unwrap()),
                    workspace: None,
                    kind: "admin".into(),
                    action: "create_workspace".into(),
                    resource: Some(format!("workspace:w{seq}")),
                    outcome: "ok".into(),
                    latency_ms: None,
                    notion_requests: None,
                    justification: None,
                    severity: Severity::Info,
                },
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            r.hash = record_hash(&r);
            prev = r.hash.clone();
            lines.push(serde_json::to_string(&r).unwrap());
        }
        let header = ExportHeader {
            chain: "acme".into(),
            anchor_seq: 0,
            anchor_hash: GENESIS_HASH.into(),
            head_seq: n,
            head_hash: prev,
            records: n,
        };
        let mut text = serde_json::to_string(&header).unwrap();
        for l in lines {
            text.push('\n');
            text.push_str(&l);
        }
        text.push('\n');
        text
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn an_untouched_export_verifies() {
        let s = verify_export(&export(4)).unwrap();
        assert_eq!(s.records, 4);
        assert_eq!(s.header.head_seq, 4);
    }

    #[test]
    fn edits_removals_swaps_and_truncation_are_caught() {
        let good = lines(&export(5));

        let mut edited = good.clone();
        edited[3] = edited[3].replace("\"outcome\":\"ok\"", "\"outcome\":\"denied\"");
        assert_ne!(edited, good);
        let e = verify_export(&edited.join("\n")).unwrap_err();
        assert_eq!((e.seq, e.line), (Some(3), Some(4)), "{e}");
        assert!(e.message.contains("changed"), "{e}");

        let mut removed = good.clone();
        removed.remove(2);
        let e = verify_export(&removed.join("\n")).unwrap_err();
        assert_eq!(e.seq, Some(3), "{e}");

        let mut swapped = good.clone();
        swapped.swap(2, 3);
        let e = verify_export(&swapped.join("\n")).unwrap_err();
        assert!(e.seq.is_some(), "{e}");
        assert!(e.message.contains("record"), "{e}");

        let mut truncated = good.clone();
        truncated.pop();
        let e = verify_export(&truncated.join("\n")).unwrap_err();
        assert!(e.message.contains("removed from the end"), "{e}");

        let e = verify_export("").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = verify_export("{\"chain\": 1}").unwrap_err();
        assert!(e.message.contains("header"), "{e}");
    }

    #[test]
    fn record_lines_are_readable() {
        let v = serde_json::json!({
            "seq": 7, "at_ms": 0, "node": 2, "principal": "acme/alice", "kind": "admin",
            "action": "assign_role", "outcome": "denied", "resource": "role:x",
            "justification": "no role"
        });
        assert_eq!(
            record_line(&v),
            "#7 1970-01-01T00:00:00Z node 2 acme/alice admin assign_role denied on role:x (no role)"
        );
    }
}
