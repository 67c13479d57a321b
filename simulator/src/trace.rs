//! The application-level trace: one line per event, stamped with simulated time, never with
//! wall-clock time or openraft's own log lines. Its SHA-256 identifies a run: the same seed
//! and binary give the same bytes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Most trace lines kept (a run that would write more stops recording and says so).
pub const MAX_TRACE_LINES: usize = 2_000_000;

/// A shared, append-only trace. Cheap to clone; clones append to the same trace.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<TraceInner>>);

#[derive(Default)]
struct TraceInner {
    lines: Vec<String>,
    dropped: u64,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("lines", &self.lock().lines.len())
            .finish()
    }
}

impl Trace {
    fn lock(&self) -> MutexGuard<'_, TraceInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `event` by `who` at simulated time `at`.
    pub fn record(&self, at: Duration, who: &str, event: impl AsRef<str>) {
        let mut inner = self.lock();
        if inner.lines.len() >= MAX_TRACE_LINES {
            inner.dropped += 1;
            return;
        }
        let line = format!("{:>9} {:<8} {}", at.as_millis(), who, event.as_ref());
        inner.lines.push(line);
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole trace as text (one line per event, each ending in `\n`).
    pub fn text(&self) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(inner.lines.len() * 48);
        for line in &inner.lines {
            out.push_str(line);
            out.push('\n');
        }
        if inner.dropped > 0 {
            out.push_str(&format!(
                "trace truncated: {} more events not recorded\n",
                inner.dropped
            ));
        }
        out
    }

    /// The SHA-256 of [`Trace::text`], in hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }
}

/// The current simulated time inside a turmoil host (zero outside one).
pub fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_byte_of_the_trace() {
        let a = Trace::default();
        a.record(Duration::from_millis(5), "n1", "start");
        a.record(Duration::from_millis(7), "admin0", "n1 <- read");
        let b = Trace::default();
        b.record(Duration::from_millis(5), "n1", "start");
        b.record(Duration::from_millis(8), "admin0", "n1 <- read");
        assert_ne!(a.sha256(), b.sha256());
        assert_eq!(a.text().lines().count(), 2);
        assert!(
            a.text().starts_with("        5 n1       start\n"),
            "{}",
            a.text()
        );
        assert_eq!(a.sha256(), hex::encode(Sha256::digest(a.text().as_bytes())));
    }
}
