//! Delegation and separation of duties, decided in `apply`: temporary delegations in force at
//! once within the delegator's authority, ended by expiry, by revocation and by revoking the
//! delegator's role; permanent ones pending until a higher authority approves, then flagged
//! for review after 90 days; critical commands held as approval requests — self-approval
//! refused, wrong or too few approvers, window expiry, break-glass audited high, the policy
//! itself changed only through its own approvals.

#![allow(clippy::unwrap_used, reason = "tests")]

use quire_raft::approvals::{RequestStatus, SodClass, SodPolicy};
use quire_raft::audit::{CLUSTER_CHAIN, Severity, verify_chain};
use quire_raft::command::{ApplyError, Command, CommandOutput, apply};
use quire_raft::delegation::{Delegated, REVIEW_AFTER_MS};
use quire_raft::rbac::{Permission, Role, RoleScope, Subject, authorize};
use quire_raft::seal::{MasterKey, hash_api_token, integration_aad};
use quire_raft::{Budget, IntegrationId, PrincipalId, State, TenantId, TokenId, WorkspaceId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const NOW: u64 = 1_000_000_000;
const HOUR: u64 = 3600 * 1000;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
fn subj(s: &str) -> Subject {
    s.parse().unwrap()
}
fn docs() -> RoleScope {
    RoleScope::Workspace {
        tenant: t("acme"),
        workspace: WorkspaceId::new("docs").unwrap(),
    }
}
fn eng() -> RoleScope {
    RoleScope::Workspace {
        tenant: t("acme"),
        workspace: WorkspaceId::new("eng").unwrap(),
    }
}
fn acme() -> RoleScope {
    RoleScope::Tenant { tenant: t("acme") }
}

fn root_apply(s: &mut State, cmd: Command) -> CommandOutput {
    apply(s, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()))
}

/// `cmd` made with the admin token named `who` (each principal's token is named after it) at
/// `at_ms`, with a justification.
fn by_at(who: &str, at_ms: u64, cmd: Command, why: Option<&str>) -> Command {
    Command::AsAdmin {
        admin_token: TokenId::new(who.replace('/', "-")).unwrap(),
        at_ms,
        command: Box::new(cmd),
        node: 1,
        justification: why.map(str::to_owned),
    }
}

fn run(s: &mut State, who: &str, at_ms: u64, cmd: Command) -> Result<CommandOutput, ApplyError> {
    apply(s, &by_at(who, at_ms, cmd, Some("because")))
}

fn may(s: &State, who: &str, permission: Permission, target: &RoleScope, at_ms: u64) -> bool {
    authorize(s, &subj(who), permission, target, at_ms).allowed
}

