//! `Command::Once`: a request retried after a lost answer is applied once, and its retry gets
//! the first attempt's result.

#![allow(clippy::unwrap_used, reason = "tests")]

use quire_raft::command::{ApplyError, Command, CommandOutput, apply};
use quire_raft::ids::TenantId;
use quire_raft::state::{MAX_REMEMBERED_REQUESTS, State};

fn create(tenant: &str) -> Command {
    Command::CreateTenant {
        tenant: TenantId::new(tenant).unwrap(),
        display_name: tenant.into(),
    }
}

fn once(id: &str, cmd: Command) -> Command {
    Command::Once {
        request_id: id.into(),
        command: Box::new(cmd),
    }
}

#[test]
fn a_retried_request_is_applied_once_and_answers_as_the_first_time() {
    let mut state = State::new();
    assert_eq!(
        apply(&mut state, &once("r1", create("acme"))),
        Ok(CommandOutput::Done)
    );
    let after_first = state.clone();
    // The retry: same id, same command. Without the id it would say AlreadyExists.
    assert_eq!(
        apply(&mut state, &once("r1", create("acme"))),
        Ok(CommandOutput::Done)
    );
    assert_eq!(state, after_first);
    // A new request for the same tenant is a new application, refused as usual.
    assert!(matches!(
        apply(&mut state, &once("r2", create("acme"))),
        Err(ApplyError::AlreadyExists(_))
    ));
    // A rejection is remembered too: its retry is rejected the same way.
    assert!(matches!(
        apply(&mut state, &once("r2", create("acme"))),
        Err(ApplyError::AlreadyExists(_))
    ));
    assert_eq!(state.tenant_count(), 1);
}

#[test]
fn bad_ids_and_nesting_are_refused_and_change_nothing() {
    let mut state = State::new();
    for id in ["", "UPPER", "has space", &"x".repeat(65)] {
        assert!(
            matches!(
                apply(&mut state, &once(id, create("a"))),
                Err(ApplyError::Invalid(_))
            ),
            "{id:?}"
        );
    }
    assert!(matches!(
        apply(&mut state, &once("outer", once("inner", create("a")))),
        Err(ApplyError::Invalid(_))
    ));
    assert_eq!(state, State::new());
}

#[test]
fn the_oldest_results_are_forgotten_beyond_the_bound() {
    let mut state = State::new();
    for n in 0..MAX_REMEMBERED_REQUESTS + 5 {
        let _ = apply(
            &mut state,
            &once(
                &format!("r{n}"),
                Command::RevokeAdminToken {
                    token_id: quire_raft::ids::TokenId::new("none").unwrap(),
                },
            ),
        );
    }
    assert_eq!(state.requests().len(), MAX_REMEMBERED_REQUESTS);
    assert!(state.requests().result("r0").is_none());
    assert!(
        state
            .requests()
            .result(&format!("r{}", MAX_REMEMBERED_REQUESTS + 4))
            .is_some()
    );
}

#[test]
fn a_state_without_requests_still_loads() {
    let mut state = State::new();
    apply(&mut state, &create("acme")).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&state).unwrap();
    json.as_object_mut().unwrap().remove("requests");
    let loaded: State = serde_json::from_value(json).unwrap();
    assert_eq!(loaded, state);
}
