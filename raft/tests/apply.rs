//! `apply`: every command's success and rejection paths; a rejected command leaves the state
//! exactly as it was.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use quire_raft::command::{Command, CommandOutput, apply};
use quire_raft::seal::{MasterKey, SealedSecret, hash_api_token, integration_aad};
use quire_raft::{
    ApplyError, Budget, IntegrationId, PrincipalId, State, TenantId, TokenId, WorkspaceId,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
fn w(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn i(s: &str) -> IntegrationId {
    IntegrationId::new(s).unwrap()
}
fn p(s: &str) -> PrincipalId {
    PrincipalId::new(s).unwrap()
}
fn tok(s: &str) -> TokenId {
    TokenId::new(s).unwrap()
}

fn sealed(tenant: &str, integration: &str, secret: &str) -> SealedSecret {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let key = MasterKey::generate(&mut rng);
    key.seal(
        secret.as_bytes(),
        &integration_aad(tenant, integration),
        &mut rng,
    )
    .unwrap()
}

fn budget() -> Budget {
    Budget {
        requests_per_second: 3,
        burst: 10,
    }
}

fn scopes(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Applies and expects success.
fn ok(state: &mut State, cmd: Command) -> CommandOutput {
    apply(state, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()))
}

/// Applies and expects a rejection that leaves the state unchanged.
fn rejected(state: &mut State, cmd: Command) -> ApplyError {
    let before = state.clone();
    let err = apply(state, &cmd).expect_err("command should be rejected");
    assert_eq!(*state, before, "rejected {} changed the state", cmd.kind());
    err
}

fn issue(tenant: &str, principal: &str, workspace: &str, id: &str, secret: &str) -> Command {
    Command::IssueToken {
        tenant: t(tenant),
        principal: p(principal),
        workspace: w(workspace),
        token_id: tok(id),
        secret_hash: hash_api_token(secret),
        scopes: scopes(&["notion:read"]),
        issued_at_ms: 1_000,
        expires_at_ms: Some(2_000),
    }
}

/// A tenant "acme" with integration "main", workspace "docs" and principal "alice" granted it.
fn populated() -> State {
    let mut s = State::new();
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
    );
    ok(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("main"),
            display_name: "Main".into(),
            sealed_token: sealed("acme", "main", "secret_notion"),
            budget: budget(),
        },
    );
    ok(
        &mut s,
        Command::CreateWorkspace {
            tenant: t("acme"),
            workspace: w("docs"),
            display_name: "Docs".into(),
            integration: i("main"),
        },
    );
    ok(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: p("alice"),
            display_name: "Alice".into(),
        },
    );
    ok(
        &mut s,
        Command::GrantWorkspace {
            tenant: t("acme"),
            principal: p("alice"),
            workspace: w("docs"),
        },
    );
    s
}

#[test]
fn identifiers_are_validated_with_clear_errors() {
    assert!(TenantId::new("acme-1_x").is_ok());
    assert!(TenantId::new("9lives").is_ok());
    let e = TenantId::new("").unwrap_err();
    assert!(e.to_string().contains("tenant"), "{e}");
    assert!(TenantId::new("-acme").is_err());
    assert!(TenantId::new("_acme").is_err());
    assert!(TenantId::new("Acme").is_err());
    assert!(TenantId::new("a b").is_err());
    assert!(WorkspaceId::new("a".repeat(64)).is_ok());
    let e = WorkspaceId::new("a".repeat(65)).unwrap_err();
    assert!(
        e.to_string().contains("workspace") && e.to_string().contains("64"),
        "{e}"
    );
    // Deserialisation validates too.
    assert!(serde_json::from_str::<TenantId>("\"ok-id\"").is_ok());
    assert!(serde_json::from_str::<TenantId>("\"Not OK\"").is_err());
}

#[test]
fn init_cluster_once() {
    let mut s = State::new();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = MasterKey::generate(&mut rng);
    let check = key.key_check(&mut rng).unwrap();
    ok(
        &mut s,
        Command::InitCluster {
            cluster_name: "prod".into(),
            key_check: check.clone(),
        },
    );
    assert_eq!(s.cluster().unwrap().cluster_name, "prod");
    key.verify_key_check(&s.cluster().unwrap().key_check)
        .unwrap();
    let e = rejected(
        &mut s,
        Command::InitCluster {
            cluster_name: "other".into(),
            key_check: check,
        },
    );
    assert!(
        matches!(e, ApplyError::Conflict(ref m) if m.contains("prod")),
        "{e}"
    );
}

