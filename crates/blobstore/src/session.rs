//! One upload session: a directory holding the bytes received so far and a
//! small state file written once at creation.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wharf_oci::Hasher;

/// A fresh session id naming this node (`n1-<32 hex>`), if another
/// session may start with `open` in progress.
pub fn new_id(
    node_tag: &str,
    open: usize,
    limits: &crate::StoreLimits,
) -> Result<String, crate::BlobError> {
    if open >= limits.sessions_max {
        return Err(crate::BlobError::TooManySessions(limits.sessions_max));
    }
    let mut rnd = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut rnd);
    Ok(format!("{node_tag}-{}", hex::encode(rnd)))
}

/// What the HTTP layer reports about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub repo: String,
    /// Bytes received and made durable so far.
    pub offset: u64,
}

/// Persisted at creation; the offset is the data file's length.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionState {
    pub repo: String,
    pub created_ms: u64,
    /// Internal sessions of monolithic uploads: no client can resume them,
    /// so they are discarded at restart.
    pub hidden: bool,
}

pub struct Session {
    pub id: String,
    pub repo: String,
    pub dir: PathBuf,
    pub offset: u64,
    /// Running hash and block sums of bytes 0..offset. `None` after a
    /// restart until recomputed from the data file (not persisted).
    pub hasher: Option<(Hasher, crate::sums::SumsBuilder)>,
    pub last_active: Instant,
}

impl Session {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            repo: self.repo.clone(),
            offset: self.offset,
        }
    }
}
