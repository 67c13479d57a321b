//! The tamper-evident audit trail: one hash chain per tenant (and one for the cluster's own,
//! tenant-less actions), kept in the replicated state and appended to only by `apply`.
//!
//! Each record carries the hash of the record before it in its chain and its own hash:
//! `hash = SHA-256(prev_hash ‖ canonical JSON of the record without its hash)`, hex-encoded.
//! The first record of a chain links to [`GENESIS_HASH`]. Changing, removing or reordering a
//! record breaks a link; [`verify_chain`] finds the first broken one. Retention drops the
//! oldest records of a chain and keeps the last dropped record's sequence number and hash as
//! the chain's anchor, so what remains still verifies.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::TenantId;

/// `prev_hash` of the first record of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Name of the chain of actions that belong to no tenant.
pub const CLUSTER_CHAIN: &str = "_cluster";
/// Default of the audit retention: records kept per chain before the oldest are dropped.
pub const DEFAULT_MAX_RECORDS_PER_CHAIN: u64 = 100_000;
/// Most records in one `AppendAudit` batch.
pub const MAX_AUDIT_BATCH: usize = 1_000;
/// Longest free-text field of a record, in characters.
pub const MAX_AUDIT_TEXT_CHARS: usize = 1_000;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine.
    #[default]
    Info,
    /// A denial or a failed admin action.
    Warning,
    /// A break-glass override or a root action that bypassed policy.
    High,
}

/// What happened, as the proposer describes it (before `apply` places it in a chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened (ms since the Unix epoch, the proposer's clock).
    pub at_ms: u64,
    /// The node that took the decision or served the call.
    pub node: u64,
    /// Who: `tenant/principal`, a global principal, or `root`.
    pub principal: String,
    /// The tenant it concerns, if any (selects the chain).
    pub tenant: Option<TenantId>,
    /// The workspace it concerns, if any.
    pub workspace: Option<String>,
    /// `authorize` (an authorization decision), `admin` (an admin command) or `tool` (a tool
    /// call).
    pub kind: String,
    /// The admin command kind, the permission decided, or the tool name.
    pub action: String,
    /// What it acted on (an id, a Notion page id, ...), if known.
    pub resource: Option<String>,
    /// `allowed`, `denied`, `ok`, `unchanged`, or `error:<code>`.
    pub outcome: String,
    /// How long it took, for tool calls.
    pub latency_ms: Option<u64>,
    /// Requests a tool call sent to Notion, retries included. Absent from records written
    /// before it existed (and from every other kind), and then left out of the hashed form,
    /// so those records hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notion_requests: Option<u32>,
    /// The justification given, or the reason of the decision.
    pub justification: Option<String>,
    /// How serious.
    #[serde(default)]
    pub severity: Severity,
}

/// A record in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The chain: a tenant id or [`CLUSTER_CHAIN`].
    pub chain: String,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The Raft log index that appended it.
    pub log_index: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record in the chain ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The record as hashed: everything but its own hash.
#[derive(Serialize)]
struct Hashed<'a> {
    chain: &'a str,
    seq: u64,
    log_index: u64,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev_hash: &'a str,
}

/// The hash a record must carry.
pub fn record_hash(record: &AuditRecord) -> String {
    let hashed = Hashed {
        chain: &record.chain,
        seq: record.seq,
        log_index: record.log_index,
        event: &record.event,
        prev_hash: &record.prev_hash,
    };
    // Serialising plain structs and strings cannot fail; an empty body would still be
    // hashed consistently on every node.
    let body = serde_json::to_vec(&hashed).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(record.prev_hash.as_bytes());
    h.update(&body);
    hex::encode(h.finalize())
}

/// One chain: its retained records and the anchor left by retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChain {
    /// Retained records, oldest first.
    pub records: VecDeque<AuditRecord>,
    /// Sequence number of the last record dropped by retention (0 if none).
    pub anchor_seq: u64,
    /// Hash of the last record dropped by retention ([`GENESIS_HASH`] if none).
    pub anchor_hash: String,
}

