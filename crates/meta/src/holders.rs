//! The blob index ordered by how many regions hold each blob: what the
//! mover and `wharf replication list` read instead of scanning every blob.
//!
//! Column family `blob_holders`, one empty entry per linked blob, keyed
//! `[holders: u8][u64::MAX - registered_ms: be u64][digest]`: fewest
//! holders first, newest first among equals (the mover's order). A blob
//! every region holds sits at `holders = regions in the cluster`, so a
//! region's backlog is found by reading the entries below that count and
//! stops there: a scan proportional to what is under-replicated
//! anywhere, not to the whole index (at a million blobs, every applied
//! push used to trigger a pass over all of them).
//!
//! A blob whose registries all have replica sets is *placed* once every
//! region of those sets holds it, however few regions that is: no region
//! lacks it. Its entry then sits under `PLACED` instead of its holder
//! count, where no walk reads, so a cluster of many regions with
//! registries replicated to two of them does not walk every fully placed
//! blob of theirs on every rescan. Whether a blob is placed depends on
//! its record, on which registries link it (`blob_links`) and on their
//! replica sets, so the entry moves when any of the three changes: the
//! first through `put_blob`, the second through the `Pending` change
//! `put_blob` is told of (the batch is not readable), the third through
//! `reindex_registry_blobs` when a replica set changes. A blob of a
//! registry with no replica set is wanted everywhere and never placed: the
//! cluster's region count decides, at walk time.
//!
//! Every blob passes through the low counts on its way to being held
//! everywhere, leaving a deletion behind at each step; a walk has to step
//! over those until a compaction drops them (at a million blobs, half a
//! second of tombstones where nothing is missing). So after
//! `COMPACT_AFTER_DELETES` deletions the next walk first compacts the
//! range below the cluster's region count: the reader pays, once, not
//! every apply.
//!
//! It is derived data: written in the same batch as the blob records it
//! follows, left out of snapshots, and rebuilt from the blob records when a
//! store opens without it (a store from an earlier release, or an index
//! of an earlier layout) and after a snapshot is installed. Each entry is
//! checked against its record when read, so an entry left behind by a
//! crash or a bug is skipped, never served; the placed range is the one
//! exception (it is never read), which is why an entry only goes there
//! when the store says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::error::StoreError;
use crate::keys::{last_part, CF_BLOBS, CF_BLOB_HOLDERS, CF_BLOB_LINKS};
use crate::records::BlobRecord;
use crate::store::{decode, MetaStore};

/// The index's layout version, under a key no entry can have (holder
/// counts stop at `HOLDERS_MAX`). 2: placed blobs under `PLACED`.
const LAYOUT_KEY: &[u8] = b"\xfflayout";
const LAYOUT: u32 = 2;
/// Counts above this share its byte (no cluster has that many regions).
pub(crate) const HOLDERS_MAX: usize = 253;
/// The first byte of a placed blob's entry: above every count.
const PLACED: u8 = 0xfe;
/// Entries written per batch while rebuilding.
const REBUILD_BATCH: usize = 50_000;
/// Deleted entries after which a walk compacts the low counts first.
pub(crate) const COMPACT_AFTER_DELETES: u64 = 100_000;

/// The replica sets of registries as the store holds them, and whether
/// any registry has one: following blobs' placement costs a cluster with
/// no replica set nothing (no read per blob written; the scan of a blob's
/// links made a fill's applies 45 % slower), and others no registry record
/// decoded per blob. Emptied before and after every registry command and
/// when a snapshot is installed: the only writes of a replica set.
#[derive(Default)]
pub(crate) struct ReplicaSets(Mutex<KnownSets>);

#[derive(Default)]
struct KnownSets {
    sets: HashMap<String, Arc<[String]>>,
    any: Option<bool>,
}

