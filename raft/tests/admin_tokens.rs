//! Cluster-level admin tokens: issue, look up by hash, revoke, and every rejection path
//! (a rejected command leaves the state exactly as it was).

#![allow(clippy::unwrap_used, reason = "tests")]

use quire_raft::command::{Command, CommandOutput, MAX_ADMIN_TOKENS, apply};
use quire_raft::seal::hash_api_token;
use quire_raft::{
    ApplyError, Budget, IntegrationId, PrincipalId, State, TenantId, TokenId, WorkspaceId,
};

fn tok(s: &str) -> TokenId {
    TokenId::new(s).unwrap()
}

fn ok(state: &mut State, cmd: Command) -> CommandOutput {
    apply(state, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()))
}

fn rejected(state: &mut State, cmd: Command) -> ApplyError {
    let before = state.clone();
    let err = apply(state, &cmd).expect_err("command should be rejected");
    assert!(
        state.eq_except_audit(&before),
        "rejected {} changed the state",
        cmd.kind()
    );
    err
}

fn issue_admin(id: &str, secret: &str) -> Command {
    Command::IssueAdminToken {
        token_id: tok(id),
        secret_hash: hash_api_token(secret),
        display_name: "ops".into(),
        issued_at_ms: 1_000,
        expires_at_ms: Some(2_000),
        subject: None,
    }
}

