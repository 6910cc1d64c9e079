use std::fmt;

use serde::{Deserialize, Serialize};
use wharf_meta::{Envelope, Response};

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
        D = Envelope,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

openraft::declare_raft_types!(
    /// The types of release 0.1, whose log entries carried a bare command
    /// (bincode): only to read such entries once and rewrite them.
    pub LegacyTypeConfig:
        D = wharf_meta::CommandV01,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

/// A release 0.1 log entry as the current type: its command addressed the
/// registry that is now the default one.
pub fn entry_from_release_0_1(e: openraft::Entry<LegacyTypeConfig>) -> Entry {
    let payload = match e.payload {
        openraft::EntryPayload::Blank => openraft::EntryPayload::Blank,
        openraft::EntryPayload::Normal(cmd) => {
            openraft::EntryPayload::Normal(Envelope::from_release_0_1(cmd))
        }
        openraft::EntryPayload::Membership(m) => openraft::EntryPayload::Membership(m),
    };
    Entry {
        log_id: e.log_id,
        payload,
    }
}

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
