//! Delegation: a principal lends a permission or a role it holds, within a scope its own role
//! binding covers, to another principal of its tenant or a global one (a global principal may
//! lend to a principal of the tenant the scope lies in).
//!
//! - A **temporary** delegation has an expiry. When what it lends lies within what the
//!   delegator's role may assign (a tenant admin lending `notion.write`, which belongs to
//!   `standard_user`), it is in force at once; otherwise it widens the delegate's rights beyond
//!   the delegator's authority and waits for a higher authority's approval, like a permanent
//!   one.
//! - A **permanent** delegation has no expiry and always waits for approval by a principal
//!   holding a role above the delegator's over the scope (one whose role may assign the
//!   delegator's role there; another enterprise admin for an enterprise admin's). Neither the
//!   delegator nor the delegate approves, nor does a root token. A permanent delegation is
//!   flagged for review [`REVIEW_AFTER_MS`] after its approval (the approval's stamp).
//! - A delegation is honoured only at decision time, while the delegator still holds what it
//!   lent (an active role binding, no restriction on it), while it is unexpired, approved if it
//!   needs to be, and not revoked: revoking the delegator's role ends its delegations at once.
//!   Delegations do not chain: only role bindings back a delegation.
//!
//! Every delegation records a justification. The rules that need the admin token's principal
//! are applied by `command::as_admin` through [`admin_command`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::command::{ApplyError, Command, CommandOutput};
use crate::ids::TenantId;
use crate::rbac::{Permission, Role, RoleScope, Subject, role_grants};
use crate::state::State;

/// How long after its approval a permanent delegation is flagged for review: 90 days.
pub const REVIEW_AFTER_MS: u64 = 90 * 24 * 3600 * 1000;
/// Most delegations one subject receives.
pub const MAX_DELEGATIONS_PER_SUBJECT: usize = 200;
/// Most delegations in the cluster.
pub const MAX_DELEGATIONS: usize = 100_000;

/// What a delegation lends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Delegated {
    /// One permission, at a scope of exactly its level.
    Permission(Permission),
    /// A role, at a scope where that role may be bound.
    Role(Role),
}

impl fmt::Display for Delegated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delegated::Permission(p) => write!(f, "permission {p}"),
            Delegated::Role(r) => write!(f, "role {r}"),
        }
    }
}

/// A delegation's approval, when it needs one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationApproval {
    /// Who approved it.
    pub by: String,
    /// The role it approved with.
    pub role: Role,
    /// When (stamped by the proposer of the approval).
    pub at_ms: u64,
}

/// A delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// Cluster-unique id (assigned by `apply`, increasing).
    pub id: u64,
    /// Who lends.
    pub delegator: Subject,
    /// The role of the delegator's binding that backs it (at creation).
    pub delegator_role: Role,
    /// Who receives.
    pub delegate: Subject,
    /// What is lent.
    pub grant: Delegated,
    /// Where.
    pub scope: RoleScope,
    /// When it was made (stamped by the proposer).
    pub created_at_ms: u64,
    /// Until when: `Some` for a temporary delegation, `None` for a permanent one.
    pub expires_at_ms: Option<u64>,
    /// Why (required).
    pub justification: String,
    /// Whether it waits for (or had) a higher authority's approval.
    pub needs_approval: bool,
    /// The approval, once given.
    pub approval: Option<DelegationApproval>,
    /// For a permanent delegation: when it is due for review (approval + 90 days).
    pub review_due_at_ms: Option<u64>,
}

impl Delegation {
    /// Whether it is permanent (no expiry).
    pub fn is_permanent(&self) -> bool {
        self.expires_at_ms.is_none()
    }

    /// Approved if it needs to be, and unexpired at `now_ms` (the delegator's authority is
    /// checked separately, against the state).
    pub fn is_in_force_at(&self, now_ms: u64) -> bool {
        (!self.needs_approval || self.approval.is_some())
            && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }

    /// Whether it is due for review at `now_ms`.
    pub fn review_due_at(&self, now_ms: u64) -> bool {
        self.review_due_at_ms.is_some_and(|due| now_ms >= due)
    }

