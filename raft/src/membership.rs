//! Membership of the Raft group as the rest of Quire sees it: who the members are, adding a
//! node (learner first, voter once caught up), removing one, and the read-index protocol a
//! follower uses to serve a linearizable read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::control::{ControlError, ControlPlane, ReadError};
use crate::types::NodeId;

/// How long adding a learner may take to catch up before the join fails.
pub const JOIN_CATCH_UP_TIMEOUT_MS: u64 = 60_000;

/// A member's role in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One member of the group, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// The address its peers reach it at.
    pub addr: String,
    pub role: MemberRole,
    /// The last log index the leader knows it holds (known only on the leader).
    pub matched_index: Option<u64>,
}

/// A membership change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// This node is not the leader; ask `leader`.
    #[error("not the leader (leader: {leader:?}); retry on the leader")]
    NotLeader { leader: Option<NodeId> },
    /// The change is not allowed (e.g. removing the last voter, an unknown node).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// openraft failed, or the change did not finish in time.
    #[error("raft: {0}")]
    Raft(String),
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MembershipError::Refused(c.to_string())
        }
        other => MembershipError::Raft(other.to_string()),
    }
}

impl ControlPlane {
    /// Whether this node has ever been part of a group (its log or vote is not empty).
    pub async fn is_initialized(&self) -> Result<bool, ControlError> {
        self.raft()
            .is_initialized()
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))
    }

    /// Initialises a new group with a fixed member list (every node of a statically
    /// configured cluster may call this with the same list; only the first call counts).
    pub async fn bootstrap_members(
        &self,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<(), ControlError> {
        if !members.contains_key(&self.config().node_id) {
            return Err(ControlError::Raft(format!(
                "the member list does not name this node ({})",
                self.config().node_id
            )));
        }
        if self.is_initialized().await? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft().initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ControlError::Raft(e.to_string())),
        }
    }

    /// The members of the group in the configuration this node has applied or seen.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                matched_index: if *id == m.id {
                    m.last_log_index
                } else {
                    replication
                        .get(id)
                        .and_then(|l| l.as_ref().map(|l| l.index))
                },
            })
            .collect()
    }

    /// The peer address of member `id`, if it is a member.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        self.members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.addr)
    }

    /// Whether `id` is a voter of the configuration the group is heading to: the last half of
    /// a joint configuration, or the one configuration when there is no change under way.
    /// (`members()` reports the voters of both halves; a node being removed is still a voter
    /// of the outgoing half, but not a member of where the group is going.)
    pub fn is_settled_voter(&self, id: NodeId) -> bool {
        let m = self.raft().metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_joint_config()
            .last()
            .is_some_and(|voters| voters.contains(&id))
    }

    /// Adds `id` as a learner, waits until it has caught up, then makes it a voter. A node
    /// that is already a voter of the configuration the group is heading to, at the same
    /// address, is left as it is; one that is only a voter of the outgoing half of a joint
    /// configuration (an interrupted removal) is made a voter again. Leader only.
    pub async fn join(&self, id: NodeId, addr: &str) -> Result<(), MembershipError> {
        if let Some(existing) = self.members().into_iter().find(|m| m.id == id) {
            if existing.addr != addr {
                return Err(MembershipError::Refused(format!(
                    "node {id} is already a member at {}, not {addr}; remove it first",
                    existing.addr
                )));
            }
            if existing.role == MemberRole::Voter && self.is_settled_voter(id) {
                return Ok(());
            }
        }
        let added = tokio::time::timeout(
            Duration::from_millis(JOIN_CATCH_UP_TIMEOUT_MS),
            self.raft()
                .add_learner(id, BasicNode::new(addr.to_owned()), true),
        )
        .await
        .map_err(|_| MembershipError::Raft(format!("node {id} did not catch up in time")))?;
        added.map_err(membership_error)?;
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Removes `id` from the group (voter or learner). Leader only. Refuses to remove the
    /// last voter, and refuses to remove the leader itself: openraft 0.9 has no leadership
    /// transfer, and a leader that drives its own removal through a joint configuration
    /// breaks its engine's invariant (the simulator caught it). Stop the leader instead; the
    /// new leader then removes it.
    pub async fn remove(&self, id: NodeId) -> Result<(), MembershipError> {
        if id == self.config().node_id {
            return Err(MembershipError::Refused(format!(
                "node {id} is the leader and cannot remove itself; stop it (a new leader is \
                 elected within a few election timeouts), then remove it through any node"
            )));
        }
        let members = self.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            return Err(MembershipError::Refused(format!(
                "node {id} is not a member"
            )));
        };
        if member.role == MemberRole::Voter {
            let voters = members
                .iter()
                .filter(|m| m.role == MemberRole::Voter)
                .count();
            if voters <= 1 {
                return Err(MembershipError::Refused(format!(
                    "node {id} is the last voter; a cluster cannot remove its last voter"
                )));
            }
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        self.raft()
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Leader side of a read index: confirms leadership with a quorum and returns the log
    /// index a reader must have applied before reading.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        let confirmed = tokio::time::timeout(timeout, self.raft().ensure_linearizable())
            .await
            .map_err(|_| ReadError::Timeout)?;
        match confirmed {
            Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReadError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ReadError::Raft(e.to_string())),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReadError> {
        if index == 0 {
            return Ok(());
        }
        self.raft()
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "the read index to be applied")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => ReadError::Timeout,
                other => ReadError::Raft(other.to_string()),
            })
    }
}
