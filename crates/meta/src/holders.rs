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
//! store opens without it (a store from an earlier release) and after a
//! snapshot is installed. Each entry is checked against its record when
//! read, so an entry left behind by a crash or a bug is skipped, never
//! served.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::error::StoreError;
use crate::keys::{CF_BLOBS, CF_BLOB_HOLDERS};
use crate::records::BlobRecord;
use crate::store::{decode, MetaStore};

/// The index's layout version, under a key no entry can have (holder
/// counts stop at `HOLDERS_MAX`).
const LAYOUT_KEY: &[u8] = b"\xfflayout";
const LAYOUT: u32 = 1;
/// Counts above this share its byte (no cluster has that many regions).
pub(crate) const HOLDERS_MAX: usize = 254;
/// Entries written per batch while rebuilding.
const REBUILD_BATCH: usize = 50_000;
/// Deleted entries after which a walk compacts the low counts first.
pub(crate) const COMPACT_AFTER_DELETES: u64 = 100_000;

/// The index key of `digest`'s `record`.
pub(crate) fn key(digest: &str, record: &BlobRecord) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + digest.len());
    k.push(record.regions.len().min(HOLDERS_MAX) as u8);
    k.extend_from_slice(&(u64::MAX - record.registered_ms).to_be_bytes());
    k.extend_from_slice(digest.as_bytes());
    k
}

fn digest_of(key: &[u8]) -> Option<&str> {
    key.get(9..).and_then(|d| std::str::from_utf8(d).ok())
}

impl MetaStore {
    /// Write `digest`'s blob record `new` (it was `old`) and follow it in
    /// the index. Every write of a blob record goes through here.
    pub(crate) fn put_blob(
        &self,
        batch: &mut WriteBatch,
        digest: &str,
        old: Option<&BlobRecord>,
        new: &BlobRecord,
    ) {
        batch.put_cf(
            self.cf(CF_BLOBS),
            digest.as_bytes(),
            crate::store::encode(new),
        );
        let cf = self.cf(CF_BLOB_HOLDERS);
        let next = key(digest, new);
        if let Some(old) = old.filter(|o| o.links > 0) {
            let was = key(digest, old);
            if was != next {
                batch.delete_cf(cf, was);
                self.note_holder_delete();
            }
        }
        if new.links > 0 {
            batch.put_cf(cf, next, []);
        } else {
            batch.delete_cf(cf, next);
            self.note_holder_delete();
        }
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

    /// Delete `digest`'s blob record (it was `old`) and its index entry.
    pub(crate) fn delete_blob(&self, batch: &mut WriteBatch, digest: &str, old: &BlobRecord) {
        batch.delete_cf(self.cf(CF_BLOBS), digest.as_bytes());
        batch.delete_cf(self.cf(CF_BLOB_HOLDERS), key(digest, old));
        self.note_holder_delete();
    }

    /// Linked blobs held by exactly `holders` regions (at most
    /// `HOLDERS_MAX`), fewest-newest order, each checked against its
    /// record; `visit` returns false to stop.
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
            if record.links == 0 || key(digest, &record)[..] != k[..] {
                continue;
            }
            if !visit(digest.to_string(), record)? {
                break;
            }
        }
        Ok(())
    }

    /// Build the index from the blob records unless it is there: a store
    /// from before it. True when it was built.
    pub(crate) fn index_holders_if_needed(&self) -> Result<bool, StoreError> {
        let layout: Option<u32> = self.get(CF_BLOB_HOLDERS, LAYOUT_KEY)?;
        if layout == Some(LAYOUT) {
            return Ok(false);
        }
        self.rebuild_holders()?;
        Ok(true)
    }

    /// Drop the index and build it again from the blob records (after a
    /// snapshot replaced them), in bounded batches.
    pub(crate) fn rebuild_holders(&self) -> Result<(), StoreError> {
        let db = self.db();
        let cf = self.cf(CF_BLOB_HOLDERS);
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item?;
            batch.delete_cf(cf, k);
            if batch.len() >= REBUILD_BATCH {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        db.write(std::mem::take(&mut batch))?;
        for item in db.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            let record: BlobRecord = decode(CF_BLOBS, &v)?;
            if record.links > 0 {
                batch.put_cf(cf, key(&String::from_utf8_lossy(&k), &record), []);
            }
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
        let want = vec![key(&digest('2'), &s.blob(&digest('2')).unwrap().unwrap())];
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
            .put_cf(s.cf(CF_BLOB_HOLDERS), key(&digest('1'), &stale), [])
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
            key("sha256:b", &record(&["r1", "r2"], 5)),
            key("sha256:a", &record(&["r1"], 1)),
            key("sha256:c", &record(&["r1"], 9)),
            key("sha256:d", &record(&["r1"], 9)),
            key("sha256:e", &record(&[], 7)),
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
        assert!(key("sha256:f", &record(&refs, 0))[..] < *LAYOUT_KEY);
    }
}
