use std::path::Path;

use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::command::{BlobRef, Envelope, Response};
use crate::error::StoreError;
use crate::holders::Pending;
use crate::keys::*;
use crate::records::*;

/// Memory for the metadata store's memtables, all column families together.
const META_MEMTABLES_BYTES: usize = 256 << 20;
/// Write-ahead log past which the column families holding it are flushed.
const META_WAL_BYTES_MAX: u64 = 256 << 20;

/// A raw key and value read from a column family.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The applied metadata of one node, in RocksDB column families.
pub struct MetaStore {
    db: DB,
    /// Bumped whenever identities may have changed (an identity command
    /// applied, a snapshot installed): readers cache derived views by it.
    identity_epoch: std::sync::atomic::AtomicU64,
    /// Storage changes of the command being applied (see `usage`).
    usage: crate::usage::UsageScratch,
    /// Registries' replica sets, read once (see `holders`).
    pub(crate) replica_sets: crate::holders::ReplicaSets,
    /// Holder-index entries deleted since its low counts were last
    /// compacted (see `holders`).
    pub(crate) holder_deletes: crate::churn::Churn,
    /// Webhook queue entries deleted since the queue was last compacted
    /// (see `webhooks`).
    pub(crate) queue_deletes: crate::churn::Churn,
    /// Where the expiry of request ids starts looking (see `requests`).
    pub(crate) request_expiry: crate::requests::ExpiryStart,
    /// The repositories with reads disabled (see `read_locks`).
    read_locks: crate::read_locks::ReadLocks,
}

/// A manifest as listed by `show-manifests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestSummary {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub created_ms: u64,
    pub artifact_type: Option<String>,
    pub tags: Vec<String>,
    pub attributes: crate::locks::Attributes,
}

