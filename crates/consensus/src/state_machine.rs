//! The Raft state machine: applies entries to `wharf-meta`'s MetaStore and
//! builds or installs snapshots as files streamed from/to RocksDB.

use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;
use wharf_meta::{MetaStore, Response};

use crate::codec::{decode_or_legacy, encode, storage_err};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SYS_APPLIED: &str = "raft_applied";
const SYS_MEMBERSHIP: &str = "raft_membership";
const SNAPSHOT_META_FILE: &str = "current.meta";

pub struct StateMachine {
    meta: Arc<MetaStore>,
    snapshot_dir: PathBuf,
    /// The last applied index, for waiters (forwarded writes, read-index).
    applied_tx: Arc<watch::Sender<u64>>,
    receiving: Option<PathBuf>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, verb, e)
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Snapshot(None), verb, e)
}

impl StateMachine {
    pub fn new(
        meta: Arc<MetaStore>,
        snapshot_dir: PathBuf,
        applied_tx: Arc<watch::Sender<u64>>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let sm = StateMachine {
            meta,
            snapshot_dir,
            applied_tx,
            receiving: None,
        };
        sm.replace_release_0_1_snapshot()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(sm)
    }

    /// A snapshot written by release 0.1 holds records in its format, under
    /// keys with no registry: never send it. The store it was taken from
    /// has been migrated (`MetaStore::open`), so a snapshot of the store
    /// now, at its applied index, replaces it.
    fn replace_release_0_1_snapshot(&self) -> Result<(), StorageError> {
        let Some((_, path)) = self.current()? else {
            return Ok(());
        };
        let mut header = [0u8; 8];
        let read = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
        if read.is_err() || !wharf_meta::is_release_0_1_snapshot(&header) {
            return Ok(());
        }
        let rebuilt = build_snapshot_files(&self.meta, &self.snapshot_dir)?;
        tracing::info!(snapshot = %rebuilt.snapshot_id, "replaced the release 0.1 snapshot");
        Ok(())
    }

    /// The applied index recorded in `meta` (0 for a new store).
    pub fn applied_index(meta: &MetaStore) -> Result<u64, wharf_meta::StoreError> {
        let applied: Option<LogId> = match meta.read_sys(SYS_APPLIED)? {
            Some(v) => decode_or_legacy(&v).map_err(|e| wharf_meta::StoreError::Corrupt {
                cf: "sys",
                detail: e.to_string(),
            })?,
            None => None,
        };
        Ok(applied.map_or(0, |l| l.index))
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = match self
            .meta
            .read_sys(SYS_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(v) => decode_or_legacy(&v).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => None,
        };
        let membership = match self
            .meta
            .read_sys(SYS_MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(v) => decode_or_legacy(&v).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }
}

/// What `current.meta` holds: the snapshot's metadata and its data file.
#[derive(serde::Serialize, serde::Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

/// Make `data` the current snapshot of `dir`. The data file gets a unique
/// name and the metadata file naming it is replaced atomically, so a crash
/// at any point leaves the previous snapshot intact and self-consistent.
fn commit_snapshot_files(dir: &Path, data: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let file = format!("snap-{}.snap", meta.snapshot_id);
    std::fs::rename(data, dir.join(&file))?;
    let meta_path = dir.join(SNAPSHOT_META_FILE);
    let tmp_meta = meta_path.with_extension("meta.tmp");
    let record = CurrentSnapshot {
        meta: meta.clone(),
        file: file.clone(),
    };
    let mut f = std::fs::File::create(&tmp_meta)?;
    f.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp_meta, &meta_path)?;
    std::fs::File::open(dir)?.sync_all()?;
    // Older snapshot files are unreachable now. Readers that still hold one
    // open keep reading it (unlinking does not free an open inode).
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") && name != file {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl StateMachine {
    fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        let meta_path = self.snapshot_dir.join(SNAPSHOT_META_FILE);
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
        };
        let current: CurrentSnapshot =
            serde_json::from_slice(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some((current.meta, self.snapshot_dir.join(current.file))))
    }
}

pub struct SnapshotBuilder {
    meta: Arc<MetaStore>,
    dir: PathBuf,
}