/// Tenant `acme` (workspaces `docs`, `eng`) with `alice` its tenant admin, `mgr` workspace
/// manager of docs, `bob` and `carol` members of docs; global principals `ea1`, `ea2`
/// (enterprise admins), `sec1` (security admin), `co1` (compliance officer), `nobody` (no
/// role). Every principal has an admin token named after it; `root` is a root token.
fn base() -> State {
    let mut s = State::new();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let key = MasterKey::generate(&mut rng);
    root_apply(
        &mut s,
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
    );
    root_apply(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: IntegrationId::new("notion").unwrap(),
            display_name: "n".into(),
            sealed_token: key
                .seal(
                    b"secret_token_value",
                    &integration_aad("acme", "notion"),
                    &mut rng,
                )
                .unwrap(),
            budget: Budget {
                requests_per_second: 3,
                burst: 5,
            },
        },
    );
    for ws in ["docs", "eng"] {
        root_apply(
            &mut s,
            Command::CreateWorkspace {
                tenant: t("acme"),
                workspace: WorkspaceId::new(ws).unwrap(),
                display_name: ws.into(),
                integration: IntegrationId::new("notion").unwrap(),
            },
        );
    }
    for p in ["alice", "mgr", "bob", "carol"] {
        root_apply(
            &mut s,
            Command::CreatePrincipal {
                tenant: t("acme"),
                principal: PrincipalId::new(p).unwrap(),
                display_name: p.into(),
            },
        );
    }
    for p in ["bob", "carol"] {
        root_apply(
            &mut s,
            Command::GrantWorkspace {
                tenant: t("acme"),
                principal: PrincipalId::new(p).unwrap(),
                workspace: WorkspaceId::new("docs").unwrap(),
            },
        );
    }
    for g in ["ea1", "ea2", "sec1", "co1", "nobody"] {
        root_apply(
            &mut s,
            Command::CreateGlobalPrincipal {
                principal: PrincipalId::new(g).unwrap(),
                display_name: g.into(),
            },
        );
    }
    for (who, role, scope) in [
        ("acme/alice", Role::TenantAdmin, acme()),
        ("acme/mgr", Role::WorkspaceManager, docs()),
        ("ea1", Role::EnterpriseAdmin, RoleScope::Global),
        ("ea2", Role::EnterpriseAdmin, RoleScope::Global),
        ("sec1", Role::SecurityAdmin, RoleScope::Global),
        ("co1", Role::ComplianceOfficer, RoleScope::Global),
    ] {
        root_apply(
            &mut s,
            Command::AssignRole {
                subject: subj(who),
                role,
                scope,
                granted_at_ms: 1,
                expires_at_ms: None,
                justification: None,
            },
        );
    }
    for who in [
        None,
        Some("acme/alice"),
        Some("acme/mgr"),
        Some("acme/bob"),
        Some("acme/carol"),
        Some("ea1"),
        Some("ea2"),
        Some("sec1"),
        Some("co1"),
        Some("nobody"),
    ] {
        let id = who.map_or("root".to_owned(), |w| w.replace('/', "-"));
        root_apply(
            &mut s,
            Command::IssueAdminToken {
                token_id: TokenId::new(&id).unwrap(),
                secret_hash: hash_api_token(&format!("qa_{id}")),
                display_name: id.clone(),
                issued_at_ms: 1,
                expires_at_ms: None,
                subject: who.map(subj),
            },
        );
    }
    s
}

fn delegate(to: &str, grant: Delegated, scope: RoleScope, expires_at_ms: Option<u64>) -> Command {
    Command::Delegate {
        delegate: subj(to),
        grant,
        scope,
        expires_at_ms,
        justification: "covering while on leave".into(),
    }
}

fn newest_delegation(s: &State) -> u64 {
    s.delegations().all().map(|d| d.id).max().unwrap()
}

// ---- delegation ----

#[test]
fn a_temporary_delegation_within_authority_is_in_force_at_once_until_it_expires() {
    let mut s = base();
    // carol may not manage docs' members; mgr lends her notion.write on eng? mgr holds nothing
    // on eng, so it cannot.
    assert!(!may(&s, "acme/carol", Permission::NotionRead, &eng(), NOW));
    let e = run(
        &mut s,
        "acme/mgr",
        NOW,
        delegate(
            "acme/carol",
            Delegated::Permission(Permission::NotionRead),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    // alice (tenant admin) lends notion.read on eng to carol for an hour: standard_user's,
    // which a tenant admin may assign, so no approval is needed.
    run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "acme/carol",
            Delegated::Permission(Permission::NotionRead),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap();
    let d = s.delegations().get(newest_delegation(&s)).unwrap().clone();
    assert!(!d.needs_approval);
    assert_eq!(d.delegator_role, Role::TenantAdmin);
    assert!(may(
        &s,
        "acme/carol",
        Permission::NotionRead,
        &eng(),
        NOW + 1
    ));
    let reason = authorize(&s, &subj("acme/carol"), Permission::NotionRead, &eng(), NOW).reason;
    assert!(reason.contains("delegated by acme/alice"), "{reason}");
    // Only what was lent: not notion.write, not another workspace's.
    assert!(!may(&s, "acme/carol", Permission::NotionWrite, &eng(), NOW));
    // Expiry ends it, with no command.
    assert!(!may(
        &s,
        "acme/carol",
        Permission::NotionRead,
        &eng(),
        NOW + HOUR
    ));
    assert_eq!(d.status_at(NOW + HOUR), "expired");
}

#[test]
fn revoking_the_delegators_role_ends_its_delegations_at_once_and_for_good() {
    let mut s = base();
    run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "acme/bob",
            Delegated::Role(Role::WorkspaceManager),
            eng(),
            Some(NOW + 10 * HOUR),
        ),
    )
    .unwrap();
    assert!(may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &eng(),
        NOW
    ));
    // A restriction on the delegator bounds the delegation too, while it lasts.
    run(
        &mut s,
        "ea1",
        NOW,
        Command::AddRestriction {
            subject: subj("acme/alice"),
            permission: Some(Permission::WorkspaceMembersManage),
            scope: acme(),
            set_at_ms: NOW,
            justification: "audit in progress".into(),
        },
    )
    .unwrap();
    assert!(!may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &eng(),
        NOW
    ));
    let restriction = s.access().all_restrictions().next().unwrap().id;
    run(
        &mut s,
        "ea1",
        NOW,
        Command::RemoveRestriction { restriction },
    )
    .unwrap();
    assert!(may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &eng(),
        NOW
    ));
    // Revoke alice's tenant_admin binding: bob's delegated rights end with it.
    let binding = s
        .access()
        .bindings_of(&subj("acme/alice"))
        .next()
        .unwrap()
        .id;
    run(&mut s, "ea1", NOW, Command::RevokeRole { binding }).unwrap();
    assert!(!may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &eng(),
        NOW
    ));
    assert!(s.delegations().is_empty(), "the delegation is gone");
    // Giving alice her role back does not revive it.
    run(
        &mut s,
        "ea1",
        NOW,
        Command::AssignRole {
            subject: subj("acme/alice"),
            role: Role::TenantAdmin,
            scope: acme(),
            granted_at_ms: NOW,
            expires_at_ms: None,
            justification: None,
        },
    )
    .unwrap();
    assert!(!may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &eng(),
        NOW
    ));
}

