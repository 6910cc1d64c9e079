//! Retention and soft delete, decided in the state machine.
//!
//! **Soft delete.** With a registry's soft-delete policy enabled, deleting a
//! manifest or a tag moves it into the recycle bin (`deleted`: `registry \0
//! repo \0 digest` → [`BinEntry`]): the manifest record itself, and the tags
//! that named it. A bin entry's manifest still references its blobs (GC
//! keeps them), and a restore puts manifest and tags back in one command, so
//! a restore acknowledged through one region restores in all. Entries are
//! purged by GC runs once their period (fixed when deleted) has passed.
//!
//! **Retention.** With a registry's retention policy enabled, a GC run
//! proposes `Expire` for manifests untagged for `days`; the command checks
//! again when it applies: still untagged since then, not a child of an index
//! and not a referrer of a manifest in the repository (live or in the bin),
//! not delete-locked. An expired manifest is deleted like any other (into
//! the bin when soft delete is on).

use std::collections::BTreeSet;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::{ApplyError, StoreError};
use crate::keys::*;
use crate::records::ManifestRecord;
use crate::repo::Registry;
use crate::store::{decode, encode};

pub const DAY_MS: u64 = 86_400_000;

/// A policy with a period in days (retention: 0–365, soft delete: 1–90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayPolicy {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "seven")]
    pub days: u32,
    /// When it was last changed (command time): retention counts a
    /// manifest whose untagging time is unknown (written before it was
    /// recorded) from then.
    #[serde(default)]
    pub changed_ms: u64,
}

fn seven() -> u32 {
    7
}

impl Default for DayPolicy {
    /// Disabled, 7 days (the cloud registry's defaults).
    fn default() -> DayPolicy {
        DayPolicy {
            enabled: false,
            days: seven(),
            changed_ms: 0,
        }
    }
}

impl DayPolicy {
    pub fn period_ms(&self) -> u64 {
        u64::from(self.days).saturating_mul(DAY_MS)
    }
}

/// A keep policy for the tags of repositories matching `pattern` ("*",
/// "team/*" or one repository): a tag goes when every condition given says
/// so — it is not among the `keep_last` most recently pushed, and it was
/// neither pushed nor pulled for `untouched_days`. Where several rules
/// match a repository, a tag any of them keeps stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepRule {
    pub pattern: String,
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub untouched_days: Option<u32>,
}

/// A registry's data-lifecycle policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policies {
    #[serde(default)]
    pub retention: DayPolicy,
    #[serde(default)]
    pub soft_delete: DayPolicy,
    /// Keep policies by repository pattern (applied while retention is
    /// enabled), one per pattern.
    #[serde(default)]
    pub keep: Vec<KeepRule>,
}

impl KeepRule {
    /// Whether this rule lets a tag go: `rank` among its repository's tags
    /// by push time (0: the newest), last pushed and pulled at the times
    /// given. A rule with no condition keeps everything.
    pub fn lets_go(
        &self,
        rank: usize,
        updated_ms: u64,
        pulled_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        if self.keep_last.is_none() && self.untouched_days.is_none() {
            return false;
        }
        let beyond = self.keep_last.is_none_or(|n| rank >= n as usize);
        let touched = updated_ms.max(pulled_ms.unwrap_or(0));
        let stale = self
            .untouched_days
            .is_none_or(|d| touched.saturating_add(u64::from(d) * DAY_MS) <= now_ms);
        beyond && stale
    }

    /// The latest pull time that still lets a tag go, if the rule looks at
    /// pulls.
    pub fn pulled_before(&self, now_ms: u64) -> Option<u64> {
        self.untouched_days
            .map(|d| now_ms.saturating_sub(u64::from(d) * DAY_MS))
    }
}

/// A tag a keep policy lets go, as the planner saw it: the command deletes
/// it only if it still names `digest` and was not pushed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagExpiry {
    pub tag: String,
    pub digest: String,
    pub updated_ms: u64,
}

/// Pulls of a tag seen by one node, reported in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    pub repo: String,
    pub tag: String,
    pub at_ms: u64,
}

/// Which policy a change addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    Retention,
    SoftDelete,
}

/// A tag in the bin: which, and when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedTag {
    pub tag: String,
    pub deleted_ms: u64,
}

