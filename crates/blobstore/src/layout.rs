//! Where things live under the store's root directory.

use std::path::{Path, PathBuf};

use wharf_oci::Digest;

pub const BLOBS_DIR: &str = "blobs";
pub const UPLOADS_DIR: &str = "uploads";
/// Blobs being copied from another region (resumable partial files).
pub const INCOMING_DIR: &str = "incoming";
pub const SESSION_DATA: &str = "data";
pub const SESSION_STATE: &str = "state.json";

/// `blobs/<algorithm>/<first two hex>/<hex>`: the fan-out keeps directories
/// small with millions of blobs.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join(BLOBS_DIR)
        .join(digest.algorithm().name())
        .join(&hex[..2])
        .join(hex)
}

pub fn incoming_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join(INCOMING_DIR)
        .join(format!("{}-{}", digest.algorithm().name(), digest.hex()))
}

/// Copies that failed verification, kept for an operator to inspect:
/// `quarantine/<algorithm>-<hex>.<unix ms>`.
pub const QUARANTINE_DIR: &str = "quarantine";

pub fn quarantine_path(root: &Path, digest: &Digest, at_ms: u64) -> PathBuf {
    root.join(QUARANTINE_DIR).join(format!(
        "{}-{}.{at_ms}",
        digest.algorithm().name(),
        digest.hex()
    ))
}

pub fn session_dir(root: &Path, id: &str) -> PathBuf {
    root.join(UPLOADS_DIR).join(id)
}

/// fsync a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
