//! Separation of duties: critical admin commands become approval requests that distinct
//! approvers holding given roles must approve within a window before `apply` executes them.
//!
//! - **Classes** ([`SodClass`]): tenant creation and deletion; enterprise configuration (admin
//!   commands that need `system.configure`, except those that only take rights away); security
//!   policy (restrictions at global scope, the audit retention, and this policy itself).
//! - **Policy** ([`SodPolicy`]): per class, how many distinct approvals, from which roles,
//!   within which window. It is replicated state, changed only by `SetSodPolicy`, which is
//!   itself a security-policy change. A fresh cluster starts with the policy **off** so the
//!   bootstrap root can set the cluster up; turning it on applies at once (it only adds
//!   checks) and needs, for every class, at least as many principals holding an approver role
//!   (globally, without expiry) as approvals the class needs. Once on, it binds every admin
//!   token — root tokens too: a root token's critical command becomes a request like anyone
//!   else's, and a root token never approves or breaks glass (it is no person). Turning it
//!   off again is a security-policy change like any other, so it takes the approvals too.
//! - **Requests** ([`ApprovalRequest`]) hold the exact command. An approval counts only from a
//!   principal other than the requester, holding one of the class's roles in an active global
//!   binding at the approval's log index, within the window (from the request's proposer
//!   stamp). When the last required approval lands, `apply` checks that the requester still
//!   holds the command's permission and executes it in the same entry. Approvals after the
//!   window are refused; a request can be rejected by the requester or any eligible approver.
//! - **Break-glass**: a principal holding `enterprise_admin` globally executes a pending
//!   request at once with a justification — even its own request: that is what makes it an
//!   override — and the audit trail records the override and the execution with
//!   [`Severity::High`].
//! - Revocations (of admin tokens, roles, signing keys) are never held: holding one would
//!   keep a compromised credential alive for the window.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, Severity};
use crate::command::{ApplyError, Command, CommandOutput, error_code, required_permission};
use crate::rbac::{Permission, Role, RoleScope, Subject, authorize};
use crate::state::State;

/// Most approvals a class may require.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;
/// Shortest approval window: one minute.
pub const MIN_WINDOW_MS: u64 = 60_000;
/// Longest approval window: 30 days.
pub const MAX_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most requests pending (unexpired) at once.
pub const MAX_PENDING_REQUESTS: usize = 1_000;
/// Most requests remembered (decided and expired ones are forgotten oldest first).
pub const MAX_REQUESTS: usize = 10_000;

const HOUR_MS: u64 = 3600 * 1000;

/// A class of critical operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SodClass {
    /// Creating or deleting a tenant (needs a business justification).
    TenantLifecycle,
    /// Enterprise configuration: admin commands that need `system.configure`.
    EnterpriseConfig,
    /// Security policy: global restrictions, audit retention, this policy (needs an impact
    /// statement).
    SecurityPolicy,
}

impl SodClass {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            SodClass::TenantLifecycle => "tenant_lifecycle",
            SodClass::EnterpriseConfig => "enterprise_config",
            SodClass::SecurityPolicy => "security_policy",
        }
    }

    /// What the request's justification must be, if one is required.
    pub fn required_text(self) -> Option<&'static str> {
        match self {
            SodClass::TenantLifecycle => Some("a business justification"),
            SodClass::SecurityPolicy => Some("an impact statement"),
            SodClass::EnterpriseConfig => None,
        }
    }
}

impl fmt::Display for SodClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one class needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SodRule {
    /// Distinct approvals required (the requester never counts).
    pub approvals: u32,
    /// Roles an approver must hold (globally).
    pub roles: BTreeSet<Role>,
    /// How long after the request approvals are accepted, in ms.
    pub window_ms: u64,
}

impl SodRule {
    fn check(&self, class: SodClass) -> Result<(), ApplyError> {
        if !(1..=MAX_REQUIRED_APPROVALS).contains(&self.approvals) {
            return Err(ApplyError::Invalid(format!(
                "{class}: approvals must be 1..={MAX_REQUIRED_APPROVALS}"
            )));
        }
        if self.roles.is_empty() {
            return Err(ApplyError::Invalid(format!(
                "{class}: name at least one approver role"
            )));
        }
        if let Some(r) = self
            .roles
            .iter()
            .find(|r| !r.allowed_levels().contains(&crate::rbac::Level::Global))
        {
            return Err(ApplyError::Invalid(format!(
                "{class}: {r} is never held globally, so it cannot approve; use enterprise_admin, security_admin or compliance_officer"
            )));
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&self.window_ms) {
            return Err(ApplyError::Invalid(format!(
                "{class}: window_ms must be {MIN_WINDOW_MS}..={MAX_WINDOW_MS}"
            )));
        }
        Ok(())
    }
}

