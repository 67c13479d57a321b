//! The node's side of the audit trail: a group-commit batcher. Tool calls and authorization
//! decisions hand their [`AuditEvent`]s to [`AuditLog`]; one task gathers whatever has
//! queued while the previous batches were committing (up to `limits.audit_max_batch`) and
//! proposes them as one `AppendAudit` command through the router, so many records share one
//! Raft commit (one fsync on a quorum). A few batches may be in flight at once.
//!
//! [`AuditLog::commit`] waits until its record is committed: a tool call answers only then,
//! and fails closed (`audit_unavailable`) if the record cannot be committed or the queue
//! (`limits.audit_queue_capacity`) is full. [`AuditLog::record`] queues without waiting, for
//! decisions whose outcome is already a refusal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use quire_actors::stats::Histogram;
use quire_raft::audit::AuditEvent;
use quire_raft::command::Command;

use crate::cluster::Router;

/// Batches committing at once.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Why an audit record was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The queue is full: the cluster is committing slower than events arrive.
    #[error("the audit queue of this node is full ({0} events); retry shortly")]
    QueueFull(usize),
    /// The batch could not be committed (no leader, or the node is stopping).
    #[error("the audit record could not be committed: {0}")]
    NotCommitted(String),
}

struct Pending {
    event: AuditEvent,
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// Counters, for tests and metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Events that failed to commit.
    pub failed: AtomicU64,
    timings: std::sync::Mutex<Timings>,
}

/// Batch sizes (committed batches) and commit latency (every batch).
#[derive(Debug)]
struct Timings {
    batch_sizes: Histogram,
    commit_seconds: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            batch_sizes: Histogram::new(&crate::metrics::BATCH_SIZE_BUCKETS),
            commit_seconds: Histogram::new(&crate::metrics::LATENCY_BUCKETS_SECONDS),
        }
    }
}

impl AuditStats {
    fn batch_done(&self, events: u64, committed: bool, took: std::time::Duration) {
        let mut t = self.timings.lock().unwrap_or_else(|p| p.into_inner());
        if committed {
            t.batch_sizes.observe(events as f64);
        }
        t.commit_seconds.observe(took.as_secs_f64());
    }

    /// Copies of the batch-size and commit-latency histograms.
    pub fn histograms(&self) -> (Histogram, Histogram) {
        let t = self.timings.lock().unwrap_or_else(|p| p.into_inner());
        (t.batch_sizes.clone(), t.commit_seconds.clone())
    }
}

/// The group-commit audit batcher of one node.
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    capacity: usize,
    /// Counters.
    pub stats: Arc<AuditStats>,
}

impl AuditLog {
    /// Starts the batcher; it stops with `shutdown`, failing whatever is still queued.
    pub fn start(
        router: Router,
        capacity: usize,
        max_batch: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(AuditStats::default());
        tokio::spawn(run(router, rx, max_batch.max(1), shutdown, stats.clone()));
        Self {
            tx,
            capacity,
            stats,
        }
    }

    /// Queues `event` and waits until it is committed.
    pub async fn commit(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send(Pending {
                event,
                done: Some(done),
            })
            .map_err(|_| AuditError::QueueFull(self.capacity))?;
        wait.await.unwrap_or_else(|_| {
            Err(AuditError::NotCommitted(
                "the node is shutting down".to_owned(),
            ))
        })
    }

    /// Queues `event` without waiting for its commit.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.tx
            .try_send(Pending { event, done: None })
            .map_err(|_| AuditError::QueueFull(self.capacity))
    }
}

async fn run(
    router: Router,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    shutdown: CancellationToken,
    stats: Arc<AuditStats>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = tokio::select! {
            () = shutdown.cancelled() => None,
            next = rx.recv() => next,
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let router = router.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (events, waiters): (Vec<AuditEvent>, Vec<_>) =
                batch.into_iter().map(|p| (p.event, p.done)).unzip();
            let n = events.len() as u64;
            let started = tokio::time::Instant::now();
            let result = router
                .write(Command::AppendAudit { events })
                .await
                .map(|_| ())
                .map_err(|e| AuditError::NotCommitted(e.to_string()));
            stats.batch_done(n, result.is_ok(), started.elapsed());
            match &result {
                Ok(()) => {
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats.events.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!("{n} audit events not committed: {e}");
                }
            }
            for done in waiters.into_iter().flatten() {
                let _ = done.send(result.clone());
            }
        });
    }
    // Stopping: whoever still waits learns that its record was not committed.
    rx.close();
    while let Ok(p) = rx.try_recv() {
        if let Some(done) = p.done {
            let _ = done.send(Err(AuditError::NotCommitted(
                "the node is shutting down".to_owned(),
            )));
        }
    }
}
