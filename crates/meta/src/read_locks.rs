//! Which repositories have reads disabled, held in memory: every pull and
//! blob read checks its repository's read lock, and reading the
//! repository's record for it was one RocksDB lookup of three per manifest
//! GET (a third of the store's cost of a pull, `examples/read_scale`).
//! Read-locked repositories are few, so the set is small.
//!
//! The set is a view of the `repos` column family, rebuilt by the first
//! reader after the store's read-lock epoch moved. The epoch moves after
//! every write that can disable a repository's reads: an applied
//! `UpdateAttributes` of a repository, an installed snapshot, a migration.
//! A rebuild reads the epoch before it scans, so a change that lands
//! during the scan leaves the view behind an older epoch and the next
//! reader rebuilds again. A repository found in the set is confirmed
//! against its record, so a stale entry (a locked repository deleted, or
//! unlocked, since) never refuses a pull; only a missing one could let one
//! through, and every path that locks moves the epoch.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::IteratorMode;

use crate::error::StoreError;
use crate::keys::CF_REPOS;
use crate::records::RepoRecord;
use crate::store::{decode, MetaStore};

type Keys = Arc<HashSet<Box<[u8]>>>;

#[derive(Default)]
pub(crate) struct ReadLocks {
    epoch: AtomicU64,
    /// The view and the epoch it was built at.
    view: RwLock<Option<(u64, Keys)>>,
    /// One rebuild at a time; the others wait for its result.
    rebuilding: Mutex<()>,
}

impl ReadLocks {
    /// A write that may have disabled some repository's reads is in the
    /// store: the view is out of date.
    pub(crate) fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn current(&self) -> Option<Keys> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.as_ref()
            .filter(|(built, _)| *built == epoch)
            .map(|(_, keys)| keys.clone())
    }
}

impl MetaStore {
    /// Whether the repository under `key` (in `repos`) may have reads
    /// disabled: false means it certainly has not.
    pub(crate) fn maybe_read_locked(&self, key: &[u8]) -> Result<bool, StoreError> {
        let locks = self.read_locks();
        if let Some(keys) = locks.current() {
            return Ok(keys.contains(key));
        }
        let _one = locks.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = locks.current() {
            return Ok(keys.contains(key));
        }
        let epoch = locks.epoch.load(Ordering::Acquire);
        let mut keys = HashSet::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_REPOS), IteratorMode::Start)
        {
            let (k, v) = item?;
            let record: RepoRecord = decode(CF_REPOS, &v)?;
            if !record.attributes.read_enabled {
                keys.insert(k);
            }
        }
        let found = keys.contains(key);
        *locks.view.write().unwrap_or_else(|e| e.into_inner()) = Some((epoch, Arc::new(keys)));
        Ok(found)
    }
}
