//! The server side: [`PeerServer`] serves the `quire.peer.v1.Peer` service for one
//! [`ControlPlane`] on a listener the caller bound, with a global concurrency bound, a
//! per-connection bound, per-request timeouts, HTTP/2 keepalive and mutual TLS.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Membership, ServerState};
use quire_raft::command::Command;
use quire_raft::{CommandResponse, ControlPlane, NodeId, TypeConfig, WriteError};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::client::{PeerClient, addr_host, chain, decode};
use crate::config::{MAX_MESSAGE_BYTES, TransportConfig};
use crate::dial::AcceptedIo;
use crate::error::TransportError;
use crate::proto;
use crate::tls::{TransportSecurity, install_crypto_provider};

/// Why a [`DataCallHandler`] did not answer a data call with its own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataCallRefusal {
    /// Refused for a reason the caller can read (sent as the reply's `refused`).
    Refused(String),
    /// The node serves as many data calls as it may; retry later (`RESOURCE_EXHAUSTED`).
    Busy(String),
    /// The payload is not one the handler understands (`INVALID_ARGUMENT`).
    Invalid(String),
}

/// Serves the data calls other nodes send (`DataCall`): the node registers one with
/// [`PeerServer::with_data_calls`]. The transport never looks inside the payload; it passes
/// the caller's node id as its mutual-TLS certificate names it (`None` on an insecure
/// transport). The gRPC deadline the caller set bounds the handler's future.
pub trait DataCallHandler: Send + Sync + 'static {
    /// Answers one data call from node `from` with the handler's reply bytes.
    fn handle(
        &self,
        from: Option<NodeId>,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, DataCallRefusal>>;
}

/// Serves the peer service for one control-plane node.
pub struct PeerServer {
    service: PeerService,
    security: TransportSecurity,
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("node_id", &self.service.control.config().node_id)
            .field(
                "tls",
                &matches!(self.security, TransportSecurity::MutualTls(_)),
            )
            .finish_non_exhaustive()
    }
}

impl PeerServer {
    /// A server for `control`. `relay` (usually the node's `GrpcNetwork::peer_client()`)
    /// carries join and remove requests on to the leader when this node does not lead.
    pub fn new(
        control: Arc<ControlPlane>,
        config: TransportConfig,
        security: TransportSecurity,
        relay: PeerClient,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        install_crypto_provider();
        let limit = Arc::new(Semaphore::new(config.server_max_concurrent));
        let tls = matches!(security, TransportSecurity::MutualTls(_));
        Ok(Self {
            service: PeerService {
                tls,
                control,
                config,
                relay,
                limit,
                membership: Arc::new(tokio::sync::Mutex::new(())),
                data_calls: None,
            },
            security,
        })
    }

    /// Serves `DataCall` requests with `handler` (without one they answer `UNAVAILABLE`).
    /// Data calls do not count against `server_max_concurrent` (they may wait for a rate
    /// limiter for seconds and must not hold Raft's slots): the handler bounds them.
    pub fn with_data_calls(mut self, handler: Arc<dyn DataCallHandler>) -> Self {
        self.service.data_calls = Some(handler);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then drains connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), TransportError> {
        let config = self.service.config.clone();
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(config.keepalive_interval()));
        let (mut builder, service) = self.into_parts(&local)?;
        builder
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| TransportError::Serve(chain(&e)))
    }

    /// Serves the connections `incoming` yields (accepted byte streams of another network,
    /// such as the simulator's) until `shutdown` completes, then drains them. `local` names
    /// the listening address in logs. Same limits, timeouts and security as
    /// [`PeerServer::serve`]; an `Err` item is a failed accept and is skipped.
    pub async fn serve_incoming<S, IO, E>(
        self,
        local: &str,
        incoming: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), TransportError>
    where
        S: futures::Stream<Item = Result<IO, E>> + Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use futures::StreamExt as _;
        let incoming = incoming.map(|io| io.map(AcceptedIo));
        let (mut builder, service) = self.into_parts(local)?;
        builder
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| TransportError::Serve(chain(&e)))
    }

    fn into_parts(
        self,
        local: &str,
    ) -> Result<(Server, proto::peer_server::PeerServer<PeerService>), TransportError> {
        let config = self.service.config.clone();
        let per_connection = config.server_max_per_connection;
        let mut builder = Server::builder()
            .concurrency_limit_per_connection(per_connection)
            .max_concurrent_streams(u32::try_from(per_connection).unwrap_or(u32::MAX))
            .http2_keepalive_interval(Some(config.keepalive_interval()))
            .http2_keepalive_timeout(Some(config.keepalive_timeout()));
        match &self.security {
            TransportSecurity::MutualTls(m) => {
                builder = builder
                    .tls_config(
                        ServerTlsConfig::new()
                            .identity(m.identity())
                            .client_ca_root(m.ca())
                            .timeout(config.connect_timeout()),
                    )
                    .map_err(|e| TransportError::Tls(chain(&e)))?;
            }
            TransportSecurity::Insecure => {
                tracing::warn!(
                    addr = %local,
                    "peer server runs without TLS: anyone who can reach this port can act as a peer"
                );
            }
        }
        let service = proto::peer_server::PeerServer::new(self.service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok((builder, service))
    }
}