impl AuditChain {
    fn trim(&mut self, keep: u64) {
        while self.records.len() as u64 > keep.max(1) {
            if let Some(dropped) = self.records.pop_front() {
                self.anchor_seq = dropped.seq;
                self.anchor_hash = dropped.hash;
            }
        }
    }

    /// Sequence number of the newest record (0 if none ever).
    pub fn head_seq(&self) -> u64 {
        self.records.back().map_or(self.anchor_seq, |r| r.seq)
    }

    /// Hash of the newest record ([`GENESIS_HASH`] if none ever).
    pub fn head_hash(&self) -> &str {
        match self.records.back() {
            Some(r) => &r.hash,
            None if self.anchor_hash.is_empty() => GENESIS_HASH,
            None => &self.anchor_hash,
        }
    }
}

/// Every chain, and the retention setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditState {
    pub(crate) chains: BTreeMap<String, AuditChain>,
    /// Records kept per chain.
    pub(crate) max_records_per_chain: u64,
}

impl Default for AuditState {
    fn default() -> Self {
        Self {
            chains: BTreeMap::new(),
            max_records_per_chain: DEFAULT_MAX_RECORDS_PER_CHAIN,
        }
    }
}

impl AuditState {
    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&AuditChain> {
        self.chains.get(name)
    }

    /// Every chain, by name.
    pub fn chains(&self) -> impl Iterator<Item = (&String, &AuditChain)> {
        self.chains.iter()
    }

    /// Records kept per chain.
    pub fn max_records_per_chain(&self) -> u64 {
        self.max_records_per_chain
    }

    /// Sets the retention and drops what exceeds it at once.
    pub(crate) fn set_retention(&mut self, max_records_per_chain: u64) {
        self.max_records_per_chain = max_records_per_chain.max(1);
        for chain in self.chains.values_mut() {
            chain.trim(self.max_records_per_chain);
        }
    }

    /// Appends `event` to its chain at `log_index`; returns the new record's sequence number.
    pub(crate) fn append(&mut self, log_index: u64, event: AuditEvent) -> u64 {
        let name = event
            .tenant
            .as_ref()
            .map_or_else(|| CLUSTER_CHAIN.to_owned(), |t| t.as_str().to_owned());
        let chain = self.chains.entry(name.clone()).or_default();
        let seq = chain.head_seq() + 1;
        let mut record = AuditRecord {
            chain: name,
            seq,
            log_index,
            event,
            prev_hash: chain.head_hash().to_owned(),
            hash: String::new(),
        };
        record.hash = record_hash(&record);
        chain.records.push_back(record);
        chain.trim(self.max_records_per_chain);
        seq
    }
}

/// Why a sequence of records does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain {chain:?}, record {seq}: {problem}")]
pub struct ChainBreak {
    /// The chain.
    pub chain: String,
    /// The sequence number where it breaks.
    pub seq: u64,
    /// What is wrong.
    pub problem: String,
}

