//! The closed-loop load generator: N writers, each running its own [`Worker`] one operation
//! after another (the next starts when the previous one finished), for a warm-up and then a
//! measured window. Every operation that completes inside the measured window counts: its
//! latency goes into an HDR histogram (microseconds) and it counts as done or failed.
//!
//! Operations still in flight when the window closes are abandoned (their futures dropped)
//! and not counted, so a run takes warm-up + duration and no longer. Scenarios (Raft commits,
//! MCP calls, ...) only supply the workers.

use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Most concurrent writers one run may start.
pub const MAX_WRITERS: usize = 4096;
/// Longest warm-up or measured window.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Highest latency the histogram tells apart; slower operations are recorded as this value.
pub const HISTOGRAM_MAX_US: u64 = 120_000_000;
/// Distinct error messages kept per run (the rest are only counted).
pub const MAX_ERROR_SAMPLES: usize = 5;
/// Longest error message kept, in characters.
pub const MAX_ERROR_CHARS: usize = 300;
/// Pause after a failed operation, so that a writer facing a dead server does not spin.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// One writer's operation. `call` runs one operation to completion; `Err` carries a
/// message that says what went wrong (a status code, a timeout).
pub trait Worker: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// What the worker knows about the `call` that just finished beyond its result (asked
    /// once after each `call`). The default: no retries.
    fn take_detail(&mut self) -> OpDetail {
        OpDetail::default()
    }
}

/// Details of one operation a [`Worker`] may report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpDetail {
    /// Attempts retried inside the operation (e.g. after a 503 "retry shortly"). Their
    /// waits count in the operation's latency.
    pub retries: u64,
    /// When the operation was retried: how long its last attempt alone took (what the
    /// server spent once it admitted the request).
    pub last_attempt: Option<Duration>,
}

/// How long to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSpec {
    /// Operations completing before this has passed are not counted.
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// One operation taking longer than this counts as an error (and is abandoned).
    pub op_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("a load run needs 1 to {MAX_WRITERS} writers, not {0}")]
    Writers(usize),
    #[error("the measured window must be between 1 ms and {MAX_WINDOW:?}, not {0:?}")]
    Duration(Duration),
    #[error("the warm-up must be at most {MAX_WINDOW:?}, not {0:?}")]
    Warmup(Duration),
    #[error("the operation timeout must be between 1 ms and {MAX_WINDOW:?}, not {0:?}")]
    OpTimeout(Duration),
    #[error("a writer task failed: {0}")]
    Task(String),
}

impl LoadSpec {
    pub fn validate(&self) -> Result<(), LoadError> {
        let ms = Duration::from_millis(1);
        if self.duration < ms || self.duration > MAX_WINDOW {
            return Err(LoadError::Duration(self.duration));
        }
        if self.warmup > MAX_WINDOW {
            return Err(LoadError::Warmup(self.warmup));
        }
        if self.op_timeout < ms || self.op_timeout > MAX_WINDOW {
            return Err(LoadError::OpTimeout(self.op_timeout));
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub writers: usize,
    /// Length of the measured window, in seconds.
    pub measured_secs: f64,
    /// Operations that succeeded inside the window.
    pub ok: u64,
    /// Operations that failed (or timed out) inside the window.
    pub errors: u64,
    /// Retries inside the operations counted (see [`OpDetail::retries`]).
    pub retries: u64,
    /// `ok` per second of the measured window.
    pub ok_per_sec: f64,
    /// Latency of successful operations, in microseconds, retries included.
    pub latency_us: Percentiles,
    /// Latency of the last attempt of each successful operation, in microseconds: equal to
    /// `latency_us` when nothing was retried.
    pub attempt_latency_us: Percentiles,
    /// Up to [`MAX_ERROR_SAMPLES`] distinct error messages, in the order first seen.
    pub error_samples: Vec<String>,
    /// The successful operations' latencies (µs), for callers that want more than the
    /// percentiles.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// Percentiles of a latency histogram (all zero when it is empty).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean().round() as u64,
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs ..= HISTOGRAM_MAX_US: bounds are constants, so this
    // cannot fail.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant histogram bounds")
}

/// `d` in whole microseconds, within the histogram's bounds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HISTOGRAM_MAX_US)
}

struct WriterTally {
    histogram: Histogram<u64>,
    attempts: Histogram<u64>,
    ok: u64,
    errors: u64,
    retries: u64,
    error_samples: Vec<String>,
}

fn keep_sample(samples: &mut Vec<String>, message: String) {
    if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&message) {
        let message = if message.chars().count() > MAX_ERROR_CHARS {
            let cut: String = message.chars().take(MAX_ERROR_CHARS).collect();
            format!("{cut}...")
        } else {
            message
        };
        if !samples.contains(&message) {
            samples.push(message);
        }
    }
}