/// What the bin holds of one manifest: the manifest, if it was deleted
/// (a deleted tag of a manifest still live has none), and deleted tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinEntry {
    #[serde(default)]
    pub manifest: Option<ManifestRecord>,
    #[serde(default)]
    pub tags: Vec<DeletedTag>,
    pub deleted_ms: u64,
    /// Purged by the first GC run after this (command time).
    pub purge_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleCommand {
    /// Retention: delete the manifests of `repo` among `digests` that are
    /// untagged since `untagged_before_ms` or earlier (checked at apply).
    Expire {
        repo: String,
        digests: Vec<String>,
        untagged_before_ms: u64,
        now_ms: u64,
    },
    /// Remove the bin entries of `repo` among `digests` whose period has
    /// passed by `now_ms`.
    Purge {
        repo: String,
        digests: Vec<String>,
        now_ms: u64,
    },
    /// Keep policies: delete these tags of `repo`, each only if it is
    /// unchanged since planned and (with `pulled_before_ms`) not pulled
    /// after that time.
    ExpireTags {
        repo: String,
        tags: Vec<TagExpiry>,
        #[serde(default)]
        pulled_before_ms: Option<u64>,
    },
    /// Last-pull times a node gathered (one command per node and flush,
    /// never one per pull); a time only ever moves forward.
    RecordPulls { pulls: Vec<Pull> },
    /// Put a manifest (by digest) or a tag back from the bin, in every
    /// region at once.
    Restore {
        repo: String,
        /// A digest, or a tag name.
        reference: String,
        now_ms: u64,
    },
}