/// The separation-of-duties policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SodPolicy {
    /// Whether critical commands are held for approval.
    pub enabled: bool,
    /// Tenant creation and deletion.
    pub tenant_lifecycle: SodRule,
    /// Enterprise configuration.
    pub enterprise_config: SodRule,
    /// Security policy.
    pub security_policy: SodRule,
}

impl Default for SodPolicy {
    /// Off, with the rules of the enterprise baseline: tenants 2 of enterprise_admin /
    /// compliance_officer in 48 h; configuration 2 of enterprise_admin / security_admin in
    /// 24 h; security policy 3 of enterprise_admin / security_admin / compliance_officer in
    /// 72 h.
    fn default() -> Self {
        Self {
            enabled: false,
            tenant_lifecycle: SodRule {
                approvals: 2,
                roles: [Role::EnterpriseAdmin, Role::ComplianceOfficer].into(),
                window_ms: 48 * HOUR_MS,
            },
            enterprise_config: SodRule {
                approvals: 2,
                roles: [Role::EnterpriseAdmin, Role::SecurityAdmin].into(),
                window_ms: 24 * HOUR_MS,
            },
            security_policy: SodRule {
                approvals: 3,
                roles: [
                    Role::EnterpriseAdmin,
                    Role::SecurityAdmin,
                    Role::ComplianceOfficer,
                ]
                .into(),
                window_ms: 72 * HOUR_MS,
            },
        }
    }
}

impl SodPolicy {
    /// The rule of a class.
    pub fn rule(&self, class: SodClass) -> &SodRule {
        match class {
            SodClass::TenantLifecycle => &self.tenant_lifecycle,
            SodClass::EnterpriseConfig => &self.enterprise_config,
            SodClass::SecurityPolicy => &self.security_policy,
        }
    }

    /// Checks every rule.
    pub fn check(&self) -> Result<(), ApplyError> {
        for class in [
            SodClass::TenantLifecycle,
            SodClass::EnterpriseConfig,
            SodClass::SecurityPolicy,
        ] {
            self.rule(class).check(class)?;
        }
        Ok(())
    }
}

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: String,
    /// The role that made the approver eligible.
    pub role: Role,
    /// When (stamped by the proposer).
    pub at_ms: u64,
    /// The log index it was decided at.
    pub log_index: u64,
}

/// A break-glass override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The enterprise admin who broke the glass.
    pub by: String,
    /// Why (required).
    pub justification: String,
    /// When (stamped by the proposer).
    pub at_ms: u64,
}

/// Where a request stands (an unexpired `Pending` one may still be approved; see
/// [`ApprovalRequest::status_at`] for `expired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for approvals.
    Pending,
    /// Executed (by the last approval or a break-glass); the command's own result.
    Executed {
        /// What the command returned.
        result: Result<CommandOutput, ApplyError>,
        /// When (the deciding approval's or break-glass's stamp).
        at_ms: u64,
    },
    /// Rejected.
    Rejected {
        /// By whom.
        by: String,
        /// When.
        at_ms: u64,
    },
}

/// A critical command waiting for approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Cluster-unique id (assigned by `apply`, increasing).
    pub id: u64,
    /// Its class.
    pub class: SodClass,
    /// The exact command to execute.
    pub command: Command,
    /// Who asked (`root`, a global principal, or `tenant/principal`).
    pub requested_by: String,
    /// The requester's principal (`None` for a root token).
    pub requester: Option<Subject>,
    /// When (stamped by the proposer).
    pub requested_at_ms: u64,
    /// Approvals are refused from then on.
    pub expires_at_ms: u64,
    /// The business justification or impact statement.
    pub justification: Option<String>,
    /// Distinct approvals needed (from the policy at request time).
    pub required: u32,
    /// Roles an approver must hold (from the policy at request time).
    pub roles: BTreeSet<Role>,
    /// Approvals so far, in order.
    pub approvals: Vec<Approval>,
    /// Where it stands.
    pub status: RequestStatus,
    /// The break-glass override that executed it, if any.
    pub break_glass: Option<BreakGlass>,
}

