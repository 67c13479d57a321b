//! Quire's data plane: ractor actors (node supervisor, tenant supervisors, workspace
//! sessions, per-integration Notion rate limiters) and the Notion API client (reqwest) with
//! its retry and backoff rules.
//!
//! It must not know the HTTP front (axum, rmcp) or protobuf.

pub mod call;
pub mod limiter;
pub mod notion;
pub mod supervisor;