impl Registry<'_> {
    /// The registry's policies (defaults if it has none).
    pub fn policies(&self) -> Result<Policies, StoreError> {
        Ok(self
            .store
            .registry_record(self.name())?
            .map(|r| r.policies)
            .unwrap_or_default())
    }

    fn bin_key(&self, repo: &str, digest: &str) -> Vec<u8> {
        self.key(&[repo, digest])
    }

    pub fn bin_entry(&self, repo: &str, digest: &str) -> Result<Option<BinEntry>, StoreError> {
        self.get(CF_DELETED, &self.bin_key(repo, digest))
    }

    /// The bin entries of `repo`, by digest.
    pub fn bin(&self, repo: &str) -> Result<Vec<(String, BinEntry)>, StoreError> {
        let mut prefix = self.key(&[repo]);
        prefix.push(0);
        self.scan(CF_DELETED, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((last_part(&k), decode(CF_DELETED, &v)?)))
            .collect()
    }

    /// Repositories with something in the bin, after `last`, at most `n`
    /// (one seek per repository, not a walk of every entry).
    pub fn repositories_with_deleted(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.distinct_repositories(CF_DELETED, last, n)
    }

    /// Soft delete is on: keep `digest`'s manifest (if given) and `tags` in
    /// the bin, merged with what it already holds of that digest.
    pub(crate) fn put_in_bin(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        manifest: Option<ManifestRecord>,
        tags: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let policy = self.policies()?.soft_delete;
        let key = self.bin_key(repo, digest);
        let mut entry = self.get::<BinEntry>(CF_DELETED, &key)?.unwrap_or(BinEntry {
            manifest: None,
            tags: Vec::new(),
            deleted_ms: now_ms,
            purge_ms: 0,
        });
        if manifest.is_some() {
            entry.manifest = manifest;
        }
        for t in tags {
            entry.tags.retain(|d| d.tag != *t);
            entry.tags.push(DeletedTag {
                tag: t.clone(),
                deleted_ms: now_ms,
            });
        }
        entry.deleted_ms = now_ms;
        entry.purge_ms = entry
            .purge_ms
            .max(now_ms.saturating_add(policy.period_ms()));
        batch.put_cf(self.cf(CF_DELETED), key, encode(&entry));
        Ok(())
    }

    /// Every digest of `repo` that a manifest (live or in the bin) names
    /// as a child: retention keeps these.
    fn needed_by_others(&self, repo: &str) -> Result<BTreeSet<String>, StoreError> {
        let mut prefix = self.key(&[repo]);
        prefix.push(0);
        let mut out = BTreeSet::new();
        let mut add = |m: &ManifestRecord| {
            out.extend(m.children.iter().cloned());
        };
        for (_, v) in self.scan(CF_MANIFESTS, &prefix, None, usize::MAX)? {
            add(&decode::<ManifestRecord>(CF_MANIFESTS, &v)?);
        }
        for (_, entry) in self.bin(repo)? {
            if let Some(m) = &entry.manifest {
                add(m);
            }
        }
        Ok(out)
    }

    /// Whether retention may take manifest `digest` (`m`) of `repo` now:
    /// untagged since `untagged_before_ms` or earlier, no index's child,
    /// no referrer of a subject still there, not delete-locked.
    pub fn expirable(
        &self,
        repo: &str,
        digest: &str,
        m: &ManifestRecord,
        untagged_before_ms: u64,
        needed: &BTreeSet<String>,
        policy: &DayPolicy,
    ) -> Result<bool, StoreError> {
        let since = m
            .untagged_ms
            .unwrap_or_else(|| m.created_ms.max(policy.changed_ms));
        if let Some(subject) = &m.subject {
            if self.manifest(repo, subject)?.is_some() || self.bin_entry(repo, subject)?.is_some() {
                return Ok(false);
            }
        }
        Ok(since <= untagged_before_ms
            && !needed.contains(digest)
            && self.tags_of(repo, digest)?.is_empty()
            && m.attributes.write_enabled
            && m.attributes.delete_enabled)
    }

    /// Manifests of `repo` retention would take now (at most `limit`).
    pub fn expired_manifests(
        &self,
        repo: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let policy = self.policies()?.retention;
        if !policy.enabled {
            return Ok(Vec::new());
        }
        let repo_locks = self.repository_attributes(repo)?;
        if !repo_locks.write_enabled || !repo_locks.delete_enabled {
            return Ok(Vec::new());
        }
        let cutoff = now_ms.saturating_sub(policy.period_ms());
        let needed = self.needed_by_others(repo)?;
        let mut out = Vec::new();
        for s in self.manifests(repo)? {
            if !s.tags.is_empty() {
                continue;
            }
            if let Some(m) = self.manifest(repo, &s.digest)? {
                if self.expirable(repo, &s.digest, &m, cutoff, &needed, &policy)? {
                    out.push(s.digest);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Tags of `repo` that the keep `rules` (those matching it) let go now:
    /// every rule lets each go. With the latest pull time that lets them go.
    pub fn expired_tags(
        &self,
        repo: &str,
        rules: &[&KeepRule],
        now_ms: u64,
    ) -> Result<(Vec<TagExpiry>, Option<u64>), StoreError> {
        let repo_locks = self.repository_attributes(repo)?;
        if rules.is_empty() || !repo_locks.write_enabled || !repo_locks.delete_enabled {
            return Ok((Vec::new(), None));
        }
        let mut tags = self.tags(repo, None, usize::MAX)?;
        tags.sort_by(|a, b| b.1.updated_ms.cmp(&a.1.updated_ms).then(a.0.cmp(&b.0)));
        let out = tags
            .into_iter()
            .enumerate()
            .filter(|(rank, (_, t))| {
                // A locked tag keeps its rank: the newest N count it.
                t.attributes.write_enabled
                    && t.attributes.delete_enabled
                    && rules
                        .iter()
                        .all(|r| r.lets_go(*rank, t.updated_ms, t.pulled_ms, now_ms))
            })
            .map(|(_, (tag, t))| TagExpiry {
                tag,
                digest: t.digest,
                updated_ms: t.updated_ms,
            })
            .collect();
        let pulled_before = rules.iter().filter_map(|r| r.pulled_before(now_ms)).min();
        Ok((out, pulled_before))
    }

    /// Bin entries of `repo` whose period has passed by `now_ms`.
    pub fn purgeable(&self, repo: &str, now_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .bin(repo)?
            .into_iter()
            .filter(|(_, e)| e.purge_ms <= now_ms)
            .map(|(d, _)| d)
            .collect())
    }

    pub(crate) fn apply_lifecycle(
        &self,
        batch: &mut WriteBatch,
        cmd: &LifecycleCommand,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        match cmd {
            LifecycleCommand::Expire {
                repo,
                digests,
                untagged_before_ms,
                now_ms,
            } => {
                let policy = self.policies()?.retention;
                let needed = self.needed_by_others(repo)?;
                let mut removed = 0;
                for d in digests.iter().collect::<BTreeSet<_>>() {
                    let Some(m) = self.manifest(repo, d)? else {
                        continue;
                    };
                    if self.expirable(repo, d, &m, *untagged_before_ms, &needed, &policy)? {
                        // The same delete as a client's, locks and bin included;
                        // a refusal (a repository lock) skips it.
                        if let Response::Removed(n) =
                            self.delete_manifest(batch, repo, d, *now_ms)?
                        {
                            removed += n;
                        }
                    }
                }
                Ok(Response::Removed(removed))
            }
            LifecycleCommand::Purge {
                repo,
                digests,
                now_ms,
            } => {
                let mut purged = 0;
                for d in digests.iter().collect::<BTreeSet<_>>() {
                    let key = self.bin_key(repo, d);
                    if let Some(e) = self.get::<BinEntry>(CF_DELETED, &key)? {
                        if e.purge_ms <= *now_ms {
                            batch.delete_cf(self.cf(CF_DELETED), &key);
                            purged += 1;
                        }
                    }
                }
                Ok(Response::Removed(purged))
            }
            LifecycleCommand::ExpireTags {
                repo,
                tags,
                pulled_before_ms,
            } => {
                let mut removed = 0;
                let mut seen = BTreeSet::new();
                for t in tags {
                    if !seen.insert(t.tag.as_str()) {
                        continue;
                    }
                    let Some(now) = self.tag(repo, &t.tag)? else {
                        continue;
                    };
                    let unchanged = now.digest == t.digest && now.updated_ms == t.updated_ms;
                    let unpulled =
                        pulled_before_ms.is_none_or(|before| now.pulled_ms.unwrap_or(0) <= before);
                    if unchanged && unpulled {
                        // A client's delete, locks and bin included (the
                        // command's time is the envelope's).
                        if let Response::Removed(n) = self.delete_tag(batch, repo, &t.tag, at_ms)? {
                            removed += n;
                        }
                    }
                }
                Ok(Response::Removed(removed))
            }
            LifecycleCommand::RecordPulls { pulls } => {
                let mut latest: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
                for p in pulls {
                    let at = latest.entry((p.repo.as_str(), p.tag.as_str())).or_default();
                    *at = (*at).max(p.at_ms);
                }
                let mut changed = 0;
                for ((repo, tag), at) in latest {
                    let key = self.key(&[repo, tag]);
                    if let Some(mut t) = self.get::<crate::records::TagRecord>(CF_TAGS, &key)? {
                        if t.pulled_ms.is_none_or(|p| p < at) {
                            t.pulled_ms = Some(at);
                            batch.put_cf(self.cf(CF_TAGS), key, encode(&t));
                            changed += 1;
                        }
                    }
                }
                Ok(Response::Changed(changed))
            }
            LifecycleCommand::Restore {
                repo,
                reference,
                now_ms,
            } => self.restore(batch, repo, reference, *now_ms),
        }
    }

    /// Restore `reference` of `repo`: a digest brings back its manifest
    /// and every deleted tag of it that names nothing else now; a tag
    /// brings back that tag (and its manifest, if deleted), the most
    /// recently deleted one of that name.
    fn restore(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        reference: &str,
        now_ms: u64,
    ) -> Result<Response, StoreError> {
        let by_digest = reference.contains(':');
        let found = if by_digest {
            self.bin_entry(repo, reference)?
                .map(|e| (reference.to_string(), e))
        } else {
            self.bin(repo)?
                .into_iter()
                .filter_map(|(d, e)| {
                    let at = e.tags.iter().find(|t| t.tag == reference)?.deleted_ms;
                    Some((at, d, e))
                })
                .max_by_key(|(at, d, _)| (*at, d.clone()))
                .map(|(_, d, e)| (d, e))
        };
        let Some((digest, mut entry)) = found else {
            return Ok(Response::Refused(ApplyError::ManifestUnknown));
        };
        // The deleted tags to put back: those asked for that name nothing now.
        let mut back = Vec::new();
        let mut kept = Vec::new();
        for t in std::mem::take(&mut entry.tags) {
            if (by_digest || t.tag == reference) && self.tag(repo, &t.tag)?.is_none() {
                back.push(t);
            } else {
                kept.push(t);
            }
        }
        let untagged =
            (back.is_empty() && self.tags_of(repo, &digest)?.is_empty()).then_some(now_ms);
        let mut restored = 0;
        match (entry.manifest.take(), self.manifest(repo, &digest)?) {
            (Some(mut m), None) => {
                for c in &m.children {
                    if *c != digest && self.manifest(repo, c)?.is_none() {
                        return Ok(Response::Refused(ApplyError::ManifestChildUnknown(
                            c.clone(),
                        )));
                    }
                }
                for b in &m.blobs {
                    if !self.exists(CF_REPO_BLOBS, &self.key(&[repo, &b.digest]))? {
                        return Ok(Response::Refused(ApplyError::ManifestBlobUnknown(
                            b.digest.clone(),
                        )));
                    }
                }
                m.untagged_ms = untagged;
                self.write_manifest(batch, repo, &digest, &m);
                restored += 1;
            }
            // Pushed again since it was deleted: only its tags come back.
            (_, Some(mut live)) if !back.is_empty() && live.untagged_ms.is_some() => {
                live.untagged_ms = None;
                self.write_manifest(batch, repo, &digest, &live);
            }
            (_, Some(_)) => {}
            (None, None) => {
                if !back.is_empty() {
                    // Its manifest was purged or never binned: a tag cannot
                    // come back without it.
                    return Ok(Response::Refused(ApplyError::ManifestUnknown));
                }
            }
        }
        for t in &back {
            self.point_tag(batch, repo, &t.tag, &digest, now_ms)?;
            restored += 1;
        }
        let key = self.bin_key(repo, &digest);
        entry.tags = kept;
        if entry.tags.is_empty() {
            batch.delete_cf(self.cf(CF_DELETED), key);
        } else {
            batch.put_cf(self.cf(CF_DELETED), key, encode(&entry));
        }
        self.touch_repo(batch, repo, now_ms)?;
        Ok(Response::Changed(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{BlobRef, Command, Envelope, PutManifest};
    use crate::locks::{AttributeChange, LockTarget};
    use crate::tenancy::RegistryCommand;
    use crate::{MetaStore, DEFAULT_REGISTRY};

    const NOW: u64 = 1_000 * DAY_MS;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn apply(s: &MetaStore, cmd: Command, at_ms: u64) -> Response {
        s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, at_ms), &[])
            .unwrap()
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn policy(kind: PolicyKind, days: u32) -> Command {
        Command::Registry(RegistryCommand::SetPolicy {
            name: DEFAULT_REGISTRY.into(),
            policy: kind,
            enabled: Some(true),
            days: Some(days),
        })
    }

    /// Push manifest `m` (layer `b`, linked by the push) with `tag`,
    /// children and subject.
    fn push(
        s: &MetaStore,
        m: &str,
        tag: Option<&str>,
        children: &[&str],
        subject: Option<&str>,
        at: u64,
    ) {
        let cmd = Command::PutManifest(Box::new(PutManifest {
            repo: "app".into(),
            digest: m.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: format!("raw-{m}").into_bytes(),
            tag: tag.map(Into::into),
            blobs: vec![BlobRef {
                digest: d('b'),
                size: 3,
            }],
            children: children.iter().map(|c| c.to_string()).collect(),
            subject: subject.map(Into::into),
            artifact_type: None,
            annotations_json: None,
            now_ms: at,
            new_links: vec![BlobRef {
                digest: d('b'),
                size: 3,
            }],
            region: "r1".into(),
            replica_regions: vec![],
        }));
        assert_eq!(apply(s, cmd, at), Response::Ok);
    }

    fn expire(s: &MetaStore, at: u64) -> Response {
        let r = s.registry(DEFAULT_REGISTRY);
        let digests = r.expired_manifests("app", at, 100).unwrap();
        let days = r.policies().unwrap().retention.period_ms();
        apply(
            s,
            Command::Lifecycle(LifecycleCommand::Expire {
                repo: "app".into(),
                digests,
                untagged_before_ms: at - days,
                now_ms: at,
            }),
            at,
        )
    }

    #[test]
    fn retention_takes_what_lost_its_last_tag_that_long_ago_and_nothing_needed() {
        let (_d, s) = store();
        let r = s.registry(DEFAULT_REGISTRY);
        apply(&s, policy(PolicyKind::Retention, 2), NOW);
        push(&s, &d('1'), Some("v1"), &[], None, NOW);
        push(&s, &d('1'), Some("old"), &[], None, NOW);
        push(&s, &d('c'), None, &[], None, NOW); // an index's child
        push(&s, &d('i'), Some("multi"), &[&d('c')], None, NOW);
        push(&s, &d('s'), None, &[], Some(&d('i')), NOW); // a signature
        push(&s, &d('k'), None, &[], None, NOW); // delete-locked
        let no_delete = AttributeChange {
            delete_enabled: Some(false),
            ..Default::default()
        };
        apply(
            &s,
            Command::UpdateAttributes {
                repo: "app".into(),
                target: LockTarget::Manifest(d('k')),
                change: no_delete,
            },
            NOW,
        );
        // v1 moves away a day later: d('1') keeps "old" and stays tagged.
        push(&s, &d('2'), Some("v1"), &[], None, NOW + DAY_MS);
        assert!(r
            .manifest("app", &d('1'))
            .unwrap()
            .unwrap()
            .untagged_ms
            .is_none());
        // "old" goes on day 2: d('1') is untagged from then.
        apply(
            &s,
            Command::DeleteTag {
                repo: "app".into(),
                tag: "old".into(),
            },
            NOW + 2 * DAY_MS,
        );
        assert_eq!(
            r.manifest("app", &d('1')).unwrap().unwrap().untagged_ms,
            Some(NOW + 2 * DAY_MS)
        );
        assert_eq!(
            expire(&s, NOW + 3 * DAY_MS),
            Response::Removed(0),
            "too recent"
        );
        assert_eq!(expire(&s, NOW + 4 * DAY_MS), Response::Removed(1));
        assert!(r.manifest("app", &d('1')).unwrap().is_none());
        for kept in ['2', 'c', 'i', 's', 'k'] {
            assert!(
                r.manifest("app", &d(kept)).unwrap().is_some(),
                "{kept} stays"
            );
        }
        // The check is made again when applied: a tag pushed after the
        // plan saves the manifest.
        push(&s, &d('3'), None, &[], None, NOW);
        let plan = r.expired_manifests("app", NOW + 4 * DAY_MS, 10).unwrap();
        assert_eq!(plan, [d('3')]);
        push(&s, &d('3'), Some("saved"), &[], None, NOW + 4 * DAY_MS);
        let late = Command::Lifecycle(LifecycleCommand::Expire {
            repo: "app".into(),
            digests: plan,
            untagged_before_ms: NOW + 2 * DAY_MS,
            now_ms: NOW + 4 * DAY_MS,
        });
        assert_eq!(apply(&s, late, NOW + 4 * DAY_MS), Response::Removed(0));
        assert!(r.manifest("app", &d('3')).unwrap().is_some());
    }

    #[test]
    fn soft_delete_keeps_manifests_and_tags_in_the_bin_until_restored_or_purged() {
        let (_d, s) = store();
        let r = s.registry(DEFAULT_REGISTRY);
        apply(&s, policy(PolicyKind::SoftDelete, 3), NOW);
        push(&s, &d('1'), Some("v1"), &[], None, NOW);
        push(&s, &d('1'), Some("stable"), &[], None, NOW);
        let del = Command::DeleteManifest {
            repo: "app".into(),
            digest: d('1'),
        };
        assert_eq!(apply(&s, del, NOW + 1), Response::Removed(3));
        assert!(r.manifest("app", &d('1')).unwrap().is_none());
        let entry = r.bin_entry("app", &d('1')).unwrap().unwrap();
        let mut tags: Vec<_> = entry.tags.iter().map(|t| t.tag.as_str()).collect();
        tags.sort();
        assert_eq!(tags, ["stable", "v1"]);
        assert_eq!(entry.purge_ms, NOW + 1 + 3 * DAY_MS);
        assert!(
            r.referenced_blobs("app").unwrap().contains(&d('b')),
            "GC keeps what the bin may restore"
        );
        // Restore by tag: the manifest and that tag; the other tag waits.
        let restore = |reference: &str, at| {
            apply(
                &s,
                Command::Lifecycle(LifecycleCommand::Restore {
                    repo: "app".into(),
                    reference: reference.into(),
                    now_ms: at,
                }),
                at,
            )
        };
        assert_eq!(restore("v1", NOW + 2), Response::Changed(2));
        assert_eq!(r.tag("app", "v1").unwrap().unwrap().digest, d('1'));
        assert!(r.tag("app", "stable").unwrap().is_none());
        assert_eq!(restore(&d('1'), NOW + 3), Response::Changed(1));
        assert!(r.tag("app", "stable").unwrap().is_some());
        assert!(r.bin_entry("app", &d('1')).unwrap().is_none());
        assert_eq!(
            restore("nothing", NOW + 4),
            Response::Refused(ApplyError::ManifestUnknown)
        );

        // A deleted repository: all of it in the bin, its links kept.
        assert!(matches!(
            apply(
                &s,
                Command::DeleteRepository { repo: "app".into() },
                NOW + 5
            ),
            Response::Removed(_)
        ));
        assert!(r.repository("app").unwrap().is_none());
        assert_eq!(r.repositories_with_deleted(None, 10).unwrap(), ["app"]);
        assert_eq!(r.linked_repositories(None, 10).unwrap(), ["app"]);
        // Purged only once the period has passed.
        let purge = |at| {
            let digests = r.purgeable("app", at).unwrap();
            apply(
                &s,
                Command::Lifecycle(LifecycleCommand::Purge {
                    repo: "app".into(),
                    digests,
                    now_ms: at,
                }),
                at,
            )
        };
        assert_eq!(purge(NOW + 5 + DAY_MS), Response::Removed(0));
        assert_eq!(purge(NOW + 5 + 3 * DAY_MS), Response::Removed(1));
        assert!(r.repositories_with_deleted(None, 10).unwrap().is_empty());
        assert!(
            !r.referenced_blobs("app").unwrap().contains(&d('b')),
            "purged: the links are garbage for GC now"
        );
    }

    #[test]
    fn keep_policies_let_go_only_what_every_rule_lets_go_and_recheck_when_applied() {
        let both = KeepRule {
            pattern: "*".into(),
            keep_last: Some(2),
            untouched_days: Some(10),
        };
        let old = NOW - 11 * DAY_MS;
        assert!(both.lets_go(2, old, None, NOW));
        assert!(!both.lets_go(1, old, None, NOW), "among the newest two");
        assert!(
            !both.lets_go(2, old, Some(NOW - DAY_MS), NOW),
            "pulled lately"
        );
        assert!(!both.lets_go(2, NOW - DAY_MS, None, NOW), "pushed lately");
        let nothing = KeepRule {
            pattern: "*".into(),
            keep_last: None,
            untouched_days: None,
        };
        assert!(!nothing.lets_go(99, 0, None, NOW));

        let (_d, s) = store();
        let r = s.registry(DEFAULT_REGISTRY);
        for (i, t) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
            push(&s, &d('1'), Some(t), &[], None, NOW + i as u64);
        }
        let newest_two = KeepRule {
            pattern: "*".into(),
            keep_last: Some(2),
            untouched_days: None,
        };
        let (tags, before) = r.expired_tags("app", &[&newest_two], NOW + 10).unwrap();
        let names: Vec<_> = tags.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(names, ["t2", "t1"]);
        assert_eq!(before, None);
        // Pulls move a tag's time forward only.
        let pulls = |at| {
            Command::Lifecycle(LifecycleCommand::RecordPulls {
                pulls: vec![Pull {
                    repo: "app".into(),
                    tag: "t1".into(),
                    at_ms: at,
                }],
            })
        };
        assert_eq!(apply(&s, pulls(NOW + 50), NOW), Response::Changed(1));
        assert_eq!(apply(&s, pulls(NOW + 20), NOW), Response::Changed(0));
        assert_eq!(
            r.tag("app", "t1").unwrap().unwrap().pulled_ms,
            Some(NOW + 50)
        );
        // t2 re-pushed after the plan, t1 pulled after the cutoff: both stay.
        push(&s, &d('2'), Some("t2"), &[], None, NOW + 30);
        let cmd = Command::Lifecycle(LifecycleCommand::ExpireTags {
            repo: "app".into(),
            tags,
            pulled_before_ms: Some(NOW + 40),
        });
        assert_eq!(apply(&s, cmd, NOW + 60), Response::Removed(0));
        assert!(r.tag("app", "t1").unwrap().is_some() && r.tag("app", "t2").unwrap().is_some());
    }
}