    /// `pending_approval`, `active`, or `expired` at `now_ms`.
    pub fn status_at(&self, now_ms: u64) -> &'static str {
        if self.expires_at_ms.is_some_and(|e| now_ms >= e) {
            "expired"
        } else if self.needs_approval && self.approval.is_none() {
            "pending_approval"
        } else {
            "active"
        }
    }

    /// Whether, if in force, it grants `permission` on `target`.
    fn covers(&self, permission: Permission, target: &RoleScope) -> bool {
        match self.grant {
            Delegated::Permission(p) => p == permission && self.scope.covers(target),
            Delegated::Role(r) => role_grants(r, &self.scope, permission, target),
        }
    }
}

/// The delegations of the cluster, indexed by delegate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationState {
    pub(crate) by_delegate: BTreeMap<Subject, BTreeMap<u64, Delegation>>,
    pub(crate) next_id: u64,
    pub(crate) count: usize,
}

impl DelegationState {
    /// Delegations a subject received, in id order.
    pub fn received_by(&self, subject: &Subject) -> impl Iterator<Item = &Delegation> {
        self.by_delegate
            .get(subject)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every delegation, by delegate then id.
    pub fn all(&self) -> impl Iterator<Item = &Delegation> {
        self.by_delegate.values().flat_map(|m| m.values())
    }

    /// A delegation by id.
    pub fn get(&self, id: u64) -> Option<&Delegation> {
        self.all().find(|d| d.id == id)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Delegation> {
        self.by_delegate
            .values_mut()
            .flat_map(|m| m.values_mut())
            .find(|d| d.id == id)
    }

    fn insert(&mut self, d: Delegation) {
        self.by_delegate
            .entry(d.delegate.clone())
            .or_default()
            .insert(d.id, d);
        self.count += 1;
    }

    fn remove_where(&mut self, mut gone: impl FnMut(&Delegation) -> bool) -> usize {
        let mut removed = 0;
        for held in self.by_delegate.values_mut() {
            let before = held.len();
            held.retain(|_, d| !gone(d));
            removed += before - held.len();
        }
        self.by_delegate.retain(|_, held| !held.is_empty());
        self.count -= removed;
        removed
    }
}

/// The role binding of `subject` that lets it lend `grant` at `scope` at `now_ms` (`None`
/// ignores expiry): an active binding whose scope covers `scope` and whose role is the lent
/// role or above it, or carries the lent permission. Returns the backing role, preferring one
/// that may assign what is lent.
pub fn backing_role(
    state: &State,
    subject: &Subject,
    grant: Delegated,
    scope: &RoleScope,
    now_ms: Option<u64>,
) -> Option<(Role, bool)> {
    let mut best: Option<(Role, bool)> = None;
    for b in state.access().bindings_of(subject) {
        if now_ms.is_some_and(|now| !b.is_active_at(now)) || !b.scope.covers(scope) {
            continue;
        }
        let (holds, may_assign) = match grant {
            Delegated::Role(r) => (b.role == r || b.role.may_assign(r), b.role.may_assign(r)),
            Delegated::Permission(p) => (
                role_grants(b.role, &b.scope, p, scope),
                Role::ALL
                    .iter()
                    .any(|r| b.role.may_assign(*r) && role_grants(*r, scope, p, scope)),
            ),
        };
        if holds && best.is_none_or(|(_, m)| !m && may_assign) {
            best = Some((b.role, may_assign));
        }
    }
    best
}

/// The delegation in force that lets `subject` use `permission` on `target` at `now_ms`, if
/// any: unexpired, approved if it needs to be, backed by a role binding its delegator still
/// holds, and no restriction on the delegator for it. (The delegate's own restrictions and
/// tenant are checked by `authorize` before this.)
pub fn honoured<'a>(
    state: &'a State,
    subject: &Subject,
    permission: Permission,
    target: &RoleScope,
    now_ms: u64,
) -> Option<&'a Delegation> {
    state.delegations().received_by(subject).find(|d| {
        d.is_in_force_at(now_ms)
            && d.covers(permission, target)
            && backing_role(state, &d.delegator, d.grant, &d.scope, Some(now_ms)).is_some()
            && !state
                .access()
                .restrictions_of(&d.delegator)
                .any(|r| r.scope.covers(target) && r.permission.is_none_or(|p| p == permission))
    })
}

/// Drops the delegations a subject made that none of its role bindings backs any more
/// (after a role of it was revoked): revoking the delegator's role ends them for good, so a
/// later grant of the same role does not revive them.
pub(crate) fn end_unbacked(state: &mut State, delegator: &Subject) {
    let unbacked: Vec<u64> = state
        .delegations
        .all()
        .filter(|d| &d.delegator == delegator)
        .filter(|d| backing_role(state, &d.delegator, d.grant, &d.scope, None).is_none())
        .map(|d| d.id)
        .collect();
    if !unbacked.is_empty() {
        state.delegations.remove_where(|d| unbacked.contains(&d.id));
    }
}