impl ApprovalRequest {
    /// `pending`, `expired`, `executed`, `failed` (executed, but the command was refused) or
    /// `rejected`, at `now_ms`.
    pub fn status_at(&self, now_ms: u64) -> &'static str {
        match &self.status {
            RequestStatus::Pending if now_ms >= self.expires_at_ms => "expired",
            RequestStatus::Pending => "pending",
            RequestStatus::Executed { result: Ok(_), .. } => "executed",
            RequestStatus::Executed { result: Err(_), .. } => "failed",
            RequestStatus::Rejected { .. } => "rejected",
        }
    }

    fn is_open_at(&self, now_ms: u64) -> bool {
        self.status == RequestStatus::Pending && now_ms < self.expires_at_ms
    }
}

/// The policy and the requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub(crate) policy: SodPolicy,
    pub(crate) requests: BTreeMap<u64, ApprovalRequest>,
    pub(crate) next_id: u64,
}

impl ApprovalState {
    /// The policy.
    pub fn policy(&self) -> &SodPolicy {
        &self.policy
    }

    /// A request by id.
    pub fn request(&self, id: u64) -> Option<&ApprovalRequest> {
        self.requests.get(&id)
    }

    /// Every remembered request, in id order.
    pub fn requests(&self) -> impl Iterator<Item = &ApprovalRequest> {
        self.requests.values()
    }

    /// Room for one more request at `now_ms`: forgets the oldest decided or expired requests
    /// beyond [`MAX_REQUESTS`]; refuses when [`MAX_PENDING_REQUESTS`] are open.
    fn make_room(&mut self, now_ms: u64) -> Result<(), ApplyError> {
        let open = self
            .requests
            .values()
            .filter(|r| r.is_open_at(now_ms))
            .count();
        if open >= MAX_PENDING_REQUESTS {
            return Err(ApplyError::LimitReached(format!(
                "{MAX_PENDING_REQUESTS} approval requests are already pending"
            )));
        }
        while self.requests.len() >= MAX_REQUESTS {
            let Some(oldest) = self
                .requests
                .values()
                .find(|r| !r.is_open_at(now_ms))
                .map(|r| r.id)
            else {
                break;
            };
            self.requests.remove(&oldest);
        }
        Ok(())
    }
}

/// The class of a critical command, or `None` for one that is never held.
pub fn classify(state: &State, cmd: &Command) -> Option<SodClass> {
    match cmd {
        Command::CreateTenant { .. }
        | Command::CreateTenantIn { .. }
        | Command::DeleteTenant { .. }
        | Command::ImportTenant { .. } => Some(SodClass::TenantLifecycle),
        Command::SetSodPolicy { .. } | Command::SetAuditRetention { .. } => {
            Some(SodClass::SecurityPolicy)
        }
        Command::AddRestriction { scope, .. } => {
            (*scope == RoleScope::Global).then_some(SodClass::SecurityPolicy)
        }
        Command::RemoveRestriction { restriction } => state
            .access()
            .restriction(*restriction)
            .filter(|r| r.scope == RoleScope::Global)
            .map(|_| SodClass::SecurityPolicy),
        // Taking rights away is never held.
        Command::RevokeAdminToken { .. }
        | Command::RevokeRole { .. }
        | Command::RetireJwtKey { .. } => None,
        _ if is_approval_command(cmd) || crate::delegation::is_delegation_command(cmd) => None,
        _ => match required_permission(state, cmd) {
            Ok((Permission::SystemConfigure, _)) => Some(SodClass::EnterpriseConfig),
            _ => None,
        },
    }
}

/// Whether `cmd` approves, rejects or breaks the glass on a request.
pub fn is_approval_command(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::ApproveRequest { .. } | Command::RejectRequest { .. } | Command::BreakGlass { .. }
    )
}

/// Whether `cmd` carries its own authorisation rules ([`decide`] applies it).
pub(crate) fn decides_itself(cmd: &Command) -> bool {
    is_approval_command(cmd) || crate::delegation::is_delegation_command(cmd)
}

