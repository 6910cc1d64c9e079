//! `/api/v1/repositories*` and `/api/v1/replications` (the cluster's regions).

use serde::{Deserialize, Serialize};

/// One repository, as `wharf repository list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub tag_count: usize,
    pub manifest_count: usize,
}

/// One tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    pub digest: String,
    pub updated_ms: u64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifest_size: Option<u64>,
}

/// One manifest of a repository, with the tags pointing at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub created_ms: u64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// How many items a delete removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub removed: u64,
}

/// One region of the cluster, as `wharf replication list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub region: String,
    pub node_id: u64,
    pub endpoint: String,
    /// "ok", "fenced", or why the region could not be asked.
    pub health: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    /// Entries behind the leader's log.
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub blobs_to_copy: u64,
    #[serde(default)]
    pub bytes_to_copy: u64,
    /// Blobs it lacks that no region holds any more.
    #[serde(default)]
    pub blobs_lost: u64,
}

/// `GET /images?image=R:T|R@D`: one image (or index) in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub media_type: Option<String>,
    /// Regions holding a verified copy (with `replication=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageChild {
    pub digest: String,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetail {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub manifest_size: u64,
    /// Config plus layers (0 for an index).
    pub image_size: u64,
    pub created_ms: u64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub layers: Vec<Layer>,
    #[serde(default)]
    pub manifests: Vec<ImageChild>,
}
