//! `/api/v1/gc/runs` (collect now) and `/api/v1/gc` (what collection has
//! done): the cluster operator's garbage-collection verbs.

use serde::{Deserialize, Serialize};

/// `POST /gc/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Collect only this registry (default: every registry).
    #[serde(default)]
    pub registry: Option<String>,
    /// Report what would be freed; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One run: what it decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GcRunSummary {
    pub id: String,
    /// Empty: every registry.
    #[serde(default)]
    pub registry: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Unreferenced links marked, and marked links removed.
    pub links_marked: u64,
    pub links_removed: u64,
    /// Blobs that lost their last link, and their bytes (counted once,
    /// however many regions held them).
    pub blobs_freed: u64,
    pub bytes_freed: u64,
    /// Untagged manifests retention deleted (would delete).
    #[serde(default)]
    pub manifests_expired: u64,
    /// Tags keep policies deleted (would delete).
    #[serde(default)]
    pub tags_expired: u64,
    /// Recycle-bin entries purged.
    #[serde(default)]
    pub bin_purged: u64,
}

/// What a run frees in one region (its sweeper deletes the files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRegionFreed {
    pub region: String,
    pub blobs: u64,
    pub bytes: u64,
}

/// The answer to `POST /gc/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    #[serde(flatten)]
    pub run: GcRunSummary,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub regions: Vec<GcRegionFreed>,
    /// A dry run: `registry/repo@digest` of what retention would delete.
    #[serde(default)]
    pub expired: Vec<String>,
}

/// A region's sweeper, as `wharf gc status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRegionStatus {
    pub region: String,
    pub files_deleted: u64,
    pub bytes_freed: u64,
    /// Freed files it found being registered again, and kept.
    #[serde(default)]
    pub files_kept: u64,
    /// Freed files it has yet to delete (a region that is down sweeps
    /// when it returns).
    pub sweeps_pending: u64,
    #[serde(default)]
    pub last_sweep_ms: u64,
}

/// The answer to `GET /gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Recent runs, newest first.
    pub runs: Vec<GcRunSummary>,
    pub regions: Vec<GcRegionStatus>,
}

/// A corrupt (or missing) copy a region found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptFinding {
    pub digest: String,
    /// What the copy hashed to ("missing": no file).
    pub actual: String,
    /// "scrub" or "read".
    #[serde(default)]
    pub found_by: String,
    pub at_ms: u64,
}

/// A region's scrub, as `wharf scrub status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubRegionStatus {
    pub region: String,
    pub blobs_verified: u64,
    pub bytes_verified: u64,
    pub passes: u64,
    pub last_pass_ms: u64,
    pub corrupt_found: u64,
    #[serde(default)]
    pub recent: Vec<CorruptFinding>,
}

/// `GET /scrub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    pub regions: Vec<ScrubRegionStatus>,
}