/// Drops every delegation inside a deleted tenant, or made or received by its principals.
pub(crate) fn forget_tenant(state: &mut State, tenant: &TenantId) {
    state.delegations.remove_where(|d| {
        d.scope.tenant() == Some(tenant)
            || d.delegator.tenant.as_ref() == Some(tenant)
            || d.delegate.tenant.as_ref() == Some(tenant)
    });
}

/// Whether `cmd` is one of the delegation commands [`admin_command`] decides.
pub fn is_delegation_command(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Delegate { .. }
            | Command::ApproveDelegation { .. }
            | Command::RevokeDelegation { .. }
    )
}

fn check_text(text: &str) -> Result<(), ApplyError> {
    crate::command::check_justification_text(text)?;
    if text.trim().is_empty() {
        return Err(ApplyError::Invalid(
            "a delegation needs a justification".into(),
        ));
    }
    Ok(())
}

/// Applies a delegation command made with an admin token acting as `actor` (`None`: a root
/// token) at `at_ms`, filling in the audit event's tenant. Called by `command::as_admin`
/// once the token is known to be valid; the decision is audited by the caller.
pub(crate) fn admin_command(
    state: &mut State,
    actor: Option<&Subject>,
    at_ms: u64,
    cmd: &Command,
    event: &mut AuditEvent,
) -> Result<CommandOutput, ApplyError> {
    match cmd {
        Command::Delegate {
            delegate,
            grant,
            scope,
            expires_at_ms,
            justification,
        } => {
            event.tenant = scope.tenant().cloned();
            let Some(delegator) = actor else {
                return Err(ApplyError::Invalid(
                    "a root token holds no role to delegate; delegate as a principal".into(),
                ));
            };
            check_text(justification)?;
            if let Some(e) = expires_at_ms
                && *e <= at_ms
            {
                return Err(ApplyError::Invalid(format!(
                    "expires_at_ms {e} is not after the delegation's time {at_ms}"
                )));
            }
            match grant {
                Delegated::Permission(p) if scope.level() != p.level() => {
                    return Err(ApplyError::Invalid(format!(
                        "{p} applies at the {:?} level; delegate it at a scope of that level, not {scope}",
                        p.level()
                    )));
                }
                Delegated::Role(Role::EnterpriseAdmin) => {
                    return Err(ApplyError::Invalid(
                        "enterprise_admin is never delegated (no authority stands above it to approve); assign it instead".into(),
                    ));
                }
                Delegated::Role(r) if !r.allowed_levels().contains(&scope.level()) => {
                    return Err(ApplyError::Invalid(format!(
                        "{r} cannot be held at {scope}"
                    )));
                }
                _ => {}
            }
            if delegate == delegator {
                return Err(ApplyError::Invalid(
                    "a principal cannot delegate to itself".into(),
                ));
            }
            if !state.subject_exists(delegate) {
                return Err(ApplyError::NotFound(format!("principal {delegate}")));
            }
            if delegator.tenant.is_some()
                && delegate.tenant.is_some()
                && delegate.tenant != delegator.tenant
            {
                return Err(ApplyError::Invalid(format!(
                    "{delegator} may delegate only to a principal of its own tenant or a global one, not {delegate}"
                )));
            }
            if !delegate.may_hold(scope) {
                return Err(ApplyError::Invalid(format!(
                    "{delegate} belongs to another tenant than {scope}"
                )));
            }
            let Some((role, may_assign)) =
                backing_role(state, delegator, *grant, scope, Some(at_ms))
            else {
                return Err(ApplyError::Forbidden(format!(
                    "{delegator} holds no role binding covering {scope} that carries {grant}; one can delegate only what one holds"
                )));
            };
            if role == Role::StandardUser {
                return Err(ApplyError::Forbidden(format!(
                    "{delegator} holds {grant} only as a standard_user, which delegates nothing"
                )));
            }
            if state.access().restrictions_of(delegator).any(|r| {
                r.scope.covers(scope)
                    && match grant {
                        Delegated::Permission(p) => r.permission.is_none_or(|rp| rp == *p),
                        Delegated::Role(_) => r.permission.is_none(),
                    }
            }) {
                return Err(ApplyError::Forbidden(format!(
                    "a restriction on {delegator} at {scope} denies what it would delegate"
                )));
            }
            let held = state.delegations.received_by(delegate).count();
            if held >= MAX_DELEGATIONS_PER_SUBJECT {
                return Err(ApplyError::LimitReached(format!(
                    "{delegate} already receives {MAX_DELEGATIONS_PER_SUBJECT} delegations"
                )));
            }
            if state.delegations.len() >= MAX_DELEGATIONS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already holds {MAX_DELEGATIONS} delegations"
                )));
            }
            state.delegations.next_id += 1;
            let id = state.delegations.next_id;
            state.delegations.insert(Delegation {
                id,
                delegator: delegator.clone(),
                delegator_role: role,
                delegate: delegate.clone(),
                grant: *grant,
                scope: scope.clone(),
                created_at_ms: at_ms,
                expires_at_ms: *expires_at_ms,
                justification: justification.clone(),
                needs_approval: expires_at_ms.is_none() || !may_assign,
                approval: None,
                review_due_at_ms: None,
            });
            event.resource = Some(format!("delegation:{id} {grant} at {scope} for {delegate}"));
            Ok(CommandOutput::Done)
        }

        Command::ApproveDelegation { delegation } => {
            let d = state
                .delegations
                .get(*delegation)
                .cloned()
                .ok_or_else(|| ApplyError::NotFound(format!("delegation #{delegation}")))?;
            event.tenant = d.scope.tenant().cloned();
            let Some(approver) = actor else {
                return Err(ApplyError::Forbidden(
                    "a root token is no higher authority; approve as a principal holding a role above the delegator's".into(),
                ));
            };
            if !d.needs_approval {
                return Err(ApplyError::Conflict(format!(
                    "delegation #{delegation} needs no approval"
                )));
            }
            if d.approval.is_some() {
                return Ok(CommandOutput::Unchanged);
            }
            if d.expires_at_ms.is_some_and(|e| at_ms >= e) {
                return Err(ApplyError::Conflict(format!(
                    "delegation #{delegation} has expired"
                )));
            }
            if approver == &d.delegator || approver == &d.delegate {
                return Err(ApplyError::Forbidden(
                    "neither the delegator nor the delegate may approve a delegation".into(),
                ));
            }
            let role = state
                .access()
                .bindings_of(approver)
                .find(|b| {
                    b.is_active_at(at_ms)
                        && b.scope.covers(&d.scope)
                        && (b.role.may_assign(d.delegator_role)
                            || (b.role == Role::EnterpriseAdmin
                                && d.delegator_role == Role::EnterpriseAdmin))
                        && match d.grant {
                            Delegated::Role(r) => b.role.may_assign(r),
                            Delegated::Permission(_) => true,
                        }
                })
                .map(|b| b.role)
                .ok_or_else(|| {
                    ApplyError::Forbidden(format!(
                        "{approver} holds no role above {} covering {}",
                        d.delegator_role, d.scope
                    ))
                })?;
            if let Some(d) = state.delegations.get_mut(*delegation) {
                d.approval = Some(DelegationApproval {
                    by: approver.to_string(),
                    role,
                    at_ms,
                });
                if d.is_permanent() {
                    d.review_due_at_ms = Some(at_ms.saturating_add(REVIEW_AFTER_MS));
                }
            }
            Ok(CommandOutput::Done)
        }

        Command::RevokeDelegation { delegation } => {
            let d = state
                .delegations
                .get(*delegation)
                .cloned()
                .ok_or_else(|| ApplyError::NotFound(format!("delegation #{delegation}")))?;
            event.tenant = d.scope.tenant().cloned();
            // The delegator or the delegate may end it; so may anyone who could assign roles
            // at its scope (and a root token).
            if let Some(who) = actor
                && who != &d.delegator
                && who != &d.delegate
            {
                let (permission, target) = crate::command::assign_permission(&d.scope);
                let decision = crate::rbac::authorize(state, who, permission, &target, at_ms);
                if !decision.allowed {
                    return Err(ApplyError::Forbidden(format!(
                        "only the delegator, the delegate, or a holder of {permission} on {target} may revoke delegation #{delegation}: {}",
                        decision.reason
                    )));
                }
            }
            state.delegations.remove_where(|x| x.id == *delegation);
            Ok(CommandOutput::Done)
        }

        _ => Err(ApplyError::Invalid(format!(
            "{} is not a delegation command",
            cmd.kind()
        ))),
    }
}
