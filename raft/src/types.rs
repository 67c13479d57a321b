//! The openraft type configuration for Quire's control plane.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Command, CommandOutput};

/// A node id in the Raft group.
pub type NodeId = u64;

/// The async runtime openraft runs on: tokio, with the RNG openraft draws election timeouts
/// from seedable by [`crate::runtime::seed_runtime_rng`] (from OS entropy when never seeded,
/// as in production).
pub type QuireRuntime = crate::runtime::SeededRuntime;

/// The result of applying one log entry: the command's own result (a rejection is a result,
/// not a Raft failure). Blank and membership entries yield `Ok(CommandOutput::Done)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Result<CommandOutput, ApplyError>);

openraft::declare_raft_types!(
    /// Quire's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
        AsyncRuntime = QuireRuntime,
);

/// The Raft handle for this configuration.
pub type QuireRaft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors as openraft expects them.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
