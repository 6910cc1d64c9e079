//! The Raft log on RocksDB. Appends are written with a synced WAL before
//! openraft is told they are flushed: acknowledging an entry that is not on
//! disk is how Raft implementations lose committed data.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::codec::{decode, encode, storage_err};
use crate::types::{
    entry_from_release_0_1, Entry, LegacyTypeConfig, LogId, NodeId, StorageError, TypeConfig,
};

const CF_LOGS: &str = "logs";
const CF_STATE: &str = "state";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
/// The log's format; absent in a release 0.1 log (bincode throughout).
const KEY_FORMAT: &[u8] = b"format";
const FORMAT_CURRENT: u32 = 2;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Open (or create) the log, rewriting a release 0.1 log in the
    /// current format on the way.
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, path, [CF_LOGS, CF_STATE]).map_err(read_err)?;
        let store = LogStore { db: Arc::new(db) };
        let migrated = store.migrate()?;
        if migrated > 0 {
            tracing::info!(
                entries = migrated,
                "rewrote the release 0.1 Raft log in the current format"
            );
        }
        Ok(store)
    }

    /// Rewrite a 0.1 log (entries, vote, committed and purged ids) in one
    /// synced batch with the format marker: a crash leaves it all old or
    /// all new. The log is short (compacted behind every snapshot), so one
    /// batch is small. Returns the number of entries rewritten.
    fn migrate(&self) -> Result<u64, StorageError> {
        if let Some(v) = self
            .db
            .get_cf(self.cf(CF_STATE), KEY_FORMAT)
            .map_err(read_err)?
        {
            let format: u32 = decode(&v).map_err(read_err)?;
            if format != FORMAT_CURRENT {
                return Err(read_err(std::io::Error::other(format!(
                    "Raft log format {format} is unknown to this release"
                ))));
            }
            return Ok(0);
        }
        fn legacy<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StorageError> {
            bincode::deserialize(v).map_err(read_err)
        }
        let mut batch = WriteBatch::default();
        let mut entries = 0;
        for item in self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            let old: openraft::Entry<LegacyTypeConfig> = legacy(&v)?;
            batch.put_cf(self.cf(CF_LOGS), k, encode(&entry_from_release_0_1(old)));
            entries += 1;
        }
        if let Some(v) = self
            .db
            .get_cf(self.cf(CF_STATE), KEY_VOTE)
            .map_err(read_err)?
        {
            batch.put_cf(
                self.cf(CF_STATE),
                KEY_VOTE,
                encode(&legacy::<Vote<NodeId>>(&v)?),
            );
        }
        if let Some(v) = self
            .db
            .get_cf(self.cf(CF_STATE), KEY_COMMITTED)
            .map_err(read_err)?
        {
            let committed: Option<LogId> = legacy(&v)?;
            batch.put_cf(self.cf(CF_STATE), KEY_COMMITTED, encode(&committed));
        }
        if let Some(v) = self
            .db
            .get_cf(self.cf(CF_STATE), KEY_PURGED)
            .map_err(read_err)?
        {
            batch.put_cf(self.cf(CF_STATE), KEY_PURGED, encode(&legacy::<LogId>(&v)?));
        }
        batch.put_cf(self.cf(CF_STATE), KEY_FORMAT, encode(&FORMAT_CURRENT));
        self.db
            .write_opt(batch, &Self::synced())
            .map_err(write_err)?;
        Ok(entries)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(self.cf(CF_STATE), key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_state_synced<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), key, encode(v));
        self.db.write_opt(batch, &Self::synced()).map_err(write_err)
    }

    fn write_synced_blocking(db: Arc<DB>, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        db.write_opt(batch, &Self::synced())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let key = index_key(start);
        for item in self.db.iterator_cf(
            self.cf(CF_LOGS),
            IteratorMode::From(&key, Direction::Forward),
        ) {
            let (k, v) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad log key",
                ))
            })?);
            if !range.contains(&index) {
                break;
            }
            out.push(decode::<Entry>(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_state(KEY_PURGED)?;
        let last = match self
            .db
            .iterator_cf(self.cf(CF_LOGS), IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                Some(decode::<Entry>(&v).map_err(read_err)?.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_state_synced(KEY_VOTE, vote).map_err(|_| {
            storage_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other("vote write"),
            )
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_state(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost committed index is recomputed by the leader.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), KEY_COMMITTED, encode(&committed));
        self.db.write(batch).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_state::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                self.cf(CF_LOGS),
                index_key(entry.log_id.index),
                encode(&entry),
            );
        }
        let db = self.db.clone();
        // The synced write blocks on fsync; keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || Self::write_synced_blocking(db, batch))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.map_err(std::io::Error::other));
        let ok = result.is_ok();
        callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
        if !ok {
            return Err(write_err(std::io::Error::other("log append failed")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_LOGS),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        self.db.write_opt(batch, &Self::synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), KEY_PURGED, encode(&log_id));
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1));
        self.db.write_opt(batch, &Self::synced()).map_err(write_err)
    }
}
