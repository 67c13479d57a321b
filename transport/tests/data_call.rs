//! `DataCall`: the payload reaches the handler the node registered and its answer comes
//! back; a refusal comes back as one; without a handler the call fails as retryable
//! unavailable; a handler slower than the caller's deadline fails the call within it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use quire_raft::{ControlPlane, ControlPlaneConfig, NodeId};
use quire_transport::{
    DataCallHandler, DataCallOutcome, DataCallRefusal, GrpcNetwork, PeerServer, TransportConfig,
    TransportError, TransportSecurity,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::time::Instant;

fn config() -> TransportConfig {
    TransportConfig {
        request_timeout_ms: 300,
        connect_timeout_ms: 300,
        backoff_base_ms: 10,
        backoff_max_ms: 100,
        ..TransportConfig::default()
    }
}

/// Echoes the payload prefixed with who sent it; `refuse` refuses; `slow` sleeps first.
struct Echo;

impl DataCallHandler for Echo {
    fn handle(
        &self,
        from: Option<NodeId>,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, DataCallRefusal>> {
        Box::pin(async move {
            match payload.as_slice() {
                b"refuse" => Err(DataCallRefusal::Refused("not the owner".into())),
                b"busy" => Err(DataCallRefusal::Busy("too many".into())),
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(b"late".to_vec())
                }
                other => {
                    let mut out = format!("{from:?}:").into_bytes();
                    out.extend_from_slice(other);
                    Ok(out)
                }
            }
        })
    }
}

async fn serve(dir: &TempDir, handler: Option<Arc<dyn DataCallHandler>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let network = GrpcNetwork::new(1, config(), TransportSecurity::Insecure).unwrap();
    let relay = network.peer_client();
    let cp = ControlPlaneConfig::new(dir.path().join("n1"), 1, "data-call", addr.clone());
    let control = Arc::new(ControlPlane::open_with_network(cp, network).await.unwrap());
    let mut server =
        PeerServer::new(control, config(), TransportSecurity::Insecure, relay).unwrap();
    if let Some(h) = handler {
        server = server.with_data_calls(h);
    }
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

fn client() -> quire_transport::PeerClient {
    GrpcNetwork::new(2, config(), TransportSecurity::Insecure)
        .unwrap()
        .peer_client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_call_reaches_the_handler_and_its_answer_comes_back() {
    let dir = TempDir::new().unwrap();
    let addr = serve(&dir, Some(Arc::new(Echo))).await;
    let peers = client();
    let got = peers
        .data_call(&addr, b"hello".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    // Insecure transport: no certificate names the caller.
    assert_eq!(got, DataCallOutcome::Ok(b"None:hello".to_vec()));
    let refused = peers
        .data_call(&addr, b"refuse".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(refused, DataCallOutcome::Refused("not the owner".into()));
    let busy = peers
        .data_call(&addr, b"busy".to_vec(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(busy, TransportError::Overloaded(ref m) if m == "too many"),
        "{busy:?}"
    );
    assert!(busy.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_handler_data_calls_are_unavailable() {
    let dir = TempDir::new().unwrap();
    let addr = serve(&dir, None).await;
    let err = client()
        .data_call(&addr, b"hello".to_vec(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("no data calls"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_call_fails_within_its_deadline() {
    let dir = TempDir::new().unwrap();
    let addr = serve(&dir, Some(Arc::new(Echo))).await;
    let peers = client();
    // Warm the connection so the deadline measures the call, not the connect.
    peers
        .data_call(&addr, b"warm".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    let started = Instant::now();
    let err = peers
        .data_call(&addr, b"slow".to_vec(), Duration::from_millis(400))
        .await
        .unwrap_err();
    let took = started.elapsed();
    // Usually this side's deadline (`Timeout`); under load the peer's own deadline may
    // answer first. Either way a retryable failure, within the deadline.
    assert!(
        matches!(err, TransportError::Timeout { .. }) || err.is_retryable(),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A later call on the same client still works.
    let got = peers
        .data_call(&addr, b"again".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, DataCallOutcome::Ok(b"None:again".to_vec()));
}
