//! The replicated table of MCP sessions, so a session opened on one node continues on any
//! other and survives restarts.
//!
//! An entry holds what the MCP server needs to restore a session elsewhere (the client's
//! `initialize` parameters, opaque JSON text here), the principal it is bound to, and when it
//! expires. Expiry is decided from timestamps inside the commands, never a clock: every
//! session command first forgets up to [`MAX_PRUNED_PER_APPLY`] entries that expired at or
//! before the command's `at_ms`, and readers treat an entry past its `expires_at_ms` on their
//! own clock as gone. The table is bounded per tenant and in total by limits the proposer
//! carries in the command (the node's settings), each capped by a hard maximum here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::{ApplyError, CommandOutput};
use crate::ids::TenantId;
use crate::state::State;

/// Longest session id, in bytes (visible ASCII only).
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Longest bound principal, in characters.
pub const MAX_SESSION_PRINCIPAL_CHARS: usize = 256;
/// Largest stored session state (the client's `initialize` parameters), in bytes.
pub const MAX_SESSION_STATE_BYTES: usize = 16 * 1024;
/// Largest total limit a proposer may ask for.
pub const MAX_SESSIONS_TOTAL: u32 = 1_000_000;
/// Expired entries one session command forgets at most (bounded work per apply; each put
/// adds one entry, so expired entries never pile up).
pub const MAX_PRUNED_PER_APPLY: usize = 64;

/// One MCP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpSession {
    /// The `Mcp-Session-Id` the server handed out.
    pub id: String,
    /// The tenant of the principal it is bound to.
    pub tenant: TenantId,
    /// The principal it is bound to (within `tenant`); only its tokens may use the session.
    pub principal: String,
    /// What the server restores the session from (opaque JSON text).
    pub state_json: String,
    /// When it was opened (stamped by the proposer).
    pub created_at_ms: u64,
    /// When it was last stored or refreshed (stamped by the proposer).
    pub refreshed_at_ms: u64,
    /// When it is forgotten unless refreshed before.
    pub expires_at_ms: u64,
}

impl McpSession {
    /// Whether it is still valid at `now_ms`.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Whether it is bound to `tenant`/`principal`.
    pub fn is_bound_to(&self, tenant: &TenantId, principal: &str) -> bool {
        &self.tenant == tenant && self.principal == principal
    }
}

/// Bounds on the table, carried by each [`crate::Command::PutMcpSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Most live sessions of one tenant.
    pub max_per_tenant: u32,
    /// Most live sessions in the cluster.
    pub max_total: u32,
}

/// The session table: entries by id, with an index by expiry and counts per tenant (both
/// derived, rebuilt when a snapshot or backup is read; only the entries are serialised).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    entries: BTreeMap<String, McpSession>,
    by_expiry: BTreeSet<(u64, String)>,
    per_tenant: BTreeMap<TenantId, usize>,
}

impl Serialize for SessionTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SessionTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, McpSession>::deserialize(d)?;
        let mut table = SessionTable::default();
        for (_, session) in entries {
            table.insert(session);
        }
        Ok(table)
    }
}

impl SessionTable {
    /// The entry `id`, expired or not (see [`McpSession::is_live_at`]).
    pub fn get(&self, id: &str) -> Option<&McpSession> {
        self.entries.get(id)
    }

    /// The entry `id` if it is live at `now_ms`.
    pub fn live(&self, id: &str, now_ms: u64) -> Option<&McpSession> {
        self.entries.get(id).filter(|s| s.is_live_at(now_ms))
    }

