//! Three ControlPlanes in one process over an in-memory `RaftNetworkFactory`: the control
//! plane does not assume one node. Learners catch up through a snapshot (the leader's log is
//! purged), become voters, apply the same state, and followers refuse writes and linearizable
//! reads with the leader's id.

#![allow(
    clippy::unwrap_used,
    clippy::result_large_err,
    reason = "tests; openraft fixes the RPC error type"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quire_raft::command::Command;
use quire_raft::{
    ControlPlane, ControlPlaneConfig, NodeId, QuireRaft, ReadError, TenantId, TypeConfig,
    WriteError,
};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(20);

/// Routes RPCs straight to the target node's `Raft` handle.
#[derive(Clone, Default)]
struct Router(Arc<RwLock<BTreeMap<NodeId, QuireRaft>>>);

impl Router {
    fn add(&self, id: NodeId, raft: QuireRaft) {
        self.0.write().unwrap().insert(id, raft);
    }

    fn remove(&self, id: NodeId) {
        self.0.write().unwrap().remove(&id);
    }

    fn get(&self, id: NodeId) -> Option<QuireRaft> {
        self.0.read().unwrap().get(&id).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not in the router")]
struct NotRouted(NodeId);

struct Client {
    target: NodeId,
    router: Router,
}

impl Client {
    fn raft<E: std::error::Error>(&self) -> Result<QuireRaft, RPCError<NodeId, BasicNode, E>> {
        self.router
            .get(self.target)
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&NotRouted(self.target))))
    }
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Client {
        Client {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn config(dir: &TempDir, id: NodeId) -> ControlPlaneConfig {
    let mut c = ControlPlaneConfig::new(
        dir.path().join(format!("node-{id}")),
        id,
        "cluster-test",
        format!("node-{id}"),
    );
    // The leader snapshots often; the others never on their own in this test, so a snapshot
    // on a follower can only have come from the leader.
    c.snapshot_every_logs = if id == 1 { 10 } else { 10_000 };
    c
}

async fn open(dir: &TempDir, id: NodeId, router: &Router) -> ControlPlane {
    let cp = ControlPlane::open_with_network(config(dir, id), router.clone())
        .await
        .unwrap();
    router.add(id, cp.raft().clone());
    cp
}

fn create_tenant(n: usize) -> Command {
    Command::CreateTenant {
        tenant: TenantId::new(format!("tenant-{n}")).unwrap(),
        display_name: format!("Tenant {n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_followers_redirect() {
    let dir = TempDir::new().unwrap();
    let router = Router::default();

    let n1 = open(&dir, 1, &router).await;
    n1.bootstrap_single().await.unwrap();
    n1.wait_leader(DEADLINE).await.unwrap();
    for n in 0..30 {
        n1.write(create_tenant(n)).await.unwrap();
    }
    // The leader snapshots and purges its log, so new nodes must catch up from a snapshot.
    n1.raft()
        .wait(Some(DEADLINE))
        .metrics(|m| m.purged.is_some(), "leader purged its log")
        .await
        .unwrap();

    let n2 = open(&dir, 2, &router).await;
    let n3 = open(&dir, 3, &router).await;
    for id in [2, 3] {
        n1.raft()
            .add_learner(id, BasicNode::new(format!("node-{id}")), true)
            .await
            .unwrap();
    }
    n1.raft()
        .change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    for n in 30..35 {
        n1.write(create_tenant(n)).await.unwrap();
    }

    let leader_applied = n1.status().last_log_index;
    let want = n1.read(|s| s.clone()).await.unwrap();
    assert_eq!(want.tenant_count(), 35);
    for follower in [&n2, &n3] {
        follower
            .raft()
            .wait(Some(DEADLINE))
            .applied_index_at_least(leader_applied, "follower caught up")
            .await
            .unwrap();
        assert_eq!(follower.read_applied(|s| s.clone()), want);
        let status = follower.status();
        assert_eq!(status.leader, Some(1));
        assert!(!status.is_leader);
        assert_eq!(status.voters, vec![1, 2, 3]);
        let installed = follower.raft().metrics().borrow().snapshot;
        assert!(
            installed.is_some(),
            "follower {} caught up through a snapshot",
            status.node_id
        );
        // The installed snapshot is recorded (this follower never builds one itself).
        let stats = follower.snapshot_stats();
        assert!(stats.bytes > 0, "{stats:?}");
        assert_eq!(stats.built, 0, "{stats:?}");
        assert!(
            stats.last_index >= installed.map(|l| l.index),
            "{stats:?} {installed:?}"
        );
        follower.wait_leader(DEADLINE).await.unwrap();

        let err = follower.write(create_tenant(99)).await.unwrap_err();
        assert!(
            matches!(err, WriteError::NotLeader { leader: Some(1) }),
            "{err}"
        );
        let err = follower.read(|s| s.tenant_count()).await.unwrap_err();
        assert!(
            matches!(err, ReadError::NotLeader { leader: Some(1) }),
            "{err}"
        );
    }
    // The refused follower writes changed nothing anywhere.
    assert_eq!(n1.read(|s| s.clone()).await.unwrap(), want);

    for cp in [n3, n2, n1] {
        cp.shutdown().await.unwrap();
    }
}

/// Waits until some node of `nodes` is leader and ready; returns its index in `nodes`.
async fn leader_of(nodes: &[&ControlPlane]) -> usize {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for (i, cp) in nodes.iter().enumerate() {
            // Each wait is itself a wait on metrics with a deadline, not a sleep.
            if cp.wait_leader(Duration::from_millis(100)).await.is_ok() && cp.status().is_leader {
                return i;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader elected in time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_restarted_node_catches_up() {
    let dir = TempDir::new().unwrap();
    let router = Router::default();
    let n1 = open(&dir, 1, &router).await;
    n1.bootstrap_single().await.unwrap();
    n1.wait_leader(DEADLINE).await.unwrap();
    let n2 = open(&dir, 2, &router).await;
    let n3 = open(&dir, 3, &router).await;
    for id in [2, 3] {
        n1.raft()
            .add_learner(id, BasicNode::new(format!("node-{id}")), true)
            .await
            .unwrap();
    }
    n1.raft()
        .change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    for n in 0..5 {
        n1.write(create_tenant(n)).await.unwrap();
    }

    // The leader stops; the other two elect a new one and keep taking writes.
    router.remove(1);
    n1.shutdown().await.unwrap();
    let survivors = [&n2, &n3];
    let leader = survivors[leader_of(&survivors).await];
    for n in 5..10 {
        leader.write(create_tenant(n)).await.unwrap();
    }
    let want = leader.read(|s| s.clone()).await.unwrap();
    assert_eq!(want.tenant_count(), 10);

    // Node 1 restarts from its data dir and catches up with what it missed.
    let n1 = open(&dir, 1, &router).await;
    let target = leader.status().last_log_index;
    n1.raft()
        .wait(Some(DEADLINE))
        .applied_index_at_least(target, "restarted node caught up")
        .await
        .unwrap();
    assert_eq!(n1.read_applied(|s| s.clone()), want);
    assert_eq!(n1.status().leader, leader.status().leader);

    for cp in [n1, n2, n3] {
        cp.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_promote_remove_and_follower_read_index() {
    use quire_raft::membership::{MemberRole, MembershipError};

    let dir = TempDir::new().unwrap();
    let router = Router::default();
    let n1 = open(&dir, 1, &router).await;
    n1.bootstrap_single().await.unwrap();
    n1.wait_leader(DEADLINE).await.unwrap();
    n1.write(create_tenant(0)).await.unwrap();

    let n2 = open(&dir, 2, &router).await;
    let n3 = open(&dir, 3, &router).await;
    // A follower cannot change membership; the leader can, and a repeated join is a no-op.
    n1.join(2, "node-2").await.unwrap();
    n2.wait_leader(DEADLINE).await.unwrap();
    // Until node 2 has seen the new membership committed, openraft answers its join with
    // "change in progress" rather than "not the leader": wait for it to apply it.
    let index = n1.read_index(DEADLINE).await.unwrap();
    n2.wait_applied(index, DEADLINE).await.unwrap();
    let err = n2.join(3, "node-3").await.unwrap_err();
    assert!(
        matches!(err, MembershipError::NotLeader { leader: Some(1) }),
        "{err}"
    );
    n1.join(3, "node-3").await.unwrap();
    n1.join(3, "node-3").await.unwrap();
    let err = n1.join(3, "elsewhere").await.unwrap_err();
    assert!(matches!(err, MembershipError::Refused(_)), "{err}");
    let members = n1.members();
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(members.iter().all(|m| m.role == MemberRole::Voter));
    assert_eq!(n1.member_addr(3).as_deref(), Some("node-3"));

    // Read index: the leader names an index; a follower that applied it sees the write.
    n1.write(create_tenant(1)).await.unwrap();
    let index = n1.read_index(DEADLINE).await.unwrap();
    n3.wait_applied(index, DEADLINE).await.unwrap();
    assert_eq!(n3.read_applied(|s| s.tenant_count()), 2);
    let err = n3.read_index(DEADLINE).await.unwrap_err();
    assert!(
        matches!(err, ReadError::NotLeader { leader: Some(1) }),
        "{err}"
    );

    // Removing a node: it leaves the membership; the rest keep committing.
    n1.remove(3).await.unwrap();
    assert_eq!(
        n1.members().iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    n1.write(create_tenant(2)).await.unwrap();
    let err = n1.remove(9).await.unwrap_err();
    assert!(matches!(err, MembershipError::Refused(_)), "{err}");

    for cp in [n3, n2, n1] {
        cp.shutdown().await.unwrap();
    }
}
