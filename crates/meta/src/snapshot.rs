//! Whole-state snapshots: every column family streamed as length-prefixed
//! records from a consistent RocksDB snapshot, and restored by replacing the
//! store's contents. The format is private to Wharf and versioned.

use std::io::{Read, Write};

use rocksdb::{IteratorMode, WriteBatch};

use crate::error::StoreError;
use crate::keys::ALL_CFS;
use crate::store::MetaStore;

/// Values of the requested sys keys, in request order (`None` if absent).
pub type SysValues = Vec<Option<Vec<u8>>>;

const MAGIC: &[u8; 8] = b"WHARFSN1";
const END: u8 = 0xff;
/// Records restored per write batch, to bound memory while installing.
const RESTORE_BATCH_RECORDS: usize = 4096;

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
        for (i, name) in ALL_CFS.iter().enumerate() {
            let cf = db.cf_handle(name).expect("column family opened at start");
            for item in snap.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item?;
                w.write_all(&[i as u8])?;
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
        if &magic != MAGIC {
            return Err(corrupt("bad snapshot header"));
        }
        let db = self.db();
        let mut batch = WriteBatch::default();
        for name in ALL_CFS {
            let cf = db.cf_handle(name).expect("column family opened at start");
            for item in db.iterator_cf(cf, IteratorMode::Start) {
                let (k, _) = item?;
                batch.delete_cf(cf, k);
            }
        }
        let mut records = 0;
        loop {
            let mut tag = [0u8; 1];
            r.read_exact(&mut tag)?;
            if tag[0] == END {
                break;
            }
            let name = ALL_CFS
                .get(tag[0] as usize)
                .ok_or_else(|| corrupt(format!("unknown column family {}", tag[0])))?;
            let cf = db.cf_handle(name).expect("column family opened at start");
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
        self.sync()?;
        self.bump_identity_epoch();
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use crate::{BlobRef, Command, MetaStore};

    #[test]
    fn snapshot_round_trips_into_a_store_with_other_contents() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(a_dir.path()).unwrap();
        let b = MetaStore::open(b_dir.path()).unwrap();
        let d = format!("sha256:{}", "1".repeat(64));
        let link = |repo: &str| Command::LinkBlobs {
            repo: repo.into(),
            region: "r".into(),
            blobs: vec![BlobRef {
                digest: d.clone(),
                size: 1,
            }],
            now_ms: 1,
        };
        a.apply(&link("keep"), &[("applied", vec![7])]).unwrap();
        b.apply(&link("stale"), &[]).unwrap();
        let mut buf = Vec::new();
        let (n, sys) = a.write_snapshot(&mut buf, &["applied", "absent"]).unwrap();
        assert_eq!(sys, vec![Some(vec![7]), None]);
        assert!(n >= 3);
        assert_eq!(b.install_snapshot(&mut buf.as_slice()).unwrap(), n);
        assert!(b.repository("keep").unwrap().is_some());
        assert!(
            b.repository("stale").unwrap().is_none(),
            "old contents are replaced"
        );
        assert_eq!(b.read_sys("applied").unwrap(), Some(vec![7]));
        assert!(b.install_snapshot(&mut &b"garbage!"[..]).is_err());
    }
}
