//! Configuration of `wharf serve`: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_blobstore::StoreLimits;
use wharf_consensus::{Peer, RaftTimings};

use crate::error::NodeError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Upload sessions in progress at once; beyond, 429 TOOMANYREQUESTS.
    pub sessions_max: usize,
    /// A request body that sends nothing for this long is abandoned.
    pub body_idle_timeout_s: u64,
    /// An upload session untouched for this long is deleted.
    pub session_expiry_s: u64,
    /// Largest blob accepted.
    pub blob_max_bytes: u64,
    /// How long an uploaded blob waits for its manifest to link it before
    /// it is registered on its own.
    pub link_grace_ms: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        let d = StoreLimits::default();
        UploadConfig {
            sessions_max: d.sessions_max,
            body_idle_timeout_s: d.body_idle_timeout.as_secs(),
            session_expiry_s: d.session_expiry.as_secs(),
            blob_max_bytes: d.blob_max_bytes,
            link_grace_ms: crate::registrar::GRACE_MS,
        }
    }
}

impl UploadConfig {
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            sessions_max: self.sessions_max,
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_s),
            session_expiry: Duration::from_secs(self.session_expiry_s),
            blob_max_bytes: self.blob_max_bytes,
        }
    }
}

/// Background replication of blobs into this region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MoverConfig {
    /// Background transfers at once (on-demand fetches come on top);
    /// 0 turns background replication off (blobs arrive on demand only).
    pub concurrency: usize,
    /// Background bandwidth cap in Mbit/s, 0 for none.
    pub bandwidth_mbit: u64,
    /// Rescan the blob index at least this often.
    pub rescan_s: u64,
}

impl Default for MoverConfig {
    fn default() -> Self {
        MoverConfig {
            concurrency: 4,
            bandwidth_mbit: 0,
            rescan_s: 5,
        }
    }
}

/// How manifest, tag and blob-link reads are answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Hits from the local state machine; a miss is confirmed through the
    /// leader (read-index) before a 404. A moved or deleted tag may be seen
    /// at its previous value for as long as this region lags (milliseconds).
    #[default]
    Local,
    /// Every read goes through read-index first: linearizable, at the cost
    /// of a round trip to the leader's region.
    Linearizable,
}

/// Dial `via` instead of node `node`'s advertised gRPC address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerRoute {
    pub node: u64,
    pub via: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Unique, stable id of this node in the cluster (1, 2, ...).
    pub node_id: u64,
    /// The region this node serves.
    pub region: String,
    /// Where metadata, the Raft log and blobs are kept.
    pub data_dir: PathBuf,
    /// Address of the OCI and management HTTP API.
    pub http_listen: SocketAddr,
    /// Address of the peer gRPC API (Raft, forwarding).
    pub grpc_listen: SocketAddr,
    /// URL clients and peers use for this node's HTTP API
    /// (default: http://<http_listen>).
    pub advertise_http: Option<String>,
    /// host:port peers use for this node's gRPC API (default: grpc_listen).
    pub advertise_grpc: Option<String>,
    /// Initialize the metadata group with `peers` on the very first start.
    /// Exactly one node of a new cluster sets it.
    pub bootstrap: bool,
    /// Voters of a new cluster. Empty: this node alone.
    pub peers: Vec<Peer>,
    /// How long a write waits for the leader and a commit.
    pub write_timeout_ms: u64,
    /// Reach some peers through another address (an emulated WAN link,
    /// a tunnel). `[[peer_routes]] node = 2, via = "host:port"`.
    pub peer_routes: Vec<PeerRoute>,
    /// `local` (default) or `linearizable`.
    pub reads: ReadConsistency,
    pub raft: RaftTimings,
    pub uploads: UploadConfig,
    pub mover: MoverConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            node_id: 1,
            region: "us-east".into(),
            data_dir: PathBuf::from("wharf-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 5001)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 5101)),
            advertise_http: None,
            advertise_grpc: None,
            bootstrap: true,
            peers: Vec::new(),
            write_timeout_ms: 10_000,
            peer_routes: Vec::new(),
            reads: ReadConsistency::Local,
            raft: RaftTimings::default(),
            uploads: UploadConfig::default(),
            mover: MoverConfig::default(),
        }
    }
}

impl ServeConfig {
    pub fn load(path: &std::path::Path) -> Result<ServeConfig, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// This node as its peers see it.
    pub fn me(&self) -> Peer {
        Peer {
            id: self.node_id,
            region: self.region.clone(),
            grpc: self
                .advertise_grpc
                .clone()
                .unwrap_or_else(|| self.grpc_listen.to_string()),
            http: self
                .advertise_http
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.http_listen)),
        }
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        if self.node_id == 0 {
            return Err(NodeError::Config("node_id must be 1 or more".into()));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(NodeError::Config(format!(
                "region {:?} must be letters, digits and '-'",
                self.region
            )));
        }
        if !self.peers.is_empty() && !self.peers.iter().any(|p| p.id == self.node_id) {
            return Err(NodeError::Config(
                "peers must include this node's own id".into(),
            ));
        }
        if self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms
            || self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms
        {
            return Err(NodeError::Config(
                "raft: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml_and_unknown_keys_are_refused() {
        let c = ServeConfig::default();
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<ServeConfig>("nodeid = 3").is_err());
        let partial: ServeConfig =
            toml::from_str("region = \"eu-west\"\n[raft]\nheartbeat_ms = 100").unwrap();
        assert_eq!(partial.region, "eu-west");
        assert_eq!(partial.raft.heartbeat_ms, 100);
        assert_eq!(
            partial.raft.election_timeout_min_ms,
            RaftTimings::default().election_timeout_min_ms
        );
    }

    #[test]
    fn validation_explains_bad_settings() {
        let mut c = ServeConfig {
            region: "bad region".into(),
            ..ServeConfig::default()
        };
        assert!(c.validate().is_err());
        c.region = "eu-west".into();
        c.raft.heartbeat_ms = 5000;
        assert!(c.validate().is_err());
    }
}
