//! Blobs uploaded to this node and acknowledged, whose link to their
//! repository is not yet in the replicated metadata. A push registers them
//! in the same Raft proposal as its manifest (one round trip to the leader
//! per push, not per layer); blobs pushed without a manifest are registered
//! in batches in the background. The records are durable (one small file
//! each) so an acknowledged upload survives a crash before registration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::layout::sync_dir;

pub const PENDING_DIR: &str = "pending";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    repo: String,
    digest: String,
    size: u64,
}

struct Entry {
    size: u64,
    since: Instant,
}

pub struct Pending {
    dir: PathBuf,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

/// One file per (repository, digest); repository names can be longer than
/// a file name may be, so the name is a hash.
fn file_name(repo: &str, digest: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(repo.as_bytes());
    h.update([0u8]);
    h.update(digest.as_bytes());
    format!("{}.json", hex::encode(&h.finalize()[..20]))
}

impl Pending {
    pub fn open(root: &Path) -> std::io::Result<Pending> {
        let dir = root.join(PENDING_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut entries = HashMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let path = e.path();
            let record: Option<Record> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match record {
                // Registered as soon as possible after a restart.
                Some(r) => {
                    entries.insert(
                        (r.repo, r.digest),
                        Entry {
                            size: r.size,
                            since: Instant::now() - Duration::from_secs(3600),
                        },
                    );
                }
                None => std::fs::remove_file(&path)?, // a torn temporary file
            }
        }
        Ok(Pending {
            dir,
            entries: Mutex::new(entries),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record durably (fsynced) before the upload is acknowledged.
    pub fn add(&self, repo: &str, digest: &str, size: u64) -> std::io::Result<()> {
        let name = file_name(repo, digest);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let record = Record {
            repo: repo.to_string(),
            digest: digest.to_string(),
            size,
        };
        std::fs::write(
            &tmp,
            serde_json::to_vec(&record).map_err(std::io::Error::other)?,
        )?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(&name))?;
        sync_dir(&self.dir)?;
        self.lock().insert(
            (repo.to_string(), digest.to_string()),
            Entry {
                size,
                since: Instant::now(),
            },
        );
        Ok(())
    }

    pub fn get(&self, repo: &str, digest: &str) -> Option<u64> {
        self.lock()
            .get(&(repo.to_string(), digest.to_string()))
            .map(|e| e.size)
    }

    /// Entries older than `age`, for background registration.
    pub fn due(&self, age: Duration) -> Vec<(String, String, u64)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.since.elapsed() >= age)
            .map(|((r, d), e)| (r.clone(), d.clone(), e.size))
            .collect()
    }

    /// Forget an entry once the metadata links the blob (or it was deleted).
    pub fn remove(&self, repo: &str, digest: &str) -> std::io::Result<bool> {
        let was = self
            .lock()
            .remove(&(repo.to_string(), digest.to_string()))
            .is_some();
        match std::fs::remove_file(self.dir.join(file_name(repo, digest))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(was),
            Err(e) => Err(e),
        }
    }

    /// Whether any repository's entry names `digest`.
    pub fn has_digest(&self, digest: &str) -> bool {
        self.lock().keys().any(|(_, d)| d == digest)
    }

    pub fn repositories(&self) -> std::collections::BTreeSet<String> {
        self.lock().keys().map(|(r, _)| r.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
