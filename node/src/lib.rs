//! The `quire` binary's library: configuration, CLI, wiring, and the HTTP front (MCP
//! endpoint, health). The only crate that wires sled, tonic, ractor and rmcp together.

pub mod admin;
pub mod app;
pub mod audit_log;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_check;
pub mod ctl;
pub mod data_dir;
pub mod drain;
pub mod forward;
pub mod freshness;
pub mod handoff;
pub mod http;
pub mod https;
pub mod init;
pub mod jwt;
pub mod keys;
pub mod local_cluster;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod nodes_api;
pub mod oidc;
pub mod placement;
pub mod restore;
pub mod sandbox;
pub mod serve;
pub mod sessions;
pub mod tools;
