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
    /// Makes each write's temporary file its own: uploads of one blob to
    /// one repository at once (CI jobs pushing the same base layer) each
    /// write the record, and a shared temporary name let one rename the
    /// other's file away (ENOENT, a 500 for an upload that had succeeded).
    writes: std::sync::atomic::AtomicU64,
}

const TMP_SUFFIX: &str = ".tmp";

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
            // A temporary file never renamed was never acknowledged.
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                std::fs::remove_file(&path)?;
                continue;
            }
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
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record durably (fsynced) before the upload is acknowledged.
    pub fn add(&self, repo: &str, digest: &str, size: u64) -> std::io::Result<()> {
        let name = file_name(repo, digest);
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("{name}.{n}{TMP_SUFFIX}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_one_blob_written_at_once_all_succeed_and_leave_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = std::sync::Arc::new(Pending::open(dir.path()).unwrap());
        let d = format!("sha256:{}", "ab".repeat(32));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (p, d) = (p.clone(), d.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        p.add("team/app", &d, 7)?;
                    }
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        for t in threads {
            t.join()
                .unwrap()
                .expect("every write of the record succeeds");
        }
        let files: Vec<_> = std::fs::read_dir(dir.path().join(PENDING_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(p.get("team/app", &d), Some(7));
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let d = format!("sha256:{}", "cd".repeat(32));
        {
            let p = Pending::open(dir.path()).unwrap();
            p.add("team/app", &d, 9).unwrap();
        }
        // A whole record under a temporary name: written, never renamed,
        // so never acknowledged.
        let pending = dir.path().join(PENDING_DIR);
        let stray = pending.join(format!("{}.3{TMP_SUFFIX}", file_name("other", &d)));
        let rec = br#"{"repo":"other","digest":"x","size":1}"#;
        std::fs::write(&stray, rec).unwrap();
        let p = Pending::open(dir.path()).unwrap();
        assert!(!stray.exists());
        assert_eq!(p.len(), 1);
        assert_eq!(p.get("team/app", &d), Some(9));
    }
}