#[test]
fn tenants_create_and_delete() {
    let mut s = State::new();
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
    );
    assert_eq!(s.tenant(&t("acme")).unwrap().display_name, "Acme");
    let e = rejected(
        &mut s,
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Again".into(),
        },
    );
    assert!(
        matches!(e, ApplyError::AlreadyExists(ref m) if m.contains("acme")),
        "{e}"
    );
    let e = rejected(
        &mut s,
        Command::CreateTenant {
            tenant: t("blank"),
            display_name: "  ".into(),
        },
    );
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    ok(&mut s, Command::DeleteTenant { tenant: t("acme") });
    assert!(s.tenant(&t("acme")).is_none());
    let e = rejected(&mut s, Command::DeleteTenant { tenant: t("acme") });
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("acme")),
        "{e}"
    );
}

#[test]
fn delete_tenant_refused_while_it_has_workspaces() {
    let mut s = populated();
    let e = rejected(&mut s, Command::DeleteTenant { tenant: t("acme") });
    assert!(
        matches!(e, ApplyError::Conflict(ref m) if m.contains("workspace")),
        "{e}"
    );
}

#[test]
fn delete_tenant_takes_integrations_and_principals_with_it() {
    let mut s = State::new();
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
    );
    ok(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("main"),
            display_name: "Main".into(),
            sealed_token: sealed("acme", "main", "x"),
            budget: budget(),
        },
    );
    ok(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: p("bob"),
            display_name: "Bob".into(),
        },
    );
    ok(&mut s, Command::DeleteTenant { tenant: t("acme") });
    assert_eq!(s, State::new());
}

#[test]
fn workspace_needs_tenant_and_integration() {
    let mut s = populated();
    let e = rejected(
        &mut s,
        Command::CreateWorkspace {
            tenant: t("nobody"),
            workspace: w("x"),
            display_name: "X".into(),
            integration: i("main"),
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("nobody")),
        "{e}"
    );
    let e = rejected(
        &mut s,
        Command::CreateWorkspace {
            tenant: t("acme"),
            workspace: w("x"),
            display_name: "X".into(),
            integration: i("missing"),
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("missing")),
        "{e}"
    );
    let e = rejected(
        &mut s,
        Command::CreateWorkspace {
            tenant: t("acme"),
            workspace: w("docs"),
            display_name: "Docs".into(),
            integration: i("main"),
        },
    );
    assert!(
        matches!(e, ApplyError::AlreadyExists(ref m) if m.contains("docs")),
        "{e}"
    );
    // An integration of another tenant does not count.
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("other"),
            display_name: "Other".into(),
        },
    );
    let e = rejected(
        &mut s,
        Command::CreateWorkspace {
            tenant: t("other"),
            workspace: w("w"),
            display_name: "W".into(),
            integration: i("main"),
        },
    );
    assert!(matches!(e, ApplyError::NotFound(_)), "{e}");
    let ws = s.workspace(&t("acme"), &w("docs")).unwrap();
    assert_eq!(ws.integration_id, i("main"));
    assert_eq!(s.workspaces(&t("acme")).count(), 1);
    assert_eq!(s.workspaces(&t("other")).count(), 0);
}

