//! Whole-state snapshots: every column family streamed as length-prefixed
//! records from a consistent RocksDB snapshot, and restored by replacing the
//! store's contents. The format is private to Wharf and versioned: version
//! 2 names each column family before its records (version 1, of release
//! 0.1, numbered them by position, so a column family added in the middle
//! of the list shifted every later one), and every length read back is
//! bounded before anything is allocated.

use std::io::{Read, Write};

use rocksdb::{IteratorMode, WriteBatch};

use crate::error::StoreError;
use crate::keys::ALL_CFS;
use crate::store::MetaStore;

/// Values of the requested sys keys, in request order (`None` if absent).
pub type SysValues = Vec<Option<Vec<u8>>>;

const MAGIC: &[u8; 8] = b"WHARFSN2";
const MAGIC_RELEASE_0_1: &[u8; 8] = b"WHARFSN1";
/// Switches to the column family whose name follows.
const TAG_CF: u8 = 0x01;
/// A key and a value in the current column family.
const TAG_RECORD: u8 = 0x02;
const END: u8 = 0xff;
/// Largest key, value or name in a snapshot: a manifest is at most 4 MiB,
/// so anything near this is corruption, not data.
pub const SNAPSHOT_CHUNK_MAX_BYTES: usize = 64 << 20;
/// Records restored per write batch, to bound memory while installing.
const RESTORE_BATCH_RECORDS: usize = 4096;

/// Whether a snapshot file starting with `header` was written by release 0.1.
pub fn is_release_0_1_snapshot(header: &[u8]) -> bool {
    header.starts_with(MAGIC_RELEASE_0_1)
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        cf: "snapshot",
        detail: detail.into(),
    }
}

fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

