//! [`TransportError`], and the one mapping between it and `tonic::Status` on the wire.

use std::path::PathBuf;

use quire_raft::NodeId;
use tonic::{Code, Status};

/// What went wrong at the transport's edges (certificates, files, connections, peers).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A transport setting is unusable.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// A TLS file is missing, unreadable or not what it should be.
    #[error("TLS file {path}: {reason}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// A file to be written already exists; nothing was written over it.
    #[error("{0} already exists; refusing to overwrite it (move it away first)")]
    AlreadyExists(PathBuf),
    /// Writing a file or directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// TLS could not be set up with the given material.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A peer address is malformed.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The peer could not be reached (connect failed, backing off, link cut by a fault
    /// filter); retry later.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The deadline passed before the peer answered.
    #[error("{what} to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        /// The peer address.
        addr: String,
        /// Which request.
        what: String,
        /// The deadline that passed.
        timeout_ms: u64,
    },
    /// Too many requests in flight (this side or the peer); retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A payload could not be decoded; it was rejected and nothing changed.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The addressed node does not lead; go to `leader_id` at `leader_addr` if known.
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?}); retry on the leader")]
    NotLeader {
        /// The leader the peer knows of.
        leader_id: Option<NodeId>,
        /// Its peer address, if known.
        leader_addr: Option<String>,
    },
    /// The peer's Raft failed the request (shut down, no quorum, membership change refused).
    #[error("raft: {0}")]
    Raft(String),
    /// The request is not valid (bad address, bad node id, ...); nothing changed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The peer answered with a gRPC status this crate does not map more precisely.
    #[error("peer answered {code:?}: {message}")]
    Remote {
        /// The gRPC code.
        code: Code,
        /// The peer's message.
        message: String,
    },
    /// The server failed (listener, HTTP/2, TLS).
    #[error("peer server: {0}")]
    Serve(String),
}

impl TransportError {
    /// Whether retrying later, possibly elsewhere, may succeed (as opposed to a request that
    /// is wrong and will stay wrong). A peer's server ending a call at the deadline the client
    /// sent (tonic's `Cancelled`, "Timeout expired") arrives here as a `Timeout`
    /// (`client.rs`, `is_deadline`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Timeout { .. }
                | TransportError::Overloaded(_)
                | TransportError::NotLeader { .. }
                | TransportError::Raft(_)
        ) || matches!(self, TransportError::Remote { code, .. } if matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted))
    }
}

/// The server side of the mapping: each error onto the gRPC code a client can act on.
impl From<TransportError> for Status {
    fn from(err: TransportError) -> Status {
        let message = err.to_string();
        match err {
            TransportError::Decode { .. }
            | TransportError::InvalidRequest(_)
            | TransportError::InvalidAddress { .. } => Status::invalid_argument(message),
            TransportError::NotLeader { .. } => Status::failed_precondition(message),
            TransportError::Timeout { .. } => Status::deadline_exceeded(message),
            TransportError::Overloaded(_) => Status::resource_exhausted(message),
            TransportError::Unreachable { .. } | TransportError::Raft(_) => {
                Status::unavailable(message)
            }
            TransportError::Remote { code, message } => Status::new(code, message),
            TransportError::InvalidConfig(_)
            | TransportError::TlsFile { .. }
            | TransportError::AlreadyExists(_)
            | TransportError::Write { .. }
            | TransportError::Certificate(_)
            | TransportError::Tls(_)
            | TransportError::Serve(_) => Status::internal(message),
        }
    }
}

/// The client side of the mapping: a status a peer answered with.
impl From<Status> for TransportError {
    fn from(status: Status) -> TransportError {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => TransportError::InvalidRequest(message),
            Code::ResourceExhausted => TransportError::Overloaded(message),
            Code::Unavailable => TransportError::Raft(message),
            code => TransportError::Remote { code, message },
        }
    }
}
