//! Quire's data plane: ractor actors (node supervisor, tenant supervisors, workspace
//! sessions, per-integration Notion rate limiters) and the Notion API client (reqwest) with
//! its retry and backoff rules.
//!
//! Map: `call` (the types the HTTP front passes in), `notion::client` (HTTP, error objects,
//! Retry-After, 5xx retries, timeouts, size cap), `notion::pagination` (pure cursor
//! helpers), `limiter` (token bucket with fair per-session queues, deadlines, pauses after
//! 429/529, a handoff snapshot), `stats` (Notion requests by status, permit waits, per data plane),
//! `supervisor` (the actor tree and the [`supervisor::DataPlane`]
//! handle). Every request sent to Notion holds a permit from its integration's limiter.
//! Time is `tokio::time`, randomness a seeded ChaCha; no actor is registered by name.
//!
//! It must not know the HTTP front (axum, rmcp), protobuf or the control plane (tenants,
//! tokens and budgets arrive resolved in a `CallContext`).

pub mod call;
pub mod limiter;
pub mod notion;
pub mod stats;
pub mod supervisor;
