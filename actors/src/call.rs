//! The data plane's entry point as the HTTP front sees it: a call to Notion on behalf of a
//! session, made through the tenant's actors and the integration's rate limiter.

use crate::notion::{NotionError, NotionToken};

/// An integration's request budget towards Notion: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Refill rate (Notion documents an average of 3 requests per second).
    pub requests_per_second: u32,
    /// Bucket capacity: the largest burst sent at once.
    pub burst: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            requests_per_second: 3,
            burst: 5,
        }
    }
}

/// The Notion integration a call goes out through, resolved by the caller from the control
/// plane (the token already unsealed).
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationSpec {
    pub id: String,
    pub token: NotionToken,
    pub budget: Budget,
}

/// Who a call is for.
#[derive(Debug, Clone, PartialEq)]
pub struct CallContext {
    pub tenant_id: String,
    pub workspace_id: String,
    /// The MCP session (or, without one, the principal): the unit of fair sharing in the
    /// rate limiter's queue.
    pub session_id: String,
    pub integration: IntegrationSpec,
}

/// Why a call did not produce Notion's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The integration's budget could not serve the call before its deadline (or its queue
    /// is full); nothing was sent to Notion.
    #[error(
        "the integration's Notion rate limit is exhausted; retry after {retry_after_seconds} s"
    )]
    RateLimited { retry_after_seconds: u64 },
    /// Notion answered with an error, or could not be reached.
    #[error(transparent)]
    Notion(#[from] NotionError),
    /// The actor that serves the call stopped or is restarting; the call was not completed.
    #[error("the data plane could not serve the call: {0}")]
    Unavailable(String),
    /// The node that sends the integration's requests could not take the call now (its
    /// shard is moving, or that node is unreachable, busy or stopping); the same call may
    /// succeed after `retry_after_seconds`.
    #[error("{why}; retry after {retry_after_seconds} s")]
    Retry {
        why: String,
        retry_after_seconds: u64,
    },
}

/// A check the caller attaches to a call (see `DataPlane::call_fenced`): run after each
/// rate-limit permit is granted and before the request is sent to Notion. `Err(why)` stops
/// the call with [`CallError::Unavailable`] and sends nothing — how a node that no longer
/// owns the integration's shard keeps its hands off Notion.
pub type Fence = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
