//! The per-integration rate limiter under paused tokio time: rate, burst, fairness between
//! sessions, deadlines, queue bounds and pauses after 429/529.

use std::time::Duration;

use quire_actors::call::{Budget, CallError};
use quire_actors::limiter::{
    self, Limiter, LimiterArgs, LimiterConfig, LimiterMsg, LimiterSnapshot, TokenBucket,
};
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;
use tokio::time::Instant;

async fn start(budget: Budget, config: LimiterConfig) -> ActorRef<LimiterMsg> {
    let (actor, _) = Actor::spawn(None, Limiter, LimiterArgs::fresh("int-1", budget, config))
        .await
        .expect("limiter starts");
    actor
}

/// Spawns an acquire; the task yields the instant it was answered and the answer.
fn acquire_at(
    l: &ActorRef<LimiterMsg>,
    session: &str,
    deadline: Instant,
) -> JoinHandle<(Instant, Result<(), CallError>)> {
    let l = l.clone();
    let session = session.to_string();
    tokio::spawn(async move {
        let r = limiter::acquire(&l, &session, deadline).await;
        (Instant::now(), r)
    })
}

/// Waits (in simulated time) until the limiter has `n` waiters queued.
async fn wait_queued(l: &ActorRef<LimiterMsg>, n: usize) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let s = limiter::state(l).await.expect("limiter answers");
        if s.queued >= n {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "only {} queued, wanted {n}",
            s.queued
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn rate_and_burst_are_respected() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let tasks: Vec<_> = (0..20)
        .map(|i| acquire_at(&l, &format!("s{}", i % 3), deadline))
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        let (at, r) = t.await.unwrap();
        r.expect("granted");
        times.push(at.duration_since(t0));
    }
    times.sort();
    // A burst of 5 at once, then 3 per second.
    assert!(times[4] < Duration::from_millis(10), "{times:?}");
    assert!(times[5] >= Duration::from_millis(333), "{times:?}");
    for (i, t) in times.iter().enumerate() {
        // By time t at most 5 + 3t permits.
        let allowed = 5.0 + 3.0 * t.as_secs_f64();
        assert!((i + 1) as f64 <= allowed + 1e-6, "permit {i} at {t:?}");
    }
    let last = times[19];
    assert!(
        last >= Duration::from_secs(5) && last <= Duration::from_millis(5100),
        "{last:?}"
    );
    let s = limiter::state(&l).await.unwrap();
    assert_eq!((s.granted, s.rejected, s.queued), (20, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_busy_session_does_not_starve_another() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let busy: Vec<_> = (0..100).map(|_| acquire_at(&l, "busy", deadline)).collect();
    wait_queued(&l, 100 - 5).await;
    let asked = Instant::now();
    let (at, r) = acquire_at(&l, "quiet", deadline).await.unwrap();
    r.expect("quiet session granted");
    // One slot for the busy session, then the quiet one: at most ~2 slots of 333 ms.
    let waited = at.duration_since(asked);
    assert!(
        waited <= Duration::from_millis(700),
        "quiet waited {waited:?}"
    );
    let s = limiter::state(&l).await.unwrap();
    assert!(
        s.queued > 80,
        "the busy session is still mostly queued: {}",
        s.queued
    );
    for t in busy {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_too_near_is_refused_at_once() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    let far = Instant::now() + Duration::from_secs(60);
    let _queued: Vec<_> = (0..35).map(|_| acquire_at(&l, "a", far)).collect();
    wait_queued(&l, 30).await;
    let asked = Instant::now();
    let (at, r) = acquire_at(&l, "a", asked + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(at, asked, "answered without waiting");
    match r {
        Err(CallError::RateLimited {
            retry_after_seconds,
        }) => {
            // 30 ahead at 3/s: about 10 s.
            assert!(
                (9..=12).contains(&retry_after_seconds),
                "{retry_after_seconds}"
            );
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_passing_while_queued_is_answered() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    let far = Instant::now() + Duration::from_secs(60);
    for _ in 0..5 {
        limiter::acquire(&l, "a", far).await.unwrap();
    }
    let asked = Instant::now();
    let waiter = acquire_at(&l, "a", asked + Duration::from_secs(2));
    wait_queued(&l, 1).await;
    // Notion says 429: nothing for 10 s, past the waiter's deadline.
    limiter::pause(&l, Duration::from_secs(10));
    let (at, r) = waiter.await.unwrap();
    assert!(
        matches!(r, Err(CallError::RateLimited { retry_after_seconds }) if retry_after_seconds >= 1),
        "{r:?}"
    );
    let waited = at.duration_since(asked);
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses() {
    let cfg = LimiterConfig {
        queue_capacity: 6,
        per_session_capacity: 4,
    };
    let l = start(
        Budget {
            requests_per_second: 1,
            burst: 1,
        },
        cfg,
    )
    .await;
    let far = Instant::now() + Duration::from_secs(600);
    limiter::acquire(&l, "a", far).await.unwrap();
    let _a: Vec<_> = (0..4).map(|_| acquire_at(&l, "a", far)).collect();
    wait_queued(&l, 4).await;
    let (_, r) = acquire_at(&l, "a", far).await.unwrap();
    assert!(
        matches!(r, Err(CallError::RateLimited { .. })),
        "per-session bound: {r:?}"
    );
    let _b: Vec<_> = (0..2).map(|_| acquire_at(&l, "b", far)).collect();
    wait_queued(&l, 6).await;
    let (_, r) = acquire_at(&l, "c", far).await.unwrap();
    assert!(
        matches!(r, Err(CallError::RateLimited { .. })),
        "total bound: {r:?}"
    );
    let s = limiter::state(&l).await.unwrap();
    assert_eq!((s.queued, s.rejected), (6, 2));
}

#[tokio::test(start_paused = true)]
async fn a_pause_is_honoured() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    let far = Instant::now() + Duration::from_secs(60);
    limiter::acquire(&l, "a", far).await.unwrap();
    let paused_at = Instant::now();
    limiter::pause(&l, Duration::from_secs(5));
    let s = limiter::state(&l).await.unwrap();
    assert_eq!(s.tokens_micros, 0);
    assert!(
        s.paused_for.is_some_and(|d| d > Duration::from_secs(4)),
        "{s:?}"
    );
    let (at, r) = acquire_at(&l, "b", far).await.unwrap();
    r.unwrap();
    let waited = at.duration_since(paused_at);
    // The pause, then one token at 3/s (the bucket was emptied).
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    assert!(waited <= Duration::from_millis(5400), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn budget_changes_apply() {
    let l = start(
        Budget {
            requests_per_second: 1,
            burst: 1,
        },
        LimiterConfig::default(),
    )
    .await;
    l.send_message(LimiterMsg::SetBudget(Budget {
        requests_per_second: 10,
        burst: 2,
    }))
    .unwrap();
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(60);
    for _ in 0..11 {
        limiter::acquire(&l, "a", far).await.unwrap();
    }
    // 1 token carried over, then 10 at 10/s.
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took <= Duration::from_millis(1050),
        "{took:?}"
    );
    assert_eq!(
        limiter::state(&l).await.unwrap().budget.requests_per_second,
        10
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_carries_tokens_and_pause() {
    let now = Instant::now();
    let mut b = TokenBucket::new(Budget::default(), 5_000_000, now);
    assert!(b.try_take(now));
    b.pause(Duration::from_millis(1500), now);
    let snap = b.snapshot(now + Duration::from_millis(500));
    assert_eq!(
        snap,
        LimiterSnapshot {
            budget: Budget::default(),
            tokens_micros: 0,
            pause_remaining_ms: 1000
        }
    );
    let later = now + Duration::from_secs(10);
    let moved = TokenBucket::from_snapshot(&snap, later);
    assert_eq!(moved.paused_for(later), Some(Duration::from_secs(1)));
    assert_eq!(
        moved.wait_for(1, later),
        Duration::from_millis(1000) + Duration::from_micros(333_334)
    );
}

#[tokio::test(start_paused = true)]
async fn absurd_pauses_are_clamped_not_fatal() {
    let l = start(Budget::default(), LimiterConfig::default()).await;
    limiter::pause(&l, Duration::MAX);
    let s = limiter::state(&l).await.expect("limiter survived");
    let paused = s.paused_for.expect("paused");
    assert!(
        paused <= Duration::from_millis(limiter::MAX_PAUSE_MS),
        "{paused:?}"
    );
    assert!(paused >= Duration::from_secs(3599), "{paused:?}");
    let (_, r) = acquire_at(&l, "a", Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(CallError::RateLimited { retry_after_seconds }) if retry_after_seconds >= 3599),
        "{r:?}"
    );
}

/// What keeps a tenant supervisor from passivating: a pause left, then a bucket not full.
#[tokio::test(start_paused = true)]
async fn a_limiter_is_settled_once_its_pause_has_ended_and_its_bucket_refilled() {
    let budget = Budget {
        requests_per_second: 4,
        burst: 2,
    };
    let (l, _) = Actor::spawn(
        None,
        Limiter,
        LimiterArgs::restarted("int-1", budget, LimiterConfig::default()),
    )
    .await
    .expect("limiter starts");
    // Empty: two tokens at 4/s.
    let s = limiter::state(&l).await.unwrap();
    assert_eq!(s.settled_in(), Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        limiter::state(&l).await.unwrap().settled_in(),
        Duration::ZERO
    );
    // A 3 s pause empties the bucket: settled after the pause and the refill.
    limiter::pause(&l, Duration::from_secs(3));
    let s = limiter::state(&l).await.unwrap();
    assert!(s.paused_for.is_some());
    assert_eq!(s.settled_in(), Duration::from_millis(3_500));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        limiter::state(&l).await.unwrap().settled_in(),
        Duration::from_millis(500)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        limiter::state(&l).await.unwrap().settled_in(),
        Duration::ZERO
    );
    l.stop(None);
}