#[test]
fn a_delegators_expired_role_stops_the_delegation_at_decision_time() {
    let mut s = base();
    run(
        &mut s,
        "ea1",
        NOW,
        Command::AssignRole {
            subject: subj("acme/mgr"),
            role: Role::WorkspaceManager,
            scope: eng(),
            granted_at_ms: NOW,
            expires_at_ms: Some(NOW + HOUR),
            justification: None,
        },
    )
    .unwrap();
    // mgr lends standard_user on eng (which it may assign) for two hours.
    run(
        &mut s,
        "acme/mgr",
        NOW,
        delegate(
            "acme/carol",
            Delegated::Role(Role::StandardUser),
            eng(),
            Some(NOW + 2 * HOUR),
        ),
    )
    .unwrap();
    assert!(may(
        &s,
        "acme/carol",
        Permission::NotionWrite,
        &eng(),
        NOW + HOUR - 1
    ));
    assert!(!may(
        &s,
        "acme/carol",
        Permission::NotionWrite,
        &eng(),
        NOW + HOUR
    ));
}

#[test]
fn a_delegation_is_revocable_at_once_by_its_delegator_or_an_assigner_not_by_others() {
    let mut s = base();
    run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "acme/carol",
            Delegated::Permission(Permission::NotionWrite),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap();
    let id = newest_delegation(&s);
    let e = run(
        &mut s,
        "acme/bob",
        NOW,
        Command::RevokeDelegation { delegation: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    assert!(may(&s, "acme/carol", Permission::NotionWrite, &eng(), NOW));
    run(
        &mut s,
        "acme/alice",
        NOW,
        Command::RevokeDelegation { delegation: id },
    )
    .unwrap();
    assert!(!may(&s, "acme/carol", Permission::NotionWrite, &eng(), NOW));
    // The audit trail of acme has the delegation and its revocation.
    let chain = s.audit().chain("acme").unwrap();
    let actions: Vec<(&str, &str)> = chain
        .records
        .iter()
        .map(|r| (r.event.action.as_str(), r.event.outcome.as_str()))
        .collect();
    assert!(actions.contains(&("delegate", "ok")), "{actions:?}");
    assert!(actions.contains(&("revoke_delegation", "denied")));
    assert!(actions.contains(&("revoke_delegation", "ok")));
}

#[test]
fn a_permanent_delegation_waits_for_a_higher_authority_then_is_flagged_for_review() {
    let mut s = base();
    // mgr lends standard_user on docs for good, to a new principal: permanent, so it needs
    // approval.
    run(
        &mut s,
        "ea1",
        NOW,
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: PrincipalId::new("dave").unwrap(),
            display_name: "dave".into(),
        },
    )
    .unwrap();
    run(
        &mut s,
        "acme/mgr",
        NOW,
        delegate(
            "acme/dave",
            Delegated::Role(Role::StandardUser),
            docs(),
            None,
        ),
    )
    .unwrap();
    let id = newest_delegation(&s);
    let d = s.delegations().get(id).unwrap();
    assert!(d.needs_approval && d.is_permanent());
    assert_eq!(d.status_at(NOW), "pending_approval");
    assert!(!may(&s, "acme/dave", Permission::NotionRead, &docs(), NOW));
    // Neither the delegator, the delegate, nor a peer without a role above it approves.
    for who in ["acme/mgr", "acme/carol", "co1", "root"] {
        let e = run(
            &mut s,
            who,
            NOW,
            Command::ApproveDelegation { delegation: id },
        )
        .unwrap_err();
        assert!(matches!(e, ApplyError::Forbidden(_)), "{who}: {e}");
    }
    // alice, a tenant admin, is above the workspace manager over docs.
    let approved_at = NOW + 5;
    run(
        &mut s,
        "acme/alice",
        approved_at,
        Command::ApproveDelegation { delegation: id },
    )
    .unwrap();
    let d = s.delegations().get(id).unwrap().clone();
    assert_eq!(d.approval.as_ref().unwrap().by, "acme/alice");
    assert_eq!(d.review_due_at_ms, Some(approved_at + REVIEW_AFTER_MS));
    assert!(may(
        &s,
        "acme/dave",
        Permission::NotionRead,
        &docs(),
        NOW + 6
    ));
    assert!(!d.review_due_at(approved_at + REVIEW_AFTER_MS - 1));
    assert!(d.review_due_at(approved_at + REVIEW_AFTER_MS));
    // Approving again changes nothing.
    assert_eq!(
        run(
            &mut s,
            "acme/alice",
            NOW + 7,
            Command::ApproveDelegation { delegation: id },
        )
        .unwrap(),
        CommandOutput::Unchanged
    );
}

#[test]
fn widening_beyond_the_delegators_role_needs_approval_even_when_temporary() {
    let mut s = base();
    // mgr lends its own workspace.members.manage (a workspace manager may assign only
    // standard_user): temporary, but beyond its authority, so it waits.
    run(
        &mut s,
        "acme/mgr",
        NOW,
        delegate(
            "acme/bob",
            Delegated::Permission(Permission::WorkspaceMembersManage),
            docs(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap();
    let id = newest_delegation(&s);
    assert!(s.delegations().get(id).unwrap().needs_approval);
    assert!(!may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &docs(),
        NOW
    ));
    run(
        &mut s,
        "acme/alice",
        NOW + 1,
        Command::ApproveDelegation { delegation: id },
    )
    .unwrap();
    assert!(may(
        &s,
        "acme/bob",
        Permission::WorkspaceMembersManage,
        &docs(),
        NOW + 2
    ));
    // A temporary delegation is never flagged for review.
    assert_eq!(s.delegations().get(id).unwrap().review_due_at_ms, None);
}

#[test]
fn delegation_rules_refuse_what_cannot_be_lent() {
    let mut s = base();
    let cases: Vec<(&str, Command)> = vec![
        // A standard user delegates nothing.
        (
            "acme/bob",
            delegate(
                "acme/carol",
                Delegated::Permission(Permission::NotionRead),
                docs(),
                Some(NOW + HOUR),
            ),
        ),
        // Nobody delegates what it does not hold.
        (
            "acme/alice",
            delegate(
                "acme/bob",
                Delegated::Permission(Permission::TenantsCreate),
                RoleScope::Global,
                Some(NOW + HOUR),
            ),
        ),
        // Not to itself.
        (
            "acme/alice",
            delegate(
                "acme/alice",
                Delegated::Permission(Permission::NotionRead),
                docs(),
                Some(NOW + HOUR),
            ),
        ),
        // A root token holds no role.
        (
            "root",
            delegate(
                "acme/bob",
                Delegated::Permission(Permission::NotionRead),
                docs(),
                Some(NOW + HOUR),
            ),
        ),
        // An expiry in the past.
        (
            "acme/alice",
            delegate(
                "acme/bob",
                Delegated::Permission(Permission::NotionRead),
                eng(),
                Some(NOW),
            ),
        ),
        // A permission at a scope of another level.
        (
            "acme/alice",
            delegate(
                "acme/bob",
                Delegated::Permission(Permission::NotionRead),
                acme(),
                Some(NOW + HOUR),
            ),
        ),
        // enterprise_admin is never lent.
        (
            "ea1",
            delegate(
                "nobody",
                Delegated::Role(Role::EnterpriseAdmin),
                RoleScope::Global,
                Some(NOW + HOUR),
            ),
        ),
        // Without a justification.
        (
            "acme/alice",
            Command::Delegate {
                delegate: subj("acme/bob"),
                grant: Delegated::Permission(Permission::NotionRead),
                scope: eng(),
                expires_at_ms: Some(NOW + HOUR),
                justification: "  ".into(),
            },
        ),
    ];
    for (who, cmd) in cases {
        let before = s.clone();
        let e = run(&mut s, who, NOW, cmd).unwrap_err();
        assert!(
            matches!(e, ApplyError::Forbidden(_) | ApplyError::Invalid(_)),
            "{who}: {e}"
        );
        assert!(s.eq_except_audit(&before), "{who}: a refusal changed state");
    }
    // A tenant principal cannot receive anything across the tenant boundary.
    root_apply(
        &mut s,
        Command::CreateTenant {
            tenant: t("other"),
            display_name: "Other".into(),
        },
    );
    root_apply(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("other"),
            principal: PrincipalId::new("eve").unwrap(),
            display_name: "eve".into(),
        },
    );
    let e = run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "other/eve",
            Delegated::Permission(Permission::NotionRead),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    // A global principal can.
    run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "nobody",
            Delegated::Permission(Permission::NotionRead),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap();
    assert!(may(&s, "nobody", Permission::NotionRead, &eng(), NOW));
    // Delegations do not chain: the global delegate cannot lend it on.
    let e = run(
        &mut s,
        "nobody",
        NOW,
        delegate(
            "acme/bob",
            Delegated::Permission(Permission::NotionRead),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
}

#[test]
fn the_delegates_own_restriction_still_overrides_a_delegation() {
    let mut s = base();
    run(
        &mut s,
        "acme/alice",
        NOW,
        delegate(
            "acme/carol",
            Delegated::Permission(Permission::NotionWrite),
            eng(),
            Some(NOW + HOUR),
        ),
    )
    .unwrap();
    run(
        &mut s,
        "acme/alice",
        NOW,
        Command::AddRestriction {
            subject: subj("acme/carol"),
            permission: None,
            scope: acme(),
            set_at_ms: NOW,
            justification: "offboarding".into(),
        },
    )
    .unwrap();
    assert!(!may(&s, "acme/carol", Permission::NotionWrite, &eng(), NOW));
}

// ---- separation of duties ----

fn enable_sod(s: &mut State) {
    let policy = SodPolicy {
        enabled: true,
        ..SodPolicy::default()
    };
    // Off: turning it on applies at once.
    assert_eq!(
        run(s, "ea1", NOW, Command::SetSodPolicy { policy }).unwrap(),
        CommandOutput::Done
    );
    assert!(s.approvals().policy().enabled);
}

fn create_tenant(id: &str) -> Command {
    Command::CreateTenant {
        tenant: t(id),
        display_name: id.into(),
    }
}

fn pending(out: CommandOutput) -> u64 {
    match out {
        CommandOutput::Pending { approval } => approval,
        other => panic!("expected an approval request, got {other:?}"),
    }
}

#[test]
fn with_the_policy_off_critical_commands_run_at_once() {
    let mut s = base();
    assert!(!s.approvals().policy().enabled);
    assert_eq!(
        run(&mut s, "ea1", NOW, create_tenant("beta")).unwrap(),
        CommandOutput::Done
    );
    assert!(s.tenant(&t("beta")).is_some());
}

#[test]
fn turning_the_policy_on_needs_enough_approvers() {
    let mut s = base();
    // Only one compliance officer and... security policy needs 3 of ea/sec/co: ea1, ea2,
    // sec1, co1 are 4. Tenant lifecycle: ea1, ea2, co1. Ask for 5 and it is refused.
    let mut policy = SodPolicy {
        enabled: true,
        ..SodPolicy::default()
    };
    policy.security_policy.approvals = 5;
    let e = run(&mut s, "ea1", NOW, Command::SetSodPolicy { policy }).unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
    let mut policy = SodPolicy::default();
    policy.enterprise_config.window_ms = 1;
    let e = run(&mut s, "ea1", NOW, Command::SetSodPolicy { policy }).unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    // A tenant admin may not change it at all.
    let e = run(
        &mut s,
        "acme/alice",
        NOW,
        Command::SetSodPolicy {
            policy: SodPolicy {
                enabled: true,
                ..SodPolicy::default()
            },
        },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
}

#[test]
fn tenant_creation_needs_two_distinct_approvers_other_than_the_requester() {
    let mut s = base();
    enable_sod(&mut s);
    // A business justification is required.
    let e = apply(&mut s, &by_at("ea1", NOW, create_tenant("beta"), None)).unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    let id = pending(run(&mut s, "ea1", NOW, create_tenant("beta")).unwrap());
    assert!(s.tenant(&t("beta")).is_none(), "held, not executed");
    let req = s.approvals().request(id).unwrap();
    assert_eq!(req.class, SodClass::TenantLifecycle);
    assert_eq!(req.required, 2);
    assert_eq!(req.status_at(NOW), "pending");
    // The requester never approves its own request.
    let e = run(
        &mut s,
        "ea1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    // Wrong roles: a security admin is not among tenant creation's approvers; nor is a
    // tenant admin, a principal with no role, or a root token.
    for who in ["sec1", "acme/alice", "nobody", "root"] {
        let e = run(
            &mut s,
            who,
            NOW + 1,
            Command::ApproveRequest { request: id },
        )
        .unwrap_err();
        assert!(matches!(e, ApplyError::Forbidden(_)), "{who}: {e}");
    }
    // One approval is too few.
    run(
        &mut s,
        "co1",
        NOW + 2,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(s.tenant(&t("beta")).is_none());
    assert_eq!(s.approvals().request(id).unwrap().approvals.len(), 1);
    // The same approver twice counts once.
    let e = run(
        &mut s,
        "co1",
        NOW + 3,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
    // The second distinct approver executes it.
    run(
        &mut s,
        "ea2",
        NOW + 4,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(s.tenant(&t("beta")).is_some());
    let req = s.approvals().request(id).unwrap();
    assert_eq!(req.status_at(NOW + 5), "executed");
    let approvers: Vec<(&str, Role)> = req
        .approvals
        .iter()
        .map(|a| (a.by.as_str(), a.role))
        .collect();
    assert_eq!(
        approvers,
        [
            ("co1", Role::ComplianceOfficer),
            ("ea2", Role::EnterpriseAdmin)
        ]
    );
    // Nothing more to approve.
    let e = run(
        &mut s,
        "sec1",
        NOW + 6,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
    // The cluster chain holds the request, the approvals and the execution, and verifies.
    let chain = s.audit().chain(CLUSTER_CHAIN).unwrap();
    let outcomes: Vec<(&str, &str)> = chain
        .records
        .iter()
        .map(|r| (r.event.action.as_str(), r.event.outcome.as_str()))
        .collect();
    let create = outcomes
        .iter()
        .position(|o| *o == ("create_tenant", "pending_approval"))
        .unwrap();
    let executed = outcomes
        .iter()
        .rposition(|o| *o == ("create_tenant", "ok"))
        .unwrap();
    assert!(create < executed);
    assert_eq!(outcomes[executed - 1], ("approve_request", "ok"));
    assert_eq!(chain.records[executed].event.principal, "ea1");
    verify_chain(
        chain.records.iter(),
        Some((0, quire_raft::audit::GENESIS_HASH)),
    )
    .unwrap();
}

#[test]
fn approvals_after_the_window_are_refused_and_the_request_shows_expired() {
    let mut s = base();
    enable_sod(&mut s);
    let id = pending(run(&mut s, "ea1", NOW, create_tenant("beta")).unwrap());
    run(
        &mut s,
        "co1",
        NOW + HOUR,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    let late = NOW + 48 * HOUR;
    let before = s.clone();
    let e = run(&mut s, "ea2", late, Command::ApproveRequest { request: id }).unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
    assert!(s.eq_except_audit(&before));
    assert!(s.tenant(&t("beta")).is_none());
    assert_eq!(
        s.approvals().request(id).unwrap().status_at(late),
        "expired"
    );
    // Break-glass on an expired request is refused as well.
    let e = apply(
        &mut s,
        &by_at(
            "ea2",
            late,
            Command::BreakGlass { request: id },
            Some("outage"),
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
}

#[test]
fn break_glass_executes_at_once_and_is_audited_high() {
    let mut s = base();
    enable_sod(&mut s);
    // The requester is one enterprise admin; the break-glass admin another.
    let retention = Command::SetAuditRetention {
        max_records_per_chain: 5_000,
    };
    let id = pending(run(&mut s, "ea2", NOW, retention).unwrap());
    assert_eq!(
        s.approvals().request(id).unwrap().class,
        SodClass::SecurityPolicy
    );
    // Only an enterprise admin, and only with a justification.
    let e = apply(
        &mut s,
        &by_at("co1", NOW, Command::BreakGlass { request: id }, Some("x")),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    let e = apply(
        &mut s,
        &by_at("root", NOW, Command::BreakGlass { request: id }, Some("x")),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    let e = apply(
        &mut s,
        &by_at("ea1", NOW, Command::BreakGlass { request: id }, None),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    apply(
        &mut s,
        &by_at(
            "ea1",
            NOW + 1,
            Command::BreakGlass { request: id },
            Some("audit disk full; incident 42"),
        ),
    )
    .unwrap();
    assert_eq!(s.audit().max_records_per_chain(), 5_000);
    let req = s.approvals().request(id).unwrap();
    assert_eq!(req.status_at(NOW + 2), "executed");
    assert_eq!(req.break_glass.as_ref().unwrap().by, "ea1");
    let chain = s.audit().chain(CLUSTER_CHAIN).unwrap();
    let high: Vec<(&str, &str)> = chain
        .records
        .iter()
        .filter(|r| r.event.severity == Severity::High)
        .map(|r| (r.event.action.as_str(), r.event.outcome.as_str()))
        .collect();
    assert_eq!(high, [("break_glass", "ok"), ("set_audit_retention", "ok")]);
    let last = chain.records.back().unwrap();
    assert!(
        last.event
            .justification
            .as_deref()
            .unwrap()
            .contains("incident 42")
    );
}

#[test]
fn root_tokens_are_held_too_and_never_approve() {
    let mut s = base();
    enable_sod(&mut s);
    let id = pending(run(&mut s, "root", NOW, create_tenant("beta")).unwrap());
    assert_eq!(s.approvals().request(id).unwrap().requested_by, "root");
    run(
        &mut s,
        "co1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    run(
        &mut s,
        "ea1",
        NOW + 2,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(s.tenant(&t("beta")).is_some());
    // Enterprise configuration from a root token: a global principal.
    let id = pending(
        run(
            &mut s,
            "root",
            NOW,
            Command::CreateGlobalPrincipal {
                principal: PrincipalId::new("newbie").unwrap(),
                display_name: "n".into(),
            },
        )
        .unwrap(),
    );
    assert_eq!(
        s.approvals().request(id).unwrap().class,
        SodClass::EnterpriseConfig
    );
    // Its approvers are enterprise and security admins, not compliance officers.
    let e = run(
        &mut s,
        "co1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    run(
        &mut s,
        "sec1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    run(
        &mut s,
        "ea2",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(
        s.global_principal(&PrincipalId::new("newbie").unwrap())
            .is_some()
    );
}

#[test]
fn revocations_and_tenant_level_changes_are_never_held() {
    let mut s = base();
    enable_sod(&mut s);
    let binding = s.access().bindings_of(&subj("acme/mgr")).next().unwrap().id;
    assert_eq!(
        run(&mut s, "ea1", NOW, Command::RevokeRole { binding }).unwrap(),
        CommandOutput::Done
    );
    assert_eq!(
        run(
            &mut s,
            "acme/alice",
            NOW,
            Command::AddRestriction {
                subject: subj("acme/bob"),
                permission: None,
                scope: acme(),
                set_at_ms: NOW,
                justification: "leaving".into(),
            },
        )
        .unwrap(),
        CommandOutput::Done
    );
    // A global restriction is a security policy change.
    let out = run(
        &mut s,
        "sec1",
        NOW,
        Command::AddRestriction {
            subject: subj("nobody"),
            permission: None,
            scope: RoleScope::Global,
            set_at_ms: NOW,
            justification: "contractor ended".into(),
        },
    )
    .unwrap();
    pending(out);
}

#[test]
fn the_policy_itself_changes_only_through_three_approvals_and_a_rejection_ends_a_request() {
    let mut s = base();
    enable_sod(&mut s);
    let off = SodPolicy::default();
    let id = pending(
        run(
            &mut s,
            "sec1",
            NOW,
            Command::SetSodPolicy {
                policy: off.clone(),
            },
        )
        .unwrap(),
    );
    assert_eq!(s.approvals().request(id).unwrap().required, 3);
    run(
        &mut s,
        "ea1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    run(
        &mut s,
        "co1",
        NOW + 2,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(s.approvals().policy().enabled, "two of three is too few");
    run(
        &mut s,
        "ea2",
        NOW + 3,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(!s.approvals().policy().enabled);

    // On again; a second request is rejected by an eligible approver and cannot be approved.
    enable_sod(&mut s);
    let id = pending(run(&mut s, "ea1", NOW, create_tenant("gamma")).unwrap());
    let e = run(
        &mut s,
        "sec1",
        NOW + 1,
        Command::RejectRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    run(
        &mut s,
        "co1",
        NOW + 1,
        Command::RejectRequest { request: id },
    )
    .unwrap();
    assert!(matches!(
        s.approvals().request(id).unwrap().status,
        RequestStatus::Rejected { .. }
    ));
    let e = run(
        &mut s,
        "ea2",
        NOW + 2,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict(_)), "{e}");
    assert!(s.tenant(&t("gamma")).is_none());
}

#[test]
fn approvers_roles_are_checked_at_each_approval_and_the_requester_at_execution() {
    let mut s = base();
    enable_sod(&mut s);
    // The requester loses enterprise_admin before the last approval: the request runs, and
    // fails because the requester no longer holds tenants.create.
    let id = pending(run(&mut s, "ea1", NOW, create_tenant("beta")).unwrap());
    run(
        &mut s,
        "co1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    let binding = s.access().bindings_of(&subj("ea1")).next().unwrap().id;
    run(&mut s, "root", NOW + 1, Command::RevokeRole { binding }).unwrap();
    run(
        &mut s,
        "ea2",
        NOW + 2,
        Command::ApproveRequest { request: id },
    )
    .unwrap();
    assert!(s.tenant(&t("beta")).is_none());
    let req = s.approvals().request(id).unwrap();
    assert_eq!(req.status_at(NOW + 3), "failed");
    assert!(matches!(
        req.status,
        RequestStatus::Executed {
            result: Err(ApplyError::Forbidden(_)),
            ..
        }
    ));
    // An approver who lost its role by the time it approves is refused at that index.
    let id = pending(run(&mut s, "ea2", NOW, create_tenant("gamma")).unwrap());
    let binding = s.access().bindings_of(&subj("co1")).next().unwrap().id;
    run(&mut s, "ea2", NOW, Command::RevokeRole { binding }).unwrap();
    let e = run(
        &mut s,
        "co1",
        NOW + 1,
        Command::ApproveRequest { request: id },
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    // Assigning a global role is enterprise configuration: held as well.
    pending(
        run(
            &mut s,
            "ea2",
            NOW + 1,
            Command::AssignRole {
                subject: subj("co1"),
                role: Role::ComplianceOfficer,
                scope: RoleScope::Global,
                granted_at_ms: NOW,
                expires_at_ms: None,
                justification: None,
            },
        )
        .unwrap(),
    );
}
