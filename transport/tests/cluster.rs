//! Three `ControlPlane`s in one process over the real gRPC transport with mutual TLS: a
//! group formed through `Join`, writes and forwarded writes applied everywhere, read-index
//! from a follower, failover when the leader's links are cut, catch-up after healing.
//! Every wait is on a condition with a deadline.

#![allow(
    clippy::unwrap_used,
    clippy::result_large_err,
    reason = "tests; openraft fixes the error types"
)]

use std::sync::Arc;
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use quire_raft::command::Command;
use quire_raft::{ApplyError, ControlPlane, ControlPlaneConfig, NodeId, TenantId, WriteError};
use quire_transport::tls::{generate_ca, install_crypto_provider, issue_node_cert};
use quire_transport::{
    FaultFilter, GrpcNetwork, LinkFaults, MemberRole, PeerClient, PeerServer, TlsMaterial,
    TransportConfig, TransportError, TransportSecurity,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

fn transport_config() -> TransportConfig {
    TransportConfig {
        request_timeout_ms: 3_000,
        join_timeout_ms: 15_000,
        backoff_max_ms: 200,
        ..TransportConfig::default()
    }
}

struct Node {
    id: NodeId,
    addr: String,
    control: Arc<ControlPlane>,
    client: PeerClient,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), TransportError>>,
}

impl Node {
    async fn start(
        dir: &TempDir,
        id: NodeId,
        security: TransportSecurity,
        faults: Arc<LinkFaults>,
    ) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let network = GrpcNetwork::new(id, transport_config(), security.clone())
            .unwrap()
            .with_fault_filter(faults as Arc<dyn FaultFilter>);
        let client = network.peer_client();
        let mut config = ControlPlaneConfig::new(
            dir.path().join(format!("node-{id}")),
            id,
            "transport-test",
            addr.clone(),
        );
        // Node 1 snapshots (and purges its log) often, so nodes that join later catch up
        // through InstallSnapshot over the wire; the others never snapshot on their own.
        config.snapshot_every_logs = if id == 1 { 10 } else { 10_000 };
        let control = Arc::new(
            ControlPlane::open_with_network(config, network)
                .await
                .unwrap(),
        );
        let server = PeerServer::new(
            control.clone(),
            transport_config(),
            security,
            client.clone(),
        )
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Node {
            id,
            addr,
            control,
            client,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(DEADLINE, &mut self.server).await;
        let _ = self.control.raft().shutdown().await;
    }
}

fn mtls(ca: &quire_transport::CaFiles, id: NodeId) -> TransportSecurity {
    let cert = issue_node_cert(&ca.cert_pem, &ca.key_pem, id, &["127.0.0.1".into()]).unwrap();
    TransportSecurity::MutualTls(TlsMaterial::from_node_cert(&ca.cert_pem, &cert).unwrap())
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name.to_string()).unwrap()
}

fn create(name: &str) -> Command {
    Command::CreateTenant {
        tenant: tenant(name),
        display_name: name.to_string(),
    }
}

/// Waits until every node has applied at least what `leader` has, then checks they agree.
async fn converge(leader: &Node, nodes: &[&Node]) {
    let index = leader.control.status().last_log_index;
    for n in nodes {
        n.control
            .raft()
            .wait(Some(DEADLINE))
            .applied_index_at_least(index, "caught up with the leader")
            .await
            .unwrap();
    }
    let want = leader.control.read_applied(|s| s.clone());
    for n in nodes {
        assert_eq!(n.control.read_applied(|s| s.clone()), want, "node {}", n.id);
    }
}

