//! Compacting a key range once enough was deleted from it: for ranges a
//! reader walks from the front (the holder index's low counts, a webhook's
//! queue), where every deletion RocksDB has not compacted away yet is
//! stepped over by every walk. The reader pays, once per `after`
//! deletions, instead of every walk paying for all of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Deletions in one range since it was last compacted.
pub(crate) struct Churn {
    deletes: AtomicU64,
    after: u64,
}

impl Churn {
    pub(crate) const fn new(after: u64) -> Churn {
        Churn {
            deletes: AtomicU64::new(0),
            after,
        }
    }

    pub(crate) fn deleted(&self, n: u64) {
        self.deletes.fetch_add(n, Ordering::Relaxed);
    }

    /// Compact `from..to` of `cf` (None: that end of the family) if
    /// `after` deletions were counted since the last time. Blocking.
    pub(crate) fn compact_if_due(
        &self,
        db: &rocksdb::DB,
        cf: &rocksdb::ColumnFamily,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) {
        if self.deletes.load(Ordering::Relaxed) < self.after {
            return;
        }
        self.deletes.store(0, Ordering::Relaxed);
        // Forced: files already at the bottom level are rewritten too
        // (RocksDB's default skips them, and their deletions with them).
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        db.compact_range_cf_opt(cf, from, to, &opts);
    }
}