/// Checks `SetSodPolicy`'s policy against the state: valid rules, and, to turn it on, enough
/// eligible approvers for every class.
pub(crate) fn check_policy(state: &State, policy: &SodPolicy) -> Result<(), ApplyError> {
    policy.check()?;
    if !policy.enabled {
        return Ok(());
    }
    for class in [
        SodClass::TenantLifecycle,
        SodClass::EnterpriseConfig,
        SodClass::SecurityPolicy,
    ] {
        let rule = policy.rule(class);
        let eligible: BTreeSet<&Subject> = state
            .access()
            .all_bindings()
            .filter(|b| {
                b.scope == RoleScope::Global
                    && b.expires_at_ms.is_none()
                    && rule.roles.contains(&b.role)
            })
            .map(|b| &b.subject)
            .collect();
        if eligible.len() < rule.approvals as usize {
            return Err(ApplyError::Conflict(format!(
                "{class} needs {} approvals but only {} principal(s) hold one of its roles globally without expiry; assign the roles first",
                rule.approvals,
                eligible.len()
            )));
        }
    }
    Ok(())
}

/// If the policy holds `cmd` (made by `requested_by` at `at_ms`, already authorised), turns it
/// into an approval request and returns `Some` with the result (`Pending`); `None` lets it
/// run. Fills in the audit event's outcome.
#[allow(clippy::too_many_arguments, reason = "the admin command's context")]
pub(crate) fn hold(
    state: &mut State,
    requester: Option<&Subject>,
    requested_by: &str,
    at_ms: u64,
    cmd: &Command,
    justification: Option<&String>,
    event: &mut AuditEvent,
) -> Option<Result<CommandOutput, ApplyError>> {
    if !state.approvals.policy.enabled {
        return None;
    }
    let class = classify(state, cmd)?;
    let result = (|| {
        if let Command::SetSodPolicy { policy } = cmd {
            policy.check()?;
        }
        let rule = state.approvals.policy.rule(class).clone();
        if let Some(what) = class.required_text()
            && justification.is_none_or(|j| j.trim().is_empty())
        {
            return Err(ApplyError::Invalid(format!(
                "a {class} change needs {what} (the justification) before it can be requested"
            )));
        }
        state.approvals.make_room(at_ms)?;
        state.approvals.next_id += 1;
        let id = state.approvals.next_id;
        state.approvals.requests.insert(
            id,
            ApprovalRequest {
                id,
                class,
                command: cmd.clone(),
                requested_by: requested_by.to_owned(),
                requester: requester.cloned(),
                requested_at_ms: at_ms,
                expires_at_ms: at_ms.saturating_add(rule.window_ms),
                justification: justification.cloned(),
                required: rule.approvals,
                roles: rule.roles,
                approvals: Vec::new(),
                status: RequestStatus::Pending,
                break_glass: None,
            },
        );
        Ok(CommandOutput::Pending { approval: id })
    })();
    match &result {
        Ok(_) => event.outcome = "pending_approval".into(),
        Err(e) => {
            event.outcome = format!("error:{}", error_code(e));
            event.severity = Severity::Warning;
        }
    }
    if let Ok(CommandOutput::Pending { approval }) = &result {
        let shown = event.resource.take().unwrap_or_default();
        event.resource = Some(format!("{shown} (approval:{approval})"));
    }
    Some(result)
}

fn open_request(state: &State, id: u64, at_ms: u64) -> Result<ApprovalRequest, ApplyError> {
    let req = state
        .approvals
        .requests
        .get(&id)
        .cloned()
        .ok_or_else(|| ApplyError::NotFound(format!("approval request #{id}")))?;
    match req.status {
        RequestStatus::Pending if at_ms >= req.expires_at_ms => Err(ApplyError::Conflict(format!(
            "approval request #{id} expired at {} ms; approvals after its window are refused: make the request again",
            req.expires_at_ms
        ))),
        RequestStatus::Pending => Ok(req),
        _ => Err(ApplyError::Conflict(format!(
            "approval request #{id} is already {}",
            req.status_at(at_ms)
        ))),
    }
}