#[test]
fn integrations_add_rotate_remove() {
    let mut s = populated();
    let e = rejected(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("main"),
            display_name: "Dup".into(),
            sealed_token: sealed("acme", "main", "y"),
            budget: budget(),
        },
    );
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");
    let e = rejected(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("zero"),
            display_name: "Zero".into(),
            sealed_token: sealed("acme", "zero", "y"),
            budget: Budget {
                requests_per_second: 0,
                burst: 1,
            },
        },
    );
    assert!(
        matches!(e, ApplyError::Invalid(ref m) if m.contains("requests_per_second")),
        "{e}"
    );

    let new_token = sealed("acme", "main", "rotated");
    ok(
        &mut s,
        Command::RotateIntegrationToken {
            tenant: t("acme"),
            integration: i("main"),
            sealed_token: new_token.clone(),
        },
    );
    assert_eq!(
        s.integration(&t("acme"), &i("main")).unwrap().sealed_token,
        new_token
    );
    let e = rejected(
        &mut s,
        Command::RotateIntegrationToken {
            tenant: t("acme"),
            integration: i("nope"),
            sealed_token: new_token,
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("nope")),
        "{e}"
    );

    // In use by workspace "docs".
    let e = rejected(
        &mut s,
        Command::RemoveIntegration {
            tenant: t("acme"),
            integration: i("main"),
        },
    );
    assert!(
        matches!(e, ApplyError::Conflict(ref m) if m.contains("docs")),
        "{e}"
    );

    ok(
        &mut s,
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("spare"),
            display_name: "Spare".into(),
            sealed_token: sealed("acme", "spare", "z"),
            budget: budget(),
        },
    );
    assert_eq!(s.integrations(&t("acme")).count(), 2);
    ok(
        &mut s,
        Command::RemoveIntegration {
            tenant: t("acme"),
            integration: i("spare"),
        },
    );
    assert!(s.integration(&t("acme"), &i("spare")).is_none());
}

#[test]
fn principals_and_grants() {
    let mut s = populated();
    let e = rejected(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: p("alice"),
            display_name: "Alice".into(),
        },
    );
    assert!(
        matches!(e, ApplyError::AlreadyExists(ref m) if m.contains("alice")),
        "{e}"
    );
    assert!(
        s.principal(&t("acme"), &p("alice"))
            .unwrap()
            .workspaces
            .contains(&w("docs"))
    );
    // Granting again is idempotent.
    let before = s.clone();
    assert_eq!(
        ok(
            &mut s,
            Command::GrantWorkspace {
                tenant: t("acme"),
                principal: p("alice"),
                workspace: w("docs"),
            },
        ),
        CommandOutput::Unchanged
    );
    assert_eq!(s, before);
    let e = rejected(
        &mut s,
        Command::GrantWorkspace {
            tenant: t("acme"),
            principal: p("alice"),
            workspace: w("nope"),
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("nope")),
        "{e}"
    );
    let e = rejected(
        &mut s,
        Command::GrantWorkspace {
            tenant: t("acme"),
            principal: p("ghost"),
            workspace: w("docs"),
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("ghost")),
        "{e}"
    );
    assert_eq!(s.principals(&t("acme")).count(), 1);
}

#[test]
fn tokens_issue_lookup_revoke() {
    let mut s = populated();
    assert_eq!(
        ok(&mut s, issue("acme", "alice", "docs", "t1", "s3cret")),
        CommandOutput::Done
    );
    let found = s.token_by_hash(&hash_api_token("s3cret")).unwrap();
    assert_eq!(found.token_id, tok("t1"));
    assert_eq!(found.principal, p("alice"));
    assert!(found.is_valid_at(1_500));
    assert!(!found.is_valid_at(2_000), "expired at expires_at_ms");
    assert!(s.token_by_hash(&hash_api_token("other")).is_none());

    // Same id, or same secret: refused.
    let e = rejected(&mut s, issue("acme", "alice", "docs", "t1", "different"));
    assert!(
        matches!(e, ApplyError::AlreadyExists(ref m) if m.contains("t1")),
        "{e}"
    );
    let e = rejected(&mut s, issue("acme", "alice", "docs", "t2", "s3cret"));
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");

    // Revoke from another tenant: not found there.
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("evil"),
            display_name: "Evil".into(),
        },
    );
    let e = rejected(
        &mut s,
        Command::RevokeToken {
            tenant: t("evil"),
            token_id: tok("t1"),
        },
    );
    assert!(matches!(e, ApplyError::NotFound(_)), "{e}");

    assert_eq!(
        ok(
            &mut s,
            Command::RevokeToken {
                tenant: t("acme"),
                token_id: tok("t1"),
            },
        ),
        CommandOutput::Done
    );
    assert!(!s.token(&tok("t1")).unwrap().is_valid_at(1_500));
    assert_eq!(
        ok(
            &mut s,
            Command::RevokeToken {
                tenant: t("acme"),
                token_id: tok("t1"),
            },
        ),
        CommandOutput::Unchanged
    );
    assert_eq!(s.tokens(&t("acme")).count(), 1);
}

