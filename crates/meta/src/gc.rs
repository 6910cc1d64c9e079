//! Garbage collection, decided in the state machine.
//!
//! A blob belongs to a repository through a link (`repo_blobs`). A link
//! that no manifest of its repository references, and that nothing linked
//! or named for a grace period, is first *marked*; a later `Sweep` removes
//! the links still marked and still unreferenced. Any manifest PUT, upload
//! or mount naming a marked link in between clears the mark (a
//! re-reference always wins). When a blob's last link in the cluster goes
//! — by a sweep, a blob DELETE, a repository or registry delete — the blob
//! is *freed* in the same apply: it leaves the index, and every region that
//! held it gets a sweep entry (`sweeps`: `region \0 digest`). Each region's
//! sweeper deletes its file, with its own guards against a copy that is
//! being registered again (see `wharf-gc`), and reports `Swept`. A region
//! that is down keeps its entries and sweeps when it returns.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::StoreError;
use crate::keys::*;
use crate::records::BlobRecord;
use crate::repo::Registry;
use crate::store::{decode, encode, MetaStore};

/// Most blob stats kept of recent runs.
const RUNS_KEPT: usize = 20;
const SYS_GC_RUNS: &str = "gc.runs";
const SYS_GC_REGION: &str = "gc.region.";

/// A link of a blob into a repository. Links written before this release
/// have an empty value: linked at an unknown time (0), unmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LinkRecord {
    /// When it was last linked or named by a manifest (command time).
    #[serde(default)]
    pub linked_ms: u64,
    /// When a GC run marked it as garbage; cleared by any re-reference.
    #[serde(default)]
    pub marked_ms: Option<u64>,
}

pub(crate) fn decode_link(bytes: &[u8]) -> Result<LinkRecord, StoreError> {
    if bytes.is_empty() {
        return Ok(LinkRecord::default());
    }
    decode(CF_REPO_BLOBS, bytes)
}

/// A file a region is to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub size: u64,
    /// When the blob was freed (command time).
    pub freed_ms: u64,
}

/// A blob freed by a command: its size and the regions that held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreedBlob {
    pub digest: String,
    pub size: u64,
    pub regions: Vec<String>,
}

/// What one GC run decided, as `wharf gc status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GcRun {
    pub id: String,
    /// The registry collected; empty: every registry.
    #[serde(default)]
    pub registry: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub links_marked: u64,
    pub links_removed: u64,
    pub blobs_freed: u64,
    pub bytes_freed: u64,
    /// Untagged manifests retention deleted.
    #[serde(default)]
    pub manifests_expired: u64,
    /// Tags keep policies deleted.
    #[serde(default)]
    pub tags_expired: u64,
    /// Recycle-bin entries purged.
    #[serde(default)]
    pub bin_purged: u64,
}

/// What a region's sweeper has done, in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RegionSweeps {
    pub files_deleted: u64,
    pub bytes_freed: u64,
    /// Files kept because the region was registering them again.
    #[serde(default)]
    pub files_kept: u64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GcCommand {
    /// Mark the links of `repo` (among `digests`) that no manifest of the
    /// repository references and that nothing touched for `grace_ms`.
    Mark {
        repo: String,
        digests: Vec<String>,
        grace_ms: u64,
        now_ms: u64,
    },
    /// Remove the links of `repo` (among `digests`) marked at least
    /// `hold_ms` ago and still unreferenced; free blobs left unlinked.
    Sweep {
        repo: String,
        digests: Vec<String>,
        hold_ms: u64,
        now_ms: u64,
    },
    /// Free blobs of the index that no repository links (left by releases
    /// that kept unlinked blobs).
    FreeUnlinked { digests: Vec<String>, now_ms: u64 },
    /// `region`'s sweeper is done with these entries: it deleted `files`
    /// of them (`bytes` in all) and kept the others, which it was
    /// registering again.
    Swept {
        region: String,
        digests: Vec<String>,
        files: u64,
        bytes: u64,
        now_ms: u64,
    },
    /// A run finished: its summary, for `wharf gc status`.
    RunFinished(GcRun),
}

