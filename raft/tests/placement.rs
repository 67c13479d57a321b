//! Placement through `apply`: node labels, tenants' residency and the shard map, with the
//! epoch fence that lets only one of two racing planners win.

#![allow(clippy::unwrap_used, reason = "tests")]

use quire_raft::command::{Command, CommandOutput, apply, required_permission};
use quire_raft::placement::{
    Liveness, NodeLabels, PlanConfig, Residency, ShardMove, occupied_shards, plan, shard_of,
    tenant_key,
};
use quire_raft::{ApplyError, Permission, RoleScope, State, TenantId};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn labels(region: &str) -> NodeLabels {
    NodeLabels {
        region: region.into(),
        zone: Some("z1".into()),
        capacity: 100,
    }
}

fn eu() -> Residency {
    Residency {
        allowed_regions: ["eu-west".to_owned(), "eu-central".to_owned()].into(),
        preferred_region: Some("eu-west".into()),
    }
}

fn ok(state: &mut State, cmd: Command) -> CommandOutput {
    apply(state, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()))
}

fn rejected(state: &mut State, cmd: Command) -> ApplyError {
    let before = state.clone();
    let e = apply(state, &cmd).unwrap_err();
    assert_eq!(
        *state,
        before,
        "a rejected {} changed the state",
        cmd.kind()
    );
    e
}

const CFG: PlanConfig = PlanConfig {
    max_moves_per_round: 1_000,
    suspect_after_ms: 5_000,
    grace_ms: 30_000,
};

#[test]
fn node_labels_are_validated_and_idempotent() {
    let mut s = State::new();
    let set = |node, l| Command::SetNodeLabels { node, labels: l };
    assert_eq!(ok(&mut s, set(1, labels("eu-west"))), CommandOutput::Done);
    assert_eq!(
        ok(&mut s, set(1, labels("eu-west"))),
        CommandOutput::Unchanged
    );
    assert_eq!(s.placement().nodes[&1], labels("eu-west"));
    assert!(matches!(
        rejected(&mut s, set(2, labels("EU_West"))),
        ApplyError::Invalid(_)
    ));
    let mut heavy = labels("eu-west");
    heavy.capacity = 0;
    rejected(&mut s, set(2, heavy));
    // Only a node sets its own labels: never as an admin command, and the transport checks
    // the node it speaks for.
    assert!(required_permission(&s, &set(1, labels("x"))).is_err());
    assert_eq!(set(3, labels("x")).speaks_for_node(), Some(3));
    let once = Command::Once {
        request_id: "r1".into(),
        command: Box::new(set(4, labels("x"))),
    };
    assert_eq!(once.speaks_for_node(), Some(4));
}

#[test]
fn residency_is_set_at_creation_or_later_and_goes_with_the_tenant() {
    let mut s = State::new();
    ok(
        &mut s,
        Command::CreateTenantIn {
            tenant: t("acme"),
            display_name: "Acme".into(),
            residency: eu(),
        },
    );
    assert_eq!(s.placement().residency_of(&t("acme")), eu());
    // A bad policy refuses the creation as a whole.
    let bad = Residency {
        allowed_regions: ["eu-west".to_owned()].into(),
        preferred_region: Some("us-east".into()),
    };
    rejected(
        &mut s,
        Command::CreateTenantIn {
            tenant: t("beta"),
            display_name: "Beta".into(),
            residency: bad.clone(),
        },
    );
    assert!(s.tenant(&t("beta")).is_none());
    rejected(
        &mut s,
        Command::SetTenantResidency {
            tenant: t("acme"),
            residency: bad,
        },
    );
    rejected(
        &mut s,
        Command::SetTenantResidency {
            tenant: t("nobody"),
            residency: eu(),
        },
    );
    assert_eq!(
        ok(
            &mut s,
            Command::SetTenantResidency {
                tenant: t("acme"),
                residency: eu(),
            }
        ),
        CommandOutput::Unchanged
    );
    ok(
        &mut s,
        Command::SetTenantResidency {
            tenant: t("acme"),
            residency: Residency::any(),
        },
    );
    assert!(s.placement().residency.is_empty());
    ok(
        &mut s,
        Command::SetTenantResidency {
            tenant: t("acme"),
            residency: eu(),
        },
    );
    ok(&mut s, Command::DeleteTenant { tenant: t("acme") });
    assert!(s.placement().residency.is_empty());
}

