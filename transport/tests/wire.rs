//! The wire's edges: undecodable payloads are refused and change nothing, Raft RPCs to dead
//! or silent peers fail as openraft expects (unreachable / timeout) within their deadline,
//! the in-flight bound holds, a peer that comes up later is reached by reconnecting, and a
//! stopped server lets go of its `ControlPlane`.

#![allow(
    clippy::unwrap_used,
    clippy::result_large_err,
    reason = "tests; openraft fixes the error types"
)]

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use quire_raft::{ControlPlane, ControlPlaneConfig, NodeId};
use quire_transport::proto::peer_client::PeerClient as Stub;
use quire_transport::proto::{ForwardWriteRequest, JoinRequest, RaftRequest, StatusRequest};
use quire_transport::{
    GrpcNetwork, PeerClient, PeerServer, TransportConfig, TransportError, TransportSecurity,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(20);

fn config() -> TransportConfig {
    TransportConfig {
        request_timeout_ms: 300,
        join_timeout_ms: 1_000,
        connect_timeout_ms: 300,
        backoff_base_ms: 10,
        backoff_max_ms: 100,
        ..TransportConfig::default()
    }
}

struct Served {
    addr: String,
    control: Arc<ControlPlane>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), TransportError>>,
}

async fn serve_one(dir: &TempDir, id: NodeId, listener: TcpListener) -> Served {
    let addr = listener.local_addr().unwrap().to_string();
    let network = GrpcNetwork::new(id, config(), TransportSecurity::Insecure).unwrap();
    let relay = network.peer_client();
    let cp = ControlPlaneConfig::new(dir.path().join(format!("n{id}")), id, "wire", addr.clone());
    let control = Arc::new(ControlPlane::open_with_network(cp, network).await.unwrap());
    control.bootstrap_single().await.unwrap();
    control.wait_leader(DEADLINE).await.unwrap();
    let server = PeerServer::new(
        control.clone(),
        config(),
        TransportSecurity::Insecure,
        relay,
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        control,
        stop,
        server,
    }
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// A listener that accepts connections and never answers.
async fn black_hole() -> (String, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = l.accept().await {
            if held.len() < 64 {
                held.push(socket);
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_are_rejected_and_change_nothing() {
    let dir = TempDir::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = serve_one(&dir, 1, listener).await;
    let before = node.control.status();
    let state_before = node.control.read_applied(|s| s.clone());

    let mut stub = Stub::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let garbage = RaftRequest {
        payload: b"not json".to_vec(),
        snapshot_data: Vec::new(),
    };
    for (name, result) in [
        (
            "AppendEntriesRequest",
            stub.append_entries(garbage.clone()).await,
        ),
        ("VoteRequest", stub.vote(garbage.clone()).await),
        (
            "InstallSnapshotRequest",
            stub.install_snapshot(garbage.clone()).await,
        ),
    ] {
        let status = result.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{name}: {status:?}"
        );
        assert!(status.message().contains(name), "{status:?}");
    }
    let status = stub
        .forward_write(ForwardWriteRequest {
            command: br#"{"type":"no_such_command"}"#.to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Command"), "{status:?}");
    let status = stub
        .join(JoinRequest {
            node_id: 2,
            addr: "no port".into(),
            hops: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Nothing changed: same log, same state, same membership.
    let reply = stub.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(reply.membership.unwrap().members.len(), 1);
    let after = node.control.status();
    assert_eq!(after.last_log_index, before.last_log_index);
    assert_eq!(after.voters, before.voters);
    assert_eq!(node.control.read_applied(|s| s.clone()), state_before);
    let _ = node.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_to_dead_or_silent_peers_fail_as_unreachable_or_timeout() {
    let mut network = GrpcNetwork::new(1, config(), TransportSecurity::Insecure).unwrap();
    let vote = || VoteRequest::new(Vote::new(1, 1), None);

    let mut dead = network
        .new_client(2, &BasicNode::new(dead_addr().await))
        .await;
    let err = dead
        .vote(vote(), RPCOption::new(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    // Right after a failure the client backs off instead of dialling again.
    let err = dead
        .vote(vote(), RPCOption::new(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("backing off"), "{err}");

    // A batch too large for one message is handed back to openraft to split.
    let big = openraft::raft::AppendEntriesRequest::<quire_raft::TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: (1..=60_000u64)
            .map(|i| openraft::Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
                payload: openraft::EntryPayload::Normal(
                    quire_raft::command::Command::CreateTenant {
                        tenant: quire_raft::TenantId::new(format!("t{i}")).unwrap(),
                        display_name: "x".repeat(200),
                    },
                ),
            })
            .collect(),
    };
    let err = dead
        .append_entries(big, RPCOption::new(Duration::from_millis(500)))
        .await
        .unwrap_err();
    match err {
        RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 30_000),
        other => panic!("expected PayloadTooLarge, got {other}"),
    }

    let (silent_addr, _hole) = black_hole().await;
    let mut silent = network.new_client(3, &BasicNode::new(silent_addr)).await;
    let started = Instant::now();
    let err = silent
        .vote(vote(), RPCOption::new(Duration::from_millis(200)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RPCError::Timeout(_)), "{err}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_to_one_peer_are_bounded() {
    let (addr, _hole) = black_hole().await;
    let client = PeerClient::new(
        TransportConfig {
            max_in_flight_per_peer: 1,
            ..config()
        },
        TransportSecurity::Insecure,
    )
    .unwrap();
    // The join (long deadline) is polled first and takes the only slot; the status call
    // waits for it until its own deadline, then gives up as overloaded.
    let (join, status) = tokio::join!(client.join(&addr, 2, "127.0.0.1:1"), client.status(&addr));
    assert!(
        matches!(join, Err(TransportError::Timeout { .. })),
        "{join:?}"
    );
    assert!(
        matches!(status, Err(TransportError::Overloaded(_))),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_up_later_is_reached_and_a_stopped_server_releases_its_node() {
    let dir = TempDir::new().unwrap();
    let client = PeerClient::new(config(), TransportSecurity::Insecure).unwrap();
    let addr = dead_addr().await;
    let err = client.status(&addr).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");

    let listener = TcpListener::bind(&addr).await.unwrap();
    let node = serve_one(&dir, 1, listener).await;
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        match client.status(&addr).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("never reconnected: {e}"),
        }
    };
    assert_eq!(status.node_id, 1);
    assert_eq!(status.leader_id, Some(1));

    // Stop the server; it drops its handle on the control plane, which can then shut down.
    let Served {
        control,
        stop,
        server,
        ..
    } = node;
    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while Arc::strong_count(&control) > 1 {
        assert!(
            Instant::now() < deadline,
            "the server kept its ControlPlane"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let control = Arc::try_unwrap(control).unwrap();
    control.shutdown().await.unwrap();
    assert!(client.status(&addr).await.is_err());
}