async fn drive<W: Worker>(
    mut worker: W,
    measure_from: Instant,
    end: Instant,
    op_timeout: Duration,
) -> WriterTally {
    let mut tally = WriterTally {
        histogram: new_histogram(),
        attempts: new_histogram(),
        ok: 0,
        errors: 0,
        retries: 0,
        error_samples: Vec::new(),
    };
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let op_deadline = started + op_timeout;
        let outcome = tokio::time::timeout_at(op_deadline.min(end), worker.call()).await;
        let finished = Instant::now();
        // The window is (measure_from, end]: exactly `duration` long.
        let counted = finished > measure_from && finished <= end;
        let detail = worker.take_detail();
        if counted {
            tally.retries += detail.retries;
        }
        let failed = match outcome {
            Ok(Ok(())) => {
                if counted {
                    let total = finished.duration_since(started);
                    tally.histogram.saturating_record(micros(total));
                    let attempt = detail.last_attempt.unwrap_or(total).min(total);
                    tally.attempts.saturating_record(micros(attempt));
                    tally.ok += 1;
                }
                false
            }
            Ok(Err(message)) => {
                if counted {
                    tally.errors += 1;
                    keep_sample(&mut tally.error_samples, message);
                }
                true
            }
            // Cut off by the end of the window: abandoned, not counted.
            Err(_) if op_deadline > end => break,
            Err(_) => {
                if counted {
                    tally.errors += 1;
                    keep_sample(
                        &mut tally.error_samples,
                        format!("no answer within {op_timeout:?}"),
                    );
                }
                true
            }
        };
        if failed {
            tokio::time::sleep_until((Instant::now() + ERROR_BACKOFF).min(end)).await;
        }
    }
    tally
}

