//! Quire's control plane: the replicated state model (tenants, workspaces, Notion
//! integrations with sealed tokens, principals and their hashed API tokens, JWT signing keys
//! and OpenID Connect providers, role bindings, delegations, the separation-of-duties policy
//! and its approval requests, node labels, tenants' residency and the shard map with its pure
//! placement planner in [`placement`]), the commands
//! that change it through a pure, deterministic `apply`, sealing of secrets under the master
//! key, the openraft type configuration and its seedable async runtime ([`runtime`]), the log
//! and state-machine stores written against a storage-engine trait ([`engine`]: sled in
//! production, a simulated disk with crash semantics and fault injection for the simulator),
//! and the [`ControlPlane`] handle that runs one node of the Raft group.
//!
//! It must not know tonic, axum, rmcp or ractor: the network reaches it through openraft's
//! `RaftNetworkFactory`, implemented in `quire-transport` and plugged in through
//! [`ControlPlane::open_with_network`] / [`ControlPlane::open_with`]. It reads no clock and
//! draws no randomness of its own: callers hand down a [`clock::Clock`] and a seeded RNG (the
//! runtime's RNG is seeded with [`runtime::seed_runtime_rng`]); only the sled engine, used in
//! production, starts threads and reads the real clock inside sled.

pub mod approvals;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod command;
pub mod control;
pub mod delegation;
pub mod engine;
pub mod handoff;
pub mod ids;
pub mod jwt_keys;
pub mod membership;
pub mod network;
pub mod placement;
pub mod rbac;
pub mod runtime;
pub mod seal;
pub mod sessions;
pub mod state;
pub mod store;
pub mod templates;
pub mod types;
pub mod usage;

pub use command::{ApplyError, Command, CommandOutput, apply, apply_at};
pub use control::{
    ControlError, ControlPlane, ControlPlaneConfig, ControlStatus, ReadError, WriteError,
};
pub use engine::{
    EngineError, EngineTree, SimDisk, SimDiskStats, SimEngine, SimFaults, SledEngine,
    StorageEngine, WriteBatch,
};
pub use ids::{IdError, IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId};
pub use network::NoPeers;
pub use rbac::{Permission, Role, RoleScope, Subject, authorize};
pub use runtime::{SeededRuntime, seed_runtime_rng};
pub use seal::{KeyError, MasterKey, SealError, SealedSecret, hash_api_token};
pub use state::{ApiToken, Budget, ClusterInfo, Integration, Principal, State, Tenant, Workspace};
pub use store::OpenError;
pub use types::{CommandResponse, NodeId, QuireRaft, QuireRuntime, TypeConfig};
