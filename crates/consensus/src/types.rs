use std::fmt;

use serde::{Deserialize, Serialize};
use wharf_meta::{Command, Response};

pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it and its region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of the peer gRPC server.
    pub grpc: String,
    /// Base URL of the node's HTTP API.
    pub http: String,
    pub region: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.region, self.grpc)
    }
}

openraft::declare_raft_types!(
    /// Wharf's Raft types: metadata commands in, apply results out, and
    /// snapshots as files on disk so they are never held in memory whole.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