impl ReplicaSets {
    pub(crate) fn clear(&self) {
        *self.lock() = KnownSets::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KnownSets> {
        // A panic while holding it leaves complete entries.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A change, made in the batch being written and so not readable from the
/// store yet, to what decides whether a blob is placed.
#[derive(Clone, Copy)]
pub(crate) enum Pending<'a> {
    Nothing,
    /// `delta` more (or fewer) repositories of `registry` link the blob.
    Links {
        registry: &'a str,
        delta: i64,
    },
    /// `registry`'s replica set becomes `set`.
    Replicas {
        registry: &'a str,
        set: &'a [String],
    },
}

/// The index key of `digest`'s `record`, under `PLACED` when `placed`.
pub(crate) fn key(digest: &str, record: &BlobRecord, placed: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + digest.len());
    k.push(if placed {
        PLACED
    } else {
        record.regions.len().min(HOLDERS_MAX) as u8
    });
    k.extend_from_slice(&(u64::MAX - record.registered_ms).to_be_bytes());
    k.extend_from_slice(digest.as_bytes());
    k
}

fn digest_of(key: &[u8]) -> Option<&str> {
    key.get(9..).and_then(|d| std::str::from_utf8(d).ok())
}

/// Whether a blob held by `holders` (sorted) and linked by `registries`,
/// with these replica sets, is placed: every registry has a replica set
/// and every region in them holds it. Unlinked, or linked by a registry
/// replicated everywhere: not placed.
fn is_placed<'a>(holders: &[String], mut sets: impl Iterator<Item = &'a [String]>) -> bool {
    let mut any = false;
    let placed = sets.all(|set| {
        any = true;
        !set.is_empty()
            && set
                .iter()
                .all(|r| holders.binary_search_by(|h| h.as_str().cmp(r)).is_ok())
    });
    any && placed
}

impl MetaStore {
    /// Write `digest`'s blob record `new` (it was `old`) and follow it in
    /// the index, `pending` being the change of the same batch to which
    /// registries link it, if any. Every write of a blob record goes
    /// through here.
    pub(crate) fn put_blob(
        &self,
        batch: &mut rocksdb::WriteBatch,
        digest: &str,
        old: Option<&BlobRecord>,
        new: &BlobRecord,
        pending: Pending,
    ) -> Result<(), StoreError> {
        batch.put_cf(
            self.cf(CF_BLOBS),
            digest.as_bytes(),
            crate::store::encode(new),
        );
        self.reindex_blob(batch, digest, old, new, pending)
    }

    /// Move `digest`'s index entry from where `old` (and the store) put it
    /// to where `new` and `pending` put it.
    fn reindex_blob(
        &self,
        batch: &mut WriteBatch,
        digest: &str,
        old: Option<&BlobRecord>,
        new: &BlobRecord,
        pending: Pending,
    ) -> Result<(), StoreError> {
        let old = old.filter(|o| o.links > 0);
        let (was_placed, placed) = self.placed_before_after(digest, old, new, pending)?;
        let was = old.map(|o| key(digest, o, was_placed));
        let next = (new.links > 0).then(|| key(digest, new, placed));
        let cf = self.cf(CF_BLOB_HOLDERS);
        if let Some(was) = was.filter(|w| Some(w) != next.as_ref()) {
            batch.delete_cf(cf, was);
            self.note_holder_delete();
        }
        if let Some(next) = next {
            batch.put_cf(cf, next, []);
        }
        Ok(())
    }