struct PeerService {
    /// Whether clients present certificates (then each names the node it was issued to).
    tls: bool,
    control: Arc<ControlPlane>,
    config: TransportConfig,
    relay: PeerClient,
    limit: Arc<Semaphore>,
    /// One membership change at a time on this node (openraft refuses overlapping ones).
    membership: Arc<tokio::sync::Mutex<()>>,
    /// Serves `DataCall`, if the node registered a handler.
    data_calls: Option<Arc<dyn DataCallHandler>>,
}

fn reply_bytes<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("encoding {what}: {e}")))
}

fn raft_reply<T: Serialize, E: Serialize>(
    what: &str,
    result: Result<T, E>,
) -> Result<Response<proto::RaftReply>, Status> {
    use proto::raft_reply::Result as R;
    let result = match result {
        Ok(v) => R::Ok(reply_bytes(what, &v)?),
        Err(e) => R::RaftError(reply_bytes(what, &e)?),
    };
    Ok(Response::new(proto::RaftReply {
        result: Some(result),
    }))
}

fn local_timeout(what: &str, limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "{what} did not complete within {} ms on the receiver",
        limit.as_millis()
    ))
}

fn membership_message(m: &Membership<NodeId, BasicNode>) -> proto::Membership {
    let voters: BTreeSet<NodeId> = m.voter_ids().collect();
    let members = m
        .nodes()
        .map(|(id, node)| proto::Member {
            node_id: *id,
            addr: node.addr.clone(),
            role: if voters.contains(id) {
                proto::Role::Voter as i32
            } else {
                proto::Role::Learner as i32
            },
        })
        .collect();
    proto::Membership { members }
}

/// The node id in a certificate's subject common name `quire-node-<id>` (as
/// [`crate::tls::issue_node_cert`] writes it).
pub(crate) fn certificate_node_id(der: &[u8]) -> Result<NodeId, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the client certificate has no common name")?;
    cn.strip_prefix(crate::tls::NODE_CN_PREFIX)
        .and_then(|id| id.parse::<NodeId>().ok())
        .ok_or_else(|| {
            format!(
                "the client certificate (CN {cn:?}) names no Quire node; issue it with `quire certs node`"
            )
        })
}

