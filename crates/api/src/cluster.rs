//! `/api/v1/replications` membership changes (a region's node joining or
//! leaving the Raft group) and `/api/v1/fence` (a region taken out for a
//! drill). Cluster operator only.

use serde::{Deserialize, Serialize};

/// `POST /replications`: a node of a new (or returning) region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub node_id: u64,
    pub region: String,
    /// host:port of the new node's peer gRPC server.
    pub grpc: String,
    /// Base URL of the new node's HTTP API.
    pub http: String,
    /// How long it may take to catch up before it votes (default 120 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_timeout_s: Option<u64>,
}

/// The answer to a membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChanged {
    pub region: String,
    pub node_id: u64,
    /// `voter` once added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub removed: bool,
}

/// `PUT /fence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRequest {
    /// How long the fence holds unless lifted earlier.
    pub seconds: u64,
}

/// A node's fence, as every fence verb answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    pub region: String,
    pub node_id: u64,
    pub fenced: bool,
    #[serde(default)]
    pub until_unix_ms: Option<u64>,
}