#[test]
fn residency_changes_need_system_configure_and_creation_tenants_create() {
    let s = State::new();
    let (perm, scope) = required_permission(
        &s,
        &Command::SetTenantResidency {
            tenant: t("acme"),
            residency: eu(),
        },
    )
    .unwrap();
    assert_eq!(
        (perm, scope),
        (Permission::SystemConfigure, RoleScope::Global)
    );
    let (perm, _) = required_permission(
        &s,
        &Command::CreateTenantIn {
            tenant: t("acme"),
            display_name: "Acme".into(),
            residency: eu(),
        },
    )
    .unwrap();
    assert_eq!(perm, Permission::TenantsCreate);
    // Tenant creation with a residency is held like any tenant creation.
    assert!(
        quire_raft::approvals::classify(
            &s,
            &Command::CreateTenantIn {
                tenant: t("acme"),
                display_name: "Acme".into(),
                residency: eu(),
            }
        )
        .is_some()
    );
    assert!(required_permission(&s, &Command::ApplyPlacement { moves: Vec::new() }).is_err());
}

#[test]
fn a_planned_round_applies_once_and_a_stale_one_is_refused() {
    let mut s = State::new();
    ok(
        &mut s,
        Command::SetNodeLabels {
            node: 1,
            labels: labels("eu-west"),
        },
    );
    ok(
        &mut s,
        Command::SetNodeLabels {
            node: 2,
            labels: labels("us-east"),
        },
    );
    ok(
        &mut s,
        Command::CreateTenantIn {
            tenant: t("acme"),
            display_name: "Acme".into(),
            residency: eu(),
        },
    );
    ok(
        &mut s,
        Command::CreateTenant {
            tenant: t("free"),
            display_name: "Free".into(),
        },
    );
    let occupied = occupied_shards(&s);
    assert_eq!(occupied.len(), 2);
    let live = Liveness {
        last_seen_ms: [(1, 0), (2, 0)].into(),
    };
    let p1 = plan(s.placement(), &occupied, &live, 0, &CFG);
    let p2 = plan(s.placement(), &occupied, &live, 0, &CFG);
    assert_eq!(p1.moves.len(), 2);
    ok(
        &mut s,
        Command::ApplyPlacement {
            moves: p1.moves.clone(),
        },
    );
    let acme = shard_of(&eu(), &tenant_key(&t("acme")));
    assert_eq!(s.placement().owner(&acme).node, Some(1));
    assert_eq!(s.placement().owner(&acme).epoch, 1);
    // The second planner read the same epochs: every move is stale, nothing changes.
    assert!(matches!(
        rejected(&mut s, Command::ApplyPlacement { moves: p2.moves }),
        ApplyError::Conflict(_)
    ));
    // A move outside the residency is refused whole, even by a planner that read the right
    // epoch.
    let e = rejected(
        &mut s,
        Command::ApplyPlacement {
            moves: vec![ShardMove {
                shard: acme.clone(),
                from: Some(1),
                to: Some(2),
                expected_epoch: 1,
            }],
        },
    );
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    rejected(&mut s, Command::ApplyPlacement { moves: Vec::new() });
    // The placement survives the state's own encoding (JSON map keys are shard names).
    let text = serde_json::to_string(&s).unwrap();
    let back: State = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    assert!(
        plan(s.placement(), &occupied, &live, 0, &CFG)
            .moves
            .is_empty(),
        "a settled map plans no moves"
    );
}