impl PeerService {
    /// Under mutual TLS, the node the client's certificate was issued to (`None` without
    /// TLS: there is nothing to check against).
    fn certified_id<T>(&self, request: &Request<T>) -> Result<Option<NodeId>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        certificate_node_id(leaf)
            .map(Some)
            .map_err(Status::permission_denied)
    }

    /// Refuses a request that speaks for node `claimed` unless the client's certificate was
    /// issued to that node (a node cannot vote, lead or join as another).
    fn check_sender<T>(
        &self,
        request: &Request<T>,
        claimed: NodeId,
        what: &str,
    ) -> Result<(), Status> {
        match self.certified_id(request)? {
            Some(certified) if certified != claimed => Err(Status::permission_denied(format!(
                "{what} speaks for node {claimed}, but the client certificate was issued to node {certified}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a relayed request unless the relaying node is a member of the group.
    fn check_member<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        match self.certified_id(request)? {
            Some(certified) => {
                let m = self.control.raft().metrics().borrow().clone();
                if m.membership_config
                    .membership()
                    .get_node(&certified)
                    .is_some()
                {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{what} relayed by node {certified}, which is not a member of the group"
                    )))
                }
            }
            None => Ok(()),
        }
    }

    async fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        match tokio::time::timeout(self.config.request_timeout(), self.limit.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(TransportError::Overloaded(format!(
                "{} requests already being handled",
                self.config.server_max_concurrent
            ))
            .into()),
        }
    }

    fn my_id(&self) -> NodeId {
        self.control.config().node_id
    }

    /// The leader this node knows of and its address.
    fn leader(&self) -> (Option<NodeId>, String, bool) {
        let m = self.control.raft().metrics().borrow().clone();
        let addr = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
            .map(|n| n.addr)
            .unwrap_or_default();
        let leads = m.state == ServerState::Leader && m.current_leader == Some(self.my_id());
        (m.current_leader, addr, leads)
    }

    fn not_leader(&self) -> proto::NotLeader {
        let (leader_id, leader_addr, _) = self.leader();
        proto::NotLeader {
            leader_id,
            leader_addr,
        }
    }

    fn not_leader_from(
        &self,
        f: openraft::error::ForwardToLeader<NodeId, BasicNode>,
    ) -> proto::NotLeader {
        match f.leader_node {
            Some(node) => proto::NotLeader {
                leader_id: f.leader_id,
                leader_addr: node.addr,
            },
            None => self.not_leader(),
        }
    }

    fn membership_now(&self) -> proto::Membership {
        let m = self.control.raft().metrics().borrow().clone();
        membership_message(m.membership_config.membership())
    }

    fn change_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> Result<proto::NotLeader, Status> {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                Ok(self.not_leader_from(f))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Err(
                Status::failed_precondition(format!("membership change refused: {e}")),
            ),
            RaftError::Fatal(e) => Err(TransportError::Raft(e.to_string()).into()),
        }
    }

    async fn leader_join(
        &self,
        node_id: NodeId,
        addr: String,
    ) -> Result<proto::membership_reply::Result, Status> {
        use proto::membership_reply::Result as R;
        let _one_at_a_time = self.membership.lock().await;
        let raft = self.control.raft();
        let limit = self.config.join_timeout();
        let steps = async {
            // Blocking: returns once the learner has caught up with the leader's log.
            if let Err(e) = raft
                .add_learner(node_id, BasicNode::new(addr.clone()), true)
                .await
            {
                return self.change_error(e).map(R::NotLeader);
            }
            match raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
                .await
            {
                Ok(resp) => Ok(R::Membership(match resp.membership {
                    Some(m) => membership_message(&m),
                    None => self.membership_now(),
                })),
                Err(e) => self.change_error(e).map(R::NotLeader),
            }
        };
        match tokio::time::timeout(limit, steps).await {
            Ok(result) => {
                if let Ok(R::Membership(_)) = &result {
                    tracing::info!(node_id, %addr, "node joined the group as a voter");
                }
                result
            }
            Err(_) => Err(local_timeout(
                &format!("adding node {node_id} (catch-up and promotion)"),
                limit,
            )),
        }
    }

    async fn leader_remove(
        &self,
        node_id: NodeId,
    ) -> Result<proto::membership_reply::Result, Status> {
        use proto::membership_reply::Result as R;
        let _one_at_a_time = self.membership.lock().await;
        let raft = self.control.raft();
        let current = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let change = if current.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if current.get_node(&node_id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Ok(R::Membership(membership_message(&current)));
        };
        let limit = self.config.request_timeout();
        match tokio::time::timeout(limit, raft.change_membership(change, false)).await {
            Ok(Ok(resp)) => {
                tracing::info!(node_id, "node removed from the group");
                Ok(R::Membership(match resp.membership {
                    Some(m) => membership_message(&m),
                    None => self.membership_now(),
                }))
            }
            Ok(Err(e)) => self.change_error(e).map(R::NotLeader),
            Err(_) => Err(local_timeout(&format!("removing node {node_id}"), limit)),
        }
    }
}

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<proto::RaftRequest>,
    ) -> Result<Response<proto::RaftReply>, Status> {
        let _permit = self.admit().await?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode("AppendEntriesRequest", &request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id.node_id, "AppendEntries")?;
        let limit = self.config.request_timeout();
        let result = tokio::time::timeout(limit, self.control.raft().append_entries(rpc))
            .await
            .map_err(|_| local_timeout("AppendEntries", limit))?;
        raft_reply("AppendEntriesResponse", result)
    }

    async fn vote(
        &self,
        request: Request<proto::RaftRequest>,
    ) -> Result<Response<proto::RaftReply>, Status> {
        let _permit = self.admit().await?;
        let rpc: openraft::raft::VoteRequest<NodeId> =
            decode("VoteRequest", &request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id.node_id, "Vote")?;
        let limit = self.config.request_timeout();
        let result = tokio::time::timeout(limit, self.control.raft().vote(rpc))
            .await
            .map_err(|_| local_timeout("Vote", limit))?;
        raft_reply("VoteResponse", result)
    }

    async fn install_snapshot(
        &self,
        request: Request<proto::RaftRequest>,
    ) -> Result<Response<proto::RaftReply>, Status> {
        let _permit = self.admit().await?;
        let mut rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode("InstallSnapshotRequest", &request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id.node_id, "InstallSnapshot")?;
        let message = request.into_inner();
        rpc.data = message.snapshot_data;
        let limit = self.config.snapshot_timeout();
        let result = tokio::time::timeout(limit, self.control.raft().install_snapshot(rpc))
            .await
            .map_err(|_| local_timeout("InstallSnapshot", limit))?;
        raft_reply("InstallSnapshotResponse", result)
    }

    async fn forward_write(
        &self,
        request: Request<proto::ForwardWriteRequest>,
    ) -> Result<Response<proto::ForwardWriteReply>, Status> {
        use proto::forward_write_reply::Result as R;
        let _permit = self.admit().await?;
        let cmd: Command = decode("Command", &request.get_ref().command)?;
        // A command only one node may propose (its own placement labels) is relayed only by
        // that node.
        if let Some(node) = cmd.speaks_for_node() {
            self.check_sender(&request, node, cmd.kind())?;
        }
        let limit = self.config.request_timeout();
        let result = match self.control.write_with_timeout(cmd, limit).await {
            Ok(output) => R::Response(reply_bytes(
                "CommandResponse",
                &CommandResponse(Ok(output)),
            )?),
            Err(WriteError::Rejected(e)) => {
                R::Response(reply_bytes("CommandResponse", &CommandResponse(Err(e)))?)
            }
            Err(WriteError::NotLeader { leader }) => {
                let mut n = self.not_leader();
                if leader.is_some() && leader != n.leader_id {
                    n.leader_id = leader;
                    n.leader_addr = String::new();
                }
                R::NotLeader(n)
            }
            Err(WriteError::Timeout) => {
                return Err(Status::deadline_exceeded(
                    "write did not complete in time on the leader; it may still commit",
                ));
            }
            Err(WriteError::Raft(e)) => return Err(TransportError::Raft(e).into()),
        };
        Ok(Response::new(proto::ForwardWriteReply {
            result: Some(result),
        }))
    }

    async fn read_index(
        &self,
        _request: Request<proto::ReadIndexRequest>,
    ) -> Result<Response<proto::ReadIndexReply>, Status> {
        use openraft::error::CheckIsLeaderError;
        use proto::read_index_reply::Result as R;
        let _permit = self.admit().await?;
        let limit = self.config.request_timeout();
        let confirmed = tokio::time::timeout(limit, self.control.raft().ensure_linearizable())
            .await
            .map_err(|_| local_timeout("confirming leadership", limit))?;
        let result = match confirmed {
            Ok(log_id) => R::ReadIndex(proto::ReadIndex {
                index: log_id.map(|l| l.index),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                R::NotLeader(self.not_leader_from(f))
            }
            Err(e) => return Err(TransportError::Raft(e.to_string()).into()),
        };
        Ok(Response::new(proto::ReadIndexReply {
            result: Some(result),
        }))
    }

    async fn join(
        &self,
        request: Request<proto::JoinRequest>,
    ) -> Result<Response<proto::MembershipReply>, Status> {
        use proto::membership_reply::Result as R;
        let _permit = self.admit().await?;
        // A node joins as itself; a relaying follower forwards on the joiner's behalf.
        if request.get_ref().hops == 0 {
            self.check_sender(&request, request.get_ref().node_id, "Join")?;
        } else {
            self.check_member(&request, "Join")?;
        }
        let proto::JoinRequest {
            node_id,
            addr,
            hops,
        } = request.into_inner();
        addr_host(&addr)?;
        let (leader_id, leader_addr, leads) = self.leader();
        let result = if leads {
            self.leader_join(node_id, addr).await?
        } else if hops == 0 && !leader_addr.is_empty() && leader_id != Some(self.my_id()) {
            match self.relay.join_relay(&leader_addr, node_id, &addr, 1).await {
                Ok(members) => R::Membership(members_message(members)),
                Err(TransportError::NotLeader {
                    leader_id,
                    leader_addr,
                }) => R::NotLeader(proto::NotLeader {
                    leader_id,
                    leader_addr: leader_addr.unwrap_or_default(),
                }),
                Err(e) => return Err(e.into()),
            }
        } else {
            R::NotLeader(self.not_leader())
        };
        Ok(Response::new(proto::MembershipReply {
            result: Some(result),
        }))
    }

    async fn remove(
        &self,
        request: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::MembershipReply>, Status> {
        use proto::membership_reply::Result as R;
        let _permit = self.admit().await?;
        let proto::RemoveRequest { node_id, hops } = request.into_inner();
        let (leader_id, leader_addr, leads) = self.leader();
        let result = if leads {
            self.leader_remove(node_id).await?
        } else if hops == 0 && !leader_addr.is_empty() && leader_id != Some(self.my_id()) {
            match self.relay.remove_relay(&leader_addr, node_id, 1).await {
                Ok(members) => R::Membership(members_message(members)),
                Err(TransportError::NotLeader {
                    leader_id,
                    leader_addr,
                }) => R::NotLeader(proto::NotLeader {
                    leader_id,
                    leader_addr: leader_addr.unwrap_or_default(),
                }),
                Err(e) => return Err(e.into()),
            }
        } else {
            R::NotLeader(self.not_leader())
        };
        Ok(Response::new(proto::MembershipReply {
            result: Some(result),
        }))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let m = self.control.raft().metrics().borrow().clone();
        let leader_addr = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
            .map(|n| n.addr)
            .unwrap_or_default();
        Ok(Response::new(proto::StatusReply {
            node_id: m.id,
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            membership: Some(membership_message(m.membership_config.membership())),
            state: format!("{:?}", m.state),
        }))
    }

    async fn data_call(
        &self,
        request: Request<proto::DataCallRequest>,
    ) -> Result<Response<proto::DataCallReply>, Status> {
        use proto::data_call_reply::Result as R;
        let Some(handler) = self.data_calls.clone() else {
            return Err(Status::unavailable(
                "this node serves no data calls (no handler registered)",
            ));
        };
        let from = self.certified_id(&request)?;
        let payload = request.into_inner().payload;
        let result = match handler.handle(from, payload).await {
            Ok(bytes) => R::Ok(bytes),
            Err(DataCallRefusal::Refused(why)) => R::Refused(why),
            Err(DataCallRefusal::Busy(why)) => return Err(Status::resource_exhausted(why)),
            Err(DataCallRefusal::Invalid(why)) => return Err(Status::invalid_argument(why)),
        };
        Ok(Response::new(proto::DataCallReply {
            result: Some(result),
        }))
    }
}

fn members_message(members: Vec<crate::client::MemberInfo>) -> proto::Membership {
    proto::Membership {
        members: members
            .into_iter()
            .map(|m| proto::Member {
                node_id: m.node_id,
                addr: m.addr,
                role: match m.role {
                    crate::client::MemberRole::Voter => proto::Role::Voter as i32,
                    crate::client::MemberRole::Learner => proto::Role::Learner as i32,
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::tls::{generate_ca, issue_node_cert};

    #[test]
    fn node_id_comes_from_the_certificate_common_name() {
        let ca = generate_ca("t").unwrap();
        let node = issue_node_cert(&ca.cert_pem, &ca.key_pem, 42, &["127.0.0.1".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(certificate_node_id(&der).unwrap(), 42);
        // The CA's own certificate names no node.
        let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        assert!(
            certificate_node_id(&der)
                .unwrap_err()
                .contains("names no Quire node")
        );
        assert!(certificate_node_id(b"junk").is_err());
    }
}