/// A global, active binding of `subject` to one of `roles`, unless a restriction denies the
/// subject everything globally.
fn eligible_role(
    state: &State,
    subject: &Subject,
    roles: &BTreeSet<Role>,
    at_ms: u64,
) -> Option<Role> {
    if state
        .access()
        .restrictions_of(subject)
        .any(|r| r.scope == RoleScope::Global && r.permission.is_none())
    {
        return None;
    }
    state
        .access()
        .bindings_of(subject)
        .find(|b| b.scope == RoleScope::Global && b.is_active_at(at_ms) && roles.contains(&b.role))
        .map(|b| b.role)
}

/// Executes a request's command as its requester (or the break-glass admin), records the
/// result, and returns the execution's audit event.
fn execute(
    state: &mut State,
    log_index: u64,
    req: &ApprovalRequest,
    at_ms: u64,
    node: u64,
    glass: Option<BreakGlass>,
) -> AuditEvent {
    let actor = glass
        .as_ref()
        .map_or_else(|| req.requested_by.clone(), |g| g.by.clone());
    let result = match (&req.requester, &glass) {
        // The requester must still hold the command's permission when it runs.
        (Some(subject), None) => match required_permission(state, &req.command) {
            Ok((permission, target)) => {
                let d = authorize(state, subject, permission, &target, at_ms);
                if d.allowed {
                    crate::command::apply_as(state, log_index, &actor, &req.command)
                } else {
                    Err(ApplyError::Forbidden(format!(
                        "the requester no longer holds {permission} on {target}: {}",
                        d.reason
                    )))
                }
            }
            Err(e) => Err(e),
        },
        _ => crate::command::apply_as(state, log_index, &actor, &req.command),
    };
    let approvers: Vec<&str> = req.approvals.iter().map(|a| a.by.as_str()).collect();
    let (tenant, workspace, resource) = crate::command::target_of(&req.command);
    let why = match &glass {
        Some(g) => format!("break-glass by {}: {}", g.by, g.justification),
        None => format!(
            "approval request #{} approved by {}{}",
            req.id,
            approvers.join(", "),
            req.justification
                .as_ref()
                .map_or_else(String::new, |j| format!(": {j}"))
        ),
    };
    let event = AuditEvent {
        at_ms,
        node,
        principal: actor,
        tenant,
        workspace,
        kind: "admin".into(),
        action: req.command.kind().into(),
        resource,
        outcome: match &result {
            Ok(CommandOutput::Unchanged) => "unchanged".into(),
            Ok(_) => "ok".into(),
            Err(e) => format!("error:{}", error_code(e)),
        },
        latency_ms: None,
        notion_requests: None,
        justification: Some(
            why.chars()
                .take(crate::audit::MAX_AUDIT_TEXT_CHARS)
                .collect(),
        ),
        severity: if glass.is_some() {
            Severity::High
        } else if result.is_err() {
            Severity::Warning
        } else {
            Severity::Info
        },
    };
    if let Some(r) = state.approvals.requests.get_mut(&req.id) {
        r.status = RequestStatus::Executed { result, at_ms };
        r.break_glass = glass;
    }
    event
}

/// Applies a command that carries its own authorisation (delegations, approvals, rejections,
/// break-glass), made with an admin token acting as `actor` (`None`: root) at `at_ms`, and
/// appends its decision (and, when it executes a request, the execution) to the audit trail.
#[allow(clippy::too_many_arguments, reason = "the admin command's context")]
pub(crate) fn decide(
    state: &mut State,
    log_index: u64,
    actor: Option<&Subject>,
    actor_name: &str,
    at_ms: u64,
    cmd: &Command,
    justification: Option<&String>,
    mut event: AuditEvent,
) -> Result<CommandOutput, ApplyError> {
    let node = event.node;
    let mut executed = None;
    let result = if crate::delegation::is_delegation_command(cmd) {
        crate::delegation::admin_command(state, actor, at_ms, cmd, &mut event)
    } else {
        approval_command(
            state,
            log_index,
            actor,
            actor_name,
            at_ms,
            cmd,
            justification,
            node,
            &mut event,
            &mut executed,
        )
    };
    match &result {
        Ok(CommandOutput::Unchanged) => event.outcome = "unchanged".into(),
        Ok(_) => event.outcome = "ok".into(),
        Err(e @ (ApplyError::Forbidden(_) | ApplyError::Unauthorized(_))) => {
            event.outcome = "denied".into();
            event.severity = Severity::Warning;
            event.justification = Some(
                e.to_string()
                    .chars()
                    .take(crate::audit::MAX_AUDIT_TEXT_CHARS)
                    .collect(),
            );
        }
        Err(e) => {
            event.outcome = format!("error:{}", error_code(e));
            event.severity = Severity::Warning;
        }
    }
    // The decision comes first in the chain; an execution it caused follows it.
    state.audit.append(log_index, event);
    if let Some(e) = executed {
        state.audit.append(log_index, e);
    }
    result
}