fn read_chunk(r: &mut impl Read) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > SNAPSHOT_CHUNK_MAX_BYTES {
        return Err(corrupt(format!(
            "a {len}-byte record (at most {SNAPSHOT_CHUNK_MAX_BYTES})"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

impl MetaStore {
    /// Write the whole state to `w`. Returns the number of records and the
    /// values of `sys_keys` as of the same point in time as the data (apply
    /// may run concurrently, so reading them separately could disagree).
    pub fn write_snapshot(
        &self,
        w: &mut impl Write,
        sys_keys: &[&str],
    ) -> Result<(u64, SysValues), StoreError> {
        let db = self.db();
        let snap = db.snapshot();
        let sys_cf = db
            .cf_handle(crate::keys::CF_SYS)
            .expect("column family opened at start");
        let sys = sys_keys
            .iter()
            .map(|k| snap.get_cf(sys_cf, k.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        w.write_all(MAGIC)?;
        let mut records = 0;
        for name in ALL_CFS {
            let cf = db.cf_handle(name).expect("column family opened at start");
            w.write_all(&[TAG_CF])?;
            write_chunk(w, name.as_bytes())?;
            for item in snap.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item?;
                w.write_all(&[TAG_RECORD])?;
                write_chunk(w, &k)?;
                write_chunk(w, &v)?;
                records += 1;
            }
        }
        w.write_all(&[END])?;
        Ok((records, sys))
    }

    /// Replace the whole state with the snapshot read from `r`.
    pub fn install_snapshot(&self, r: &mut impl Read) -> Result<u64, StoreError> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic == MAGIC_RELEASE_0_1 {
            return Err(corrupt(
                "a release 0.1 snapshot: upgrade every node of the cluster before it sends one",
            ));
        }
        if &magic != MAGIC {
            return Err(corrupt("bad snapshot header"));
        }
        let db = self.db();
        let mut batch = WriteBatch::default();
        // One range deletion per column family, from its first key to just
        // past its last: a batch of one deletion per key held the whole
        // old state's keys in memory (a lagging node with a million tags:
        // millions of them).
        for name in ALL_CFS {
            let cf = db.cf_handle(name).expect("column family opened at start");
            let first = db.iterator_cf(cf, IteratorMode::Start).next().transpose()?;
            let last = db.iterator_cf(cf, IteratorMode::End).next().transpose()?;
            if let (Some((first, _)), Some((last, _))) = (first, last) {
                let mut end = last.to_vec();
                end.push(0);
                batch.delete_range_cf(cf, first.to_vec(), end);
            }
        }
        let mut records = 0;
        let mut cf = None;
        loop {
            let mut tag = [0u8; 1];
            r.read_exact(&mut tag)?;
            match tag[0] {
                END => break,
                TAG_CF => {
                    let name = read_chunk(r)?;
                    let known = ALL_CFS.iter().find(|n| n.as_bytes() == name.as_slice());
                    let Some(name) = known else {
                        return Err(corrupt(format!(
                            "column family {:?} is unknown to this release",
                            String::from_utf8_lossy(&name)
                        )));
                    };
                    cf = Some(db.cf_handle(name).expect("column family opened at start"));
                    continue;
                }
                TAG_RECORD => {}
                other => return Err(corrupt(format!("unknown record tag {other}"))),
            }
            let cf = cf.ok_or_else(|| corrupt("a record before any column family"))?;
            let k = read_chunk(r)?;
            let v = read_chunk(r)?;
            batch.put_cf(cf, k, v);
            records += 1;
            // Deletions must land with the first puts, so flush only after
            // the first full batch has been built.
            if batch.len() >= RESTORE_BATCH_RECORDS * 2 {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        db.write(batch)?;
        self.request_expiry.reset();
        // A snapshot from a node before usage counters has none.
        self.count_usage_if_needed()?;
        // Derived indexes are never sent: built from what arrived.
        self.replica_sets.clear();
        self.rebuild_holders()?;
        self.sync()?;
        self.bump_identity_epoch();
        self.read_locks().changed();
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobRef, Command, Envelope, MetaStore, DEFAULT_REGISTRY};

    #[test]
    fn snapshot_round_trips_into_a_store_with_other_contents() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(a_dir.path()).unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        let d = format!("sha256:{}", "1".repeat(64));
        let link = |repo: &str| {
            let cmd = Command::LinkBlobs {
                repo: repo.into(),
                region: "r".into(),
                blobs: vec![BlobRef {
                    digest: d.clone(),
                    size: 1,
                }],
                now_ms: 1,
            };
            Envelope::new(DEFAULT_REGISTRY, cmd, 1)
        };
        a.apply(&link("keep"), &[("applied", vec![7])]).unwrap();
        // Old contents at both ends of the key space and under the same
        // keys the snapshot brings.
        for repo in ["0-first", "keep", "stale", "zzz-last"] {
            b.apply(&link(repo), &[]).unwrap();
        }
        let mut buf = Vec::new();
        let (n, sys) = a.write_snapshot(&mut buf, &["applied", "absent"]).unwrap();
        assert_eq!(sys, vec![Some(vec![7]), None]);
        assert!(n >= 3);
        assert_eq!(b.install_snapshot(&mut buf.as_slice()).unwrap(), n);
        let reg = b.registry(DEFAULT_REGISTRY);
        assert!(reg.repository("keep").unwrap().is_some());
        for gone in ["0-first", "stale", "zzz-last"] {
            assert!(
                reg.repository(gone).unwrap().is_none(),
                "old contents are replaced: {gone}"
            );
        }
        assert_eq!(reg.repositories(None, 10).unwrap().len(), 1);
        assert_eq!(b.read_sys("applied").unwrap(), Some(vec![7]));
        assert!(b.install_snapshot(&mut &b"garbage!"[..]).is_err());
    }

    #[test]
    fn a_huge_length_in_a_snapshot_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.push(TAG_CF);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = s.install_snapshot(&mut bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn snapshots_name_their_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let mut buf = Vec::new();
        s.write_snapshot(&mut buf, &[]).unwrap();
        // A column family this release does not know is refused by name,
        // not taken for another one.
        let mut bad = MAGIC.to_vec();
        bad.push(TAG_CF);
        bad.extend_from_slice(&5u32.to_le_bytes());
        bad.extend_from_slice(b"later");
        bad.push(END);
        let err = s.install_snapshot(&mut bad.as_slice()).unwrap_err();
        assert!(err.to_string().contains("\"later\" is unknown"), "{err}");
        let mut old = MAGIC_RELEASE_0_1.to_vec();
        old.push(END);
        assert!(s
            .install_snapshot(&mut old.as_slice())
            .unwrap_err()
            .to_string()
            .contains("release 0.1"));
        assert!(s.install_snapshot(&mut buf.as_slice()).is_ok());
    }
}
