//! `/api/v1/repositories*` and `/api/v1/replications` (the cluster's regions).

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// The locks of a repository, tag or manifest (the cloud CLI's
/// `changeableAttributes`); all enabled when nothing is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default = "yes")]
    pub write_enabled: bool,
    #[serde(default = "yes")]
    pub delete_enabled: bool,
    #[serde(default = "yes")]
    pub read_enabled: bool,
    #[serde(default = "yes")]
    pub list_enabled: bool,
}

impl Default for Attributes {
    fn default() -> Attributes {
        Attributes {
            write_enabled: true,
            delete_enabled: true,
            read_enabled: true,
            list_enabled: true,
        }
    }
}

/// `PATCH /repositories`: lock or unlock a repository, or (with `image`,
/// a tag or a digest) one tag or manifest of it. Only the flags given
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AttributesChange {
    pub repository: String,
    /// A tag or a digest of the repository; none: the repository.
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub write_enabled: Option<bool>,
    #[serde(default)]
    pub delete_enabled: Option<bool>,
    #[serde(default)]
    pub read_enabled: Option<bool>,
    #[serde(default)]
    pub list_enabled: Option<bool>,
}

/// One repository, as `wharf repository list` and `show` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub tag_count: usize,
    pub manifest_count: usize,
    #[serde(default)]
    pub attributes: Attributes,
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
    #[serde(default)]
    pub attributes: Attributes,
    /// The last pull by this tag the cluster recorded (nodes report pulls
    /// every `gc.pulls_flush_s`).
    #[serde(default)]
    pub pulled_ms: Option<u64>,
    /// What the manifest's blobs (config and layers, or an index's own
    /// blobs) add up to; absent from nodes of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
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
    #[serde(default)]
    pub attributes: Attributes,
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
    /// This node runs its region's mover, GC sweep and scrub (one node of
    /// a region does, under a lease).
    #[serde(default)]
    pub worker: bool,
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
    /// The manifest's locks.
    #[serde(default)]
    pub attributes: Attributes,
    /// The locks of the tag it was named by (`show --image R:T`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_attributes: Option<Attributes>,
}

/// A retention or soft-delete policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayPolicy {
    pub enabled: bool,
    pub days: u32,
}

/// A keep policy: tags of repositories matching `pattern` go when not
/// among the `keep_last` newest and untouched (not pushed, not pulled)
/// for `untouched_days` — every condition given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepRule {
    pub pattern: String,
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub untouched_days: Option<u32>,
}

/// `GET /policies`: a registry's data-lifecycle policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub retention: DayPolicy,
    pub soft_delete: DayPolicy,
    #[serde(default)]
    pub keep: Vec<KeepRule>,
}

/// `PATCH /policies`: change one policy; only what is given changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// "retention" or "soft-delete".
    pub policy: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub days: Option<u32>,
}

/// One manifest (or its deleted tags) in the recycle bin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedManifest {
    pub repository: String,
    pub digest: String,
    /// False: only tags of it were deleted; the manifest is still there.
    pub manifest_deleted: bool,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub deleted_ms: u64,
    /// Purged by the first GC run after this.
    pub purge_ms: u64,
}

/// `POST /deleted/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// REPO:TAG or REPO@DIGEST.
    pub image: String,
}

/// How many manifests and tags a restore put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub restored: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node of the release before several nodes per region answers
    /// without `worker`: its rows still parse (a lone node of its region).
    #[test]
    fn a_region_row_from_before_workers_parses() {
        let row: Region = serde_json::from_value(serde_json::json!({
            "region": "us-east", "node_id": 1, "endpoint": "http://n1", "health": "ok",
            "role": "leader", "applied_index": 7, "lag": 0, "blobs_to_copy": 0,
            "bytes_to_copy": 0, "blobs_lost": 0
        }))
        .unwrap();
        assert_eq!(row.region, "us-east");
        assert!(!row.worker);
    }
}
