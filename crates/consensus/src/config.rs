use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A member of the cluster as named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: NodeId,
    pub region: String,
    /// host:port of its peer gRPC server.
    pub grpc: String,
    /// Base URL of its HTTP API.
    pub http: String,
}

/// Raft timing. The defaults are tuned for WAN links between regions
/// (openraft's own defaults assume a LAN and stall large snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging
    /// followers catch up from the log rather than a snapshot.
    pub logs_kept_after_snapshot: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            // Eight or more round trips of a 80 ms WAN link before a follower
            // suspects the leader; failover stays under 3 s.
            heartbeat_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            install_snapshot_timeout_ms: 30_000,
            // A snapshot is a copy of the whole state (1.5 GB at a million
            // tags): every 10,000 entries, a fill spent most of its disk
            // and CPU building them (bench/scale.py). etcd's default.
            snapshot_after_entries: 100_000,
            logs_kept_after_snapshot: 2_000,
        }
    }
}

/// Mutual TLS between peers: the server side presents this node's
/// certificate and demands one signed by the cluster CA; the client side
/// does the same when dialing.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub server: tonic::transport::ServerTlsConfig,
    pub client: tonic::transport::ClientTlsConfig,
}

#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub node_id: NodeId,
    pub region: String,
    /// Where this node's RocksDB stores and snapshots live.
    pub data_dir: PathBuf,
    /// Address the peer gRPC server binds to.
    pub grpc_listen: std::net::SocketAddr,
    /// This node as peers reach it.
    pub advertise: Peer,
    /// Voters of the initial cluster (including this node). Only a node with
    /// `bootstrap` set initializes the group, once, on first start.
    pub initial_members: Vec<Peer>,
    pub bootstrap: bool,
    pub timings: RaftTimings,
    /// How long a write may wait for a leader and a commit.
    pub write_timeout_ms: u64,
    /// Dial these addresses instead of a peer's advertised gRPC address
    /// (node id -> host:port): how an emulated WAN link is put in the way.
    pub peer_overrides: std::collections::BTreeMap<NodeId, String>,
    /// None: plain-text gRPC between peers.
    pub peer_tls: Option<PeerTls>,
    /// Start fenced until this Unix time in ms (a fence survives restarts).
    pub fenced_until_ms: Option<u64>,
}
