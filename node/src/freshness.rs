//! How current this node's access rules are, which is what bounds revocation.
//!
//! A node authorizes agents against its applied state. To be sure that state holds every
//! revocation acknowledged so far, the node confirms it regularly with a linearizable read
//! barrier (the leader's read index, confirmed by a quorum, then applied locally): a barrier
//! that started at time `t` proves the state holds everything committed before `t`. The node
//! authorizes only while its latest confirmation started at most
//! `security.authz_max_staleness_ms` (S) ago — otherwise it runs a barrier first, and refuses
//! if none succeeds. The admin API acknowledges a revocation S after it committed. So once a
//! revocation is acknowledged at `c + S`, any node authorizing at `t >= c + S` has state
//! confirmed at or after `t - S >= c`: it holds the revocation. (Elapsed times are measured
//! on each node's monotonic clock; the bound assumes their rates agree, not their values.)

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use quire_raft::control::ReadError;

use crate::cluster::Router;

/// Tracks when this node last confirmed its state current.
pub struct Freshness {
    confirmed_at: Mutex<Option<Instant>>,
    max_staleness: Duration,
}

impl Freshness {
    /// Starts confirming every quarter of `max_staleness`, until `shutdown`.
    pub fn start(
        router: Router,
        max_staleness: Duration,
        shutdown: CancellationToken,
    ) -> std::sync::Arc<Self> {
        let this = std::sync::Arc::new(Self {
            confirmed_at: Mutex::new(None),
            max_staleness,
        });
        let me = this.clone();
        tokio::spawn(async move {
            let every = (max_staleness / 4).max(Duration::from_millis(10));
            loop {
                let _ = me.confirm(&router).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        this
    }

    /// The revocation bound.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Whether the applied state was confirmed current within the bound (no barrier run).
    pub fn is_fresh(&self) -> bool {
        let at = *self
            .confirmed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        at.is_some_and(|t| t.elapsed() <= self.max_staleness)
    }

    async fn confirm(&self, router: &Router) -> Result<(), ReadError> {
        let started = Instant::now();
        router.read(|_| ()).await?;
        let mut at = self
            .confirmed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if at.is_none_or(|t| t < started) {
            *at = Some(started);
        }
        Ok(())
    }

    /// Returns once the applied state is confirmed current within the bound, running a read
    /// barrier if the last confirmation is too old; fails if none succeeds.
    pub async fn ensure(&self, router: &Router) -> Result<(), ReadError> {
        if self.is_fresh() {
            return Ok(());
        }
        self.confirm(router).await
    }
}