/// Write a snapshot of `meta` into `dir` and make it the current one.
/// Blocking: run it off the async workers.
fn build_snapshot_files(meta: &MetaStore, dir: &Path) -> Result<SnapshotMeta, StorageError> {
    // Applied writes are not synced one by one; the log behind this
    // snapshot will be purged, so they must be durable first.
    meta.sync().map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let tmp = dir.join(format!("build-{}.tmp", rand_suffix()));
    let file = std::fs::File::create(&tmp).map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (_records, sys) = meta
        .write_snapshot(&mut w, &[SYS_APPLIED, SYS_MEMBERSHIP])
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let file = w
        .into_inner()
        .map_err(|e| snap_err(ErrorVerb::Write, e.into_error()))?;
    file.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let last_log_id: Option<LogId> = match &sys[0] {
        Some(v) => decode_or_legacy(v).map_err(|e| snap_err(ErrorVerb::Read, e))?,
        None => None,
    };
    let last_membership: StoredMembership = match &sys[1] {
        Some(v) => decode_or_legacy(v).map_err(|e| snap_err(ErrorVerb::Read, e))?,
        None => StoredMembership::default(),
    };
    let snapshot_id = match &last_log_id {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand_suffix()),
        None => format!("empty-{}", rand_suffix()),
    };
    let snap_meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    commit_snapshot_files(dir, &tmp, &snap_meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
    Ok(snap_meta)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = self.meta.clone();
        let dir = self.dir.clone();
        let started = std::time::Instant::now();
        let snap_meta = tokio::task::spawn_blocking(move || build_snapshot_files(&meta, &dir))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        let file = tokio::fs::File::open(
            self.dir
                .join(format!("snap-{}.snap", snap_meta.snapshot_id)),
        )
        .await
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            snapshot = %snap_meta.snapshot_id,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta: snap_meta,
            snapshot: Box::new(file),
        })
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

/// Apply `entries` in order, each with the applied index in the same
/// write; the responses, and the last index applied.
fn apply_entries(
    meta: &MetaStore,
    entries: Vec<Entry>,
) -> Result<(Vec<Response>, Option<u64>), StorageError> {
    let mut out = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        let applied = encode(&Some(entry.log_id));
        let response = match &entry.payload {
            EntryPayload::Blank => {
                meta.write_sys(&[(SYS_APPLIED, applied)])
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                Response::Ok
            }
            EntryPayload::Normal(cmd) => meta
                .apply(cmd, &[(SYS_APPLIED, applied)])
                .map_err(|e| sm_err(ErrorVerb::Write, e))?,
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                meta.write_sys(&[(SYS_APPLIED, applied), (SYS_MEMBERSHIP, encode(&stored))])
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                Response::Ok
            }
        };
        last = Some(entry.log_id.index);
        out.push(response);
    }
    Ok((out, last))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // On a blocking thread, not the runtime's: an apply that takes long
        // (a large batch, RocksDB stepping over deletions, a compaction
        // stall) would otherwise hold a runtime worker, and with it the
        // heartbeats and client requests scheduled there (two workers on
        // a two-core node).
        let entries: Vec<Entry> = entries.into_iter().collect();
        let meta = self.meta.clone();
        let (out, last) = tokio::task::spawn_blocking(move || apply_entries(&meta, entries))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        if let Some(index) = last {
            self.applied_tx.send_replace(index);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            meta: self.meta.clone(),
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self
            .snapshot_dir
            .join(format!("recv-{}.tmp", rand_suffix()));
        // Read back when installing: open for reading as well as writing.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = snapshot.into_std().await;
        let store = self.meta.clone();
        let started = std::time::Instant::now();
        let sys = vec![
            (SYS_APPLIED, encode(&meta.last_log_id)),
            (SYS_MEMBERSHIP, encode(&meta.last_membership)),
        ];
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            file.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            store
                .install_snapshot(&mut r)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            store
                .write_sys(&sys)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            store.sync().map_err(|e| snap_err(ErrorVerb::Write, e))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        if let Some(path) = self.receiving.take() {
            commit_snapshot_files(&self.snapshot_dir, &path, meta)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        }
        if let Some(l) = meta.last_log_id {
            self.applied_tx.send_replace(l.index);
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, path)) = self.current()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
