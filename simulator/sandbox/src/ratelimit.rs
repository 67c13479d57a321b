//! Per-integration token bucket and the exact one-second sliding window behind the stats.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

/// Notion's documented budget: about 3 requests per second on average, with short bursts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    /// Refill rate of the bucket.
    pub requests_per_second: f64,
    /// Bucket size: how many requests may arrive at once after a quiet spell.
    pub capacity: u32,
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            requests_per_second: 3.0,
            capacity: 10,
        }
    }
}

/// Upper bound for `--rate-limit N`: above this the limiter is meaningless.
pub const MAX_REQUESTS_PER_SECOND: f64 = 1_000_000.0;

/// Parses `off` (no rate limit) or a positive number of requests per second (capacity stays
/// at the default 10; set `capacity` afterwards for `--burst`).
pub fn parse_rate_limit(text: &str) -> Result<Option<RateLimitConfig>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let rate: f64 = text.parse().map_err(|_| {
        format!("rate limit must be `off` or a number of requests per second, got `{text}`")
    })?;
    if !rate.is_finite() || rate <= 0.0 || rate > MAX_REQUESTS_PER_SECOND {
        return Err(format!(
            "rate limit must be above 0 and at most {MAX_REQUESTS_PER_SECOND} requests per second, got `{text}`"
        ));
    }
    Ok(Some(RateLimitConfig {
        requests_per_second: rate,
        ..RateLimitConfig::default()
    }))
}

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(config: RateLimitConfig, now: Instant) -> TokenBucket {
        let rate = if config.requests_per_second.is_finite() && config.requests_per_second > 0.0 {
            config.requests_per_second.min(MAX_REQUESTS_PER_SECOND)
        } else {
            RateLimitConfig::default().requests_per_second
        };
        let capacity = f64::from(config.capacity.max(1));
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token, or says how many whole seconds (at least 1) until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if now > self.last {
            self.last = now;
        }
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = ((1.0 - self.tokens) / self.rate).ceil();
            // Bounded by 1/rate with rate > 0; the cast saturates.
            Err((wait_s as u64).max(1))
        }
    }
}

/// Timestamps of accepted requests in the last second, and the most ever seen at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlidingWindow {
    stamps: VecDeque<Instant>,
    max: u64,
}

impl SlidingWindow {
    pub fn record(&mut self, now: Instant) {
        while let Some(front) = self.stamps.front() {
            if now.saturating_duration_since(*front) >= Duration::from_secs(1) {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
        self.stamps.push_back(now);
        self.max = self.max.max(self.stamps.len() as u64);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn reset(&mut self) {
        self.stamps.clear();
        self.max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rate_limit_accepts_off_and_numbers() {
        assert_eq!(parse_rate_limit("off"), Ok(None));
        assert_eq!(
            parse_rate_limit("5").map(|c| c.map(|c| c.requests_per_second)),
            Ok(Some(5.0))
        );
        assert!(parse_rate_limit("0").is_err());
        assert!(parse_rate_limit("fast").is_err());
        assert!(parse_rate_limit("NaN").is_err());
    }

    #[test]
    fn bucket_allows_capacity_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimitConfig {
                requests_per_second: 2.0,
                capacity: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        assert_eq!(b.try_take(t0), Err(1));
        assert_eq!(b.try_take(t0 + Duration::from_millis(500)), Ok(()));
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn window_counts_one_second() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        for i in 0..5 {
            w.record(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(w.max(), 5);
        w.record(t0 + Duration::from_millis(1450));
        assert_eq!(w.max(), 5);
    }
}
