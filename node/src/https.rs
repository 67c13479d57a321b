//! The HTTP front over TLS: a certificate chain and key from PEM files (`node.tls_cert_file`,
//! `node.tls_key_file`) served with rustls, TLS 1.3 only unless `node.tls_min_version = "1.2"`.
//! The files are read again on SIGHUP and when either changes (polled every
//! [`RELOAD_POLL`]): new connections get the new certificate, open ones keep theirs, and a
//! new file that does not load is logged and leaves the previous certificate in place.
//!
//! [`TlsListener`] is an `axum::serve::Listener`: TLS handshakes run in their own tasks
//! (bounded in number and time), so a slow client never holds up the others, and axum
//! serves the finished streams with its usual graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);
/// Largest certificate chain or key file read.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// A client that has not finished its TLS handshake within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; more connections wait to be handshaken.
pub const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Why the HTTP front's TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FrontTlsError {
    #[error("{setting} {path}: {reason}")]
    File {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "node.tls_key_file {key} does not match the certificate in node.tls_cert_file {cert}: {reason}"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("node.tls_min_version {0:?} must be \"1.3\" or \"1.2\"")]
    Version(String),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    /// The paths of `config`, if the HTTP front serves TLS.
    pub fn of(config: &Config) -> Option<Self> {
        Some(Self {
            cert: config.node.tls_cert_file.clone()?,
            key: config.node.tls_key_file.clone()?,
        })
    }
}

/// The certificate the front serves, replaced in place on reload.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        Some(guard.clone())
    }
}

/// A file's identity for change detection: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The HTTP front's TLS: its rustls configuration and the certificate it serves.
pub struct FrontTls {
    paths: TlsPaths,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for FrontTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontTls")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl FrontTls {
    /// Loads the certificate and key and builds the server configuration. `min_version` is
    /// "1.3" or "1.2".
    pub fn load(paths: TlsPaths, min_version: &str) -> Result<Self, FrontTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
            "1.3" => &[&rustls::version::TLS13],
            "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            other => return Err(FrontTlsError::Version(other.to_owned())),
        };
        let key = load_certified_key(&paths, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            paths,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            provider,
        })
    }

    /// Reads the files again; on success the next handshakes use the new certificate, on
    /// failure nothing changes.
    pub fn reload(&self) -> Result<(), FrontTlsError> {
        let key = load_certified_key(&self.paths, &self.provider)?;
        let mut guard = self.current.0.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(key);
        Ok(())
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let guard = self.current.0.read().unwrap_or_else(|e| e.into_inner());
        guard.cert.first().cloned()
    }

    /// Wraps a TCP listener bound to `local_addr`: connections are handshaken in their own
    /// tasks.
    pub fn listener(&self, tcp: TcpListener, local_addr: SocketAddr) -> TlsListener {
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        let task = tokio::spawn(accept_loop(tcp, self.acceptor.clone(), tx));
        TlsListener {
            rx,
            local_addr,
            task,
        }
    }

    /// Reloads the certificate on SIGHUP and when a file changes, until `shutdown`.
    pub fn spawn_reloader(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut seen = (stamp(&self.paths.cert), stamp(&self.paths.key));
            let mut poll = tokio::time::interval(RELOAD_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let sighup = async {
                    match hangup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let sighup = std::future::pending::<()>();
                let why = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sighup => "SIGHUP",
                    _ = poll.tick() => {
                        let now = (stamp(&self.paths.cert), stamp(&self.paths.key));
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "a changed file"
                    }
                };
                match self.reload() {
                    Ok(()) => tracing::info!(
                        cert = %self.paths.cert.display(),
                        "reloaded the HTTPS certificate after {why}"
                    ),
                    Err(e) => tracing::error!(
                        "cannot reload the HTTPS certificate after {why}; still serving the previous one: {e}"
                    ),
                }
            }
        });
    }
}

/// Logs SIGHUP on a node without TLS files (where it has nothing to reload) instead of
/// letting it end the process, until `shutdown`.
pub fn ignore_sighup(shutdown: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangup.recv() => tracing::info!(
                    "SIGHUP: nothing to reload (the HTTP front serves no TLS certificate)"
                ),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = shutdown;
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, FrontTlsError> {
    let err = |reason: String| FrontTlsError::File {
        setting,
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(err(format!(
            "is {} bytes, more than the {MAX_PEM_BYTES} a PEM file may be",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))
}

fn load_certified_key(
    paths: &TlsPaths,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, FrontTlsError> {
    let cert_pem = read_pem("node.tls_cert_file", &paths.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FrontTlsError::File {
            setting: "node.tls_cert_file",
            path: paths.cert.clone(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(FrontTlsError::File {
            setting: "node.tls_cert_file",
            path: paths.cert.clone(),
            reason: "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    let key_pem = read_pem("node.tls_key_file", &paths.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| FrontTlsError::File {
        setting: "node.tls_key_file",
        path: paths.key.clone(),
        reason: format!("not a PEM private key: {e}"),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&paths.key)
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(path = %paths.key.display(), "the HTTPS key is readable by others; chmod 600 (or 640 for the service's group) it");
        }
    }
    CertifiedKey::from_der(certs, key, provider).map_err(|e| FrontTlsError::Mismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason: e.to_string(),
    })
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!("accepting an HTTPS connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// A listener of finished TLS connections for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(dir: &Path, name: &str, host: &str) -> (TlsPaths, String) {
        let ca = quire_transport::tls::generate_ca("front").unwrap();
        let cert =
            crate::certs::issue_http_cert(&ca.cert_pem, &ca.key_pem, &[host.into()]).unwrap();
        let paths = TlsPaths {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&paths.cert, &cert.cert_pem).unwrap();
        std::fs::write(&paths.key, &cert.key_pem).unwrap();
        (paths, ca.cert_pem)
    }

    #[test]
    fn errors_name_the_setting_and_file_and_a_bad_reload_keeps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = issue(dir.path(), "a", "localhost");
        let missing = TlsPaths {
            cert: dir.path().join("nope.pem"),
            key: paths.key.clone(),
        };
        let err = FrontTls::load(missing, "1.3").unwrap_err().to_string();
        assert!(
            err.contains("node.tls_cert_file") && err.contains("nope.pem"),
            "{err}"
        );
        let err = FrontTls::load(paths.clone(), "1.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_min_version"), "{err}");

        let front = FrontTls::load(paths.clone(), "1.3").unwrap();
        let before = front.leaf().unwrap();
        // A key of another certificate: refused, the old certificate stays.
        let (other, _) = issue(dir.path(), "b", "localhost");
        std::fs::copy(&other.key, &paths.key).unwrap();
        let err = front.reload().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(front.leaf().unwrap(), before);
        std::fs::write(&paths.key, "garbage").unwrap();
        let err = front.reload().unwrap_err().to_string();
        assert!(err.contains("node.tls_key_file"), "{err}");
        assert_eq!(front.leaf().unwrap(), before);
        // Both files of the other certificate: it is served from now on.
        std::fs::copy(&other.cert, &paths.cert).unwrap();
        std::fs::copy(&other.key, &paths.key).unwrap();
        front.reload().unwrap();
        assert_ne!(front.leaf().unwrap(), before);
    }
}