async fn wait_leader_is(node: &Node, pred: impl Fn(Option<NodeId>) -> bool + Send + 'static) {
    node.control
        .raft()
        .wait(Some(DEADLINE))
        .metrics(move |m| pred(m.current_leader), "expected leader")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_group_replicates_forwards_reads_and_fails_over() {
    install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let ca = generate_ca("transport-test").unwrap();
    let faults = Arc::new(LinkFaults::new(42));
    let n1 = Node::start(&dir, 1, mtls(&ca, 1), faults.clone()).await;
    let n2 = Node::start(&dir, 2, mtls(&ca, 2), faults.clone()).await;
    let n3 = Node::start(&dir, 3, mtls(&ca, 3), faults.clone()).await;

    n1.control.bootstrap_single().await.unwrap();
    n1.control.wait_leader(DEADLINE).await.unwrap();
    for i in 0..25 {
        n1.control
            .write(create(&format!("before-join-{i}")))
            .await
            .unwrap();
    }
    n1.control
        .raft()
        .wait(Some(DEADLINE))
        .metrics(|m| m.purged.is_some(), "leader purged its log")
        .await
        .unwrap();

    // Node 2 joins through the leader; node 3 through node 2, which relays to the leader.
    let members = n2.client.join(&n1.addr, 2, &n2.addr).await.unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.node_id == 2 && m.role == MemberRole::Voter)
    );
    let members = n3.client.join(&n2.addr, 3, &n3.addr).await.unwrap();
    let voters: Vec<NodeId> = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.node_id)
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
    // Joining again changes nothing.
    let again = n3.client.join(&n1.addr, 3, &n3.addr).await.unwrap();
    assert_eq!(again, members);

    // A write on the leader and a write forwarded by a follower apply on all three.
    n1.control.write(create("on-leader")).await.unwrap();
    let err = n2
        .client
        .forward_write(&n3.addr, &create("forwarded"))
        .await
        .unwrap_err();
    match err {
        TransportError::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(leader_id, Some(1));
            assert_eq!(leader_addr.as_deref(), Some(n1.addr.as_str()));
        }
        other => panic!("expected NotLeader, got {other}"),
    }
    let resp = n2
        .client
        .forward_write_to_leader(&n3.addr, &create("forwarded"))
        .await
        .unwrap();
    assert!(resp.0.is_ok(), "{resp:?}");
    // A command apply rejects comes back as the command's result, not a transport error.
    let resp = n3
        .client
        .forward_write(&n1.addr, &create("forwarded"))
        .await
        .unwrap();
    assert!(
        matches!(resp.0, Err(ApplyError::AlreadyExists(_))),
        "{resp:?}"
    );
    converge(&n1, &[&n1, &n2, &n3]).await;
    for n in [&n1, &n2, &n3] {
        assert!(
            n.control
                .read_applied(|s| s.tenant(&tenant("forwarded")).is_some())
        );
        assert_eq!(n.control.read_applied(|s| s.tenant_count()), 27);
    }
    for n in [&n2, &n3] {
        assert!(
            n.control.raft().metrics().borrow().snapshot.is_some(),
            "node {} caught up through a snapshot sent over the wire",
            n.id
        );
    }

    // Read-index from a follower: the leader confirms, the follower waits, then reads.
    let err = n3.client.read_index(&n2.addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::NotLeader {
                leader_id: Some(1),
                ..
            }
        ),
        "{err}"
    );
    let index = n3.client.read_index(&n1.addr).await.unwrap();
    assert!(index >= n1.control.status().applied_index.map(|_| 1));
    n1.control.write(create("read-after-write")).await.unwrap();
    n3.client.read_barrier(&n3.control, &n1.addr).await.unwrap();
    assert!(
        n3.control
            .read_applied(|s| s.tenant(&tenant("read-after-write")).is_some())
    );

    // Status over the wire.
    let status = n2.client.status(&n3.addr).await.unwrap();
    assert_eq!(status.node_id, 3);
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.leader_addr.as_deref(), Some(n1.addr.as_str()));
    assert_eq!(status.members.len(), 3);
    assert_eq!(status.state, "Follower");

    // Cut the leader off: 2 and 3 elect a new leader; the old one cannot commit.
    let old_term = n1.control.status().term;
    faults.isolate(1, &[2, 3]);
    wait_leader_is(&n2, |l| matches!(l, Some(2) | Some(3))).await;
    wait_leader_is(&n3, |l| matches!(l, Some(2) | Some(3))).await;
    let new_id = n2.control.status().leader.unwrap();
    let new = if new_id == 2 { &n2 } else { &n3 };
    new.control.wait_leader(DEADLINE).await.unwrap();
    assert!(new.control.status().term > old_term);
    let lost = n1
        .control
        .write_with_timeout(create("lost"), Duration::from_millis(1_500))
        .await
        .unwrap_err();
    assert!(
        matches!(lost, WriteError::Timeout | WriteError::NotLeader { .. }),
        "{lost}"
    );
    new.control.write(create("after-failover")).await.unwrap();

    // Heal: the old leader steps down, drops its uncommitted entry and catches up.
    faults.heal_all();
    wait_leader_is(&n1, move |l| l == Some(new_id)).await;
    converge(new, &[&n1, &n2, &n3]).await;
    for n in [&n1, &n2, &n3] {
        assert!(
            n.control
                .read_applied(|s| s.tenant(&tenant("after-failover")).is_some())
        );
        assert!(
            n.control
                .read_applied(|s| s.tenant(&tenant("lost")).is_none())
        );
    }
    // The old leader forwards to the new one now.
    let resp = n1
        .client
        .forward_write_to_leader(&n1.addr, &create("via-old-leader"))
        .await
        .unwrap();
    assert!(resp.0.is_ok(), "{resp:?}");

    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificates_and_impostors_are_refused() {
    install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let ca = generate_ca("transport-test").unwrap();
    let rogue_ca = generate_ca("rogue").unwrap();
    let faults = Arc::new(LinkFaults::new(1));
    let n1 = Node::start(&dir, 1, mtls(&ca, 1), faults).await;
    n1.control.bootstrap_single().await.unwrap();
    n1.control.wait_leader(DEADLINE).await.unwrap();

    // A client of the cluster CA gets through.
    let good = PeerClient::new(transport_config(), mtls(&ca, 9)).unwrap();
    assert_eq!(good.status(&n1.addr).await.unwrap().node_id, 1);

    // A client whose certificate another CA signed (even though it trusts the cluster CA)
    // is refused, and its write changes nothing.
    let rogue_cert = issue_node_cert(
        &rogue_ca.cert_pem,
        &rogue_ca.key_pem,
        9,
        &["127.0.0.1".into()],
    )
    .unwrap();
    let rogue = TransportSecurity::MutualTls(
        TlsMaterial::from_pem(&ca.cert_pem, &rogue_cert.cert_pem, &rogue_cert.key_pem).unwrap(),
    );
    let rogue = PeerClient::new(transport_config(), rogue).unwrap();
    let err = rogue.status(&n1.addr).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    assert!(
        rogue
            .forward_write(&n1.addr, &create("rogue"))
            .await
            .is_err()
    );
    assert!(
        n1.control
            .read_applied(|s| s.tenant(&tenant("rogue")).is_none())
    );

    // A client that trusts only another CA refuses the server.
    let distrustful = PeerClient::new(transport_config(), mtls(&rogue_ca, 9)).unwrap();
    let err = distrustful.status(&n1.addr).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A plaintext client cannot talk to the TLS server either.
    let plain = PeerClient::new(transport_config(), TransportSecurity::Insecure).unwrap();
    let err = plain.status(&n1.addr).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");

    // A cluster certificate speaks only for its own node: node 9's certificate cannot
    // join as node 5, nor vote as node 1 (which would have raised node 1's term).
    let err = good.join(&n1.addr, 5, "127.0.0.1:1").await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { code: tonic::Code::PermissionDenied, message } if message.contains("node 9")),
        "{err}"
    );
    let term = n1.control.status().term;
    let mut impostor = GrpcNetwork::new(1, transport_config(), mtls(&ca, 9)).unwrap();
    let mut to_n1 = impostor
        .new_client(1, &BasicNode::new(n1.addr.clone()))
        .await;
    let err = to_n1
        .vote(
            VoteRequest::new(Vote::new(term + 5, 1), None),
            RPCOption::new(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issued to node 9"), "{err}");
    assert_eq!(n1.control.status().term, term);
    assert_eq!(n1.control.status().voters, vec![1]);

    // Node 9's certificate records node 9's placement labels, never another node's (not
    // even wrapped in a request id).
    let labels = |node| Command::SetNodeLabels {
        node,
        labels: quire_raft::placement::NodeLabels {
            region: "eu-west".into(),
            zone: None,
            capacity: 100,
        },
    };
    for cmd in [
        labels(1),
        Command::Once {
            request_id: "r-labels".into(),
            command: Box::new(labels(1)),
        },
    ] {
        let err = good.forward_write(&n1.addr, &cmd).await.unwrap_err();
        assert!(
            matches!(&err, TransportError::Remote { code: tonic::Code::PermissionDenied, message } if message.contains("node 9")),
            "{err}"
        );
    }
    assert!(n1.control.read_applied(|s| s.placement().nodes.is_empty()));
    let own = good.forward_write(&n1.addr, &labels(9)).await.unwrap();
    assert!(own.0.is_ok(), "{own:?}");
    assert!(
        n1.control
            .read_applied(|s| s.placement().nodes.keys().eq([&9]))
    );

    // The good client still works afterwards.
    assert_eq!(good.status(&n1.addr).await.unwrap().node_id, 1);
    n1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_group_works_with_duplicates_and_delays() {
    install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(LinkFaults::new(7));
    let n1 = Node::start(&dir, 1, TransportSecurity::Insecure, faults.clone()).await;
    let n2 = Node::start(&dir, 2, TransportSecurity::Insecure, faults.clone()).await;
    n1.control.bootstrap_single().await.unwrap();
    n1.control.wait_leader(DEADLINE).await.unwrap();
    n2.client.join(&n1.addr, 2, &n2.addr).await.unwrap();

    // Every Raft RPC between them is delayed a little; replication still works.
    faults.set_delay_ms(1, 2, Some((1, 5))).unwrap();
    faults.set_delay_ms(2, 1, Some((1, 5))).unwrap();
    let resp = n2
        .client
        .forward_write(&n1.addr, &create("plain"))
        .await
        .unwrap();
    assert!(resp.0.is_ok(), "{resp:?}");

    // A duplicated forward is applied twice; the caller sees the second answer.
    faults.set_rule(2, 1, Default::default()).unwrap();
    faults.set_duplicate_probability(2, 1, 1.0).unwrap();
    let resp = n2
        .client
        .forward_write(&n1.addr, &create("twice"))
        .await
        .unwrap();
    assert!(
        matches!(resp.0, Err(ApplyError::AlreadyExists(_))),
        "{resp:?}"
    );
    faults.heal_all();
    converge(&n1, &[&n1, &n2]).await;
    assert!(
        n2.control
            .read_applied(|s| s.tenant(&tenant("twice")).is_some())
    );

    // A request the filter drops fails as unreachable and changes nothing.
    faults.cut(2, 1);
    let err = n2
        .client
        .forward_write(&n1.addr, &create("dropped"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    faults.heal_all();
    assert!(
        n1.control
            .read_applied(|s| s.tenant(&tenant("dropped")).is_none())
    );

    // Removing node 2 leaves a group of one that still commits.
    let members = n2.client.remove(&n1.addr, 2).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].node_id, 1);
    n1.control.write(create("alone")).await.unwrap();
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_a_leader_crash_and_remove_it() {
    install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(LinkFaults::new(5));
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(Node::start(&dir, id, TransportSecurity::Insecure, faults.clone()).await);
    }
    nodes[0].control.bootstrap_single().await.unwrap();
    nodes[0].control.wait_leader(DEADLINE).await.unwrap();
    let first = nodes[0].addr.clone();
    for n in &nodes[1..] {
        n.client.join(&first, n.id, &n.addr).await.unwrap();
    }
    assert_eq!(nodes[0].control.status().voters, vec![1, 2, 3, 4, 5]);
    for i in 0..5 {
        let resp = nodes[4]
            .client
            .forward_write_to_leader(&nodes[3].addr, &create(&format!("five-{i}")))
            .await
            .unwrap();
        assert!(resp.0.is_ok(), "{resp:?}");
    }
    let all: Vec<&Node> = nodes.iter().collect();
    converge(&nodes[0], &all).await;

    // The leader crashes: its server and its Raft stop; the other four elect a leader.
    let crashed = nodes.remove(0);
    crashed.stop().await;
    for n in &nodes {
        wait_leader_is(n, |l| matches!(l, Some(2..=5))).await;
    }
    let leader_id = nodes[0].control.status().leader.unwrap();
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    leader.control.wait_leader(DEADLINE).await.unwrap();
    leader.control.write(create("after-crash")).await.unwrap();

    // Remove the crashed node through any member (a follower relays to the leader).
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
    let members = nodes[3].client.remove(&follower.addr, 1).await.unwrap();
    let ids: Vec<NodeId> = members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, vec![2, 3, 4, 5]);
    let rest: Vec<&Node> = nodes.iter().collect();
    converge(leader, &rest).await;
    for n in &nodes {
        assert_eq!(n.control.status().voters, vec![2, 3, 4, 5]);
        assert!(
            n.control
                .read_applied(|s| s.tenant(&tenant("after-crash")).is_some())
        );
    }
    for n in nodes {
        n.stop().await;
    }
}
