//! Outbound peer RPCs over gRPC (tonic). Raft messages travel as bincode
//! payloads; the remote side answers `Result<Response, RaftError>` so that
//! openraft sees remote errors as remote errors, not transport failures.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode};
use crate::fence::Fence;
use crate::pb::raft_client::RaftClient;
use crate::pb::Payload;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// HTTP/2 flow-control windows for peer connections: above the
/// bandwidth-delay product of a 1 Gbit/s, 100 ms link.
pub const WINDOW_STREAM_BYTES: u32 = 16 << 20;
pub const WINDOW_CONNECTION_BYTES: u32 = 32 << 20;

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// A lazily connected channel to a peer, over mutual TLS when `tls` is set.
pub fn channel(
    addr: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.clone())?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        // HTTP/2 windows sized for WAN links: the default 64 KiB stream
        // window caps a 80 ms RTT link at a few Mbit/s.
        .initial_stream_window_size(Some(WINDOW_STREAM_BYTES))
        .initial_connection_window_size(Some(WINDOW_CONNECTION_BYTES))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

/// Which RPC to call.
#[derive(Clone, Copy)]
pub enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
}

/// Call `rpc` with a bincode payload and return the raw answer.
pub async fn call(
    client: &mut RaftClient<Channel>,
    rpc: Rpc,
    payload: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut req = tonic::Request::new(Payload { data: payload });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let resp = match rpc {
        Rpc::AppendEntries => client.append_entries(req).await?,
        Rpc::Vote => client.vote(req).await?,
        Rpc::InstallSnapshot => client.install_snapshot(req).await?,
        Rpc::Forward => client.forward(req).await?,
        Rpc::ReadIndex => client.read_index(req).await?,
    };
    Ok(resp.into_inner().data)
}

/// Creates Raft clients, dialing overridden addresses where configured.
pub struct NetworkFactory {
    /// While fenced, no Raft message leaves this node.
    pub fence: Arc<Fence>,
    pub overrides: std::collections::BTreeMap<NodeId, String>,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let addr = self.overrides.get(&target).unwrap_or(&node.grpc);
        PeerClient {
            target,
            fence: self.fence.clone(),
            client: channel(addr, self.tls.as_ref())
                .map(|c| {
                    RaftClient::new(c)
                        .max_decoding_message_size(crate::handle::PEER_MESSAGE_MAX_BYTES)
                        .max_encoding_message_size(crate::handle::PEER_MESSAGE_MAX_BYTES)
                })
                .map_err(|e| e.to_string()),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    fence: Arc<Fence>,
    client: Result<RaftClient<Channel>, String>,
}

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.fence.is_fenced() {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other("this node is fenced"),
            )));
        }
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let bytes = call(client, rpc, encode(req), Some(option.hard_ttl()))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
                _ => RPCError::Network(NetworkError::new(&s)),
            })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(Rpc::Vote, &rpc, &option).await
    }
}
