//! Pluggable byte streams under the peer channels, for networks other than the OS's TCP.
//!
//! By default the client connects over TCP (and TLS, when configured) and the server accepts
//! from a `tokio::net::TcpListener`. A caller that runs nodes over another network — the
//! simulator's turmoil hosts — gives the client a [`Dialer`]
//! ([`GrpcNetwork::with_dialer`](crate::GrpcNetwork::with_dialer)) and the server a stream of
//! accepted connections ([`PeerServer::serve_incoming`](crate::PeerServer::serve_incoming)).
//! Everything above the byte stream (deadlines, pool, reconnects, fault filter) is unchanged.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;

/// A connected, ordered, reliable byte stream to a peer.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerIo for T {}

/// A boxed [`PeerIo`].
pub type BoxedPeerIo = Box<dyn PeerIo>;

/// The future a [`Dialer`] returns.
pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<BoxedPeerIo>> + Send>>;

/// Opens a byte stream to a peer address (`host:port`), in place of a TCP connect.
///
/// The connect timeout of the [`TransportConfig`](crate::TransportConfig) still applies.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr`.
    fn dial(&self, addr: &str) -> DialFuture;
}

/// tonic's connector over a [`Dialer`].
#[derive(Clone)]
pub(crate) struct DialConnector {
    pub(crate) dialer: Arc<dyn Dialer>,
}

impl Service<Uri> for DialConnector {
    type Response = TokioIo<BoxedPeerIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let addr = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("peer uri {uri} has no host:port"),
                    )
                })?;
            dialer.dial(&addr).await.map(TokioIo::new)
        })
    }
}

/// An accepted connection from a caller-supplied stream (no TCP connect info).
pub(crate) struct AcceptedIo<IO>(pub(crate) IO);

impl<IO> Connected for AcceptedIo<IO> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<IO: AsyncRead + Unpin> AsyncRead for AcceptedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AcceptedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
