//! The peer gRPC server: openraft's RPCs plus write forwarding and
//! read-index for followers.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response as TonicResponse, Status};
use wharf_meta::{Envelope, Response};

use crate::codec::{decode, encode};
use crate::pb::raft_server::Raft as RaftService;
use crate::pb::Payload;
use crate::types::{NodeId, NodeInfo, Raft};

/// Why the leader-side of a forwarded request could not serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// This node is not the leader; the hint names the one it knows of.
    NotLeader(Option<(NodeId, NodeInfo)>),
    /// Leadership could not be confirmed with a quorum, or Raft failed.
    Failed(String),
}

pub type ForwardReply = Result<(Response, u64), ForwardError>;
pub type ReadIndexReply = Result<u64, ForwardError>;

pub struct PeerService {
    pub raft: Arc<Raft>,
}

fn bad_request(e: crate::codec::CodecError) -> Status {
    Status::invalid_argument(format!("undecodable payload: {e}"))
}

fn reply(bytes: Vec<u8>) -> Result<TonicResponse<Payload>, Status> {
    Ok(TonicResponse::new(Payload { data: bytes }))
}

/// Serve one openraft RPC: decode the request, hand it to Raft, encode
/// Raft's whole `Result` so the caller can tell remote errors apart.
macro_rules! raft_rpc {
    ($self:ident, $req:ident, $method:ident) => {{
        let rpc = decode(&$req.into_inner().data).map_err(bad_request)?;
        let result = $self.raft.$method(rpc).await;
        reply(encode(&result))
    }};
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        req: Request<Payload>,
    ) -> Result<TonicResponse<Payload>, Status> {
        raft_rpc!(self, req, append_entries)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<TonicResponse<Payload>, Status> {
        raft_rpc!(self, req, vote)
    }

    async fn install_snapshot(
        &self,
        req: Request<Payload>,
    ) -> Result<TonicResponse<Payload>, Status> {
        raft_rpc!(self, req, install_snapshot)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<TonicResponse<Payload>, Status> {
        let cmd: Envelope = decode(&req.into_inner().data).map_err(bad_request)?;
        let answer: ForwardReply = match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader(f.leader_id.zip(f.leader_node)))
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        };
        reply(encode(&answer))
    }

    async fn read_index(&self, _req: Request<Payload>) -> Result<TonicResponse<Payload>, Status> {
        let answer: ReadIndexReply = match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader(f.leader_id.zip(f.leader_node)))
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        };
        reply(encode(&answer))
    }
}
