//! The transport over a caller-supplied network: a client with a [`Dialer`] reaches a server
//! fed by `PeerServer::serve_incoming` through in-memory byte streams (no TCP, no DNS: the
//! address does not resolve), and a dialer that refuses makes the peer unreachable.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quire_raft::command::Command;
use quire_raft::{ControlPlane, ControlPlaneConfig, SimEngine, TenantId};
use quire_transport::{
    BoxedPeerIo, DialFuture, Dialer, GrpcNetwork, PeerClient, PeerServer, TransportConfig,
    TransportError, TransportSecurity,
};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// An address no resolver knows: only the in-memory dialer can reach it.
const ADDR: &str = "mem-node-1.invalid:7000";

fn config() -> TransportConfig {
    TransportConfig {
        request_timeout_ms: 2_000,
        connect_timeout_ms: 500,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        ..TransportConfig::default()
    }
}

/// Hands the server end of a fresh duplex pipe to the server for `ADDR`; refuses others.
struct MemDialer {
    server: mpsc::Sender<DuplexStream>,
    dials: AtomicUsize,
}

impl Dialer for MemDialer {
    fn dial(&self, addr: &str) -> DialFuture {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let server = self.server.clone();
        let known = addr == ADDR;
        let addr = addr.to_string();
        Box::pin(async move {
            if !known {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nothing listens at {addr}"),
                ));
            }
            let (client, server_end) = tokio::io::duplex(64 * 1024);
            server
                .send(server_end)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "server gone"))?;
            Ok(Box::new(client) as BoxedPeerIo)
        })
    }
}

#[tokio::test]
async fn a_dialer_and_an_incoming_stream_carry_the_peer_service() {
    let network = GrpcNetwork::new(1, config(), TransportSecurity::Insecure).unwrap();
    let relay = network.peer_client();
    let cp = ControlPlaneConfig::new("unused", 1, "dial", ADDR);
    let control = Arc::new(
        ControlPlane::open_with(cp, SimEngine::new(1), network)
            .await
            .unwrap(),
    );
    control.bootstrap_single().await.unwrap();
    control.wait_leader(Duration::from_secs(10)).await.unwrap();

    let (tx, rx) = mpsc::channel::<DuplexStream>(8);
    let incoming = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|io| (Ok::<_, io::Error>(io), rx))
    });
    let server = PeerServer::new(
        control.clone(),
        config(),
        TransportSecurity::Insecure,
        relay,
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve_incoming(ADDR, incoming, async {
        let _ = stopped.await;
    }));

    let dialer = Arc::new(MemDialer {
        server: tx,
        dials: AtomicUsize::new(0),
    });
    let client = PeerClient::new(config(), TransportSecurity::Insecure)
        .unwrap()
        .with_dialer(dialer.clone());

    let status = client.status(ADDR).await.unwrap();
    assert_eq!(status.node_id, 1);
    assert_eq!(status.leader_id, Some(1));

    let cmd = Command::CreateTenant {
        tenant: TenantId::new("acme").unwrap(),
        display_name: "Acme".into(),
    };
    let reply = client.forward_write(ADDR, &cmd).await.unwrap();
    assert!(reply.0.is_ok(), "{reply:?}");
    assert!(
        control.read_applied(|s| s.tenant(&TenantId::new("acme").unwrap()).is_some()),
        "the forwarded write was applied"
    );
    assert!(client.read_index(ADDR).await.unwrap().is_some());
    // One channel, reused: the dialer was asked once.
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1);

    // A refused dial is an unreachable peer, not a panic or a hang.
    let err = client.status("mem-node-2.invalid:7000").await.unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { .. }),
        "expected unreachable, got {err:?}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