/// Checks consecutive records of one chain: each hash recomputes, each links to the one
/// before, sequence numbers are consecutive, and all belong to the same chain. `anchor` is
/// the (seq, hash) the first record must follow, if known (`(0, GENESIS_HASH)` for a chain
/// exported from its start).
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    anchor: Option<(u64, &str)>,
) -> Result<u64, ChainBreak> {
    let mut prev: Option<(u64, String)> = anchor.map(|(s, h)| (s, h.to_owned()));
    let mut chain_name: Option<String> = None;
    let mut count = 0;
    for r in records {
        let brk = |problem: String| ChainBreak {
            chain: r.chain.clone(),
            seq: r.seq,
            problem,
        };
        if let Some(name) = &chain_name
            && name != &r.chain
        {
            return Err(brk(format!("belongs to chain {:?}, not {name:?}", r.chain)));
        }
        chain_name = Some(r.chain.clone());
        if record_hash(r) != r.hash {
            return Err(brk("its hash does not match its contents (changed)".into()));
        }
        if let Some((seq, hash)) = &prev {
            if r.seq != seq + 1 {
                return Err(brk(format!(
                    "follows record {seq}: a record is missing or out of order"
                )));
            }
            if &r.prev_hash != hash {
                return Err(brk(
                    "does not link to the record before it (removed, reordered or changed)".into(),
                ));
            }
        } else if r.seq == 1 && r.prev_hash != GENESIS_HASH {
            return Err(brk(
                "the first record does not link to the genesis hash".into()
            ));
        }
        prev = Some((r.seq, r.hash.clone()));
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            at_ms: 1_000 + n,
            node: 1,
            principal: "acme/alice".into(),
            tenant: Some(TenantId::new("acme").unwrap()),
            workspace: Some("docs".into()),
            kind: "tool".into(),
            action: "notion-fetch".into(),
            resource: Some(format!("page-{n}")),
            outcome: "ok".into(),
            latency_ms: Some(12),
            notion_requests: None,
            justification: None,
            severity: Severity::Info,
        }
    }

    /// A record written before `notion_requests` existed, with the hash it got then.
    const OLD_RECORD: &str = r#"{"chain":"acme","seq":1,"log_index":11,"at_ms":1001,"node":1,"principal":"acme/alice","tenant":"acme","workspace":"docs","kind":"tool","action":"notion-fetch","resource":"page-1","outcome":"ok","latency_ms":12,"justification":null,"severity":"info","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"3845a73ebc22fd5bc33738d442e0807ee22369c58dab2532757c384a7bb068d2"}"#;

    #[test]
    fn records_without_notion_requests_hash_as_before() {
        let old: AuditRecord = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(old.event.notion_requests, None);
        assert_eq!(record_hash(&old), old.hash);
        assert_eq!(serde_json::to_string(&old).unwrap(), OLD_RECORD);
        // The same event appended now gets the same hash.
        let s = chain(1);
        assert_eq!(s.chain("acme").unwrap().records[0].hash, old.hash);
        // A count is part of what is hashed.
        let mut counted = old.clone();
        counted.event.notion_requests = Some(2);
        assert_ne!(record_hash(&counted), old.hash);
        let text = serde_json::to_string(&counted).unwrap();
        assert!(text.contains("\"notion_requests\":2"), "{text}");
        assert_eq!(serde_json::from_str::<AuditRecord>(&text).unwrap(), counted);
    }

    fn chain(n: u64) -> AuditState {
        let mut s = AuditState::default();
        for i in 1..=n {
            s.append(10 + i, event(i));
        }
        s
    }

    #[test]
    fn a_chain_verifies_and_any_edit_breaks_it() {
        let s = chain(5);
        let records: Vec<AuditRecord> = s.chain("acme").unwrap().records.iter().cloned().collect();
        assert_eq!(verify_chain(&records, Some((0, GENESIS_HASH))).unwrap(), 5);

        let mut changed = records.clone();
        changed[2].event.outcome = "denied".into();
        let e = verify_chain(&changed, None).unwrap_err();
        assert_eq!(e.seq, 3);
        assert!(e.problem.contains("changed"), "{e}");

        let mut rehashed = changed.clone();
        rehashed[2].hash = record_hash(&rehashed[2]);
        let e = verify_chain(&rehashed, None).unwrap_err();
        assert_eq!(e.seq, 4, "{e}");

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed, None).unwrap_err().seq, 3);

        let mut reordered = records.clone();
        reordered.swap(1, 2);
        assert!(verify_chain(&reordered, None).is_err());

        let dropped_first: Vec<AuditRecord> = records[1..].to_vec();
        assert!(verify_chain(&dropped_first, Some((0, GENESIS_HASH))).is_err());
    }

    #[test]
    fn retention_keeps_an_anchor_that_still_verifies() {
        let mut s = AuditState {
            max_records_per_chain: 3,
            ..AuditState::default()
        };
        for i in 1..=7 {
            s.append(i, event(i));
        }
        let c = s.chain("acme").unwrap();
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.anchor_seq, 4);
        assert_eq!(c.head_seq(), 7);
        assert_eq!(
            verify_chain(&c.records, Some((c.anchor_seq, &c.anchor_hash))).unwrap(),
            3
        );
    }
}
