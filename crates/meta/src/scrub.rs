//! Scrub, as the state machine sees it: a region that found its copy of
//! a blob corrupt drops out of the blob's holders (so nobody fetches from
//! it, and the mover copies a good one back in from a healthy region), and
//! each region's scrub progress is kept for `wharf scrub status`.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::StoreError;
use crate::holders::Pending;
use crate::keys::*;
use crate::records::BlobRecord;
use crate::store::{decode, encode, MetaStore};

const SYS_SCRUB_REGION: &str = "scrub.region.";
/// `actual` of a copy that is not there at all.
pub const MISSING: &str = "missing";
/// Corrupt copies remembered per region, most recent last.
const CORRUPT_KEPT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScrubCommand {
    /// `region`'s copy of `digest` failed verification (and was moved to
    /// its quarantine): `region` no longer holds it.
    Corrupt {
        region: String,
        digest: String,
        /// What it hashed to.
        actual: String,
        /// Found by the background scrub, or while serving it.
        #[serde(default)]
        found_by: String,
        now_ms: u64,
    },
    /// `region` verified `blobs` more blobs (`bytes` in all); with
    /// `pass_finished`, it went through every blob it holds once more.
    Progress {
        region: String,
        blobs: u64,
        bytes: u64,
        pass_finished: bool,
        now_ms: u64,
    },
}

/// One corrupt copy found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptCopy {
    pub digest: String,
    pub actual: String,
    #[serde(default)]
    pub found_by: String,
    pub at_ms: u64,
}

/// What a region's scrub has done, in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RegionScrub {
    pub blobs_verified: u64,
    pub bytes_verified: u64,
    pub passes: u64,
    pub last_pass_ms: u64,
    pub corrupt_found: u64,
    /// The most recent corrupt copies.
    #[serde(default)]
    pub recent: Vec<CorruptCopy>,
    pub last_ms: u64,
}

impl MetaStore {
    pub(crate) fn apply_scrub(
        &self,
        batch: &mut WriteBatch,
        cmd: &ScrubCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            ScrubCommand::Corrupt {
                region,
                digest,
                actual,
                found_by,
                now_ms,
            } => {
                let mut changed = 0;
                if let Some(mut record) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
                    if let Ok(at) = record.regions.binary_search(region) {
                        let old = record.clone();
                        record.regions.remove(at);
                        self.put_blob(batch, digest, Some(&old), &record, Pending::Nothing)?;
                        changed = 1;
                    }
                }
                // A missing file the index no longer lists (freed and swept
                // meanwhile) is no finding.
                if changed == 0 && actual == MISSING {
                    return Ok(Response::Changed(0));
                }
                let mut stats = self.region_scrub(region)?;
                stats.corrupt_found += 1;
                stats.recent.push(CorruptCopy {
                    digest: digest.clone(),
                    actual: actual.clone(),
                    found_by: found_by.clone(),
                    at_ms: *now_ms,
                });
                let extra = stats.recent.len().saturating_sub(CORRUPT_KEPT);
                stats.recent.drain(..extra);
                stats.last_ms = stats.last_ms.max(*now_ms);
                self.put_region_scrub(batch, region, &stats);
                Ok(Response::Changed(changed))
            }
            ScrubCommand::Progress {
                region,
                blobs,
                bytes,
                pass_finished,
                now_ms,
            } => {
                let mut stats = self.region_scrub(region)?;
                stats.blobs_verified += blobs;
                stats.bytes_verified += bytes;
                if *pass_finished {
                    stats.passes += 1;
                    stats.last_pass_ms = *now_ms;
                }
                stats.last_ms = stats.last_ms.max(*now_ms);
                self.put_region_scrub(batch, region, &stats);
                Ok(Response::Ok)
            }
        }
    }

    fn put_region_scrub(&self, batch: &mut WriteBatch, region: &str, stats: &RegionScrub) {
        let key = format!("{SYS_SCRUB_REGION}{region}");
        batch.put_cf(self.cf(CF_SYS), key.as_bytes(), encode(stats));
    }

    /// What `region`'s scrub has done so far.
    pub fn region_scrub(&self, region: &str) -> Result<RegionScrub, StoreError> {
        let key = format!("{SYS_SCRUB_REGION}{region}");
        Ok(self.get(CF_SYS, key.as_bytes())?.unwrap_or_default())
    }

    /// Blobs the index says `region` holds, in digest order after
    /// `after`, at most `limit`: what its scrub walks.
    pub fn blobs_held_in(
        &self,
        region: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, BlobRecord)>, StoreError> {
        let mut out = Vec::new();
        let mode = match after {
            Some(a) => rocksdb::IteratorMode::From(a.as_bytes(), rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        for item in self.db().iterator_cf(self.cf(CF_BLOBS), mode) {
            let (k, v) = item?;
            if after.is_some_and(|a| a.as_bytes() == &*k) {
                continue;
            }
            let record: BlobRecord = decode(CF_BLOBS, &v)?;
            if record
                .regions
                .binary_search_by(|r| r.as_str().cmp(region))
                .is_ok()
            {
                out.push((String::from_utf8_lossy(&k).into_owned(), record));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{BlobRef, Command, Envelope};
    use crate::DEFAULT_REGISTRY;

    #[test]
    fn a_corrupt_copy_leaves_the_holders_and_is_copied_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let apply = |cmd| {
            s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, 1), &[])
                .unwrap()
        };
        let d = format!("sha256:{}", "a".repeat(64));
        let blob = vec![BlobRef {
            digest: d.clone(),
            size: 5,
        }];
        apply(Command::LinkBlobs {
            repo: "app".into(),
            region: "r1".into(),
            blobs: blob.clone(),
            now_ms: 1,
        });
        apply(Command::BlobsReplicated {
            region: "r2".into(),
            blobs: blob.clone(),
        });
        assert_eq!(s.blobs_held_in("r2", None, 10).unwrap().len(), 1);
        let corrupt = Command::Scrub(ScrubCommand::Corrupt {
            region: "r2".into(),
            digest: d.clone(),
            actual: "sha256:bad".into(),
            found_by: "scrub".into(),
            now_ms: 9,
        });
        assert_eq!(apply(corrupt), Response::Changed(1));
        assert_eq!(s.blob(&d).unwrap().unwrap().regions, ["r1"]);
        assert!(s.blobs_held_in("r2", None, 10).unwrap().is_empty());
        assert_eq!(
            s.blobs_missing_in("r2", usize::MAX, 10).unwrap()[0].0,
            d,
            "the mover copies it back"
        );
        let stats = s.region_scrub("r2").unwrap();
        assert_eq!(
            (stats.corrupt_found, stats.recent[0].digest.as_str()),
            (1, d.as_str())
        );
        apply(Command::Scrub(ScrubCommand::Progress {
            region: "r2".into(),
            blobs: 3,
            bytes: 30,
            pass_finished: true,
            now_ms: 10,
        }));
        let stats = s.region_scrub("r2").unwrap();
        assert_eq!(
            (stats.blobs_verified, stats.passes, stats.last_pass_ms),
            (3, 1, 10)
        );
        assert!(s.region_scrub("r1").unwrap().recent.is_empty());
    }
}
