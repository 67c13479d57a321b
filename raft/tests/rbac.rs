//! Role-based access: the permission matrix (every role × every admin action, in and out of
//! its scope), inheritance, restrictions overriding grants, tenant isolation, temporary
//! bindings, and the audit record every admin decision leaves.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use quire_raft::audit::{CLUSTER_CHAIN, verify_chain};
use quire_raft::command::{ApplyError, Command, apply};
use quire_raft::rbac::{Permission, Role, RoleScope, Subject, authorize};
use quire_raft::seal::{MasterKey, hash_api_token, integration_aad};
use quire_raft::{Budget, IntegrationId, PrincipalId, State, TenantId, TokenId, WorkspaceId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
fn w(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn p(s: &str) -> PrincipalId {
    PrincipalId::new(s).unwrap()
}
fn tok(s: &str) -> TokenId {
    TokenId::new(s).unwrap()
}
fn subj(s: &str) -> Subject {
    s.parse().unwrap()
}
fn ws(tenant: &str, workspace: &str) -> RoleScope {
    RoleScope::Workspace {
        tenant: t(tenant),
        workspace: w(workspace),
    }
}
fn ten(tenant: &str) -> RoleScope {
    RoleScope::Tenant { tenant: t(tenant) }
}

const NOW: u64 = 10_000;

fn root_apply(s: &mut State, cmd: Command) {
    apply(s, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()));
}

fn as_token(token: &str, cmd: Command) -> Command {
    Command::AsAdmin {
        admin_token: tok(token),
        at_ms: NOW,
        command: Box::new(cmd),
        node: 1,
        justification: None,
    }
}

fn assign(subject: &str, role: Role, scope: RoleScope) -> Command {
    Command::AssignRole {
        subject: subj(subject),
        role,
        scope,
        granted_at_ms: NOW - 1,
        expires_at_ms: None,
        justification: None,
    }
}

fn admin_token_for(s: &mut State, id: &str, subject: Option<&str>) {
    root_apply(
        s,
        Command::IssueAdminToken {
            token_id: tok(id),
            secret_hash: hash_api_token(&format!("qa_{id}")),
            display_name: id.into(),
            issued_at_ms: 1,
            expires_at_ms: None,
            subject: subject.map(subj),
        },
    );
}

/// Two tenants (`acme`, `other`), each with workspaces `docs` and `eng`, an integration, a
/// principal `alice`; global principals; and the root token `root`.
fn base() -> State {
    let mut s = State::new();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = MasterKey::generate(&mut rng);
    admin_token_for(&mut s, "root", None);
    for tenant in ["acme", "other"] {
        root_apply(
            &mut s,
            Command::CreateTenant {
                tenant: t(tenant),
                display_name: tenant.into(),
            },
        );
        root_apply(
            &mut s,
            Command::AddIntegration {
                tenant: t(tenant),
                integration: IntegrationId::new("notion").unwrap(),
                display_name: "n".into(),
                sealed_token: key
                    .seal(
                        b"secret_token_value",
                        &integration_aad(tenant, "notion"),
                        &mut rng,
                    )
                    .unwrap(),
                budget: Budget {
                    requests_per_second: 3,
                    burst: 5,
                },
            },
        );
        for workspace in ["docs", "eng"] {
            root_apply(
                &mut s,
                Command::CreateWorkspace {
                    tenant: t(tenant),
                    workspace: w(workspace),
                    display_name: workspace.into(),
                    integration: IntegrationId::new("notion").unwrap(),
                },
            );
        }
        for principal in ["alice", "holder"] {
            root_apply(
                &mut s,
                Command::CreatePrincipal {
                    tenant: t(tenant),
                    principal: p(principal),
                    display_name: principal.into(),
                },
            );
        }
        root_apply(
            &mut s,
            Command::GrantWorkspace {
                tenant: t(tenant),
                principal: p("alice"),
                workspace: w("docs"),
            },
        );
    }
    for g in ["gholder", "gbob"] {
        root_apply(
            &mut s,
            Command::CreateGlobalPrincipal {
                principal: p(g),
                display_name: g.into(),
            },
        );
    }
    s
}

/// The admin actions of the matrix, each aimed at tenant `tenant`.
fn actions(tenant: &str) -> Vec<(&'static str, Command)> {
    vec![
        (
            "create_tenant",
            Command::CreateTenant {
                tenant: t(&format!("{tenant}-new")),
                display_name: "n".into(),
            },
        ),
        ("delete_tenant", Command::DeleteTenant { tenant: t(tenant) }),
        (
            "create_workspace",
            Command::CreateWorkspace {
                tenant: t(tenant),
                workspace: w("new"),
                display_name: "n".into(),
                integration: IntegrationId::new("notion").unwrap(),
            },
        ),
        (
            "remove_integration",
            Command::RemoveIntegration {
                tenant: t(tenant),
                integration: IntegrationId::new("unused").unwrap(),
            },
        ),
        (
            "create_principal",
            Command::CreatePrincipal {
                tenant: t(tenant),
                principal: p("carol"),
                display_name: "c".into(),
            },
        ),
        (
            "grant_workspace",
            Command::GrantWorkspace {
                tenant: t(tenant),
                principal: p("alice"),
                workspace: w("eng"),
            },
        ),
        (
            "issue_token",
            Command::IssueToken {
                tenant: t(tenant),
                principal: p("alice"),
                workspace: w("docs"),
                token_id: tok(&format!("{tenant}-tok")),
                secret_hash: hash_api_token(&format!("qk_{tenant}")),
                scopes: BTreeSet::from(["notion_workspace_read".to_owned()]),
                issued_at_ms: NOW,
                expires_at_ms: None,
            },
        ),
        (
            "assign_standard_user",
            assign(
                &format!("{tenant}/alice"),
                Role::StandardUser,
                ws(tenant, "docs"),
            ),
        ),
        (
            "assign_workspace_manager",
            assign(
                &format!("{tenant}/alice"),
                Role::WorkspaceManager,
                ws(tenant, "docs"),
            ),
        ),
        (
            "assign_tenant_admin",
            assign(&format!("{tenant}/alice"), Role::TenantAdmin, ten(tenant)),
        ),
        (
            "add_restriction",
            Command::AddRestriction {
                subject: subj(&format!("{tenant}/alice")),
                permission: Some(Permission::NotionWrite),
                scope: ten(tenant),
                set_at_ms: NOW,
                justification: "contractor".into(),
            },
        ),
        (
            "create_global_principal",
            Command::CreateGlobalPrincipal {
                principal: p("newg"),
                display_name: "g".into(),
            },
        ),
        (
            "set_audit_retention",
            Command::SetAuditRetention {
                max_records_per_chain: 500,
            },
        ),
    ]
}

/// Which (role bound in tenant `acme`) may do which action, on `acme` (in scope) and on
/// `other` (out of scope). Written out by hand from the role descriptions.
fn expected(role: &str, action: &str, in_scope: bool) -> bool {
    let tenant_level = matches!(
        action,
        "create_workspace" | "remove_integration" | "create_principal"
    );
    let workspace_level = matches!(
        action,
        "grant_workspace" | "issue_token" | "assign_standard_user"
    );
    match role {
        "enterprise_admin" => true,
        "tenant_admin" => {
            in_scope
                && (tenant_level
                    || workspace_level
                    || action == "assign_workspace_manager"
                    || action == "add_restriction")
        }
        // Manager of acme/docs: members of docs, and standard users in docs. Granting
        // alice `eng` is out of its workspace.
        "workspace_manager" => in_scope && matches!(action, "issue_token" | "assign_standard_user"),
        // Global security admin: security settings of every tenant.
        "security_admin" => action == "add_restriction",
        "standard_user" | "compliance_officer" => false,
        _ => unreachable!(),
    }
}

fn bind_holder(s: &mut State, role: &str) -> String {
    let (subject, scope) = match role {
        "enterprise_admin" => ("gholder", RoleScope::Global),
        "tenant_admin" => ("acme/holder", ten("acme")),
        "workspace_manager" | "standard_user" => ("acme/holder", ws("acme", "docs")),
        "security_admin" | "compliance_officer" => ("gholder", RoleScope::Global),
        _ => unreachable!(),
    };
    let role: Role = role.parse().unwrap();
    root_apply(s, assign(subject, role, scope));
    admin_token_for(s, "holder-token", Some(subject));
    subject.to_owned()
}

#[test]
fn permission_matrix_every_role_and_action_in_and_out_of_scope() {
    let roles = [
        "enterprise_admin",
        "tenant_admin",
        "workspace_manager",
        "standard_user",
        "security_admin",
        "compliance_officer",
    ];
    let mut checked = 0;
    for role in roles {
        for (tenant, in_scope) in [("acme", true), ("other", false)] {
            for (name, cmd) in actions(tenant) {
                let mut s = base();
                // `remove_integration` needs an unused integration to remove.
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let key = MasterKey::generate(&mut rng);
                root_apply(
                    &mut s,
                    Command::AddIntegration {
                        tenant: t(tenant),
                        integration: IntegrationId::new("unused").unwrap(),
                        display_name: "u".into(),
                        sealed_token: key
                            .seal(
                                b"xxxxxxxxxxxxxxxx",
                                &integration_aad(tenant, "unused"),
                                &mut rng,
                            )
                            .unwrap(),
                        budget: Budget {
                            requests_per_second: 1,
                            burst: 1,
                        },
                    },
                );
                let subject = bind_holder(&mut s, role);
                let want = expected(role, name, in_scope);
                let result = apply(&mut s, &as_token("holder-token", cmd));
                let allowed = match &result {
                    Ok(_) => true,
                    Err(ApplyError::Forbidden(_)) => false,
                    // Authorised, but the tenant still has workspaces.
                    Err(ApplyError::Conflict(m)) if name == "delete_tenant" => {
                        assert!(m.contains("workspace"), "{m}");
                        true
                    }
                    Err(e) => panic!("{role} {name} on {tenant}: unexpected {e}"),
                };
                assert_eq!(
                    allowed, want,
                    "{role} ({subject}) {name} on {tenant}: got {result:?}"
                );
                // Every decision, allowed or denied, left an audit record naming the actor.
                let chains = s.audit();
                let last = chains
                    .chains()
                    .flat_map(|(_, c)| c.records.iter())
                    .max_by_key(|r| (r.event.at_ms, r.seq))
                    .unwrap();
                assert_eq!(last.event.principal, subject);
                assert_eq!(last.event.outcome == "denied", !allowed, "{last:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 2 * actions("acme").len());
}

#[test]
fn tool_permissions_follow_membership_roles_and_restrictions() {
    let mut s = base();
    let alice = subj("acme/alice");
    let docs = ws("acme", "docs");
    let eng = ws("acme", "eng");
    // alice is a member (standard_user) of docs only.
    assert!(authorize(&s, &alice, Permission::NotionRead, &docs, NOW).allowed);
    assert!(authorize(&s, &alice, Permission::NotionWrite, &docs, NOW).allowed);
    assert!(!authorize(&s, &alice, Permission::NotionRead, &eng, NOW).allowed);
    assert!(!authorize(&s, &alice, Permission::WorkspaceTemplatesManage, &docs, NOW).allowed);
    // Never across a tenant, whatever the workspace's name.
    let d = authorize(
        &s,
        &alice,
        Permission::NotionRead,
        &ws("other", "docs"),
        NOW,
    );
    assert!(!d.allowed);
    assert!(d.reason.contains("belongs to tenant acme"), "{}", d.reason);

    // A temporary manager role on eng: inherits the standard user's permissions there.
    root_apply(
        &mut s,
        Command::AssignRole {
            subject: alice.clone(),
            role: Role::WorkspaceManager,
            scope: eng.clone(),
            granted_at_ms: NOW,
            expires_at_ms: Some(NOW + 1_000),
            justification: Some("covering for bob".into()),
        },
    );
    assert!(authorize(&s, &alice, Permission::NotionRead, &eng, NOW + 1).allowed);
    assert!(
        authorize(
            &s,
            &alice,
            Permission::WorkspaceTemplatesManage,
            &eng,
            NOW + 1
        )
        .allowed
    );
    assert!(
        !authorize(&s, &alice, Permission::NotionRead, &eng, NOW + 1_000).allowed,
        "expired"
    );

    // A restriction overrides every grant.
    root_apply(
        &mut s,
        Command::AddRestriction {
            subject: alice.clone(),
            permission: Some(Permission::NotionWrite),
            scope: ten("acme"),
            set_at_ms: NOW,
            justification: "read-only during the audit".into(),
        },
    );
    assert!(authorize(&s, &alice, Permission::NotionRead, &docs, NOW).allowed);
    let d = authorize(&s, &alice, Permission::NotionWrite, &docs, NOW);
    assert!(!d.allowed);
    assert!(
        d.reason.contains("read-only during the audit"),
        "{}",
        d.reason
    );

    // Audit reading: compliance officers everywhere, tenant admins in their tenant only.
    let g = subj("gholder");
    root_apply(
        &mut s,
        assign("gholder", Role::ComplianceOfficer, RoleScope::Global),
    );
    assert!(authorize(&s, &g, Permission::AuditRead, &ten("other"), NOW).allowed);
    assert!(!authorize(&s, &g, Permission::TenantsCreate, &RoleScope::Global, NOW).allowed);
    root_apply(
        &mut s,
        assign("acme/holder", Role::TenantAdmin, ten("acme")),
    );
    let h = subj("acme/holder");
    assert!(authorize(&s, &h, Permission::AuditRead, &ten("acme"), NOW).allowed);
    assert!(
        authorize(&s, &h, Permission::NotionRead, &eng, NOW).allowed,
        "inherited"
    );
    assert!(!authorize(&s, &h, Permission::AuditRead, &ten("other"), NOW).allowed);
    assert!(!authorize(&s, &alice, Permission::AuditRead, &ten("acme"), NOW).allowed);
}

#[test]
fn role_bindings_respect_levels_and_tenants() {
    let mut s = base();
    // A tenant principal cannot hold a global role, nor a role in another tenant.
    let e = apply(
        &mut s,
        &assign("acme/alice", Role::SecurityAdmin, RoleScope::Global),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    let e = apply(
        &mut s,
        &assign("acme/alice", Role::TenantAdmin, ten("other")),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    // Roles bind only at their level.
    let e = apply(
        &mut s,
        &assign("acme/alice", Role::TenantAdmin, ws("acme", "docs")),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    let e = apply(
        &mut s,
        &assign("acme/nobody", Role::StandardUser, ws("acme", "docs")),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::NotFound(_)), "{e}");

    // A tenant admin cannot make another tenant admin, nor lift itself.
    root_apply(
        &mut s,
        assign("acme/holder", Role::TenantAdmin, ten("acme")),
    );
    admin_token_for(&mut s, "ta", Some("acme/holder"));
    let e = apply(
        &mut s,
        &as_token("ta", assign("acme/alice", Role::TenantAdmin, ten("acme"))),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
    // ... but may make a workspace manager, and revoke it again.
    apply(
        &mut s,
        &as_token(
            "ta",
            assign("acme/alice", Role::WorkspaceManager, ws("acme", "docs")),
        ),
    )
    .unwrap();
    let binding = s
        .access()
        .bindings_of(&subj("acme/alice"))
        .find(|b| b.role == Role::WorkspaceManager)
        .unwrap();
    assert_eq!(binding.granted_by, "acme/holder");
    let id = binding.id;
    apply(&mut s, &as_token("ta", Command::RevokeRole { binding: id })).unwrap();
    assert!(s.access().binding(id).is_none());

    // Revoking the tenant admin's own role takes effect at the next log index.
    let ta_binding = s
        .access()
        .bindings_of(&subj("acme/holder"))
        .next()
        .unwrap()
        .id;
    root_apply(
        &mut s,
        Command::RevokeRole {
            binding: ta_binding,
        },
    );
    let e = apply(
        &mut s,
        &as_token(
            "ta",
            Command::CreatePrincipal {
                tenant: t("acme"),
                principal: p("late"),
                display_name: "l".into(),
            },
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Forbidden(_)), "{e}");
}

#[test]
fn deleting_a_tenant_removes_its_roles_and_keeps_its_audit_chain() {
    let mut s = State::new();
    admin_token_for(&mut s, "root", None);
    apply(
        &mut s,
        &as_token(
            "root",
            Command::CreateTenant {
                tenant: t("gone"),
                display_name: "g".into(),
            },
        ),
    )
    .unwrap();
    root_apply(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("gone"),
            principal: p("holder"),
            display_name: "h".into(),
        },
    );
    root_apply(
        &mut s,
        assign("gone/holder", Role::TenantAdmin, ten("gone")),
    );
    admin_token_for(&mut s, "ta", Some("gone/holder"));
    apply(
        &mut s,
        &as_token("root", Command::DeleteTenant { tenant: t("gone") }),
    )
    .unwrap();
    assert_eq!(s.access().all_bindings().count(), 0);
    assert!(s.admin_token(&tok("ta")).unwrap().revoked);
    let chain = s.audit().chain(CLUSTER_CHAIN).unwrap();
    assert_eq!(chain.records.len(), 2);
    assert_eq!(
        verify_chain(&chain.records, Some((0, quire_raft::audit::GENESIS_HASH))).unwrap(),
        2
    );
    assert_eq!(chain.records[1].event.action, "delete_tenant");
}

#[test]
fn audit_batches_chain_per_tenant_and_verify() {
    use quire_raft::audit::{AuditEvent, Severity};
    let mut s = base();
    let event = |tenant: &str, n: u64| AuditEvent {
        at_ms: NOW + n,
        node: 2,
        principal: format!("{tenant}/alice"),
        tenant: Some(t(tenant)),
        workspace: Some("docs".into()),
        kind: "tool".into(),
        action: "notion-fetch".into(),
        resource: Some(format!("page-{n}")),
        outcome: "ok".into(),
        latency_ms: Some(n),
        notion_requests: None,
        justification: None,
        severity: Severity::Info,
    };
    let events: Vec<AuditEvent> = (0..10)
        .map(|n| event(if n % 2 == 0 { "acme" } else { "other" }, n))
        .collect();
    quire_raft::apply_at(&mut s, 42, &Command::AppendAudit { events }).unwrap();
    for tenant in ["acme", "other"] {
        let c = s.audit().chain(tenant).unwrap();
        assert_eq!(c.records.len(), 5);
        assert!(c.records.iter().all(|r| r.log_index == 42));
        assert_eq!(
            verify_chain(&c.records, Some((0, quire_raft::audit::GENESIS_HASH))).unwrap(),
            5
        );
    }
    let e = apply(&mut s, &Command::AppendAudit { events: vec![] }).unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)));
    // An audit batch is never an admin command.
    let e = apply(
        &mut s,
        &as_token(
            "root",
            Command::AppendAudit {
                events: vec![event("acme", 1)],
            },
        ),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
}