#[test]
fn token_requires_granted_workspace_and_valid_fields() {
    let mut s = populated();
    ok(
        &mut s,
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: p("bob"),
            display_name: "Bob".into(),
        },
    );
    let e = rejected(&mut s, issue("acme", "bob", "docs", "t1", "x"));
    assert!(
        matches!(e, ApplyError::Conflict(ref m) if m.contains("bob") && m.contains("docs")),
        "{e}"
    );
    let e = rejected(&mut s, issue("acme", "nobody", "docs", "t1", "x"));
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("nobody")),
        "{e}"
    );

    let mut bad_hash = issue("acme", "alice", "docs", "t1", "x");
    if let Command::IssueToken { secret_hash, .. } = &mut bad_hash {
        *secret_hash = "NOT-HEX".into();
    }
    assert!(matches!(rejected(&mut s, bad_hash), ApplyError::Invalid(_)));

    let mut bad_expiry = issue("acme", "alice", "docs", "t1", "x");
    if let Command::IssueToken { expires_at_ms, .. } = &mut bad_expiry {
        *expires_at_ms = Some(500);
    }
    assert!(
        matches!(rejected(&mut s, bad_expiry), ApplyError::Invalid(ref m) if m.contains("expires"))
    );

    let mut bad_scope = issue("acme", "alice", "docs", "t1", "x");
    if let Command::IssueToken { scopes: sc, .. } = &mut bad_scope {
        *sc = scopes(&["Has Spaces"]);
    }
    assert!(
        matches!(rejected(&mut s, bad_scope), ApplyError::Invalid(ref m) if m.contains("scope"))
    );

    let mut no_scope = issue("acme", "alice", "docs", "t1", "x");
    if let Command::IssueToken { scopes: sc, .. } = &mut no_scope {
        sc.clear();
    }
    assert!(matches!(rejected(&mut s, no_scope), ApplyError::Invalid(_)));

    // A token that never expires.
    let mut forever = issue("acme", "alice", "docs", "t9", "forever");
    if let Command::IssueToken { expires_at_ms, .. } = &mut forever {
        *expires_at_ms = None;
    }
    ok(&mut s, forever);
    assert!(s.token(&tok("t9")).unwrap().is_valid_at(u64::MAX));
}

#[test]
fn replaying_the_same_log_gives_the_same_state_and_results() {
    let log = vec![
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Dup".into(),
        },
        Command::AddIntegration {
            tenant: t("acme"),
            integration: i("main"),
            display_name: "Main".into(),
            sealed_token: sealed("acme", "main", "tok"),
            budget: budget(),
        },
        Command::CreateWorkspace {
            tenant: t("acme"),
            workspace: w("docs"),
            display_name: "Docs".into(),
            integration: i("main"),
        },
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: p("alice"),
            display_name: "Alice".into(),
        },
        issue("acme", "alice", "docs", "t1", "s"),
        Command::GrantWorkspace {
            tenant: t("acme"),
            principal: p("alice"),
            workspace: w("docs"),
        },
        issue("acme", "alice", "docs", "t1", "s"),
    ];
    let run = || {
        let mut s = State::new();
        let results: Vec<_> = log.iter().map(|c| apply(&mut s, c)).collect();
        (s, results)
    };
    let (s1, r1) = run();
    let (s2, r2) = run();
    assert_eq!(s1, s2);
    assert_eq!(r1, r2);
    assert_eq!(
        serde_json::to_string(&s1).unwrap(),
        serde_json::to_string(&s2).unwrap()
    );
    assert!(r1[1].is_err() && r1[5].is_err() && r1[7].is_ok());
    // The state survives a serde round trip (snapshots).
    let back: State = serde_json::from_str(&serde_json::to_string(&s1).unwrap()).unwrap();
    assert_eq!(back, s1);
    // Commands survive one too (the log).
    for c in &log {
        let back: Command = serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap();
        assert_eq!(&back, c);
    }
}
