//! Quire's control plane: the replicated state model (tenants, workspaces, Notion
//! integrations with sealed tokens, principals and their hashed API tokens), the commands
//! that change it through a pure, deterministic `apply`, the openraft type configuration, and
//! the log and state-machine stores on sled.
//!
//! It must not know tonic, axum, rmcp or ractor: the network reaches it through openraft's
//! `RaftNetwork` traits, implemented in `quire-transport`.
