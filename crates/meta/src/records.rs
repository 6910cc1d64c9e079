use serde::{Deserialize, Serialize};

use crate::command::BlobRef;
use crate::locks::Attributes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Locks (absent before locks existed: unlocked).
    #[serde(default)]
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    pub created_ms: u64,
    pub blobs: Vec<BlobRef>,
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations_json: Option<String>,
    #[serde(default)]
    pub attributes: Attributes,
    /// Since when no tag names it (command time); `None`: tagged, or
    /// written before this was recorded.
    #[serde(default)]
    pub untagged_ms: Option<u64>,
}

impl ManifestRecord {
    /// What its blobs (config and layers; none for an index) add up to:
    /// the image's size as listings show it.
    pub fn blobs_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: String,
    pub updated_ms: u64,
    #[serde(default)]
    pub attributes: Attributes,
    /// The last pull by this tag a node reported (in batches, so up to a
    /// flush interval late); `None`: never, or before this was recorded.
    #[serde(default)]
    pub pulled_ms: Option<u64>,
}

/// Cluster-wide blob index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    /// Regions holding a verified copy, sorted.
    pub regions: Vec<String>,
    /// Number of repositories linking the blob.
    pub links: u64,
    /// When the blob was first registered (orders the mover's backlog
    /// among blobs with as many holders: newest pushes first).
    pub registered_ms: u64,
}

/// One entry of the referrers index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerRecord {
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations_json: Option<String>,
}
