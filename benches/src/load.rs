//! The load generators. Closed loop ([`run_closed_loop`]): N writers, each running its own [`Worker`] one operation
//! after another (the next starts when the previous one finished), for a warm-up and then a
//! measured window. Every operation that completes inside the measured window counts: its
//! latency goes into an HDR histogram (microseconds) and it counts as done or failed.
//!
//! Operations still in flight when the window closes are abandoned (their futures dropped)
//! and not counted, so a run takes warm-up + duration and no longer. Scenarios (Raft commits,
//! MCP calls, ...) only supply the workers.
//!
//! Open loop ([`run_open_loop`]): requests start on a fixed schedule (request `i` at
//! `i / rate` seconds) whatever the answers do, each on an idle worker of a pool whose size
//! caps the requests outstanding. A request's latency runs from its *intended* start, so
//! time spent queued behind slow answers (or behind a late scheduler) is counted, not hidden
//! (no coordinated omission). A request due when every worker is busy is not sent and
//! counts as dropped. Requests due inside the measured window are counted, including those
//! answered after it closes (the run waits for them up to the operation timeout).

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
    #[error("an open-loop rate must be above 0 and at most {MAX_RATE} requests/s, not {0}")]
    Rate(String),
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
    pub p999: u64,
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
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean().round() as u64,
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs ..= HISTOGRAM_MAX_US: bounds are constants, so this
    // cannot fail.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant histogram bounds")
}

/// `d` in whole microseconds, within the histogram's bounds.
pub(crate) fn micros(d: Duration) -> u64 {
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

/// Highest open-loop arrival rate, requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;

/// An open-loop run: how fast, how long, and how many requests may be outstanding (the
/// number of workers passed to [`run_open_loop`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoopSpec {
    /// Requests started per second.
    pub rate: f64,
    /// Requests due before this has passed are not counted.
    pub warmup: Duration,
    /// The measured window: requests due inside it are counted.
    pub duration: Duration,
    /// One request taking longer than this (from its intended start) counts as an error.
    pub op_timeout: Duration,
}

impl OpenLoopSpec {
    pub fn validate(&self) -> Result<(), LoadError> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(LoadError::Rate(self.rate.to_string()));
        }
        LoadSpec {
            warmup: self.warmup,
            duration: self.duration,
            op_timeout: self.op_timeout,
        }
        .validate()
    }
}

/// What one open-loop run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopResult {
    /// The arrival rate asked for, requests per second.
    pub target_rate: f64,
    /// Most requests outstanding at once (the worker pool).
    pub max_outstanding: usize,
    /// Length of the measured window, in seconds.
    pub measured_secs: f64,
    /// Requests due inside the window (sent or dropped).
    pub scheduled: u64,
    /// Requests due inside the window that succeeded.
    pub ok: u64,
    /// Requests due inside the window that failed or timed out.
    pub errors: u64,
    /// Requests due inside the window that were not sent: every worker was busy.
    pub dropped: u64,
    /// `ok` per second of the measured window.
    pub ok_per_sec: f64,
    /// Latency of successful requests from their intended start, in microseconds: waiting
    /// for a late scheduler counts.
    pub latency_us: Percentiles,
    /// Latency of successful requests from when they were actually sent: what a
    /// closed-loop client would have reported.
    pub service_latency_us: Percentiles,
    pub error_samples: Vec<String>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// One open-loop request's outcome: counted (due inside the window), its result, its
/// latency from the intended start and from when it was sent.
type Sent = (bool, Result<(), String>, Duration, Duration);

