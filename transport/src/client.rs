//! The client side: one lazily connected tonic channel per peer address, shared by the Raft
//! network ([`GrpcNetwork`] / [`GrpcPeer`]) and the other peer calls ([`PeerClient`]).
//!
//! Every request has a deadline (openraft's `RPCOption::hard_ttl()` for Raft RPCs, the
//! configured request timeout otherwise), waits for one of a bounded number of in-flight
//! slots per peer, and passes the fault filter first. A connection that fails or times out
//! is dropped and reconnected on a later request, after an exponential backoff (capped);
//! while backing off, requests fail at once as unreachable, which makes openraft back off too.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quire_raft::command::Command;
use quire_raft::{CommandResponse, ControlPlane, NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{MAX_ADDR_CHARS, MAX_MESSAGE_BYTES, MAX_PEER_ADDRESSES, TransportConfig};
use crate::dial::{DialConnector, Dialer};
use crate::error::TransportError;
use crate::fault::{FaultAction, FaultFilter, RpcKind};
use crate::proto;
use crate::tls::{TlsMaterial, TransportSecurity, install_crypto_provider};

type Stub = proto::peer_client::PeerClient<Channel>;

/// Largest serialized AppendEntries batch sent in one message (room left for framing);
/// a larger batch is refused with openraft's `PayloadTooLarge`, and openraft splits it.
const MAX_APPEND_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES - 64 * 1024;

/// The role of a member of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberRole {
    /// Votes and counts for quorum.
    Voter,
    /// Receives the log but does not vote.
    Learner,
}

/// One member of the group, as a peer reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its node id.
    pub node_id: NodeId,
    /// Its peer address.
    pub addr: String,
    /// Voter or learner.
    pub role: MemberRole,
}

/// A peer's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub node_id: NodeId,
    /// The leader it knows of.
    pub leader_id: Option<NodeId>,
    /// The leader's peer address, if known.
    pub leader_addr: Option<String>,
    /// Its current term.
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of its last applied entry.
    pub applied_index: Option<u64>,
    /// The membership it knows, by node id.
    pub members: Vec<MemberInfo>,
    /// openraft's server state (`Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`).
    pub state: String,
}