    /// Whether `digest` was placed as `old` in the store as it is, and is
    /// as `new` once `pending` is applied. Reads only when a record has
    /// holders (a blob nobody holds is never placed).
    fn placed_before_after(
        &self,
        digest: &str,
        old: Option<&BlobRecord>,
        new: &BlobRecord,
        pending: Pending,
    ) -> Result<(bool, bool), StoreError> {
        let old_held = old.is_some_and(|o| !o.regions.is_empty());
        let new_held = new.links > 0 && !new.regions.is_empty();
        if (!old_held && !new_held) || !self.any_replica_set()? {
            return Ok((false, false));
        }
        let mut prefix = Vec::with_capacity(digest.len() + 1);
        prefix.extend_from_slice(digest.as_bytes());
        prefix.push(0);
        let mut linking: Vec<(String, u64)> = Vec::new();
        for (k, v) in self.scan(CF_BLOB_LINKS, &prefix, None, usize::MAX)? {
            linking.push((last_part(&k), decode(CF_BLOB_LINKS, &v)?));
        }
        let mut sets: HashMap<String, Arc<[String]>> = HashMap::new();
        for (registry, _) in &linking {
            sets.insert(registry.clone(), self.replicas_of(registry)?);
        }
        let before = old_held
            && is_placed(
                old.map_or(&[][..], |o| &o.regions[..]),
                linking.iter().map(|(r, _)| &sets[r][..]),
            );
        if let Pending::Links { registry, delta } = pending {
            match linking.iter_mut().find(|(r, _)| r == registry) {
                Some((_, n)) => *n = (*n as i64).saturating_add(delta).max(0) as u64,
                None if delta > 0 => {
                    linking.push((registry.to_string(), delta as u64));
                    sets.insert(registry.to_string(), self.replicas_of(registry)?);
                }
                None => {}
            }
        }
        if let Pending::Replicas { registry, set } = pending {
            if let Some(s) = sets.get_mut(registry) {
                *s = set.into();
            }
        }
        let after = new_held
            && is_placed(
                &new.regions,
                linking
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, _)| &sets[r][..]),
            );
        Ok((before, after))
    }

    /// A registry's replica set (empty: everywhere, as for a registry
    /// gone or unknown), from `ReplicaSets` when it has it.
    fn replicas_of(&self, registry: &str) -> Result<Arc<[String]>, StoreError> {
        if let Some(set) = self.replica_sets.lock().sets.get(registry) {
            return Ok(set.clone());
        }
        let set: Arc<[String]> = self
            .registry_record(registry)?
            .map(|r| r.replicas)
            .unwrap_or_default()
            .into();
        let mut known = self.replica_sets.lock();
        known.sets.insert(registry.to_string(), set.clone());
        Ok(set)
    }

    /// Whether some registry has a replica set (else no blob is placed).
    fn any_replica_set(&self) -> Result<bool, StoreError> {
        if let Some(any) = self.replica_sets.lock().any {
            return Ok(any);
        }
        let mut any = false;
        for item in self
            .db()
            .iterator_cf(self.cf(crate::keys::CF_REGISTRIES), IteratorMode::Start)
        {
            let (_, v) = item?;
            let record: crate::RegistryRecord = decode(crate::keys::CF_REGISTRIES, &v)?;
            if !record.replicas.is_empty() {
                any = true;
                break;
            }
        }
        self.replica_sets.lock().any = Some(any);
        Ok(any)
    }

    /// Registry `registry`'s replica set becomes `set` in this batch: move
    /// the entries of the blobs it links that this places or unplaces.
    /// Proportional to the registry's links: acceptable for a rare,
    /// operator-only command. A blob linked by several of the registry's
    /// repositories is looked at once per link; each look writes the same.
    pub(crate) fn reindex_registry_blobs(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        set: &[String],
    ) -> Result<(), StoreError> {
        let prefix = crate::keys::registry_prefix(registry);
        let mut seen_last: Option<String> = None;
        for item in self.db().iterator_cf(
            self.cf(crate::keys::CF_REPO_BLOBS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let digest = last_part(&k);
            if seen_last.as_deref() == Some(digest.as_str()) {
                continue;
            }
            if let Some(record) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
                let pending = Pending::Replicas { registry, set };
                self.reindex_blob(batch, &digest, Some(&record), &record, pending)?;
            }
            seen_last = Some(digest);
        }
        Ok(())
    }

    fn note_holder_delete(&self) {
        self.holder_deletes.deleted(1);
    }

    /// Compact the entries below `regions` holders once enough were
    /// deleted since the last time (see the module's note).
    pub(crate) fn compact_holders_if_churned(&self, regions: usize) {
        let end = [regions.min(HOLDERS_MAX) as u8];
        self.holder_deletes.compact_if_due(
            self.db(),
            self.cf(CF_BLOB_HOLDERS),
            Some(&[0u8][..]),
            Some(&end[..]),
        );
    }

    /// Delete `digest`'s blob record (it was `old`) and its index entry,
    /// wherever it is.
    pub(crate) fn delete_blob(&self, batch: &mut WriteBatch, digest: &str, old: &BlobRecord) {
        batch.delete_cf(self.cf(CF_BLOBS), digest.as_bytes());
        for placed in [false, true] {
            batch.delete_cf(self.cf(CF_BLOB_HOLDERS), key(digest, old, placed));
        }
        self.note_holder_delete();
    }

    /// Linked blobs held by exactly `holders` regions (at most
    /// `HOLDERS_MAX`) and not placed, fewest-newest order, each checked
    /// against its record; `visit` returns false to stop.
    pub(crate) fn blobs_held_by(
        &self,
        holders: usize,
        mut visit: impl FnMut(String, BlobRecord) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let count = holders.min(HOLDERS_MAX) as u8;
        let start = [count];
        let iter = self.db().iterator_cf(
            self.cf(CF_BLOB_HOLDERS),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if k.first() != Some(&count) {
                break;
            }
            let Some(digest) = digest_of(&k) else {
                continue;
            };
            let Some(record) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? else {
                continue;
            };
            if record.links == 0 || key(digest, &record, false)[..] != k[..] {
                continue;
            }
            if !visit(digest.to_string(), record)? {
                break;
            }
        }
        Ok(())
    }

    /// Build the index from the blob records unless it is there in this
    /// layout: a store from before it. True when it was built.
    pub(crate) fn index_holders_if_needed(&self) -> Result<bool, StoreError> {
        let layout: Option<u32> = self.get(CF_BLOB_HOLDERS, LAYOUT_KEY)?;
        if layout == Some(LAYOUT) {
            return Ok(false);
        }
        self.rebuild_holders()?;
        Ok(true)
    }

    /// Drop the index and build it again from the blob records (after a
    /// snapshot replaced them), in bounded batches. The blob records and
    /// their links are both keyed by digest first, so one pass over each,
    /// side by side, says which registries link each blob; the replica
    /// sets are read once per registry.
    pub(crate) fn rebuild_holders(&self) -> Result<(), StoreError> {
        let db = self.db();
        let cf = self.cf(CF_BLOB_HOLDERS);
        let mut batch = WriteBatch::default();
        // The layout mark first, so a crash midway rebuilds again.
        batch.delete_cf(cf, LAYOUT_KEY);
        db.write(std::mem::take(&mut batch))?;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item?;
            batch.delete_cf(cf, k);
            if batch.len() >= REBUILD_BATCH {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        db.write(std::mem::take(&mut batch))?;
        let mut sets: HashMap<String, Arc<[String]>> = HashMap::new();
        let mut links = db
            .iterator_cf(self.cf(CF_BLOB_LINKS), IteratorMode::Start)
            .peekable();
        let mut registries = Vec::new();
        for item in db.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            let record: BlobRecord = decode(CF_BLOBS, &v)?;
            // The links of this digest: `digest \0 registry`, right after
            // those of every smaller digest.
            registries.clear();
            while let Some(Ok((lk, _))) = links.peek() {
                let split = lk.iter().position(|&b| b == 0).unwrap_or(lk.len());
                match lk[..split].cmp(&k[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => registries.push(last_part(lk)),
                    std::cmp::Ordering::Greater => break,
                }
                links.next();
            }
            if let Some(Err(_)) = links.peek() {
                if let Some(Err(e)) = links.next() {
                    return Err(e.into());
                }
            }
            if record.links == 0 {
                continue;
            }
            for r in &registries {
                if !sets.contains_key(r) {
                    sets.insert(r.clone(), self.replicas_of(r)?);
                }
            }
            let placed = is_placed(&record.regions, registries.iter().map(|r| &sets[r][..]));
            batch.put_cf(cf, key(&String::from_utf8_lossy(&k), &record, placed), []);
            if batch.len() >= REBUILD_BATCH {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        // The layout mark last: a crash before it rebuilds again.
        batch.put_cf(cf, LAYOUT_KEY, crate::store::encode(&LAYOUT));
        db.write(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobRef, Command, Envelope, DEFAULT_REGISTRY};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn apply(s: &MetaStore, cmd: Command) {
        s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, 1), &[])
            .unwrap();
    }

    /// `d` uploaded to repository `repo` through `region` at `now_ms`.
    fn linked(s: &MetaStore, repo: &str, d: &str, region: &str, now_ms: u64) {
        apply(
            s,
            Command::LinkBlobs {
                repo: repo.into(),
                region: region.into(),
                blobs: vec![BlobRef {
                    digest: d.into(),
                    size: 3,
                }],
                now_ms,
            },
        );
    }

    fn held(s: &MetaStore, d: &str, region: &str) {
        apply(
            s,
            Command::BlobsReplicated {
                region: region.into(),
                blobs: vec![BlobRef {
                    digest: d.into(),
                    size: 3,
                }],
            },
        );
    }

    fn missing(s: &MetaStore, region: &str, regions: usize) -> Vec<String> {
        s.blobs_missing_in(region, regions, 100)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    /// Every entry of the index, raw.
    fn entries(s: &MetaStore) -> Vec<Box<[u8]>> {
        s.db()
            .iterator_cf(s.cf(CF_BLOB_HOLDERS), IteratorMode::Start)
            .map(|i| i.unwrap().0)
            .filter(|k| &k[..] != LAYOUT_KEY)
            .collect()
    }

    #[test]
    fn the_index_follows_every_change_of_a_blobs_holders_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        linked(&s, "a", &digest('1'), "r1", 1);
        linked(&s, "a", &digest('2'), "r1", 2);
        held(&s, &digest('2'), "r2");
        held(&s, &digest('2'), "r3");
        // Held everywhere: not in the walk of a three-region cluster.
        assert_eq!(missing(&s, "r2", 3), vec![digest('1')]);
        assert_eq!(missing(&s, "r3", 3), vec![digest('1')]);
        assert!(missing(&s, "r1", 3).is_empty());
        // A corrupt copy found by the scrub: one holder fewer, missing
        // there again.
        apply(
            &s,
            Command::Scrub(crate::scrub::ScrubCommand::Corrupt {
                region: "r3".into(),
                digest: digest('2'),
                actual: "sha256:00".into(),
                found_by: "scrub".into(),
                now_ms: 5,
            }),
        );
        assert_eq!(missing(&s, "r3", 3), vec![digest('1'), digest('2')]);
        // A region forgotten: everything it held is missing there.
        apply(
            &s,
            Command::ForgetRegion {
                region: "r1".into(),
            },
        );
        assert_eq!(missing(&s, "r1", 3), vec![digest('2'), digest('1')]);
        // Unlinked: freed, out of the index.
        apply(
            &s,
            Command::UnlinkBlob {
                repo: "a".into(),
                digest: digest('1'),
            },
        );
        assert_eq!(missing(&s, "r1", 3), vec![digest('2')]);
        // One entry per linked blob, each at its record's key.
        let want = vec![key(
            &digest('2'),
            &s.blob(&digest('2')).unwrap().unwrap(),
            false,
        )];
        assert_eq!(
            entries(&s).iter().map(|k| k.to_vec()).collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn a_store_from_before_the_index_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = MetaStore::open(dir.path()).unwrap();
            linked(&s, "a", &digest('1'), "r1", 1);
            linked(&s, "a", &digest('2'), "r1", 2);
            held(&s, &digest('2'), "r2");
            // What an earlier release left: blob records, no index.
            let cf = s.cf(CF_BLOB_HOLDERS);
            let mut batch = WriteBatch::default();
            for k in entries(&s) {
                batch.delete_cf(cf, k);
            }
            batch.delete_cf(cf, LAYOUT_KEY);
            s.db().write(batch).unwrap();
            assert!(missing(&s, "r3", 3).is_empty(), "nothing indexed");
        }
        let s = MetaStore::open(dir.path()).unwrap();
        assert_eq!(missing(&s, "r3", 3), vec![digest('1'), digest('2')]);
        assert_eq!(missing(&s, "r2", 3), vec![digest('1')]);
        assert!(!s.index_holders_if_needed().unwrap(), "built once");
    }

    #[test]
    fn an_installed_snapshot_brings_its_blobs_into_the_index() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = MetaStore::open(a_dir.path()).unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        linked(&a, "a", &digest('1'), "r1", 1);
        linked(&b, "stale", &digest('9'), "r1", 1);
        let mut buf = Vec::new();
        a.write_snapshot(&mut buf, &[]).unwrap();
        b.install_snapshot(&mut buf.as_slice()).unwrap();
        assert_eq!(missing(&b, "r2", 3), vec![digest('1')]);
        assert_eq!(
            entries(&b).len(),
            1,
            "the replaced store's entries are gone"
        );
    }

    #[test]
    fn an_entry_that_disagrees_with_its_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        linked(&s, "a", &digest('1'), "r1", 1);
        // A stale entry (as a crash or a bug could leave): wrong count.
        let mut stale = s.blob(&digest('1')).unwrap().unwrap();
        stale.regions.push("r0".into());
        s.db()
            .put_cf(s.cf(CF_BLOB_HOLDERS), key(&digest('1'), &stale, false), [])
            .unwrap();
        assert_eq!(missing(&s, "r2", 3), vec![digest('1')], "listed once");
    }

    fn record(holders: &[&str], registered_ms: u64) -> BlobRecord {
        BlobRecord {
            size: 1,
            regions: holders.iter().map(|s| s.to_string()).collect(),
            links: 1,
            registered_ms,
        }
    }

    #[test]
    fn keys_order_fewest_holders_then_newest_then_digest() {
        let mut keys = [
            key("sha256:b", &record(&["r1", "r2"], 5), false),
            key("sha256:a", &record(&["r1"], 1), false),
            key("sha256:c", &record(&["r1"], 9), false),
            key("sha256:d", &record(&["r1"], 9), false),
            key("sha256:e", &record(&[], 7), false),
        ];
        keys.sort();
        let order: Vec<_> = keys.iter().map(|k| digest_of(k).unwrap()).collect();
        assert_eq!(
            order,
            ["sha256:e", "sha256:c", "sha256:d", "sha256:a", "sha256:b"]
        );
    }

    #[test]
    fn the_layout_key_sorts_after_every_entry() {
        let many: Vec<String> = (0..400).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        for placed in [false, true] {
            assert!(key("sha256:f", &record(&refs, 0), placed)[..] < *LAYOUT_KEY);
        }
        assert!(key("sha256:f", &record(&refs, 0), false)[0] < PLACED);
    }

    /// As the service sends it: gated by the registry's tier.
    fn set_replica(s: &MetaStore, registry: &str, region: &str, add: bool) {
        let cmd = Command::Registry(crate::RegistryCommand::SetReplica {
            name: registry.into(),
            region: region.into(),
            add,
        });
        let mut tiers = crate::tiers::uniform_table(None);
        for t in [&mut tiers.basic, &mut tiers.standard, &mut tiers.premium] {
            t.replications = 4;
        }
        let response = s
            .apply(
                &Envelope::new(
                    DEFAULT_REGISTRY,
                    Command::Gated {
                        tiers: Box::new(tiers),
                        cmd: Box::new(cmd),
                    },
                    1,
                ),
                &[],
            )
            .unwrap();
        assert_eq!(response, crate::Response::Changed(1));
    }

    /// `d` uploaded to `registry`'s repository `repo` through `region`.
    fn linked_in(s: &MetaStore, registry: &str, repo: &str, d: &str, region: &str) {
        let cmd = Command::LinkBlobs {
            repo: repo.into(),
            region: region.into(),
            blobs: vec![BlobRef {
                digest: d.into(),
                size: 3,
            }],
            now_ms: 1,
        };
        s.apply(&Envelope::new(registry, cmd, 1), &[]).unwrap();
    }

    fn unlinked_in(s: &MetaStore, registry: &str, repo: &str, d: &str) {
        let cmd = Command::UnlinkBlob {
            repo: repo.into(),
            digest: d.into(),
        };
        s.apply(&Envelope::new(registry, cmd, 1), &[]).unwrap();
    }

    /// Whether `d`'s one entry sits in the placed range.
    fn placed(s: &MetaStore, d: &str) -> bool {
        let mine: Vec<_> = entries(s)
            .into_iter()
            .filter(|k| digest_of(k) == Some(d))
            .collect();
        assert_eq!(mine.len(), 1, "one entry for {d}: {mine:?}");
        mine[0][0] == PLACED
    }

    /// The index as kept by the applies, against the index rebuilt from
    /// the records: they must be the same entries.
    fn assert_rebuild_agrees(s: &MetaStore) {
        let kept = entries(s);
        s.rebuild_holders().unwrap();
        assert_eq!(
            kept,
            entries(s),
            "the applied index and a rebuilt one differ"
        );
    }

    #[test]
    fn a_blob_every_region_of_its_replica_sets_holds_is_out_of_every_walk() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        s.apply(&crate::tenancy::tests::create("teamone"), &[])
            .unwrap();
        set_replica(&s, "teamone", "r1", true);
        set_replica(&s, "teamone", "r2", true);
        let d = digest('1');
        linked_in(&s, "teamone", "app", &d, "r1");
        assert!(!placed(&s, &d), "r2 lacks it");
        assert_eq!(missing(&s, "r2", 4), vec![d.clone()]);
        held(&s, &d, "r2");
        assert!(placed(&s, &d), "both replicas hold it");
        // Four regions, two hold it: no region's walk sees it (r3 and r4
        // are not replicas, so the walk would only have skipped it).
        for r in ["r1", "r2", "r3", "r4"] {
            assert!(missing(&s, r, 4).is_empty(), "{r}");
        }
        assert_rebuild_agrees(&s);
        // A third replica: missing there, walked again.
        set_replica(&s, "teamone", "r3", true);
        assert!(!placed(&s, &d));
        assert_eq!(missing(&s, "r3", 4), vec![d.clone()]);
        assert_rebuild_agrees(&s);
        // And removed again: placed again.
        set_replica(&s, "teamone", "r3", false);
        assert!(placed(&s, &d));
        // Linked by a second repository of the same registry, and then by
        // the default registry (replicated everywhere): no longer placed.
        linked_in(&s, "teamone", "other", &d, "r1");
        assert!(placed(&s, &d));
        linked_in(&s, DEFAULT_REGISTRY, "base", &d, "r1");
        assert!(!placed(&s, &d));
        assert_eq!(missing(&s, "r4", 4), vec![d.clone()]);
        assert_rebuild_agrees(&s);
        // The default registry's link gone: placed once more.
        unlinked_in(&s, DEFAULT_REGISTRY, "base", &d);
        assert!(placed(&s, &d));
        assert_rebuild_agrees(&s);
        // A scrub finds r2's copy corrupt: r2 lacks it again.
        apply(
            &s,
            Command::Scrub(crate::scrub::ScrubCommand::Corrupt {
                region: "r2".into(),
                digest: d.clone(),
                actual: "sha256:00".into(),
                found_by: "scrub".into(),
                now_ms: 5,
            }),
        );
        assert!(!placed(&s, &d));
        assert_eq!(missing(&s, "r2", 4), vec![d.clone()]);
        held(&s, &d, "r2");
        // Unlinked everywhere: freed, no entry left in either range.
        unlinked_in(&s, "teamone", "app", &d);
        unlinked_in(&s, "teamone", "other", &d);
        assert!(entries(&s).is_empty(), "{:?}", entries(&s));
    }

    #[test]
    fn a_deleted_registry_no_longer_decides_where_its_blobs_belong() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        for (registry, replicas) in [("teamone", ["r1", "r2"]), ("teamtwo", ["r1", "r3"])] {
            s.apply(&crate::tenancy::tests::create(registry), &[])
                .unwrap();
            for r in replicas {
                set_replica(&s, registry, r, true);
            }
        }
        let d = digest('1');
        linked_in(&s, "teamone", "app", &d, "r1");
        linked_in(&s, "teamtwo", "app", &d, "r1");
        held(&s, &d, "r2");
        assert!(!placed(&s, &d), "teamtwo wants it in r3");
        apply(
            &s,
            Command::Registry(crate::RegistryCommand::Delete {
                name: "teamtwo".into(),
            }),
        );
        assert!(placed(&s, &d), "only teamone's r1 and r2 are left");
        assert_rebuild_agrees(&s);
    }

    #[test]
    fn an_index_of_the_previous_layout_is_rebuilt_with_placed_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let d = digest('1');
        {
            let s = MetaStore::open(dir.path()).unwrap();
            s.apply(&crate::tenancy::tests::create("teamone"), &[])
                .unwrap();
            set_replica(&s, "teamone", "r1", true);
            linked_in(&s, "teamone", "app", &d, "r1");
            assert!(placed(&s, &d));
            // What release layout 1 wrote: every entry at its holder
            // count, marked layout 1.
            let cf = s.cf(CF_BLOB_HOLDERS);
            let record = s.blob(&d).unwrap().unwrap();
            let mut batch = WriteBatch::default();
            batch.delete_cf(cf, key(&d, &record, true));
            batch.put_cf(cf, key(&d, &record, false), []);
            batch.put_cf(cf, LAYOUT_KEY, crate::store::encode(&1u32));
            s.db().write(batch).unwrap();
            assert!(!placed(&s, &d));
        }
        let s = MetaStore::open(dir.path()).unwrap();
        assert!(placed(&s, &d), "rebuilt in layout 2 when opened");
        assert!(missing(&s, "r2", 3).is_empty());
        assert!(!s.index_holders_if_needed().unwrap(), "built once");
    }
}