impl MetaStore {
    /// The last link of `digest` is gone: drop it from the index and queue
    /// its file for deletion in every region that held it.
    pub(crate) fn free_blob(
        &self,
        batch: &mut WriteBatch,
        digest: &str,
        record: &BlobRecord,
        now_ms: u64,
    ) -> FreedBlob {
        self.delete_blob(batch, digest, record);
        for region in &record.regions {
            batch.put_cf(
                self.cf(CF_SWEEPS),
                sweep_key(region, digest),
                encode(&SweepRecord {
                    size: record.size,
                    freed_ms: now_ms,
                }),
            );
        }
        FreedBlob {
            digest: digest.to_string(),
            size: record.size,
            regions: record.regions.clone(),
        }
    }

    /// A region holds a copy of a blob the index does not know (a copy
    /// that finished after the blob was freed): its file is garbage too.
    pub(crate) fn sweep_orphan(
        &self,
        batch: &mut WriteBatch,
        region: &str,
        digest: &str,
        size: u64,
    ) {
        batch.put_cf(
            self.cf(CF_SWEEPS),
            sweep_key(region, digest),
            encode(&SweepRecord { size, freed_ms: 0 }),
        );
    }

    pub(crate) fn apply_gc(
        &self,
        batch: &mut WriteBatch,
        registry: &Registry<'_>,
        cmd: &GcCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            GcCommand::Mark {
                repo,
                digests,
                grace_ms,
                now_ms,
            } => {
                let referenced = registry.referenced_blobs(repo)?;
                let mut marked = 0;
                for d in unique(digests) {
                    let key = registry.key(&[repo, d]);
                    let Some(raw) = self.db().get_pinned_cf(self.cf(CF_REPO_BLOBS), &key)? else {
                        continue;
                    };
                    let mut link = decode_link(&raw)?;
                    let idle = link.linked_ms.saturating_add(*grace_ms) <= *now_ms;
                    if link.marked_ms.is_none() && idle && !referenced.contains(d) {
                        link.marked_ms = Some(*now_ms);
                        batch.put_cf(self.cf(CF_REPO_BLOBS), &key, encode(&link));
                        marked += 1;
                    }
                }
                Ok(Response::Changed(marked))
            }
            GcCommand::Sweep {
                repo,
                digests,
                hold_ms,
                now_ms,
            } => {
                let referenced = registry.referenced_blobs(repo)?;
                let mut removed = 0;
                let mut freed = Vec::new();
                for d in unique(digests) {
                    let key = registry.key(&[repo, d]);
                    let Some(raw) = self.db().get_pinned_cf(self.cf(CF_REPO_BLOBS), &key)? else {
                        continue;
                    };
                    let link = decode_link(&raw)?;
                    let held = link
                        .marked_ms
                        .is_some_and(|m| m.saturating_add(*hold_ms) <= *now_ms);
                    if held && !referenced.contains(d) {
                        batch.delete_cf(self.cf(CF_REPO_BLOBS), &key);
                        removed += 1;
                        if let Some(f) =
                            self.drop_link(batch, registry.name(), Some(repo), d, 1, *now_ms)?
                        {
                            freed.push(f);
                        }
                    }
                }
                Ok(Response::Freed {
                    links: removed,
                    blobs: freed,
                })
            }
            GcCommand::FreeUnlinked { digests, now_ms } => {
                let mut freed = Vec::new();
                for d in unique(digests) {
                    if let Some(record) = self.get::<BlobRecord>(CF_BLOBS, d.as_bytes())? {
                        if record.links == 0 {
                            freed.push(self.free_blob(batch, d, &record, *now_ms));
                        }
                    }
                }
                Ok(Response::Freed {
                    links: 0,
                    blobs: freed,
                })
            }
            GcCommand::Swept {
                region,
                digests,
                files,
                bytes,
                now_ms,
            } => {
                let mut done: u64 = 0;
                for d in unique(digests) {
                    let key = sweep_key(region, d);
                    if self.db().get_pinned_cf(self.cf(CF_SWEEPS), &key)?.is_some() {
                        batch.delete_cf(self.cf(CF_SWEEPS), &key);
                        done += 1;
                    }
                }
                let sys_key = format!("{SYS_GC_REGION}{region}");
                let mut stats = self.region_sweeps(region)?;
                stats.files_deleted += files;
                stats.bytes_freed += bytes;
                stats.files_kept += done.saturating_sub(*files);
                stats.last_ms = stats.last_ms.max(*now_ms);
                batch.put_cf(self.cf(CF_SYS), sys_key.as_bytes(), encode(&stats));
                Ok(Response::Changed(done))
            }
            GcCommand::RunFinished(run) => {
                let mut runs = self.gc_runs()?;
                runs.push(run.clone());
                let extra = runs.len().saturating_sub(RUNS_KEPT);
                runs.drain(..extra);
                batch.put_cf(self.cf(CF_SYS), SYS_GC_RUNS.as_bytes(), encode(&runs));
                Ok(Response::Ok)
            }
        }
    }

    // ---- queries --------------------------------------------------------

    /// Recent GC runs, oldest first.
    pub fn gc_runs(&self) -> Result<Vec<GcRun>, StoreError> {
        Ok(self
            .get(CF_SYS, SYS_GC_RUNS.as_bytes())?
            .unwrap_or_default())
    }

    /// What `region`'s sweeper has done so far.
    pub fn region_sweeps(&self, region: &str) -> Result<RegionSweeps, StoreError> {
        let key = format!("{SYS_GC_REGION}{region}");
        Ok(self.get(CF_SYS, key.as_bytes())?.unwrap_or_default())
    }

    /// Files `region` is still to delete: (digest, record), at most `limit`.
    pub fn sweeps_for(
        &self,
        region: &str,
        limit: usize,
    ) -> Result<Vec<(String, SweepRecord)>, StoreError> {
        let prefix = sweep_key(region, "");
        self.scan(CF_SWEEPS, &prefix, None, limit)?
            .into_iter()
            .map(|(k, v)| Ok((last_part(&k), decode(CF_SWEEPS, &v)?)))
            .collect()
    }

    /// Sweep entries pending, per region (one pass over `sweeps`, keys only
    /// kept in memory as counts).
    pub fn sweeps_pending(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_SWEEPS), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            let region = k.split(|&b| b == 0).next().unwrap_or_default();
            *out.entry(String::from_utf8_lossy(region).into_owned())
                .or_default() += 1;
        }
        Ok(out)
    }

    /// Sweep entries `region` has yet to do (its own key range only).
    pub fn sweeps_pending_in(&self, region: &str) -> Result<u64, StoreError> {
        let prefix = sweep_key(region, "");
        let mut n = 0;
        let from = rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        for item in self.db().iterator_cf(self.cf(CF_SWEEPS), from) {
            if !item?.0.starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Blobs of the index no repository links (at most `limit`), read as
    /// the index is walked rather than loaded whole.
    pub fn unlinked_blobs(&self, limit: usize) -> Result<Vec<(String, BlobRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_BLOBS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let record: BlobRecord = decode(CF_BLOBS, &v)?;
            if record.links == 0 {
                out.push((String::from_utf8_lossy(&k).into_owned(), record));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl Registry<'_> {
    /// Every blob some manifest of `repo` names (config and layers),
    /// live or in the recycle bin (a restore needs them).
    pub fn referenced_blobs(&self, repo: &str) -> Result<BTreeSet<String>, StoreError> {
        let mut prefix = self.key(&[repo]);
        prefix.push(0);
        let mut out = BTreeSet::new();
        for (_, v) in self.scan(CF_MANIFESTS, &prefix, None, usize::MAX)? {
            let m: crate::records::ManifestRecord = decode(CF_MANIFESTS, &v)?;
            out.extend(m.blobs.into_iter().map(|b| b.digest));
        }
        for (_, entry) in self.bin(repo)? {
            if let Some(m) = entry.manifest {
                out.extend(m.blobs.into_iter().map(|b| b.digest));
            }
        }
        Ok(out)
    }

    /// The links of `repo`: (digest, link), in digest order.
    pub fn links(&self, repo: &str) -> Result<Vec<(String, LinkRecord)>, StoreError> {
        let mut prefix = self.key(&[repo]);
        prefix.push(0);
        self.scan(CF_REPO_BLOBS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((last_part(&k), decode_link(&v)?)))
            .collect()
    }
}

fn sweep_key(region: &str, digest: &str) -> Vec<u8> {
    let mut k = region.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(digest.as_bytes());
    k
}

fn unique(digests: &[String]) -> BTreeSet<&str> {
    digests.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{BlobRef, Command, Envelope, PutManifest};
    use crate::DEFAULT_REGISTRY;

    const GRACE: u64 = 1_000;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn run(s: &MetaStore, cmd: Command, at: u64) -> Response {
        s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, at), &[])
            .unwrap()
    }

    fn link(s: &MetaStore, repo: &str, digest: &str, region: &str, at: u64) {
        run(
            s,
            Command::LinkBlobs {
                repo: repo.into(),
                region: region.into(),
                blobs: vec![BlobRef {
                    digest: digest.into(),
                    size: 10,
                }],
                now_ms: at,
            },
            at,
        );
    }

    fn put(s: &MetaStore, repo: &str, manifest: char, blobs: &[&str], at: u64) -> Response {
        run(
            s,
            Command::PutManifest(Box::new(PutManifest {
                repo: repo.into(),
                digest: d(manifest),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                raw: vec![b'{', b'}'],
                tag: Some("v1".into()),
                blobs: blobs
                    .iter()
                    .map(|b| BlobRef {
                        digest: b.to_string(),
                        size: 10,
                    })
                    .collect(),
                children: vec![],
                subject: None,
                artifact_type: None,
                annotations_json: None,
                now_ms: at,
                new_links: vec![],
                region: "r1".into(),
                replica_regions: vec![],
            })),
            at,
        )
    }

    fn gc(s: &MetaStore, repo: &str, digests: &[String], sweep: bool, at: u64) -> Response {
        let cmd = if sweep {
            GcCommand::Sweep {
                repo: repo.into(),
                digests: digests.to_vec(),
                hold_ms: 100,
                now_ms: at,
            }
        } else {
            GcCommand::Mark {
                repo: repo.into(),
                digests: digests.to_vec(),
                grace_ms: GRACE,
                now_ms: at,
            }
        };
        run(s, Command::Gc(cmd), at)
    }

    #[test]
    fn an_unreferenced_idle_link_is_marked_then_swept_and_its_blob_freed() {
        let (_t, s) = store();
        let (used, unused) = (d('a'), d('b'));
        link(&s, "app", &used, "r1", 10);
        link(&s, "app", &unused, "r1", 10);
        s.apply(
            &Envelope::new(
                DEFAULT_REGISTRY,
                Command::BlobsReplicated {
                    region: "r2".into(),
                    blobs: vec![BlobRef {
                        digest: unused.clone(),
                        size: 10,
                    }],
                },
                11,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(put(&s, "app", 'm', &[&used], 20), Response::Ok);
        let both = vec![used.clone(), unused.clone()];
        // Within the grace nothing is marked; after it, only the unused.
        assert_eq!(gc(&s, "app", &both, false, 500), Response::Changed(0));
        assert_eq!(gc(&s, "app", &both, false, 2_000), Response::Changed(1));
        // A sweep before the hold removes nothing; after it, the blob goes.
        assert!(matches!(
            gc(&s, "app", &both, true, 2_050),
            Response::Freed { links: 0, .. }
        ));
        let Response::Freed { links, blobs } = gc(&s, "app", &both, true, 2_200) else {
            panic!("a sweep answers what it freed")
        };
        assert_eq!(links, 1);
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].digest, unused);
        assert_eq!(blobs[0].regions, ["r1", "r2"]);
        assert!(s.blob(&unused).unwrap().is_none());
        assert!(s.blob(&used).unwrap().is_some(), "a referenced blob stays");
        assert_eq!(s.sweeps_for("r1", 10).unwrap()[0].0, unused);
        assert_eq!(s.sweeps_for("r2", 10).unwrap().len(), 1);
        assert_eq!(s.sweeps_pending().unwrap().get("r1"), Some(&1));
        assert_eq!(s.sweeps_pending_in("r1").unwrap(), 1);
        assert_eq!(
            s.sweeps_pending_in("r").unwrap(),
            0,
            "a prefix is not a region"
        );

        // A region reports its deletions; its entries go, its totals grow.
        let swept = GcCommand::Swept {
            region: "r1".into(),
            digests: vec![unused.clone()],
            files: 1,
            bytes: 10,
            now_ms: 3_000,
        };
        assert_eq!(run(&s, Command::Gc(swept), 3_000), Response::Changed(1));
        assert!(s.sweeps_for("r1", 10).unwrap().is_empty());
        assert_eq!(s.region_sweeps("r1").unwrap().bytes_freed, 10);
        assert_eq!(
            s.sweeps_for("r2", 10).unwrap().len(),
            1,
            "r2 has yet to sweep"
        );
    }

    #[test]
    fn a_re_reference_revives_a_marked_link() {
        let (_t, s) = store();
        let b = d('c');
        link(&s, "app", &b, "r1", 10);
        assert_eq!(
            gc(&s, "app", std::slice::from_ref(&b), false, 5_000),
            Response::Changed(1)
        );
        // A manifest naming it while it is marked clears the mark...
        assert_eq!(put(&s, "app", 'n', &[&b], 5_010), Response::Ok);
        run(
            &s,
            Command::DeleteManifest {
                repo: "app".into(),
                digest: d('n'),
            },
            5_020,
        );
        // ...so the sweep keeps it, and the grace starts over.
        assert!(matches!(
            gc(&s, "app", std::slice::from_ref(&b), true, 9_000),
            Response::Freed { links: 0, .. }
        ));
        assert_eq!(
            gc(&s, "app", std::slice::from_ref(&b), false, 5_500),
            Response::Changed(0)
        );
        // An upload (or mount) linking it again does the same.
        assert_eq!(
            gc(&s, "app", std::slice::from_ref(&b), false, 7_000),
            Response::Changed(1)
        );
        link(&s, "app", &b, "r1", 7_010);
        assert!(matches!(
            gc(&s, "app", std::slice::from_ref(&b), true, 9_000),
            Response::Freed { links: 0, .. }
        ));
        assert!(s.blob(&b).unwrap().is_some());
    }

    #[test]
    fn a_blob_linked_elsewhere_is_not_freed_and_a_late_copy_is_swept() {
        let (_t, s) = store();
        let b = d('e');
        link(&s, "one", &b, "r1", 10);
        link(&s, "two", &b, "r1", 10);
        gc(&s, "one", std::slice::from_ref(&b), false, 5_000);
        let Response::Freed { links, blobs } = gc(&s, "one", std::slice::from_ref(&b), true, 6_000)
        else {
            panic!()
        };
        assert_eq!(
            (links, blobs.len()),
            (1, 0),
            "repository two still links it"
        );
        assert_eq!(s.blob(&b).unwrap().unwrap().links, 1);
        // Unlinked everywhere: freed at once.
        run(
            &s,
            Command::UnlinkBlob {
                repo: "two".into(),
                digest: b.clone(),
            },
            6_100,
        );
        assert!(s.blob(&b).unwrap().is_none());
        // A copy that lands after the blob was freed is queued for deletion.
        run(
            &s,
            Command::BlobsReplicated {
                region: "r3".into(),
                blobs: vec![BlobRef {
                    digest: b.clone(),
                    size: 10,
                }],
            },
            6_200,
        );
        assert_eq!(s.sweeps_for("r3", 10).unwrap()[0].0, b);
        assert!(s.blob(&b).unwrap().is_none(), "and it does not come back");
    }

    #[test]
    fn links_written_before_this_release_still_read() {
        assert_eq!(decode_link(&[]).unwrap(), LinkRecord::default());
        let l = LinkRecord {
            linked_ms: 5,
            marked_ms: Some(9),
        };
        assert_eq!(decode_link(&encode(&l)).unwrap(), l);
    }

    #[test]
    fn runs_are_kept_to_a_bound() {
        let (_t, s) = store();
        for i in 0..(RUNS_KEPT + 5) {
            let r = GcRun {
                id: format!("run-{i}"),
                ..GcRun::default()
            };
            run(&s, Command::Gc(GcCommand::RunFinished(r)), 1);
        }
        let runs = s.gc_runs().unwrap();
        assert_eq!(runs.len(), RUNS_KEPT);
        assert_eq!(runs.last().unwrap().id, format!("run-{}", RUNS_KEPT + 4));
    }
}