struct OpenTally {
    histogram: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl OpenTally {
    fn new() -> Self {
        OpenTally {
            histogram: new_histogram(),
            service: new_histogram(),
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
        }
    }

    fn record(&mut self, joined: Result<Sent, tokio::task::JoinError>) -> Result<(), LoadError> {
        let (counted, outcome, total, served) =
            joined.map_err(|e| LoadError::Task(e.to_string()))?;
        if counted {
            match outcome {
                Ok(()) => {
                    self.ok += 1;
                    self.histogram.saturating_record(micros(total));
                    self.service.saturating_record(micros(served));
                }
                Err(message) => {
                    self.errors += 1;
                    keep_sample(&mut self.error_samples, message);
                }
            }
        }
        Ok(())
    }
}

/// Runs `spec.rate` requests per second on a pool of `workers` (at most that many
/// outstanding), for `spec.warmup + spec.duration`, then waits (at most `spec.op_timeout`)
/// for the requests still outstanding.
pub async fn run_open_loop<W: Worker>(
    spec: &OpenLoopSpec,
    workers: Vec<W>,
) -> Result<OpenLoopResult, LoadError> {
    spec.validate()?;
    let pool = workers.len();
    if pool == 0 || pool > MAX_WRITERS {
        return Err(LoadError::Writers(pool));
    }
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<W>();
    for w in workers {
        // The receiver lives until the end of this function.
        let _ = idle_tx.send(w);
    }
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut tally = OpenTally::new();
    let (mut scheduled, mut dropped) = (0u64, 0u64);
    let mut i: u32 = 0;
    loop {
        // Multiplying (not adding intervals) keeps the schedule free of drift.
        let due = start + interval.saturating_mul(i);
        if due >= end || i == u32::MAX {
            break;
        }
        i += 1;
        tokio::time::sleep_until(due).await;
        let counted = due >= measure_from;
        if counted {
            scheduled += 1;
        }
        // Collect finished requests so the set does not grow with the run.
        while let Some(joined) = tasks.try_join_next() {
            tally.record(joined)?;
        }
        let Ok(mut worker) = idle_rx.try_recv() else {
            if counted {
                dropped += 1;
            }
            continue;
        };
        let idle_tx = idle_tx.clone();
        let op_timeout = spec.op_timeout;
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = tokio::time::timeout_at(due + op_timeout, worker.call()).await;
            let finished = Instant::now();
            let _ = worker.take_detail();
            // Back to the pool; a failed send means the run is over.
            let _ = idle_tx.send(worker);
            let outcome = match outcome {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {op_timeout:?}")),
            };
            (
                counted,
                outcome,
                finished.duration_since(due),
                finished.duration_since(sent),
            )
        });
    }
    while let Some(joined) = tasks.join_next().await {
        tally.record(joined)?;
    }
    let measured_secs = spec.duration.as_secs_f64();
    Ok(OpenLoopResult {
        target_rate: spec.rate,
        max_outstanding: pool,
        measured_secs,
        scheduled,
        ok: tally.ok,
        errors: tally.errors,
        dropped,
        ok_per_sec: tally.ok as f64 / measured_secs,
        latency_us: Percentiles::of(&tally.histogram),
        service_latency_us: Percentiles::of(&tally.service),
        error_samples: tally.error_samples,
        histogram: tally.histogram,
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

    fn open(rate: f64, warmup_ms: u64, duration_ms: u64) -> OpenLoopSpec {
        OpenLoopSpec {
            rate,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            op_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_schedule_and_counts_the_window() {
        // 100/s for 100 ms of warm-up and 1 s: requests due at 100, 110, ..., 1090 ms count.
        let r = run_open_loop(&open(100.0, 100, 1000), sleepers(4, 10, 0))
            .await
            .unwrap();
        assert_eq!(r.scheduled, 100);
        assert_eq!((r.ok, r.errors, r.dropped), (100, 0, 0));
        assert!((r.ok_per_sec - 100.0).abs() < 1e-9, "{}", r.ok_per_sec);
        assert!(
            (9_990..=10_010).contains(&r.latency_us.p50)
                && (9_990..=10_010).contains(&r.latency_us.p999),
            "{:?}",
            r.latency_us
        );
        assert_eq!(r.histogram.len(), 100);
    }

    /// A server that answers one request at a time, each in 20 ms.
    struct Serial {
        server: std::sync::Arc<tokio::sync::Mutex<()>>,
    }

    impl Worker for Serial {
        fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
            let server = self.server.clone();
            async move {
                let _busy = server.lock().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        }
    }

    fn serial(n: usize) -> Vec<Serial> {
        let server = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        (0..n)
            .map(|_| Serial {
                server: server.clone(),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_includes_the_queue_a_closed_loop_hides() {
        // Closed loop, one writer: the server looks like 20 ms per call.
        let closed = run_closed_loop(&spec(0, 200), serial(1)).await.unwrap();
        assert!(
            (19_980..=20_020).contains(&closed.latency_us.p999),
            "{:?}",
            closed.latency_us
        );
        // Open loop at 100/s against 50/s of capacity: request k (due at 10k ms) is
        // answered at 20(k+1) ms, so latencies grow 20, 30, ..., 210 ms.
        let r = run_open_loop(&open(100.0, 0, 200), serial(16))
            .await
            .unwrap();
        assert_eq!((r.scheduled, r.ok, r.dropped), (20, 20, 0));
        let h = &r.histogram;
        assert!((19_980..=20_020).contains(&h.min()), "{}", h.min());
        assert!((209_000..=211_000).contains(&h.max()), "{}", h.max());
        assert!(
            (109_000..=121_000).contains(&r.latency_us.p50),
            "{:?}",
            r.latency_us
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_drops_requests_and_the_run_waits_for_the_last_answers() {
        // Two workers, 35 ms per request, one due every 10 ms: due at 0 and 10 are sent,
        // 20 and 30 find both busy, 40 and 50 are sent, 60 and 70 dropped, 80 and 90 sent.
        let started = Instant::now();
        let r = run_open_loop(&open(100.0, 0, 100), sleepers(2, 35, 0))
            .await
            .unwrap();
        assert_eq!((r.scheduled, r.ok, r.errors, r.dropped), (10, 6, 0, 4));
        assert_eq!(r.max_outstanding, 2);
        // The request due at 90 ms answered at 125 ms.
        assert_eq!(Instant::now() - started, Duration::from_millis(125));
        assert!(
            (34_900..=35_100).contains(&r.latency_us.max),
            "{:?}",
            r.latency_us
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_timeouts_are_errors_counted_from_the_intended_start() {
        let mut s = open(10.0, 0, 1000);
        s.op_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let r = run_open_loop(&s, sleepers(100, 10_000, 0)).await.unwrap();
        // Due at 0, 100, ..., 900 ms; the last gives up at 1200 ms.
        assert_eq!(Instant::now() - started, Duration::from_millis(1200));
        assert_eq!((r.scheduled, r.ok, r.errors, r.dropped), (10, 0, 10, 0));
        assert!(r.error_samples[0].contains("no answer within 300ms"));
        // Failures are counted too.
        let r = run_open_loop(&open(100.0, 0, 100), sleepers(1, 1, 2))
            .await
            .unwrap();
        assert_eq!((r.ok, r.errors), (5, 5));
    }

    #[tokio::test]
    async fn bad_open_loop_specs_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_RATE * 2.0] {
            assert!(matches!(
                run_open_loop(&open(rate, 0, 10), sleepers(1, 1, 0)).await,
                Err(LoadError::Rate(_))
            ));
        }
        assert_eq!(
            run_open_loop(&open(10.0, 0, 10), Vec::<Sleeper>::new())
                .await
                .unwrap_err(),
            LoadError::Writers(0)
        );
    }
}