#[test]
fn issue_lookup_revoke() {
    let mut s = State::new();
    assert_eq!(
        ok(&mut s, issue_admin("a1", "qa_secret")),
        CommandOutput::Done
    );
    let found = s.admin_token_by_hash(&hash_api_token("qa_secret")).unwrap();
    assert_eq!(found.token_id, tok("a1"));
    assert_eq!(found.display_name, "ops");
    assert!(found.is_valid_at(1_500));
    assert!(!found.is_valid_at(2_000), "expired at expires_at_ms");
    assert!(s.admin_token_by_hash(&hash_api_token("other")).is_none());
    // An admin token is not an API token, and the other way round.
    assert!(s.token_by_hash(&hash_api_token("qa_secret")).is_none());

    ok(
        &mut s,
        Command::IssueAdminToken {
            token_id: tok("a0"),
            secret_hash: hash_api_token("qa_forever"),
            display_name: "bootstrap".into(),
            issued_at_ms: 5,
            expires_at_ms: None,
            subject: None,
        },
    );
    let ids: Vec<&str> = s.admin_tokens().map(|t| t.token_id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1"], "listed in id order");
    assert!(s.admin_token(&tok("a0")).unwrap().is_valid_at(u64::MAX));

    assert_eq!(
        ok(
            &mut s,
            Command::RevokeAdminToken {
                token_id: tok("a1")
            }
        ),
        CommandOutput::Done
    );
    assert!(!s.admin_token(&tok("a1")).unwrap().is_valid_at(1_500));
    assert_eq!(
        ok(
            &mut s,
            Command::RevokeAdminToken {
                token_id: tok("a1")
            }
        ),
        CommandOutput::Unchanged,
        "revoking twice is idempotent"
    );
    assert!(s.admin_token(&tok("a0")).unwrap().is_valid_at(10));
    assert_eq!(s.admin_tokens().count(), 2, "revoked tokens stay listed");
}

#[test]
fn duplicates_and_bad_fields_are_rejected() {
    let mut s = State::new();
    ok(&mut s, issue_admin("a1", "qa_secret"));

    let e = rejected(&mut s, issue_admin("a1", "qa_other"));
    assert!(
        matches!(e, ApplyError::AlreadyExists(ref m) if m.contains("a1")),
        "{e}"
    );
    let e = rejected(&mut s, issue_admin("a2", "qa_secret"));
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");

    let mut bad = issue_admin("a2", "x");
    if let Command::IssueAdminToken { secret_hash, .. } = &mut bad {
        *secret_hash = "NOT-HEX".into();
    }
    let e = rejected(&mut s, bad);
    assert!(
        matches!(e, ApplyError::Invalid(ref m) if m.contains("secret_hash")),
        "{e}"
    );

    for name in ["", "   ", "a\u{7}b"] {
        let mut bad = issue_admin("a2", "y");
        if let Command::IssueAdminToken { display_name, .. } = &mut bad {
            *display_name = name.into();
        }
        let e = rejected(&mut s, bad);
        assert!(
            matches!(e, ApplyError::Invalid(ref m) if m.contains("display name")),
            "{name:?}: {e}"
        );
    }
    let mut bad = issue_admin("a2", "y");
    if let Command::IssueAdminToken { display_name, .. } = &mut bad {
        *display_name = "n".repeat(201);
    }
    assert!(matches!(rejected(&mut s, bad), ApplyError::Invalid(_)));

    let mut bad = issue_admin("a2", "y");
    if let Command::IssueAdminToken { expires_at_ms, .. } = &mut bad {
        *expires_at_ms = Some(1_000);
    }
    let e = rejected(&mut s, bad);
    assert!(
        matches!(e, ApplyError::Invalid(ref m) if m.contains("expires_at_ms")),
        "{e}"
    );

    let e = rejected(
        &mut s,
        Command::RevokeAdminToken {
            token_id: tok("nope"),
        },
    );
    assert!(
        matches!(e, ApplyError::NotFound(ref m) if m.contains("nope")),
        "{e}"
    );
}

/// A secret hash is unique across API tokens and admin tokens, so one secret can never
/// authenticate as both.
#[test]
fn a_secret_hash_is_unique_across_api_and_admin_tokens() {
    let mut s = State::new();
    let tenant = TenantId::new("acme").unwrap();
    let integration = IntegrationId::new("main").unwrap();
    let workspace = WorkspaceId::new("docs").unwrap();
    let principal = PrincipalId::new("alice").unwrap();
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(3);
    let key = quire_raft::MasterKey::generate(&mut rng);
    let sealed = key
        .seal(
            b"secret_notion_token",
            &quire_raft::seal::integration_aad("acme", "main"),
            &mut rng,
        )
        .unwrap();
    for cmd in [
        Command::CreateTenant {
            tenant: tenant.clone(),
            display_name: "Acme".into(),
        },
        Command::AddIntegration {
            tenant: tenant.clone(),
            integration: integration.clone(),
            display_name: "Main".into(),
            sealed_token: sealed,
            budget: Budget {
                requests_per_second: 3,
                burst: 10,
            },
        },
        Command::CreateWorkspace {
            tenant: tenant.clone(),
            workspace: workspace.clone(),
            display_name: "Docs".into(),
            integration,
        },
        Command::CreatePrincipal {
            tenant: tenant.clone(),
            principal: principal.clone(),
            display_name: "Alice".into(),
        },
        Command::GrantWorkspace {
            tenant: tenant.clone(),
            principal: principal.clone(),
            workspace: workspace.clone(),
        },
    ] {
        ok(&mut s, cmd);
    }
    let api = |id: &str, secret: &str| Command::IssueToken {
        tenant: tenant.clone(),
        principal: principal.clone(),
        workspace: workspace.clone(),
        token_id: tok(id),
        secret_hash: hash_api_token(secret),
        scopes: ["mcp:access".to_owned()].into_iter().collect(),
        issued_at_ms: 1,
        expires_at_ms: None,
    };
    ok(&mut s, api("t1", "shared-one"));
    let e = rejected(&mut s, issue_admin("a1", "shared-one"));
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");

    ok(&mut s, issue_admin("a2", "shared-two"));
    let e = rejected(&mut s, api("t2", "shared-two"));
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");

    // Ids live in separate namespaces: an admin token may share an API token's id.
    ok(&mut s, issue_admin("t1", "distinct"));
}

#[test]
fn the_number_of_admin_tokens_is_bounded() {
    let mut s = State::new();
    for n in 0..MAX_ADMIN_TOKENS {
        ok(
            &mut s,
            issue_admin(&format!("a{n}"), &format!("secret-{n}")),
        );
    }
    let e = rejected(&mut s, issue_admin("one-more", "secret-more"));
    assert!(matches!(e, ApplyError::LimitReached(_)), "{e}");
}

/// A state serialised before admin tokens existed (a snapshot from an older node) still
/// loads, with no admin tokens.
#[test]
fn a_state_without_admin_tokens_deserialises() {
    let mut s = State::new();
    ok(&mut s, issue_admin("a1", "qa_secret"));
    let mut json = serde_json::to_value(&s).unwrap();
    let object = json.as_object_mut().unwrap();
    assert!(object.remove("admin_tokens").is_some());
    assert!(object.remove("admin_token_index").is_some());
    let old: State = serde_json::from_value(json).unwrap();
    assert_eq!(old.admin_tokens().count(), 0);
    assert_eq!(old, State::new());

    let round: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(round, s);
}

fn as_admin(admin: &str, at_ms: u64, command: Command) -> Command {
    Command::AsAdmin {
        admin_token: tok(admin),
        at_ms,
        command: Box::new(command),
        node: 1,
        justification: None,
    }
}

fn create_tenant(id: &str) -> Command {
    Command::CreateTenant {
        tenant: TenantId::new(id).unwrap(),
        display_name: id.to_owned(),
    }
}

/// An admin command is authorised inside `apply`, against the state at its log index.
#[test]
fn admin_commands_are_authorised_at_their_log_index() {
    let mut s = State::new();
    ok(&mut s, issue_admin("a1", "qa_one")); // valid in [1_000, 2_000)
    ok(&mut s, issue_admin("a2", "qa_two"));

    assert_eq!(
        ok(&mut s, as_admin("a1", 1_500, create_tenant("acme"))),
        CommandOutput::Done
    );
    assert!(s.tenant(&TenantId::new("acme").unwrap()).is_some());

    // The inner command's own rejection comes through unchanged.
    let e = rejected(&mut s, as_admin("a1", 1_500, create_tenant("acme")));
    assert!(matches!(e, ApplyError::AlreadyExists(_)), "{e}");

    // Unknown, expired at `at_ms`, or revoked earlier in the log: refused, nothing changes.
    let e = rejected(&mut s, as_admin("ghost", 1_500, create_tenant("b")));
    assert!(
        matches!(e, ApplyError::Unauthorized(ref m) if m.contains("ghost")),
        "{e}"
    );
    let e = rejected(&mut s, as_admin("a1", 2_000, create_tenant("b")));
    assert!(matches!(e, ApplyError::Unauthorized(_)), "{e}");
    ok(
        &mut s,
        as_admin(
            "a2",
            1_500,
            Command::RevokeAdminToken {
                token_id: tok("a1"),
            },
        ),
    );
    let e = rejected(&mut s, as_admin("a1", 1_500, create_tenant("b")));
    assert!(matches!(e, ApplyError::Unauthorized(_)), "{e}");

    // Not nestable, and not for cluster initialisation.
    let e = rejected(
        &mut s,
        as_admin("a2", 1_500, as_admin("a2", 1_500, create_tenant("b"))),
    );
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");

    // The same log replayed gives the same state.
    let log = [
        issue_admin("a1", "qa_one"),
        as_admin("a1", 1_500, create_tenant("x")),
        Command::RevokeAdminToken {
            token_id: tok("a1"),
        },
        as_admin("a1", 1_500, create_tenant("y")),
    ];
    let run = || {
        let mut st = State::new();
        let results: Vec<_> = log.iter().map(|c| apply(&mut st, c)).collect();
        (st, results)
    };
    let (first, r1) = run();
    let (second, r2) = run();
    assert_eq!(first, second);
    assert_eq!(r1, r2);
    assert!(matches!(r1[3], Err(ApplyError::Unauthorized(_))));
    // Round trip through the log's encoding.
    let json = serde_json::to_string(&log[1]).unwrap();
    assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), log[1]);
}