/// Record `region` as a holder; false when it already was one.
pub(crate) fn add_region(record: &mut BlobRecord, region: &str) -> bool {
    if region.is_empty() {
        return false;
    }
    match record.regions.binary_search_by(|r| r.as_str().cmp(region)) {
        Ok(_) => false,
        Err(pos) => {
            record.regions.insert(pos, region.to_string());
            true
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    crate::codec::encode(v)
}

pub(crate) fn decode<T: DeserializeOwned>(cf: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    crate::codec::decode(bytes).map_err(|e| StoreError::Corrupt {
        cf,
        detail: e.to_string(),
    })
}

impl MetaStore {
    /// Open (or create) the store, migrating a release 0.1 store into
    /// `DEFAULT_REGISTRY` on the way.
    pub fn open(path: &Path) -> Result<MetaStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // One budget for the memtables of all 21 column families, and a
        // bound on the write-ahead log they keep alive: RocksDB's defaults
        // (64 MiB per family, WAL up to four times all of them) let a node
        // filled with a million tags hold gigabytes of WAL and memtables
        // (bench/scale.py), replayed in full at every start.
        opts.set_db_write_buffer_size(META_MEMTABLES_BYTES);
        opts.set_max_total_wal_size(META_WAL_BYTES_MAX);
        let db = DB::open_cf(&opts, path, ALL_CFS.iter().chain(DERIVED_CFS.iter()))?;
        let store = MetaStore {
            db,
            identity_epoch: std::sync::atomic::AtomicU64::new(1),
            usage: Default::default(),
            replica_sets: Default::default(),
            holder_deletes: crate::churn::Churn::new(crate::holders::COMPACT_AFTER_DELETES),
            queue_deletes: crate::churn::Churn::new(crate::webhooks::QUEUE_COMPACT_AFTER_DELETES),
            request_expiry: Default::default(),
            read_locks: Default::default(),
        };
        let migrated = store.migrate(crate::DEFAULT_REGISTRY)?;
        if migrated > 0 {
            tracing::info!(
                records = migrated,
                registry = crate::DEFAULT_REGISTRY,
                "migrated release 0.1 metadata into the default registry"
            );
        }
        if store.count_usage_if_needed()? {
            tracing::info!(
                "counted the storage of every registry (a store from before usage counters)"
            );
        }
        if store.index_holders_if_needed()? {
            tracing::info!("indexed the blobs by holder count (a store from before the index)");
        }
        Ok(store)
    }

    pub(crate) fn usage_scratch(&self) -> &crate::usage::UsageScratch {
        &self.usage
    }

    pub(crate) fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created when the store is opened")
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(cf), key)? {
            Some(v) => Ok(Some(decode(cf, &v)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn exists(&self, cf: &'static str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf), key)?.is_some())
    }

    /// Keys and values under `prefix`, starting after `after` (exclusive)
    /// when given, at most `limit` of them.
    pub(crate) fn scan(
        &self,
        cf: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = match after {
            Some(a) => a.to_vec(),
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if Some(&*k) == after {
                continue;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// How many keys start with `prefix`: keys only, no value is copied
    /// or decoded (a listing's counts, per row).
    pub(crate) fn count(&self, cf: &'static str, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        it.seek(prefix);
        let mut n = 0;
        while it.valid() && it.key().is_some_and(|k| k.starts_with(prefix)) {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// Changes whenever identities may have changed.
    pub fn identity_epoch(&self) -> u64 {
        self.identity_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump_identity_epoch(&self) {
        self.identity_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn read_locks(&self) -> &crate::read_locks::ReadLocks {
        &self.read_locks
    }

    // ---- consensus bookkeeping ------------------------------------------

    pub fn read_sys(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SYS), key.as_bytes())?)
    }

    /// Write consensus bookkeeping alone (for entries with no command).
    pub fn write_sys(&self, sys: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_sys(&mut batch, sys);
        Ok(self.db.write(batch)?)
    }

    fn put_sys(&self, batch: &mut WriteBatch, sys: &[(&str, Vec<u8>)]) {
        for (k, v) in sys {
            batch.put_cf(self.cf(CF_SYS), k.as_bytes(), v);
        }
    }

    /// Make every applied write durable (before the log behind it is purged).
    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_wal(true)?)
    }

    // ---- apply ----------------------------------------------------------

    /// Apply one command and the consensus bookkeeping `sys` atomically.
    /// A request id applied before is answered as it was then and changes
    /// nothing (but the applied index). The WAL is not synced here: the
    /// Raft log already holds the command durably and replays it if this
    /// write is lost in a crash.
    pub fn apply(&self, env: &Envelope, sys: &[(&str, Vec<u8>)]) -> Result<Response, StoreError> {
        let mut batch = WriteBatch::default();
        if let Some(first) = match &env.request_id {
            Some(id) => self.remembered(id)?,
            None => None,
        } {
            self.put_sys(&mut batch, sys);
            self.db.write(batch)?;
            return Ok(first);
        }
        self.discard_usage();
        // Gated or not (the service gates replica changes by tier).
        let registry_command = matches!(env.cmd.ungated(), crate::Command::Registry(_));
        if registry_command {
            self.replica_sets.clear();
        }
        let response = self
            .registry(&env.registry)
            .apply(&mut batch, &env.cmd, env.at_ms);
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.discard_usage();
                return Err(e);
            }
        };
        if matches!(response, Response::Refused(_)) {
            // A refused command changes nothing but the applied index.
            batch = WriteBatch::default();
            self.discard_usage();
        } else {
            self.flush_usage(&mut batch, env.at_ms)?;
            self.emit_events(&mut batch, env, &response)?;
        }
        self.remember(
            &mut batch,
            env.request_id.as_deref(),
            &env.registry,
            env.at_ms,
            &response,
        )?;
        self.put_sys(&mut batch, sys);
        self.db.write(batch)?;
        if registry_command {
            // What was read while it applied is the set before it.
            self.replica_sets.clear();
        }
        self.request_expiry.commit();
        if env.cmd.changes_identities() {
            self.bump_identity_epoch();
        }
        if env.cmd.may_lock_repository_reads() {
            self.read_locks.changed();
        }
        Ok(response)
    }

    pub(crate) fn blobs_replicated(
        &self,
        batch: &mut WriteBatch,
        region: &str,
        blobs: &[BlobRef],
    ) -> Result<Response, StoreError> {
        for b in blobs {
            match self.get::<BlobRecord>(CF_BLOBS, b.digest.as_bytes())? {
                Some(mut record) => {
                    let old = record.clone();
                    if add_region(&mut record, region) {
                        self.put_blob(batch, &b.digest, Some(&old), &record, Pending::Nothing)?;
                    }
                }
                // Freed while it was being copied: the copy is garbage.
                None => self.sweep_orphan(batch, region, &b.digest, b.size),
            }
        }
        Ok(Response::Ok)
    }

    /// One pass over the blob index: proportional to the number of blobs,
    /// which is acceptable for a membership change.
    pub(crate) fn forget_region(
        &self,
        batch: &mut WriteBatch,
        region: &str,
    ) -> Result<Response, StoreError> {
        for item in self.db.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            let mut record: BlobRecord = decode(CF_BLOBS, &v)?;
            if let Ok(at) = record.regions.binary_search_by(|r| r.as_str().cmp(region)) {
                let old = record.clone();
                record.regions.remove(at);
                let digest = String::from_utf8_lossy(&k);
                self.put_blob(batch, &digest, Some(&old), &record, Pending::Nothing)?;
            }
        }
        Ok(Response::Ok)
    }

    /// `count` fewer repositories of `registry` link `digest` (one of
    /// them `repo`, when `count` is 1 and it is known; the registry is
    /// being deleted otherwise). Called at most once per (digest,
    /// registry) in one batch: it reads the counts from the store, not
    /// from the batch. The blob is freed (see `gc`) when that was its
    /// last link.
    pub(crate) fn drop_link(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        repo: Option<&str>,
        digest: &str,
        count: u64,
        now_ms: u64,
    ) -> Result<Option<crate::gc::FreedBlob>, StoreError> {
        let mut freed = None;
        let mut size = 0;
        if let Some(old) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
            size = old.size;
            let record = BlobRecord {
                links: old.links.saturating_sub(count),
                ..old.clone()
            };
            if record.links == 0 {
                freed = Some(self.free_blob(batch, digest, &record, now_ms));
            } else {
                let pending = Pending::Links {
                    registry,
                    delta: -(count as i64),
                };
                self.put_blob(batch, digest, Some(&old), &record, pending)?;
            }
        }
        if let Some(repo) = repo {
            self.note_repo_storage(registry, repo, -(size as i64), -1);
        }
        self.add_registry_link(batch, registry, digest, size, -(count as i64))?;
        Ok(freed)
    }

    /// Change how many repositories of `registry` link `digest` (of
    /// `size` bytes) by `delta` (same once-per-batch rule as
    /// `drop_link`); the registry's storage counts the blob while any do.
    pub(crate) fn add_registry_link(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        digest: &str,
        size: u64,
        delta: i64,
    ) -> Result<(), StoreError> {
        let key = format!("{digest}\0{registry}");
        let now: u64 = self.get(CF_BLOB_LINKS, key.as_bytes())?.unwrap_or(0);
        let next = (now as i64).saturating_add(delta).max(0) as u64;
        match (now, next) {
            (0, n) if n > 0 => self.note_registry_storage(registry, size as i64, 1),
            (n, 0) if n > 0 => self.note_registry_storage(registry, -(size as i64), -1),
            _ => {}
        }
        if next == 0 {
            batch.delete_cf(self.cf(CF_BLOB_LINKS), key.as_bytes());
        } else {
            batch.put_cf(self.cf(CF_BLOB_LINKS), key.as_bytes(), encode(&next));
        }
        Ok(())
    }

    /// The registries with a repository linking `digest`.
    pub fn registries_linking(&self, digest: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{digest}\0").into_bytes();
        Ok(self
            .scan(CF_BLOB_LINKS, &prefix, None, usize::MAX)?
            .iter()
            .map(|(k, _)| last_part(k))
            .collect())
    }

    /// Whether `region` should hold `digest`: some registry linking it is
    /// replicated there (a registry with no replica set is everywhere).
    fn wanted_in(
        &self,
        digest: &str,
        region: &str,
        replicas: &mut std::collections::HashMap<String, Vec<String>>,
    ) -> Result<bool, StoreError> {
        for registry in self.registries_linking(digest)? {
            if !replicas.contains_key(&registry) {
                let set = self
                    .registry_record(&registry)?
                    .map(|r| r.replicas)
                    .unwrap_or_default();
                replicas.insert(registry.clone(), set);
            }
            let set = &replicas[&registry];
            if set.is_empty() || set.iter().any(|r| r == region) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ---- queries of the cluster-wide blob index ---------------------------

    /// Linked blobs that `region` does not hold yet and should (a registry
    /// linking them is replicated there), at most `limit`: the mover's work
    /// list, rebuilt from state after a restart. Fewest holders first, so
    /// the copies closest to being lost are made first (after a wiped disk
    /// a blob held by one region is one more failure from gone, and must
    /// not wait behind fresh pushes that two regions hold); among equals,
    /// newest first. Blobs no region holds come last: nothing can copy
    /// them until a client uploads them again.
    ///
    /// `regions` is how many regions the cluster has: a blob held by that
    /// many is held everywhere, so the walk of the holder-count index
    /// (`holders`) stops there and costs what is under-replicated, not
    /// the whole blob index.
    pub fn blobs_missing_in(
        &self,
        region: &str,
        regions: usize,
        limit: usize,
    ) -> Result<Vec<(String, BlobRecord)>, StoreError> {
        self.compact_holders_if_churned(regions);
        let mut out = Vec::new();
        let mut replicas = std::collections::HashMap::new();
        for holders in (1..regions.min(crate::holders::HOLDERS_MAX + 1)).chain([0]) {
            self.blobs_held_by(holders, |digest, record| {
                if record
                    .regions
                    .binary_search_by(|r| r.as_str().cmp(region))
                    .is_err()
                    && self.wanted_in(&digest, region, &mut replicas)?
                {
                    out.push((digest, record));
                }
                Ok(out.len() < limit)
            })?;
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn blob(&self, digest: &str) -> Result<Option<BlobRecord>, StoreError> {
        self.get(CF_BLOBS, digest.as_bytes())
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }
}