    /// Entries held (expired ones not yet forgotten included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries of `tenant` held.
    pub fn tenant_len(&self, tenant: &TenantId) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// All entries, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &McpSession> {
        self.entries.values()
    }

    fn insert(&mut self, session: McpSession) {
        if let Some(old) = self.remove(&session.id) {
            debug_assert_eq!(old.id, session.id);
        }
        self.by_expiry
            .insert((session.expires_at_ms, session.id.clone()));
        *self.per_tenant.entry(session.tenant.clone()).or_default() += 1;
        self.entries.insert(session.id.clone(), session);
    }

    fn remove(&mut self, id: &str) -> Option<McpSession> {
        let old = self.entries.remove(id)?;
        self.by_expiry.remove(&(old.expires_at_ms, old.id.clone()));
        if let Some(n) = self.per_tenant.get_mut(&old.tenant) {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&old.tenant);
            }
        }
        Some(old)
    }

    /// Ids of at most [`MAX_PRUNED_PER_APPLY`] entries expired at `at_ms`, soonest first.
    fn expired(&self, at_ms: u64) -> Vec<String> {
        self.by_expiry
            .iter()
            .take_while(|(expires, _)| *expires <= at_ms)
            .take(MAX_PRUNED_PER_APPLY)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn prune(&mut self, ids: &[String]) {
        for id in ids {
            self.remove(id);
        }
    }

    /// Forgets every session of `tenant` (the tenant was deleted).
    pub(crate) fn remove_tenant(&mut self, tenant: &TenantId) {
        let ids: Vec<String> = self
            .entries
            .values()
            .filter(|s| &s.tenant == tenant)
            .map(|s| s.id.clone())
            .collect();
        self.prune(&ids);
    }
}

/// Checks a session id: 1 to [`MAX_SESSION_ID_BYTES`] bytes of visible ASCII.
pub fn check_session_id(id: &str) -> Result<(), ApplyError> {
    if id.is_empty() || id.len() > MAX_SESSION_ID_BYTES {
        return Err(ApplyError::Invalid(format!(
            "an MCP session id is 1 to {MAX_SESSION_ID_BYTES} bytes"
        )));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApplyError::Invalid(
            "an MCP session id is visible ASCII only".into(),
        ));
    }
    Ok(())
}