/// Renders an error with its sources (tonic's top-level messages say little).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Splits `host:port` (or `[v6]:port`) and returns the host, checking the shape.
pub(crate) fn addr_host(addr: &str) -> Result<String, TransportError> {
    let bad = |reason: &str| TransportError::InvalidAddress {
        addr: addr.chars().take(MAX_ADDR_CHARS).collect(),
        reason: reason.into(),
    };
    if addr.is_empty() || addr.len() > MAX_ADDR_CHARS {
        return Err(bad("must be host:port, 1 to 255 characters"));
    }
    if addr.contains("://") || addr.contains('/') || addr.chars().any(char::is_whitespace) {
        return Err(bad("must be host:port, without scheme, path or spaces"));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("port must be 1 to 65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(host.to_string())
}

struct Slot {
    channel: Option<Channel>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    /// When the current channel was made.
    created_at: Instant,
    in_flight: Arc<Semaphore>,
    /// Data calls in flight to this peer: bounded apart, so calls waiting on the peer's rate
    /// limiter never hold the slots Raft's heartbeats need.
    data_in_flight: Arc<Semaphore>,
}

/// The channels to all peers, keyed by address (a `BTreeMap`: nothing iterates a hash).
struct Pool {
    config: TransportConfig,
    tls: Option<TlsMaterial>,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Peer addresses whose node ids this side has learned (from openraft or from replies),
    /// so the fault filter also sees non-Raft calls.
    ids: Mutex<BTreeMap<String, NodeId>>,
    /// Opens the byte streams of new channels instead of TCP, when set (the simulator).
    dialer: Mutex<Option<Arc<dyn Dialer>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where one request goes and who sends it.
struct Route<'a> {
    from: Option<NodeId>,
    to: Option<NodeId>,
    addr: &'a str,
    filter: Option<&'a dyn FaultFilter>,
}

impl Pool {
    fn new(config: TransportConfig, security: TransportSecurity) -> Result<Self, TransportError> {
        config.validate()?;
        install_crypto_provider();
        let tls = match security {
            TransportSecurity::MutualTls(m) => Some(m),
            TransportSecurity::Insecure => {
                tracing::warn!(
                    "peer transport client runs without TLS: peers are not authenticated and traffic is plaintext"
                );
                None
            }
        };
        Ok(Self {
            config,
            tls,
            slots: Mutex::new(BTreeMap::new()),
            ids: Mutex::new(BTreeMap::new()),
            dialer: Mutex::new(None),
        })
    }

    fn learn(&self, addr: &str, id: NodeId) {
        let mut ids = lock(&self.ids);
        if ids.len() < MAX_PEER_ADDRESSES || ids.contains_key(addr) {
            ids.insert(addr.to_string(), id);
        }
    }

    fn known_id(&self, addr: &str) -> Option<NodeId> {
        lock(&self.ids).get(addr).copied()
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, TransportError> {
        let host = addr_host(addr)?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| TransportError::InvalidAddress {
                addr: addr.to_string(),
                reason: chain(&e),
            })?
            .connect_timeout(self.config.connect_timeout())
            .http2_keep_alive_interval(self.config.keepalive_interval())
            .keep_alive_timeout(self.config.keepalive_timeout())
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        match &self.tls {
            None => Ok(endpoint),
            Some(m) => endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(m.ca())
                        .identity(m.identity())
                        .domain_name(host)
                        .timeout(self.config.connect_timeout()),
                )
                .map_err(|e| TransportError::Tls(chain(&e))),
        }
    }

    /// The in-flight bound of `addr` for requests of `kind` (creating its slot).
    fn semaphore(&self, addr: &str, kind: RpcKind) -> Result<Arc<Semaphore>, TransportError> {
        let mut slots = lock(&self.slots);
        if !slots.contains_key(addr) {
            if slots.len() >= MAX_PEER_ADDRESSES {
                // Forget an idle address (no channel, nothing in flight) to make room.
                let idle = slots
                    .iter()
                    .find(|(_, s)| {
                        s.channel.is_none()
                            && s.in_flight.available_permits() == self.config.max_in_flight_per_peer
                            && s.data_in_flight.available_permits()
                                == self.config.max_in_flight_per_peer
                    })
                    .map(|(a, _)| a.clone());
                match idle {
                    Some(a) => {
                        slots.remove(&a);
                    }
                    None => {
                        return Err(TransportError::Overloaded(format!(
                            "connected to {MAX_PEER_ADDRESSES} peer addresses already"
                        )));
                    }
                }
            }
            slots.insert(
                addr.to_string(),
                Slot {
                    channel: None,
                    generation: 0,
                    failures: 0,
                    retry_at: None,
                    created_at: Instant::now(),
                    in_flight: Arc::new(Semaphore::new(self.config.max_in_flight_per_peer)),
                    data_in_flight: Arc::new(Semaphore::new(self.config.max_in_flight_per_peer)),
                },
            );
        }
        Ok(slots
            .get(addr)
            .map(|s| {
                if kind == RpcKind::DataCall {
                    s.data_in_flight.clone()
                } else {
                    s.in_flight.clone()
                }
            })
            .unwrap_or_else(|| Arc::new(Semaphore::new(1))))
    }

    /// The channel to `addr`: a lazily connected one is made if there is none (unless
    /// backing off). tonic connects it in the background on first use, so a connect is not
    /// cut short by one request's deadline (a heartbeat's may be shorter than a handshake).
    fn channel(&self, addr: &str) -> Result<(Channel, u64), TransportError> {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(addr) else {
            return Err(TransportError::Unreachable {
                addr: addr.to_string(),
                reason: "forgotten by the connection pool; retry".into(),
            });
        };
        if let Some(channel) = &slot.channel {
            return Ok((channel.clone(), slot.generation));
        }
        let now = Instant::now();
        if let Some(at) = slot.retry_at
            && now < at
        {
            return Err(TransportError::Unreachable {
                addr: addr.to_string(),
                reason: format!(
                    "backing off for {} ms more after {} failed attempts",
                    (at - now).as_millis(),
                    slot.failures
                ),
            });
        }
        let endpoint = self.endpoint(addr)?;
        let channel = match lock(&self.dialer).clone() {
            Some(dialer) => endpoint.connect_with_connector_lazy(DialConnector { dialer }),
            None => endpoint.connect_lazy(),
        };
        slot.generation += 1;
        slot.created_at = now;
        slot.channel = Some(channel.clone());
        Ok((channel, slot.generation))
    }

    /// A request ran out of time. A channel younger than the connect timeout may still be
    /// connecting and is kept; an older one is in doubt (a hung HTTP/2 connection never
    /// recovers by itself) and is dropped, with a backoff.
    fn timed_out(&self, addr: &str, generation: u64) {
        let young = lock(&self.slots).get(addr).is_some_and(|slot| {
            slot.generation == generation
                && slot.created_at.elapsed() < self.config.connect_timeout()
        });
        if !young {
            self.failed(addr, Some(generation));
        }
    }

    /// Drops the channel (if it is still generation `generation`) and backs off.
    fn failed(&self, addr: &str, generation: Option<u64>) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(addr) {
            if generation.is_none_or(|g| g == slot.generation) {
                slot.channel = None;
            }
            slot.failures = slot.failures.saturating_add(1);
            slot.retry_at = Some(Instant::now() + self.config.backoff(slot.failures));
        }
    }

    fn succeeded(&self, addr: &str) {
        if let Some(slot) = lock(&self.slots).get_mut(addr) {
            slot.failures = 0;
            slot.retry_at = None;
        }
    }

    /// Sends one request (twice if the fault filter says so) within `timeout`.
    async fn call<T, F, Fut>(
        &self,
        route: Route<'_>,
        kind: RpcKind,
        timeout: Duration,
        send: F,
    ) -> Result<T, TransportError>
    where
        F: Fn(Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let addr = route.addr;
        let start = Instant::now();
        let deadline = start + timeout;
        let timed_out = |what: String| TransportError::Timeout {
            addr: addr.to_string(),
            what,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let what = format!("{kind:?}");
        let mut sends = 1;
        if let (Some(filter), Some(from), Some(to)) = (route.filter, route.from, route.to) {
            match filter.on_send(from, to, kind) {
                FaultAction::Deliver => {}
                FaultAction::Drop => {
                    let wait = Duration::from_millis(self.config.drop_wait_ms).min(timeout);
                    tokio::time::sleep(wait).await;
                    return Err(TransportError::Unreachable {
                        addr: addr.to_string(),
                        reason: format!("{what} {from} -> {to} dropped by the fault filter"),
                    });
                }
                FaultAction::Delay(delay) => {
                    if delay >= timeout {
                        tokio::time::sleep_until(deadline).await;
                        return Err(timed_out(what));
                    }
                    tokio::time::sleep(delay).await;
                }
                FaultAction::Duplicate => sends = 2,
            }
        }
        let in_flight = self.semaphore(addr, kind)?;
        let _permit = match tokio::time::timeout_at(deadline, in_flight.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(TransportError::Overloaded(format!(
                    "{} requests already in flight to {addr}; none finished before the deadline",
                    self.config.max_in_flight_per_peer
                )));
            }
        };
        let (channel, generation) = self.channel(addr)?;
        // A data call may run out of time waiting for the peer's rate limiter: that says
        // nothing about the connection, which Raft's own requests (and keepalive) judge.
        let judge_connection = kind != RpcKind::DataCall;
        let on_timeout = |pool: &Self| {
            if judge_connection {
                pool.timed_out(addr, generation);
            }
        };
        let mut reply = None;
        for _ in 0..sends {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                on_timeout(self);
                return Err(timed_out(what));
            }
            let stub = Stub::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            match tokio::time::timeout_at(deadline, send(stub, remaining)).await {
                Err(_) => {
                    on_timeout(self);
                    return Err(timed_out(what));
                }
                Ok(Err(status)) => {
                    return Err(self.status_error(
                        addr,
                        (judge_connection || !is_deadline(&status)).then_some(generation),
                        status,
                        &what,
                        timeout,
                    ));
                }
                Ok(Ok(response)) => reply = Some(response.into_inner()),
            }
        }
        self.succeeded(addr);
        reply.ok_or_else(|| TransportError::Decode {
            what: what.clone(),
            reason: "no reply".into(),
        })
    }

    /// Maps a failed call's status; drops the channel when the connection is in doubt
    /// (`generation: None`: a timed-out data call, which leaves the connection alone).
    fn status_error(
        &self,
        addr: &str,
        generation: Option<u64>,
        status: tonic::Status,
        what: &str,
        timeout: Duration,
    ) -> TransportError {
        use std::error::Error as _;
        use tonic::Code;
        if is_deadline(&status) {
            // tonic enforced the deadline this side set on the request, or the peer did.
            if let Some(generation) = generation {
                self.timed_out(addr, generation);
            }
            return TransportError::Timeout {
                addr: addr.to_string(),
                what: what.to_string(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
        }
        if status.source().is_some() {
            // Made on this side from a transport failure (connect refused, TLS handshake
            // refused, connection broken): drop the channel.
            self.failed(addr, generation);
            return TransportError::Unreachable {
                addr: addr.to_string(),
                reason: format!("{what}: {}", chain(&status)),
            };
        }
        if matches!(
            status.code(),
            Code::Unknown | Code::Internal | Code::Cancelled
        ) {
            self.failed(addr, generation);
        }
        TransportError::from(status)
    }
}

/// Whether the request's deadline passed (enforced by tonic on this side, or by the peer).
fn is_deadline(status: &tonic::Status) -> bool {
    timed_out_locally(status)
        || status.code() == tonic::Code::DeadlineExceeded
        || ended_at_its_deadline_by_the_peer(status)
}

/// Whether the peer's server ended the call at the deadline this side sent with it: tonic's
/// server answers `Cancelled` with "Timeout expired" (and nothing local behind it). That says
/// nothing against the connection, which stays.
fn ended_at_its_deadline_by_the_peer(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled
        && std::error::Error::source(status).is_none()
        && status.message() == "Timeout expired"
}

/// Whether tonic made `status` because the request's own deadline passed.
fn timed_out_locally(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, TransportError> {
    serde_json::to_vec(value).map_err(|e| TransportError::Decode {
        what: format!("{what} (encoding)"),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, TransportError> {
    serde_json::from_slice(bytes).map_err(|e| TransportError::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn not_leader(n: proto::NotLeader) -> TransportError {
    TransportError::NotLeader {
        leader_id: n.leader_id,
        leader_addr: Some(n.leader_addr).filter(|a| !a.is_empty()),
    }
}

fn members(m: Option<proto::Membership>) -> Vec<MemberInfo> {
    m.map(|m| m.members)
        .unwrap_or_default()
        .into_iter()
        .map(|m| MemberInfo {
            node_id: m.node_id,
            addr: m.addr,
            role: if m.role == proto::Role::Voter as i32 {
                MemberRole::Voter
            } else {
                MemberRole::Learner
            },
        })
        .collect()
}

/// A peer's answer to a data call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataCallOutcome {
    /// The handler's reply bytes.
    Ok(Vec<u8>),
    /// The handler refused the call, saying why.
    Refused(String),
}

/// openraft's `RaftNetworkFactory` over gRPC: hands out a [`GrpcPeer`] per target, all
/// sharing one connection pool. Clone it freely; clones share the pool.
#[derive(Clone)]
pub struct GrpcNetwork {
    id: NodeId,
    pool: Arc<Pool>,
    filter: Option<Arc<dyn FaultFilter>>,
}

impl std::fmt::Debug for GrpcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetwork")
            .field("node_id", &self.id)
            .field("tls", &self.pool.tls.is_some())
            .field("fault_filter", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcNetwork {
    /// The network of node `node_id`. Fails only on an invalid configuration.
    pub fn new(
        node_id: NodeId,
        config: TransportConfig,
        security: TransportSecurity,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            id: node_id,
            pool: Arc::new(Pool::new(config, security)?),
            filter: None,
        })
    }

    /// Passes every request this network (and its [`PeerClient`]s) sends through `filter`.
    pub fn with_fault_filter(mut self, filter: Arc<dyn FaultFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Opens every new peer connection (of this network and its [`PeerClient`]s) through
    /// `dialer` instead of TCP — how the simulator runs the transport over its own network.
    /// Channels already made keep their connection until they fail.
    pub fn with_dialer(self, dialer: Arc<dyn Dialer>) -> Self {
        *lock(&self.pool.dialer) = Some(dialer);
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// A client for the non-Raft calls, sharing this network's connections and filter.
    pub fn peer_client(&self) -> PeerClient {
        PeerClient {
            from: Some(self.id),
            pool: self.pool.clone(),
            filter: self.filter.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        self.pool.learn(&node.addr, target);
        GrpcPeer {
            from: self.id,
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
            filter: self.filter.clone(),
        }
    }
}

/// openraft's `RaftNetwork` to one target node.
pub struct GrpcPeer {
    from: NodeId,
    target: NodeId,
    addr: String,
    pool: Arc<Pool>,
    filter: Option<Arc<dyn FaultFilter>>,
}

type RaftRpcError<E = openraft::error::Infallible> =
    RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl GrpcPeer {
    fn route(&self) -> Route<'_> {
        Route {
            from: Some(self.from),
            to: Some(self.target),
            addr: &self.addr,
            filter: self.filter.as_deref(),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        err: TransportError,
        action: RPCTypes,
        timeout: Duration,
    ) -> RaftRpcError<E> {
        match err {
            TransportError::Unreachable { .. } | TransportError::Overloaded(_) => {
                RPCError::Unreachable(Unreachable::new(&err))
            }
            TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout,
            }),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }

    #[allow(clippy::result_large_err, reason = "openraft fixes the RPC error type")]
    fn reply<T, E>(&self, what: &str, reply: proto::RaftReply) -> Result<T, RaftRpcError<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        use proto::raft_reply::Result as R;
        let network = |e: TransportError| RPCError::Network(NetworkError::new(&e));
        match reply.result {
            Some(R::Ok(bytes)) => decode(what, &bytes).map_err(network),
            Some(R::RaftError(bytes)) => {
                let e: RaftError<NodeId, E> =
                    decode(&format!("{what} error"), &bytes).map_err(network)?;
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            None => Err(network(TransportError::Decode {
                what: what.to_string(),
                reason: "empty reply".into(),
            })),
        }
    }

    async fn send(
        &self,
        kind: RpcKind,
        timeout: Duration,
        message: proto::RaftRequest,
    ) -> Result<proto::RaftReply, TransportError> {
        self.pool
            .call(self.route(), kind, timeout, |mut stub, remaining| {
                let req = request(message.clone(), remaining);
                async move {
                    match kind {
                        RpcKind::Vote => stub.vote(req).await,
                        RpcKind::InstallSnapshot => stub.install_snapshot(req).await,
                        _ => stub.append_entries(req).await,
                    }
                }
            })
            .await
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    /// openraft waits this long between retries to an unreachable peer: the same capped
    /// exponential backoff as reconnects (openraft's default is a flat 500 ms).
    fn backoff(&self) -> openraft::network::Backoff {
        let config = self.pool.config.clone();
        let failures = std::iter::successors(Some(1u32), |f| Some(f.saturating_add(1)));
        openraft::network::Backoff::new(failures.map(move |f| config.backoff(f)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftRpcError> {
        let timeout = option.hard_ttl();
        let payload = encode("AppendEntriesRequest", &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.len() > MAX_APPEND_PAYLOAD_BYTES && rpc.entries.len() > 1 {
            // openraft retries at once with at most this many entries per request.
            let hint = (rpc.entries.len() / 2) as u64;
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let message = proto::RaftRequest {
            payload,
            snapshot_data: Vec::new(),
        };
        match self.send(RpcKind::AppendEntries, timeout, message).await {
            Ok(reply) => self.reply("AppendEntriesResponse", reply),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, timeout)),
        }
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftRpcError<InstallSnapshotError>> {
        let timeout = option.hard_ttl().min(self.pool.config.snapshot_timeout());
        // The chunk travels raw beside the JSON (JSON would spell each byte as a number).
        let snapshot_data = std::mem::take(&mut rpc.data);
        let payload = encode("InstallSnapshotRequest", &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = proto::RaftRequest {
            payload,
            snapshot_data,
        };
        match self.send(RpcKind::InstallSnapshot, timeout, message).await {
            Ok(reply) => self.reply("InstallSnapshotResponse", reply),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, timeout)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RaftRpcError> {
        let timeout = option.hard_ttl();
        let payload =
            encode("VoteRequest", &rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = proto::RaftRequest {
            payload,
            snapshot_data: Vec::new(),
        };
        match self.send(RpcKind::Vote, timeout, message).await {
            Ok(reply) => self.reply("VoteResponse", reply),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, timeout)),
        }
    }
}

/// Calls to peers other than Raft's own: forwarded writes, read-index, join, remove,
/// status. Shares the connection pool of the [`GrpcNetwork`] it came from. Every call has
/// the configured request deadline (joins: the join timeout).
#[derive(Clone)]
pub struct PeerClient {
    from: Option<NodeId>,
    pool: Arc<Pool>,
    filter: Option<Arc<dyn FaultFilter>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("from", &self.from)
            .field("tls", &self.pool.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client of its own (for tools that are not a node); no fault filter applies.
    pub fn new(
        config: TransportConfig,
        security: TransportSecurity,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            from: None,
            pool: Arc::new(Pool::new(config, security)?),
            filter: None,
        })
    }

    /// Opens every new connection of this client (and of the network it came from) through
    /// `dialer` instead of TCP (see [`GrpcNetwork::with_dialer`]).
    pub fn with_dialer(self, dialer: Arc<dyn Dialer>) -> Self {
        *lock(&self.pool.dialer) = Some(dialer);
        self
    }

    fn route<'a>(&'a self, addr: &'a str) -> Route<'a> {
        Route {
            from: self.from,
            to: self.pool.known_id(addr),
            addr,
            filter: self.filter.as_deref(),
        }
    }

    /// Records that `addr` is node `node_id`, so the fault filter sees calls to it. Raft's
    /// own clients, membership and status replies and `NotLeader` answers teach this too.
    pub fn learn_peer(&self, node_id: NodeId, addr: &str) {
        self.pool.learn(addr, node_id);
    }

    fn learn_leader(&self, n: &proto::NotLeader) {
        if let Some(id) = n.leader_id
            && !n.leader_addr.is_empty()
        {
            self.pool.learn(&n.leader_addr, id);
        }
    }

    /// Sends `cmd` to the node at `target_addr`, which executes it if it leads. Returns the
    /// command's result (applied or rejected by `apply`); `NotLeader` names the leader.
    pub async fn forward_write(
        &self,
        target_addr: &str,
        cmd: &Command,
    ) -> Result<CommandResponse, TransportError> {
        let command = encode("Command", cmd)?;
        let message = proto::ForwardWriteRequest { command };
        let timeout = self.pool.config.request_timeout();
        let reply = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::ForwardWrite,
                timeout,
                |mut stub, remaining| {
                    let req = request(message.clone(), remaining);
                    async move { stub.forward_write(req).await }
                },
            )
            .await?;
        use proto::forward_write_reply::Result as R;
        match reply.result {
            Some(R::Response(bytes)) => decode("CommandResponse", &bytes),
            Some(R::NotLeader(n)) => {
                self.learn_leader(&n);
                Err(not_leader(n))
            }
            None => Err(TransportError::Decode {
                what: "ForwardWriteReply".into(),
                reason: "empty reply".into(),
            }),
        }
    }

    /// [`PeerClient::forward_write`] that follows one `NotLeader` redirect (two hops at most).
    pub async fn forward_write_to_leader(
        &self,
        first_addr: &str,
        cmd: &Command,
    ) -> Result<CommandResponse, TransportError> {
        match self.forward_write(first_addr, cmd).await {
            Err(TransportError::NotLeader {
                leader_addr: Some(leader),
                ..
            }) if leader != first_addr => self.forward_write(&leader, cmd).await,
            other => other,
        }
    }

    /// Asks the leader at `target_addr` to confirm its leadership with a quorum and return
    /// the log index a linearizable read must wait for (`None`: empty log).
    pub async fn read_index(&self, target_addr: &str) -> Result<Option<u64>, TransportError> {
        let timeout = self.pool.config.request_timeout();
        let reply = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::ReadIndex,
                timeout,
                |mut stub, remaining| {
                    let req = request(proto::ReadIndexRequest {}, remaining);
                    async move { stub.read_index(req).await }
                },
            )
            .await?;
        use proto::read_index_reply::Result as R;
        match reply.result {
            Some(R::ReadIndex(r)) => Ok(r.index),
            Some(R::NotLeader(n)) => {
                self.learn_leader(&n);
                Err(not_leader(n))
            }
            None => Err(TransportError::Decode {
                what: "ReadIndexReply".into(),
                reason: "empty reply".into(),
            }),
        }
    }

    /// A linearizable-read barrier for a follower: gets the read index from the leader at
    /// `leader_addr`, then waits (within the request timeout) until `control` has applied it.
    /// Afterwards `control.read_applied(..)` is linearizable.
    pub async fn read_barrier(
        &self,
        control: &ControlPlane,
        leader_addr: &str,
    ) -> Result<(), TransportError> {
        let index = self.read_index(leader_addr).await?;
        let timeout = self.pool.config.request_timeout();
        control
            .raft()
            .wait(Some(timeout))
            .applied_index_at_least(index, "applied the read index")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => TransportError::Timeout {
                    addr: "local state machine".into(),
                    what: format!("applying up to read index {index:?}"),
                    timeout_ms: self.pool.config.request_timeout_ms,
                },
                other => TransportError::Raft(other.to_string()),
            })
    }

    /// Asks the node at `target_addr` to add node `node_id` (reachable at `my_addr`) to the
    /// group: the leader adds it as a learner, waits until it has caught up, then makes it a
    /// voter. A follower relays the request to its leader once. Returns the new membership.
    pub async fn join(
        &self,
        target_addr: &str,
        node_id: NodeId,
        my_addr: &str,
    ) -> Result<Vec<MemberInfo>, TransportError> {
        self.join_relay(target_addr, node_id, my_addr, 0).await
    }

    pub(crate) async fn join_relay(
        &self,
        target_addr: &str,
        node_id: NodeId,
        my_addr: &str,
        hops: u32,
    ) -> Result<Vec<MemberInfo>, TransportError> {
        addr_host(my_addr)?;
        let message = proto::JoinRequest {
            node_id,
            addr: my_addr.to_string(),
            hops,
        };
        // The leader may relay and then wait for the learner to catch up.
        let timeout = self.pool.config.join_timeout() + self.pool.config.request_timeout();
        let reply = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::Join,
                timeout,
                |mut stub, remaining| {
                    let req = request(message.clone(), remaining);
                    async move { stub.join(req).await }
                },
            )
            .await?;
        self.membership_reply(reply)
    }

    /// Asks the node at `target_addr` to remove node `node_id` from the group (voter or
    /// learner; removing an unknown node changes nothing). Returns the new membership.
    pub async fn remove(
        &self,
        target_addr: &str,
        node_id: NodeId,
    ) -> Result<Vec<MemberInfo>, TransportError> {
        self.remove_relay(target_addr, node_id, 0).await
    }

    pub(crate) async fn remove_relay(
        &self,
        target_addr: &str,
        node_id: NodeId,
        hops: u32,
    ) -> Result<Vec<MemberInfo>, TransportError> {
        let message = proto::RemoveRequest { node_id, hops };
        let timeout = self.pool.config.request_timeout() * 2;
        let reply = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::Remove,
                timeout,
                |mut stub, remaining| {
                    let req = request(message, remaining);
                    async move { stub.remove(req).await }
                },
            )
            .await?;
        self.membership_reply(reply)
    }

    fn membership_reply(
        &self,
        reply: proto::MembershipReply,
    ) -> Result<Vec<MemberInfo>, TransportError> {
        use proto::membership_reply::Result as R;
        match reply.result {
            Some(R::Membership(m)) => {
                let members = members(Some(m));
                for m in &members {
                    self.pool.learn(&m.addr, m.node_id);
                }
                Ok(members)
            }
            Some(R::NotLeader(n)) => {
                self.learn_leader(&n);
                Err(not_leader(n))
            }
            None => Err(TransportError::Decode {
                what: "MembershipReply".into(),
                reason: "empty reply".into(),
            }),
        }
    }

    /// Asks the node at `target_addr` to serve a data call: `payload` is handed to the
    /// handler it registered. `deadline` bounds the whole call (the in-flight wait included)
    /// and travels to the peer as the gRPC deadline. Data calls have their own in-flight
    /// bound per peer (`max_in_flight_per_peer`), apart from Raft's. A peer without a handler
    /// answers `UNAVAILABLE` (mapped to a retryable error), a busy one `Overloaded`.
    pub async fn data_call(
        &self,
        target_addr: &str,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> Result<DataCallOutcome, TransportError> {
        if payload.len() > MAX_MESSAGE_BYTES - 1024 {
            return Err(TransportError::InvalidRequest(format!(
                "a data call's payload of {} bytes is over the transport's bound",
                payload.len()
            )));
        }
        let message = proto::DataCallRequest { payload };
        let reply = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::DataCall,
                deadline,
                |mut stub, remaining| {
                    let req = request(message.clone(), remaining);
                    async move { stub.data_call(req).await }
                },
            )
            .await?;
        use proto::data_call_reply::Result as R;
        match reply.result {
            Some(R::Ok(bytes)) => Ok(DataCallOutcome::Ok(bytes)),
            Some(R::Refused(why)) => Ok(DataCallOutcome::Refused(why)),
            None => Err(TransportError::Decode {
                what: "DataCallReply".into(),
                reason: "empty reply".into(),
            }),
        }
    }

    /// The view of the group of the node at `target_addr`.
    pub async fn status(&self, target_addr: &str) -> Result<PeerStatus, TransportError> {
        let timeout = self.pool.config.request_timeout();
        let r = self
            .pool
            .call(
                self.route(target_addr),
                RpcKind::Status,
                timeout,
                |mut stub, remaining| {
                    let req = request(proto::StatusRequest {}, remaining);
                    async move { stub.status(req).await }
                },
            )
            .await?;
        self.pool.learn(target_addr, r.node_id);
        let members = members(r.membership);
        for m in &members {
            self.pool.learn(&m.addr, m.node_id);
        }
        let ids: BTreeSet<NodeId> = members.iter().map(|m| m.node_id).collect();
        debug_assert_eq!(ids.len(), members.len(), "members are unique by id");
        Ok(PeerStatus {
            node_id: r.node_id,
            leader_id: r.leader_id,
            leader_addr: Some(r.leader_addr).filter(|a| !a.is_empty()),
            term: r.term,
            last_log_index: r.last_log_index,
            applied_index: r.applied_index,
            members,
            state: r.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(addr_host("127.0.0.1:7000").unwrap(), "127.0.0.1");
        assert_eq!(addr_host("node-1.example:7000").unwrap(), "node-1.example");
        assert_eq!(addr_host("[::1]:7000").unwrap(), "::1");
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            "http://h:1",
            ":7000",
            "a b:1",
        ] {
            assert!(addr_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_peers_timeout_is_a_deadline_and_other_cancels_are_not() {
        // What tonic's server answers when the deadline the client sent passes.
        assert!(is_deadline(&tonic::Status::cancelled("Timeout expired")));
        assert!(is_deadline(&tonic::Status::deadline_exceeded("late")));
        assert!(!is_deadline(&tonic::Status::cancelled("h2 stream reset")));
        assert!(!is_deadline(&tonic::Status::unavailable("Timeout expired")));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = TransportConfig {
            backoff_base_ms: 10,
            backoff_max_ms: 100,
            ..TransportConfig::default()
        };
        let got: Vec<u64> = (1..=6).map(|f| c.backoff(f).as_millis() as u64).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(c.backoff(u32::MAX).as_millis(), 100);
    }
}