/// Runs one worker per writer, closed loop, for `spec.warmup + spec.duration`.
pub async fn run_closed_loop<W: Worker>(
    spec: &LoadSpec,
    workers: Vec<W>,
) -> Result<LoadResult, LoadError> {
    spec.validate()?;
    let writers = workers.len();
    if writers == 0 || writers > MAX_WRITERS {
        return Err(LoadError::Writers(writers));
    }
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in workers {
        tasks.spawn(drive(worker, measure_from, end, spec.op_timeout));
    }
    let mut histogram = new_histogram();
    let mut attempts = new_histogram();
    let (mut ok, mut errors, mut retries) = (0, 0, 0);
    let mut error_samples = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        // Same bounds on both sides, so adding cannot fail.
        histogram
            .add(&tally.histogram)
            .map_err(|e| LoadError::Task(e.to_string()))?;
        attempts
            .add(&tally.attempts)
            .map_err(|e| LoadError::Task(e.to_string()))?;
        ok += tally.ok;
        errors += tally.errors;
        retries += tally.retries;
        for sample in tally.error_samples {
            keep_sample(&mut error_samples, sample);
        }
    }
    let measured_secs = spec.duration.as_secs_f64();
    Ok(LoadResult {
        writers,
        measured_secs,
        ok,
        errors,
        retries,
        ok_per_sec: ok as f64 / measured_secs,
        latency_us: Percentiles::of(&histogram),
        attempt_latency_us: Percentiles::of(&attempts),
        error_samples,
        histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Succeeds after `delay`, or fails every `fail_every`-th call.
    struct Sleeper {
        delay: Duration,
        fail_every: u64,
        n: u64,
        retries: u64,
    }

    impl Worker for Sleeper {
        /// One retry per call; the last attempt took 4 ms.
        fn take_detail(&mut self) -> OpDetail {
            OpDetail {
                retries: std::mem::replace(&mut self.retries, 0),
                last_attempt: Some(Duration::from_millis(4)),
            }
        }

        fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
            self.n += 1;
            self.retries += 1;
            let fail = self.fail_every != 0 && self.n.is_multiple_of(self.fail_every);
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                if fail { Err("boom".to_owned()) } else { Ok(()) }
            }
        }
    }

    fn spec(warmup_ms: u64, duration_ms: u64) -> LoadSpec {
        LoadSpec {
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            op_timeout: Duration::from_secs(5),
        }
    }

    fn sleepers(n: usize, delay_ms: u64, fail_every: u64) -> Vec<Sleeper> {
        (0..n)
            .map(|_| Sleeper {
                delay: Duration::from_millis(delay_ms),
                fail_every,
                n: 0,
                retries: 0,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn counts_only_the_measured_window() {
        // 10 ms per op, 4 writers, 100 ms warm-up then 1 s: ops completing at 110..=1100 ms
        // are counted, i.e. 100 per writer.
        let r = run_closed_loop(&spec(100, 1000), sleepers(4, 10, 0))
            .await
            .unwrap();
        assert_eq!(r.writers, 4);
        assert_eq!(r.ok, 400);
        assert_eq!(r.errors, 0);
        // Retries of warm-up operations are not counted either.
        assert_eq!(r.retries, 400);
        assert!(
            (3_990..=4_010).contains(&r.attempt_latency_us.p99),
            "{:?}",
            r.attempt_latency_us
        );
        assert!((r.ok_per_sec - 400.0).abs() < 1e-9, "{}", r.ok_per_sec);
        // Paused time: every op takes exactly 10 ms (the histogram rounds to 3 figures).
        assert!(
            (9_990..=10_010).contains(&r.latency_us.p50),
            "{:?}",
            r.latency_us
        );
        assert!(
            (9_990..=10_010).contains(&r.latency_us.max),
            "{:?}",
            r.latency_us
        );
        assert_eq!(r.histogram.len(), 400);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_counted_sampled_and_backed_off() {
        // Every 2nd op fails: ok 10 ms, fail 10 ms + 10 ms backoff -> 30 ms per pair.
        let r = run_closed_loop(&spec(0, 300), sleepers(2, 10, 2))
            .await
            .unwrap();
        assert_eq!(r.ok, 20);
        assert_eq!(r.errors, 20);
        assert_eq!(r.error_samples, vec!["boom".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_ops_time_out_and_in_flight_ops_are_abandoned() {
        let mut s = spec(0, 1000);
        s.op_timeout = Duration::from_millis(300);
        // Each op would take 10 s: three time out (300 ms each + backoff), the fourth is
        // cut off by the end of the window and not counted.
        let started = Instant::now();
        let r = run_closed_loop(&s, sleepers(1, 10_000, 0)).await.unwrap();
        assert_eq!(Instant::now() - started, Duration::from_millis(1000));
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors, 3);
        assert_eq!(r.latency_us, Percentiles::default());
        assert!(r.error_samples[0].contains("no answer within 300ms"));
    }

    #[tokio::test]
    async fn bad_specs_are_refused() {
        assert_eq!(
            run_closed_loop(&spec(0, 100), Vec::<Sleeper>::new())
                .await
                .unwrap_err(),
            LoadError::Writers(0)
        );
        assert!(matches!(
            run_closed_loop(&spec(0, 0), sleepers(1, 1, 0)).await,
            Err(LoadError::Duration(_))
        ));
        let mut s = spec(0, 10);
        s.op_timeout = Duration::ZERO;
        assert!(matches!(
            run_closed_loop(&s, sleepers(1, 1, 0)).await,
            Err(LoadError::OpTimeout(_))
        ));
    }

    #[test]
    fn error_samples_are_bounded_and_distinct() {
        let mut samples = Vec::new();
        for i in 0..20 {
            keep_sample(&mut samples, format!("e{}", i % 7));
            keep_sample(&mut samples, "x".repeat(1000));
        }
        assert_eq!(samples.len(), MAX_ERROR_SAMPLES);
        assert_eq!(samples.iter().filter(|s| s.starts_with('x')).count(), 1);
        assert!(
            samples
                .iter()
                .all(|s| s.chars().count() <= MAX_ERROR_CHARS + 3)
        );
    }
}