fn check_principal(principal: &str) -> Result<(), ApplyError> {
    if principal.is_empty()
        || principal.chars().count() > MAX_SESSION_PRINCIPAL_CHARS
        || principal.chars().any(char::is_control)
    {
        return Err(ApplyError::Invalid(format!(
            "a session's principal is 1 to {MAX_SESSION_PRINCIPAL_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

fn check_limits(limits: &SessionLimits) -> Result<(), ApplyError> {
    if limits.max_total == 0
        || limits.max_per_tenant == 0
        || limits.max_total > MAX_SESSIONS_TOTAL
        || limits.max_per_tenant > limits.max_total
    {
        return Err(ApplyError::Invalid(format!(
            "session limits must satisfy 1 <= max_per_tenant <= max_total <= {MAX_SESSIONS_TOTAL}"
        )));
    }
    Ok(())
}

fn session_name(id: &str) -> String {
    format!("MCP session {:?}", id.chars().take(40).collect::<String>())
}

/// `PutMcpSession`: stores a new session, or refreshes one bound to the same principal
/// (replacing its state and expiry, keeping its creation time). Refuses a session bound to
/// another principal, and a new one that the tenant's or the cluster's limit has no room
/// for. Forgets expired entries first (bounded); a refused put forgets nothing.
pub(crate) fn put(
    state: &mut State,
    session: &McpSession,
    at_ms: u64,
    limits: &SessionLimits,
) -> Result<CommandOutput, ApplyError> {
    check_session_id(&session.id)?;
    check_principal(&session.principal)?;
    check_limits(limits)?;
    if session.state_json.len() > MAX_SESSION_STATE_BYTES {
        return Err(ApplyError::Invalid(format!(
            "an MCP session's state is at most {MAX_SESSION_STATE_BYTES} bytes, not {}",
            session.state_json.len()
        )));
    }
    if session.expires_at_ms <= at_ms {
        return Err(ApplyError::Invalid(
            "an MCP session must expire after it is stored".into(),
        ));
    }
    if !state.tenants.contains_key(&session.tenant) {
        return Err(ApplyError::NotFound(format!(
            "tenant {:?}",
            session.tenant.as_str()
        )));
    }
    let table = &state.mcp_sessions;
    let expired = table.expired(at_ms);
    let existing = table.get(&session.id).filter(|s| !expired.contains(&s.id));
    let created_at_ms = match existing {
        Some(old) if !old.is_bound_to(&session.tenant, &session.principal) => {
            return Err(ApplyError::Conflict(format!(
                "{} is bound to another principal",
                session_name(&session.id)
            )));
        }
        Some(old) => old.created_at_ms,
        None => {
            let expired_of_tenant = expired
                .iter()
                .filter_map(|id| table.get(id))
                .filter(|s| s.tenant == session.tenant)
                .count();
            let tenant_live = table.tenant_len(&session.tenant) - expired_of_tenant;
            let total_live = table.len() - expired.len();
            if tenant_live >= limits.max_per_tenant as usize {
                return Err(ApplyError::LimitReached(format!(
                    "tenant {:?} holds {tenant_live} MCP sessions, its limit (mcp.max_sessions_per_tenant); close sessions or wait for idle ones to expire",
                    session.tenant.as_str()
                )));
            }
            if total_live >= limits.max_total as usize {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster holds {total_live} MCP sessions, its limit (mcp.max_sessions); close sessions or wait for idle ones to expire"
                )));
            }
            session.created_at_ms
        }
    };
    let table = &mut state.mcp_sessions;
    table.prune(&expired);
    table.insert(McpSession {
        created_at_ms,
        refreshed_at_ms: at_ms,
        ..session.clone()
    });
    Ok(CommandOutput::Done)
}

/// `DeleteMcpSession`: forgets a session, only for the principal it is bound to. A session
/// that is not there (never stored, expired, deleted already) is `Unchanged`.
pub(crate) fn delete(
    state: &mut State,
    id: &str,
    tenant: &TenantId,
    principal: &str,
    at_ms: u64,
) -> Result<CommandOutput, ApplyError> {
    check_session_id(id)?;
    let table = &state.mcp_sessions;
    let expired = table.expired(at_ms);
    let found = table.get(id).filter(|s| !expired.contains(&s.id));
    if let Some(s) = found
        && !s.is_bound_to(tenant, principal)
    {
        return Err(ApplyError::Forbidden(format!(
            "{} is bound to another principal",
            session_name(id)
        )));
    }
    let table = &mut state.mcp_sessions;
    table.prune(&expired);
    Ok(match table.remove(id) {
        Some(_) => CommandOutput::Done,
        None => CommandOutput::Unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, apply};

    const LIMITS: SessionLimits = SessionLimits {
        max_per_tenant: 3,
        max_total: 4,
    };

    fn tenant(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    fn state_with(tenants: &[&str]) -> State {
        let mut s = State::new();
        for t in tenants {
            apply(
                &mut s,
                &Command::CreateTenant {
                    tenant: tenant(t),
                    display_name: t.to_string(),
                },
            )
            .unwrap();
        }
        s
    }

    fn put_cmd(id: &str, t: &str, principal: &str, at_ms: u64, ttl_ms: u64) -> Command {
        Command::PutMcpSession {
            session: McpSession {
                id: id.to_owned(),
                tenant: tenant(t),
                principal: principal.to_owned(),
                state_json: format!(r#"{{"initialize_params":{{"n":"{id}"}}}}"#),
                created_at_ms: at_ms,
                refreshed_at_ms: at_ms,
                expires_at_ms: at_ms + ttl_ms,
            },
            at_ms,
            limits: LIMITS,
        }
    }

    fn delete_cmd(id: &str, t: &str, principal: &str, at_ms: u64) -> Command {
        Command::DeleteMcpSession {
            id: id.to_owned(),
            tenant: tenant(t),
            principal: principal.to_owned(),
            at_ms,
        }
    }

    #[test]
    fn put_get_refresh_and_delete() {
        let mut s = state_with(&["acme"]);
        assert_eq!(
            apply(&mut s, &put_cmd("s1", "acme", "ann", 1_000, 500)),
            Ok(CommandOutput::Done)
        );
        let got = s.mcp_sessions().live("s1", 1_200).unwrap();
        assert_eq!(got.principal, "ann");
        assert_eq!(got.expires_at_ms, 1_500);
        assert!(s.mcp_sessions().live("s1", 1_500).is_none(), "expired");

        // A refresh by the same principal moves the expiry and keeps the creation time.
        apply(&mut s, &put_cmd("s1", "acme", "ann", 1_400, 500)).unwrap();
        let got = s.mcp_sessions().get("s1").unwrap();
        assert_eq!(
            (got.created_at_ms, got.refreshed_at_ms, got.expires_at_ms),
            (1_000, 1_400, 1_900)
        );

        // Another principal can neither take it over nor delete it.
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, &put_cmd("s1", "acme", "bob", 1_450, 500)),
            Err(ApplyError::Conflict(_))
        ));
        assert!(matches!(
            apply(&mut s, &delete_cmd("s1", "acme", "bob", 1_450)),
            Err(ApplyError::Forbidden(_))
        ));
        assert_eq!(s, before, "refused commands change nothing");

        assert_eq!(
            apply(&mut s, &delete_cmd("s1", "acme", "ann", 1_500)),
            Ok(CommandOutput::Done)
        );
        assert!(s.mcp_sessions().get("s1").is_none());
        assert_eq!(
            apply(&mut s, &delete_cmd("s1", "acme", "ann", 1_600)),
            Ok(CommandOutput::Unchanged)
        );
    }

    #[test]
    fn bad_puts_are_refused() {
        let mut s = state_with(&["acme"]);
        let before = s.clone();
        for cmd in [
            put_cmd("", "acme", "ann", 1_000, 500),
            put_cmd("has space", "acme", "ann", 1_000, 500),
            put_cmd(&"x".repeat(129), "acme", "ann", 1_000, 500),
            put_cmd("s1", "acme", "", 1_000, 500),
            put_cmd("s1", "acme", "ann", 1_000, 0),
            put_cmd("s1", "nope", "ann", 1_000, 500),
        ] {
            assert!(apply(&mut s, &cmd).is_err(), "{cmd:?}");
        }
        let mut big = put_cmd("s1", "acme", "ann", 1_000, 500);
        if let Command::PutMcpSession { session, .. } = &mut big {
            session.state_json = "x".repeat(MAX_SESSION_STATE_BYTES + 1);
        }
        assert!(matches!(apply(&mut s, &big), Err(ApplyError::Invalid(_))));
        let mut no_limits = put_cmd("s1", "acme", "ann", 1_000, 500);
        if let Command::PutMcpSession { limits, .. } = &mut no_limits {
            limits.max_per_tenant = 5;
        }
        assert!(matches!(
            apply(&mut s, &no_limits),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn limits_per_tenant_and_total_count_only_live_sessions() {
        let mut s = state_with(&["acme", "beta"]);
        for i in 0..3 {
            apply(
                &mut s,
                &put_cmd(&format!("a{i}"), "acme", "ann", 1_000, 500),
            )
            .unwrap();
        }
        let before = s.clone();
        let refused = apply(&mut s, &put_cmd("a3", "acme", "ann", 1_100, 500));
        assert!(
            matches!(&refused, Err(ApplyError::LimitReached(m)) if m.contains("tenant \"acme\"") && m.contains("mcp.max_sessions_per_tenant")),
            "{refused:?}"
        );
        assert_eq!(s, before);
        // A refresh of a session already held needs no room.
        apply(&mut s, &put_cmd("a0", "acme", "ann", 1_100, 500)).unwrap();
        apply(&mut s, &put_cmd("b0", "beta", "bea", 1_100, 500)).unwrap();
        let refused = apply(&mut s, &put_cmd("b1", "beta", "bea", 1_100, 500));
        assert!(
            matches!(&refused, Err(ApplyError::LimitReached(m)) if m.contains("mcp.max_sessions)")),
            "{refused:?}"
        );
        // Once a1 and a2 expired (at 1 500), a later put finds room and forgets them.
        apply(&mut s, &put_cmd("b1", "beta", "bea", 1_500, 500)).unwrap();
        assert!(s.mcp_sessions().get("a1").is_none());
        assert!(s.mcp_sessions().get("a2").is_none());
        assert_eq!(s.mcp_sessions().len(), 3);
        assert_eq!(s.mcp_sessions().tenant_len(&tenant("acme")), 1);
        assert_eq!(s.mcp_sessions().tenant_len(&tenant("beta")), 2);
    }

    #[test]
    fn expiry_is_applied_from_command_time_with_bounded_work() {
        let mut s = state_with(&["acme"]);
        let limits = SessionLimits {
            max_per_tenant: 1_000,
            max_total: 1_000,
        };
        for i in 0..200u64 {
            let mut cmd = put_cmd(&format!("s{i:03}"), "acme", "ann", 1_000, 101 + i);
            if let Command::PutMcpSession { limits: l, .. } = &mut cmd {
                *l = limits;
            }
            apply(&mut s, &cmd).unwrap();
        }
        // s000..s099 expired by 1 200 (s_i expires at 1 101 + i); one command forgets at most
        // 64 of them, soonest first.
        apply(&mut s, &delete_cmd("none", "acme", "ann", 1_200)).unwrap();
        assert_eq!(s.mcp_sessions().len(), 200 - MAX_PRUNED_PER_APPLY);
        assert!(s.mcp_sessions().get("s000").is_none());
        assert!(s.mcp_sessions().get("s063").is_none());
        assert!(s.mcp_sessions().get("s064").is_some());
        // Readers never see an expired entry as live, pruned or not.
        assert!(s.mcp_sessions().live("s064", 1_200).is_none());
        assert!(s.mcp_sessions().live("s100", 1_200).is_some());
        // The next command forgets the rest of those expired by its time (s064..s099).
        apply(&mut s, &delete_cmd("none", "acme", "ann", 1_200)).unwrap();
        assert_eq!(s.mcp_sessions().len(), 100);
        assert!(s.mcp_sessions().get("s099").is_none());
        assert!(s.mcp_sessions().get("s100").is_some());
    }

    #[test]
    fn deleting_a_tenant_forgets_its_sessions() {
        let mut s = state_with(&["acme", "beta"]);
        apply(&mut s, &put_cmd("a", "acme", "ann", 1_000, 500)).unwrap();
        apply(&mut s, &put_cmd("b", "beta", "bea", 1_000, 500)).unwrap();
        apply(
            &mut s,
            &Command::DeleteTenant {
                tenant: tenant("acme"),
            },
        )
        .unwrap();
        assert!(s.mcp_sessions().get("a").is_none());
        assert_eq!(s.mcp_sessions().tenant_len(&tenant("acme")), 0);
        assert!(s.mcp_sessions().get("b").is_some());
    }

    #[test]
    fn the_table_round_trips_through_snapshots_and_old_states_load() {
        let mut s = state_with(&["acme"]);
        apply(&mut s, &put_cmd("s1", "acme", "ann", 1_000, 500)).unwrap();
        apply(&mut s, &put_cmd("s2", "acme", "ann", 1_000, 900)).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s, "entries and derived indexes alike");
        // Expiry works on the restored table (its index was rebuilt).
        let mut back = back;
        apply(&mut back, &delete_cmd("none", "acme", "ann", 1_600)).unwrap();
        assert!(back.mcp_sessions().get("s1").is_none());
        assert!(back.mcp_sessions().get("s2").is_some());

        // A state written before the table existed loads with an empty one.
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value.as_object_mut().unwrap().remove("mcp_sessions");
        let old: State = serde_json::from_value(value).unwrap();
        assert!(old.mcp_sessions().is_empty());
    }

    #[test]
    fn backups_carry_the_table_and_restore_it() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let key = crate::seal::MasterKey::generate(&mut rng);
        let mut s = State::new();
        apply(
            &mut s,
            &Command::InitCluster {
                cluster_name: "prod".into(),
                key_check: key.key_check(&mut rng).unwrap(),
            },
        )
        .unwrap();
        apply(
            &mut s,
            &Command::CreateTenant {
                tenant: tenant("acme"),
                display_name: "Acme".into(),
            },
        )
        .unwrap();
        apply(&mut s, &put_cmd("s1", "acme", "ann", 1_000, 500)).unwrap();
        let (_, bytes) = crate::backup::write_backup(&s, 3, 2_000).unwrap();
        let (_, restored) = crate::backup::read_backup(&bytes).unwrap();
        assert_eq!(restored.mcp_sessions(), s.mcp_sessions());
        assert_eq!(restored.mcp_sessions().get("s1").unwrap().principal, "ann");
    }

    #[test]
    fn session_commands_round_trip_through_the_log_encoding() {
        for cmd in [
            put_cmd("s1", "acme", "ann", 1_000, 500),
            delete_cmd("s1", "acme", "ann", 1_000),
        ] {
            let bytes = serde_json::to_vec(&cmd).unwrap();
            let back: Command = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, cmd);
        }
    }
}
