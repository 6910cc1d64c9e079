//! The peer gRPC server: openraft's RPCs plus write forwarding and
//! read-index for followers, and pre-votes.
//!
//! Each openraft RPC is decoded, handed to Raft, and Raft's whole `Result`
//! encoded back, so the caller can tell remote errors apart.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotRequest};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response as TonicResponse, Status};
use wharf_meta::{Envelope, Response};

use crate::codec::{decode, encode};
use crate::log_store::LogStore;
use crate::pb::raft_server::Raft as RaftService;
use crate::pb::{Payload, PreVoteReply, PreVoteRequest};
use crate::prevote::{judge, last_position, Liveness};
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};

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
    /// The election timer, reset by every append or snapshot a leader
    /// got accepted here and by every vote granted.
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) log: LogStore,
    /// openraft's leader lease (`election_timeout_max`): a pre-vote is
    /// refused while a leader was heard within it.
    pub(crate) lease: Duration,
}

fn bad_request(e: crate::codec::CodecError) -> Status {
    Status::invalid_argument(format!("undecodable payload: {e}"))
}

fn reply(bytes: Vec<u8>) -> Result<TonicResponse<Payload>, Status> {
    Ok(TonicResponse::new(Payload { data: bytes }))
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        req: Request<Payload>,
    ) -> Result<TonicResponse<Payload>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(bad_request)?;
        let result = self.raft.append_entries(rpc).await;
        // Any answer but "your term is old" means a leader this node
        // follows is alive (a conflict is only a log to repair).
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.liveness.heard();
        }
        reply(encode(&result))
    }

    async fn vote(&self, req: Request<Payload>) -> Result<TonicResponse<Payload>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(bad_request)?;
        let result = self.raft.vote(rpc).await;
        // Having voted, wait a whole timeout for that candidate to win.
        if matches!(&result, Ok(r) if r.vote_granted) {
            self.liveness.heard();
        }
        reply(encode(&result))
    }

    async fn install_snapshot(
        &self,
        req: Request<Payload>,
    ) -> Result<TonicResponse<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode(&req.into_inner().data).map_err(bad_request)?;
        let sender = rpc.vote;
        let result = self.raft.install_snapshot(rpc).await;
        // Accepted unless this node answers a newer term than the sender's.
        if matches!(&result, Ok(r) if r.vote <= sender) {
            self.liveness.heard();
        }
        reply(encode(&result))
    }

    async fn pre_vote(
        &self,
        req: Request<PreVoteRequest>,
    ) -> Result<TonicResponse<PreVoteReply>, Status> {
        let r = req.into_inner();
        let is_leader = self.raft.metrics().borrow().state == ServerState::Leader;
        let mine = last_position(&self.log).await.map_err(Status::internal)?;
        let candidate = r.has_log.then_some((r.last_log_term, r.last_log_index));
        let verdict = judge(
            is_leader,
            self.liveness.since(),
            self.lease,
            mine,
            candidate,
        );
        if let Err(why) = &verdict {
            tracing::debug!(candidate = r.candidate, %why, "pre-vote refused");
        }
        Ok(TonicResponse::new(PreVoteReply {
            granted: verdict.is_ok(),
            reason: verdict.err().map(|w| w.to_string()).unwrap_or_default(),
        }))
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