#[allow(clippy::too_many_arguments, reason = "the admin command's context")]
fn approval_command(
    state: &mut State,
    log_index: u64,
    actor: Option<&Subject>,
    actor_name: &str,
    at_ms: u64,
    cmd: &Command,
    justification: Option<&String>,
    node: u64,
    event: &mut AuditEvent,
    executed: &mut Option<AuditEvent>,
) -> Result<CommandOutput, ApplyError> {
    match cmd {
        Command::ApproveRequest { request } => {
            let req = open_request(state, *request, at_ms)?;
            let Some(approver) = actor else {
                return Err(ApplyError::Forbidden(
                    "a root token never approves; approve as a principal holding an approver role"
                        .into(),
                ));
            };
            if actor_name == req.requested_by {
                return Err(ApplyError::Forbidden(format!(
                    "{approver} made request #{request}; a requester never approves its own request"
                )));
            }
            if req.approvals.iter().any(|a| a.by == actor_name) {
                return Err(ApplyError::Conflict(format!(
                    "{approver} already approved request #{request}; approvals must come from distinct principals"
                )));
            }
            let roles: Vec<&str> = req.roles.iter().map(|r| r.name()).collect();
            let role = eligible_role(state, approver, &req.roles, at_ms).ok_or_else(|| {
                ApplyError::Forbidden(format!(
                    "{approver} holds none of {} globally, so it cannot approve request #{request}",
                    roles.join(", ")
                ))
            })?;
            let mut req = req;
            req.approvals.push(Approval {
                by: actor_name.to_owned(),
                role,
                at_ms,
                log_index,
            });
            state.approvals.requests.insert(req.id, req.clone());
            if req.approvals.len() >= req.required as usize {
                *executed = Some(execute(state, log_index, &req, at_ms, node, None));
            }
            Ok(CommandOutput::Done)
        }
        Command::RejectRequest { request } => {
            let req = open_request(state, *request, at_ms)?;
            let may = actor_name == req.requested_by
                || actor.is_some_and(|a| eligible_role(state, a, &req.roles, at_ms).is_some());
            if !may {
                return Err(ApplyError::Forbidden(format!(
                    "only the requester or an eligible approver may reject request #{request}"
                )));
            }
            if let Some(r) = state.approvals.requests.get_mut(request) {
                r.status = RequestStatus::Rejected {
                    by: actor_name.to_owned(),
                    at_ms,
                };
            }
            Ok(CommandOutput::Done)
        }
        Command::BreakGlass { request } => {
            let req = open_request(state, *request, at_ms)?;
            let Some(admin) = actor else {
                return Err(ApplyError::Forbidden(
                    "a root token cannot break the glass; an enterprise admin must, in their own name"
                        .into(),
                ));
            };
            let ea: BTreeSet<Role> = [Role::EnterpriseAdmin].into();
            if eligible_role(state, admin, &ea, at_ms).is_none() {
                return Err(ApplyError::Forbidden(format!(
                    "{admin} does not hold enterprise_admin globally; only an enterprise admin may break the glass"
                )));
            }
            let Some(why) = justification.filter(|j| !j.trim().is_empty()) else {
                return Err(ApplyError::Invalid(
                    "break-glass needs a justification".into(),
                ));
            };
            event.severity = Severity::High;
            *executed = Some(execute(
                state,
                log_index,
                &req,
                at_ms,
                node,
                Some(BreakGlass {
                    by: actor_name.to_owned(),
                    justification: why.clone(),
                    at_ms,
                }),
            ));
            Ok(CommandOutput::Done)
        }
        _ => Err(ApplyError::Invalid(format!(
            "{} is not an approval command",
            cmd.kind()
        ))),
    }
}
