//! Limits and timings of the peer transport, each with a named default.

use std::time::Duration;

use crate::error::TransportError;

/// Largest protobuf message either side encodes or decodes (a Raft batch or a snapshot
/// chunk; openraft's default snapshot chunk is 3 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most peer addresses one connection pool keeps channels for.
pub const MAX_PEER_ADDRESSES: usize = 256;
/// Longest peer address accepted (`host:port`).
pub const MAX_ADDR_CHARS: usize = 255;

/// Default: how long a TCP + TLS connect may take.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default: deadline of a non-Raft request (forward, read-index, remove, status), and the
/// server's bound on handling a Raft RPC.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default: bound on delivering one snapshot chunk.
pub const DEFAULT_SNAPSHOT_TIMEOUT_MS: u64 = 30_000;
/// Default: bound on a join (the learner catching up, then the promotion).
pub const DEFAULT_JOIN_TIMEOUT_MS: u64 = 60_000;
/// Default: requests in flight to one peer.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 64;
/// Default: first reconnect backoff after a failure.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 20;
/// Default: longest reconnect backoff.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 1_000;
/// Default: how long a request a fault filter dropped waits before failing.
pub const DEFAULT_DROP_WAIT_MS: u64 = 10;
/// Default: HTTP/2 keepalive ping interval. Short, so a connection into a peer whose link
/// went down fails within about interval + timeout (4 s) rather than leaving the calls
/// forwarded on it waiting for their whole deadline; one ping per connection every 2 s costs
/// nothing next to Raft's heartbeats.
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 2_000;
/// Default: how long a keepalive ping may go unanswered before the connection is dropped.
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 2_000;
/// Default: requests the server handles at once (all connections).
pub const DEFAULT_SERVER_MAX_CONCURRENT: usize = 256;
/// Default: requests the server handles at once on one connection.
pub const DEFAULT_SERVER_MAX_PER_CONNECTION: usize = 128;

/// Timings and bounds of the transport (client and server side). Deserializes from a
/// config file section; missing fields take their defaults, unknown ones are refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// TCP + TLS connect bound.
    pub connect_timeout_ms: u64,
    /// Deadline of non-Raft requests; the server's bound on handling a Raft RPC or a write.
    pub request_timeout_ms: u64,
    /// Bound on one snapshot chunk (client: min with openraft's deadline; server: handling).
    pub snapshot_timeout_ms: u64,
    /// Bound on a join (client deadline and leader-side catch-up + promotion).
    pub join_timeout_ms: u64,
    /// Requests in flight to one peer; more wait (within their deadline).
    pub max_in_flight_per_peer: usize,
    /// First reconnect backoff after a failed request; doubles per failure.
    pub backoff_base_ms: u64,
    /// Cap of the reconnect backoff.
    pub backoff_max_ms: u64,
    /// How long a request dropped by a fault filter waits before it fails.
    pub drop_wait_ms: u64,
    /// HTTP/2 keepalive ping interval (both sides).
    pub keepalive_interval_ms: u64,
    /// HTTP/2 keepalive ping timeout (both sides).
    pub keepalive_timeout_ms: u64,
    /// Requests the server handles at once over all connections.
    pub server_max_concurrent: usize,
    /// Requests the server handles at once on one connection.
    pub server_max_per_connection: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            snapshot_timeout_ms: DEFAULT_SNAPSHOT_TIMEOUT_MS,
            join_timeout_ms: DEFAULT_JOIN_TIMEOUT_MS,
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            drop_wait_ms: DEFAULT_DROP_WAIT_MS,
            keepalive_interval_ms: DEFAULT_KEEPALIVE_INTERVAL_MS,
            keepalive_timeout_ms: DEFAULT_KEEPALIVE_TIMEOUT_MS,
            server_max_concurrent: DEFAULT_SERVER_MAX_CONCURRENT,
            server_max_per_connection: DEFAULT_SERVER_MAX_PER_CONNECTION,
        }
    }
}

impl TransportConfig {
    /// Checks that every timing and bound is usable.
    pub fn validate(&self) -> Result<(), TransportError> {
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("snapshot_timeout_ms", self.snapshot_timeout_ms),
            ("join_timeout_ms", self.join_timeout_ms),
            ("backoff_base_ms", self.backoff_base_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("max_in_flight_per_peer", self.max_in_flight_per_peer as u64),
            ("server_max_concurrent", self.server_max_concurrent as u64),
            (
                "server_max_per_connection",
                self.server_max_per_connection as u64,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(TransportError::InvalidConfig(format!("{name} must be > 0")));
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(TransportError::InvalidConfig(format!(
                "backoff_max_ms ({}) must be >= backoff_base_ms ({})",
                self.backoff_max_ms, self.backoff_base_ms
            )));
        }
        // tokio's semaphore caps permits; keep far below it.
        if self.max_in_flight_per_peer > 1 << 20 || self.server_max_concurrent > 1 << 20 {
            return Err(TransportError::InvalidConfig(
                "max_in_flight_per_peer and server_max_concurrent must be <= 1048576".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub(crate) fn snapshot_timeout(&self) -> Duration {
        Duration::from_millis(self.snapshot_timeout_ms)
    }
    pub(crate) fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_ms)
    }
    pub(crate) fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }
    pub(crate) fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }

    /// The backoff after `failures` consecutive failures (≥ 1): base · 2^(failures−1), capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        let ms = self
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_with_defaults_and_validates() {
        let c: TransportConfig = serde_json::from_str(r#"{"request_timeout_ms": 1500}"#).unwrap();
        assert_eq!(c.request_timeout_ms, 1500);
        assert_eq!(c.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        c.validate().unwrap();
        assert!(serde_json::from_str::<TransportConfig>(r#"{"request_timeout": 1}"#).is_err());
        let zero = TransportConfig {
            max_in_flight_per_peer: 0,
            ..TransportConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("max_in_flight_per_peer")
        );
        let inverted = TransportConfig {
            backoff_base_ms: 500,
            backoff_max_ms: 100,
            ..TransportConfig::default()
        };
        assert!(inverted.validate().is_err());
    }
}
