//! One registry's repositories: manifests, tags, referrers and blob links,
//! every key prefixed by the registry's name. The cluster-wide blob index
//! (which region holds which blob) is not a registry's: regions' stores are
//! content-addressed and shared by every registry, so a layer pushed to two
//! registries is stored and moved once.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;

use crate::command::{BlobRef, Command, PutManifest, Response};
use crate::error::{ApplyError, StoreError};
use crate::holders::Pending;
use crate::keys::*;
use crate::locks::{AttributeChange, Attributes, LockTarget};
use crate::records::*;
use crate::store::{add_region, encode, KeyValue, ManifestSummary, MetaStore};

/// The state of one registry, read and changed through its key prefix
/// (`registry \0`, which starts every key of it).
pub struct Registry<'a> {
    pub(crate) store: &'a MetaStore,
    name: String,
}

impl MetaStore {
    /// The registry named `name` (lower case; see `wharf_oci::RegistryName`).
    /// Made for each read a request does: it holds the name only, and
    /// each key is built in one allocation (a pull builds several).
    pub fn registry(&self, name: &str) -> Registry<'_> {
        Registry {
            store: self,
            name: name.to_string(),
        }
    }
}

impl<'a> Registry<'a> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole store (the cluster-wide blob index, applying commands).
    pub fn store(&self) -> &'a MetaStore {
        self.store
    }

    /// Changes whenever identities may have changed.
    pub fn identity_epoch(&self) -> u64 {
        self.store.identity_epoch()
    }

    /// `registry \0`: the prefix of every key of this registry.
    fn prefix(&self) -> Vec<u8> {
        registry_prefix(&self.name)
    }

    /// The registry's prefix followed by `parts` joined with NUL: the
    /// name, then a NUL before each part (the prefix alone when none).
    pub(crate) fn key(&self, parts: &[&str]) -> Vec<u8> {
        let len = self.name.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>().max(1);
        let mut k = Vec::with_capacity(len);
        k.extend_from_slice(self.name.as_bytes());
        if parts.is_empty() {
            k.push(0);
        }
        for part in parts {
            k.push(0);
            k.extend_from_slice(part.as_bytes());
        }
        k
    }

    /// `registry \0 repo \0`: the prefix of every key of one repository.
    fn repo_prefix(&self, repo: &str) -> Vec<u8> {
        let mut k = self.key(&[repo]);
        k.push(0);
        k
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.store.get(cf, key)
    }

    pub(crate) fn exists(&self, cf: &'static str, key: &[u8]) -> Result<bool, StoreError> {
        self.store.exists(cf, key)
    }

    pub(crate) fn scan(
        &self,
        cf: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.store.scan(cf, prefix, after, limit)
    }

    pub(crate) fn cf(&self, name: &'static str) -> &'a rocksdb::ColumnFamily {
        self.store.cf(name)
    }

    // ---- apply ----------------------------------------------------------

    /// Apply a command addressed to this registry into `batch`.
    /// Apply `cmd`; `at_ms` is the proposer's clock from the envelope.
    pub(crate) fn apply(
        &self,
        batch: &mut WriteBatch,
        cmd: &Command,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        match cmd {
            Command::PutManifest(p) => self.put_manifest(batch, p),
            Command::DeleteManifest { repo, digest } => {
                self.delete_manifest(batch, repo, digest, at_ms)
            }
            Command::DeleteTag { repo, tag } => self.delete_tag(batch, repo, tag, at_ms),
            Command::LinkBlobs {
                repo,
                region,
                blobs,
                now_ms,
            } => self.link_blobs(batch, repo, region, blobs, *now_ms),
            Command::BlobsReplicated { region, blobs } => {
                self.store.blobs_replicated(batch, region, blobs)
            }
            Command::UnlinkBlob { repo, digest } => self.unlink_blob(batch, repo, digest, at_ms),
            Command::DeleteRepository { repo } => self.delete_repository(batch, repo, at_ms),
            Command::Identity(c) => self.apply_identity(batch, c),
            Command::ForgetRegion { region } => self.store.forget_region(batch, region),
            Command::Registry(c) => self.store.apply_registry(at_ms, batch, c),
            Command::Gc(c) => self.store.apply_gc(batch, self, c),
            Command::UpdateAttributes {
                repo,
                target,
                change,
            } => self.update_attributes(batch, repo, target, change),
            Command::Lifecycle(c) => self.apply_lifecycle(batch, c, at_ms),
            Command::Scrub(c) => self.store.apply_scrub(batch, c),
            Command::Webhook(c) => self.store.apply_webhook(batch, &self.name, at_ms, c),
            Command::Usage(c) => self.store.apply_usage(batch, c),
            Command::Role(c) => self.store.apply_role(batch, c, at_ms),
            Command::Run(c) => self.apply_run(batch, c, at_ms),
            Command::Task(c) => self.apply_task(batch, c, at_ms),
            Command::Gated { tiers, cmd } => {
                if let Some(refusal) = self.store.tier_refusal(&self.name, tiers, cmd)? {
                    return Ok(Response::Refused(refusal));
                }
                self.apply(batch, cmd, at_ms)
            }
        }
    }

    /// The locks of `repo` (unlocked if it does not exist yet).
    pub fn repository_attributes(&self, repo: &str) -> Result<Attributes, StoreError> {
        Ok(self
            .repository(repo)?
            .map(|r| r.attributes)
            .unwrap_or_default())
    }

    /// Whether `repo` may be read (pulled), as `repository_attributes`
    /// says, without a lookup for the repositories that are not
    /// read-locked (see `read_locks`).
    pub fn repository_reads_enabled(&self, repo: &str) -> Result<bool, StoreError> {
        if !self.store.maybe_read_locked(&self.key(&[repo]))? {
            return Ok(true);
        }
        Ok(self.repository_attributes(repo)?.read_enabled)
    }

    fn update_attributes(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        target: &LockTarget,
        change: &AttributeChange,
    ) -> Result<Response, StoreError> {
        match target {
            LockTarget::Repository => self.change_attributes::<RepoRecord>(
                batch,
                CF_REPOS,
                self.key(&[repo]),
                ApplyError::NameUnknown,
                |r| &mut r.attributes,
                change,
            ),
            LockTarget::Tag(tag) => self.change_attributes::<TagRecord>(
                batch,
                CF_TAGS,
                self.key(&[repo, tag]),
                ApplyError::TagUnknown,
                |t| &mut t.attributes,
                change,
            ),
            LockTarget::Manifest(digest) => self.change_attributes::<ManifestRecord>(
                batch,
                CF_MANIFESTS,
                self.key(&[repo, digest]),
                ApplyError::ManifestUnknown,
                |m| &mut m.attributes,
                change,
            ),
        }
    }

    /// Apply `change` to the attributes of the record at `key` of `cf`
    /// (`unknown` when there is none): how many records changed.
    fn change_attributes<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: Vec<u8>,
        unknown: ApplyError,
        attributes: impl Fn(&mut T) -> &mut Attributes,
        change: &AttributeChange,
    ) -> Result<Response, StoreError> {
        let Some(mut record) = self.get::<T>(cf, &key)? else {
            return Ok(Response::Refused(unknown));
        };
        let a = attributes(&mut record);
        let changed;
        (*a, changed) = a.with(change);
        batch.put_cf(self.cf(cf), key, encode(&record));
        Ok(Response::Changed(u64::from(changed)))
    }

    /// The lock, if any, that refuses deleting the manifest `digest` of
    /// `repo` (`record`): its own or a tag's naming it.
    fn manifest_delete_lock(
        &self,
        repo: &str,
        digest: &str,
        record: &ManifestRecord,
    ) -> Result<Result<(), ApplyError>, StoreError> {
        let own = record
            .attributes
            .check_delete(&format!("manifest {repo}@{digest}"));
        if own.is_err() {
            return Ok(own);
        }
        for tag in self.tags_of(repo, digest)? {
            if let Some(t) = self.tag(repo, &tag)? {
                let lock = t.attributes.check_delete(&format!("tag {repo}:{tag}"));
                if lock.is_err() {
                    return Ok(lock);
                }
            }
        }
        Ok(Ok(()))
    }

    pub(crate) fn touch_repo(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.key(&[repo]);
        let record = match self.get::<RepoRecord>(CF_REPOS, &key)? {
            Some(r) => RepoRecord {
                updated_ms: now_ms.max(r.updated_ms),
                ..r
            },
            None => RepoRecord {
                created_ms: now_ms,
                updated_ms: now_ms,
                attributes: Attributes::default(),
            },
        };
        batch.put_cf(self.cf(CF_REPOS), key, encode(&record));
        Ok(())
    }

    fn put_manifest(
        &self,
        batch: &mut WriteBatch,
        p: &PutManifest,
    ) -> Result<Response, StoreError> {
        if let Err(e) = self
            .repository_attributes(&p.repo)?
            .check_write(&format!("repository {}", p.repo))
        {
            return Ok(Response::Refused(e));
        }
        if let Some(tag) = &p.tag {
            // Pushing the same manifest under a locked tag again changes
            // nothing, so a retried push is not refused.
            if let Some(t) = self.tag(&p.repo, tag)? {
                if t.digest != p.digest {
                    if let Err(e) = t.attributes.check_write(&format!("tag {}:{tag}", p.repo)) {
                        return Ok(Response::Refused(e));
                    }
                }
            }
        }
        if !p.new_links.is_empty() {
            self.link_blobs(batch, &p.repo, &p.region, &p.new_links, p.now_ms)?;
        }
        for b in &p.blobs {
            let linking_now = p.new_links.iter().any(|n| n.digest == b.digest);
            if linking_now {
                continue;
            }
            let link_key = self.key(&[&p.repo, &b.digest]);
            let Some(raw) = self
                .store
                .db()
                .get_pinned_cf(self.cf(CF_REPO_BLOBS), &link_key)?
            else {
                return Ok(Response::Refused(ApplyError::ManifestBlobUnknown(
                    b.digest.clone(),
                )));
            };
            // Named again while marked: the mark is cleared and the grace
            // starts over (a re-reference always wins over a GC run).
            let link = crate::gc::decode_link(&raw)?;
            if link.marked_ms.is_some() {
                let revived = crate::gc::LinkRecord {
                    linked_ms: p.now_ms.max(link.linked_ms),
                    marked_ms: None,
                };
                batch.put_cf(self.cf(CF_REPO_BLOBS), &link_key, encode(&revived));
            }
        }
        for c in &p.children {
            if *c != p.digest && !self.exists(CF_MANIFESTS, &self.key(&[&p.repo, c]))? {
                return Ok(Response::Refused(ApplyError::ManifestChildUnknown(
                    c.clone(),
                )));
            }
        }
        let key = self.key(&[&p.repo, &p.digest]);
        let existing = self.get::<ManifestRecord>(CF_MANIFESTS, &key)?;
        let (created_ms, attributes) = existing
            .as_ref()
            .map_or((p.now_ms, Attributes::default()), |e| {
                (e.created_ms, e.attributes)
            });
        // Tagged now: not untagged. Pushed by digest: untagged from now if
        // new, as it was if not.
        let untagged_ms = match (&p.tag, &existing) {
            (Some(_), _) => None,
            (None, Some(e)) => e.untagged_ms,
            (None, None) => Some(p.now_ms),
        };
        let record = ManifestRecord {
            media_type: p.media_type.clone(),
            raw: p.raw.clone(),
            created_ms,
            blobs: p.blobs.clone(),
            children: p.children.clone(),
            subject: p.subject.clone(),
            artifact_type: p.artifact_type.clone(),
            annotations_json: p.annotations_json.clone(),
            attributes,
            untagged_ms,
        };
        self.write_manifest(batch, &p.repo, &p.digest, &record);
        if let Some(tag) = &p.tag {
            self.point_tag(batch, &p.repo, tag, &p.digest, p.now_ms)?;
            self.base_moved(batch, &p.repo, tag, &p.digest, p.now_ms)?;
        }
        self.touch_repo(batch, &p.repo, p.now_ms)?;
        Ok(Response::Ok)
    }

    /// Store a manifest record and its referrers-index entry.
    pub(crate) fn write_manifest(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        record: &ManifestRecord,
    ) {
        batch.put_cf(
            self.cf(CF_MANIFESTS),
            self.key(&[repo, digest]),
            encode(record),
        );
        if let Some(subject) = &record.subject {
            let referrer = ReferrerRecord {
                media_type: record.media_type.clone(),
                size: record.raw.len() as u64,
                artifact_type: record.artifact_type.clone(),
                annotations_json: record.annotations_json.clone(),
            };
            batch.put_cf(
                self.cf(CF_REFERRERS),
                self.key(&[repo, subject, digest]),
                encode(&referrer),
            );
        }
    }

    /// `tag` of `repo` no longer names `digest`: if no other tag does,
    /// the manifest is untagged from `now_ms` (retention counts from then).
    fn lost_tag(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        tag: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if self.tags_of(repo, digest)?.iter().any(|t| t != tag) {
            return Ok(());
        }
        let key = self.key(&[repo, digest]);
        if let Some(mut m) = self.get::<ManifestRecord>(CF_MANIFESTS, &key)? {
            m.untagged_ms = Some(now_ms);
            batch.put_cf(self.cf(CF_MANIFESTS), key, encode(&m));
        }
        Ok(())
    }

    /// Point `tag` at `digest` (whose own record the caller keeps right).
    pub(crate) fn point_tag(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        tag: &str,
        digest: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tag_key = self.key(&[repo, tag]);
        let mut attributes = Attributes::default();
        let mut pulled_ms = None;
        if let Some(old) = self.get::<TagRecord>(CF_TAGS, &tag_key)? {
            pulled_ms = old.pulled_ms;
            if old.digest != digest {
                batch.delete_cf(self.cf(CF_DIGEST_TAGS), self.key(&[repo, &old.digest, tag]));
                self.lost_tag(batch, repo, &old.digest, tag, now_ms)?;
            }
            attributes = old.attributes;
        }
        let record = TagRecord {
            digest: digest.to_string(),
            updated_ms: now_ms,
            attributes,
            pulled_ms,
        };
        batch.put_cf(self.cf(CF_TAGS), &tag_key, encode(&record));
        batch.put_cf(self.cf(CF_DIGEST_TAGS), self.key(&[repo, digest, tag]), []);
        Ok(())
    }

    /// Delete a manifest with every tag naming it (into the bin, with
    /// soft delete on).
    pub(crate) fn delete_manifest(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        let key = self.key(&[repo, digest]);
        let Some(record) = self.get::<ManifestRecord>(CF_MANIFESTS, &key)? else {
            return Ok(Response::Refused(ApplyError::ManifestUnknown));
        };
        let mut locked = self
            .repository_attributes(repo)?
            .check_delete(&format!("repository {repo}"));
        if locked.is_ok() {
            locked = self.manifest_delete_lock(repo, digest, &record)?;
        }
        if let Err(e) = locked {
            return Ok(Response::Refused(e));
        }
        batch.delete_cf(self.cf(CF_MANIFESTS), &key);
        if let Some(subject) = &record.subject {
            batch.delete_cf(self.cf(CF_REFERRERS), self.key(&[repo, subject, digest]));
        }
        let mut prefix = key.clone();
        prefix.push(0);
        let tags = self.scan(CF_DIGEST_TAGS, &prefix, None, usize::MAX)?;
        for (k, _) in &tags {
            batch.delete_cf(self.cf(CF_DIGEST_TAGS), k);
            batch.delete_cf(self.cf(CF_TAGS), self.key(&[repo, &last_part(k)]));
        }
        if self.policies()?.soft_delete.enabled {
            let names: Vec<String> = tags.iter().map(|(k, _)| last_part(k)).collect();
            self.put_in_bin(batch, repo, digest, Some(record), &names, at_ms)?;
        }
        Ok(Response::Removed(1 + tags.len() as u64))
    }

    pub(crate) fn delete_tag(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        tag: &str,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        let tag_key = self.key(&[repo, tag]);
        let Some(old) = self.get::<TagRecord>(CF_TAGS, &tag_key)? else {
            return Ok(Response::Refused(ApplyError::TagUnknown));
        };
        let locked = self
            .repository_attributes(repo)?
            .check_delete(&format!("repository {repo}"))
            .and_then(|()| old.attributes.check_delete(&format!("tag {repo}:{tag}")));
        if let Err(e) = locked {
            return Ok(Response::Refused(e));
        }
        batch.delete_cf(self.cf(CF_TAGS), &tag_key);
        batch.delete_cf(self.cf(CF_DIGEST_TAGS), self.key(&[repo, &old.digest, tag]));
        self.lost_tag(batch, repo, &old.digest, tag, at_ms)?;
        if self.policies()?.soft_delete.enabled {
            self.put_in_bin(batch, repo, &old.digest, None, &[tag.to_string()], at_ms)?;
        }
        Ok(Response::Removed(1))
    }

    fn link_blobs(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        region: &str,
        blobs: &[BlobRef],
        now_ms: u64,
    ) -> Result<Response, StoreError> {
        let unique: BTreeMap<&str, u64> =
            blobs.iter().map(|b| (b.digest.as_str(), b.size)).collect();
        for (digest, size) in unique {
            let link_key = self.key(&[repo, digest]);
            let newly_linked = !self.exists(CF_REPO_BLOBS, &link_key)?;
            // Linked (again): unmarked, and the grace starts over.
            let touched = crate::gc::LinkRecord {
                linked_ms: now_ms,
                marked_ms: None,
            };
            batch.put_cf(self.cf(CF_REPO_BLOBS), &link_key, encode(&touched));
            let old = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?;
            let mut record = old.clone().unwrap_or(BlobRecord {
                size,
                regions: Vec::new(),
                links: 0,
                registered_ms: now_ms,
            });
            add_region(&mut record, region);
            if newly_linked {
                record.links += 1;
                self.store
                    .add_registry_link(batch, &self.name, digest, record.size, 1)?;
                self.store
                    .note_repo_storage(&self.name, repo, record.size as i64, 1);
            }
            let pending = match newly_linked {
                true => Pending::Links {
                    registry: &self.name,
                    delta: 1,
                },
                false => Pending::Nothing,
            };
            self.store
                .put_blob(batch, digest, old.as_ref(), &record, pending)?;
        }
        self.touch_repo(batch, repo, now_ms)?;
        Ok(Response::Ok)
    }

    fn unlink_blob(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        digest: &str,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        let link_key = self.key(&[repo, digest]);
        if !self.exists(CF_REPO_BLOBS, &link_key)? {
            return Ok(Response::Refused(ApplyError::BlobUnknown));
        }
        if let Err(e) = self
            .repository_attributes(repo)?
            .check_delete(&format!("repository {repo}"))
        {
            return Ok(Response::Refused(e));
        }
        batch.delete_cf(self.cf(CF_REPO_BLOBS), &link_key);
        self.store
            .drop_link(batch, &self.name, Some(repo), digest, 1, at_ms)?;
        Ok(Response::Removed(1))
    }

    fn delete_repository(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        let key = self.key(&[repo]);
        let Some(record) = self.get::<RepoRecord>(CF_REPOS, &key)? else {
            return Ok(Response::Refused(ApplyError::NameUnknown));
        };
        let prefix = self.repo_prefix(repo);
        let mut locked = record
            .attributes
            .check_delete(&format!("repository {repo}"));
        for (k, v) in self.scan(CF_MANIFESTS, &prefix, None, usize::MAX)? {
            if locked.is_err() {
                break;
            }
            let m: ManifestRecord = crate::store::decode(CF_MANIFESTS, &v)?;
            locked = self.manifest_delete_lock(repo, &last_part(&k), &m)?;
        }
        if let Err(e) = locked {
            return Ok(Response::Refused(e));
        }
        // With soft delete, every manifest goes to the bin with its tags,
        // and the blob links stay: the bin's manifests still reference
        // them, and GC takes them once the bin is purged.
        let soft = self.policies()?.soft_delete;
        if soft.enabled {
            for (k, v) in self.scan(CF_MANIFESTS, &prefix, None, usize::MAX)? {
                let digest = last_part(&k);
                let m: ManifestRecord = crate::store::decode(CF_MANIFESTS, &v)?;
                let tags = self.tags_of(repo, &digest)?;
                self.put_in_bin(batch, repo, &digest, Some(m), &tags, at_ms)?;
            }
        }
        let mut removed = 0;
        for cf in REPO_SCOPED_CFS {
            if soft.enabled && cf == CF_REPO_BLOBS {
                continue;
            }
            for (k, _) in self.scan(cf, &prefix, None, usize::MAX)? {
                batch.delete_cf(self.cf(cf), &k);
                match cf {
                    CF_REPO_BLOBS => {
                        let digest = last_part(&k);
                        self.store
                            .drop_link(batch, &self.name, Some(repo), &digest, 1, at_ms)?;
                    }
                    CF_MANIFESTS | CF_TAGS => removed += 1,
                    _ => {}
                }
            }
        }
        batch.delete_cf(self.cf(CF_REPOS), key);
        Ok(Response::Removed(removed))
    }

    // ---- queries --------------------------------------------------------

    pub fn repository(&self, repo: &str) -> Result<Option<RepoRecord>, StoreError> {
        self.get(CF_REPOS, &self.key(&[repo]))
    }

    pub fn manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRecord>, StoreError> {
        self.get(CF_MANIFESTS, &self.key(&[repo, digest]))
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Result<Option<TagRecord>, StoreError> {
        self.get(CF_TAGS, &self.key(&[repo, tag]))
    }

    /// Whether `digest` is linked in `repo`, with its cluster-wide record.
    pub fn linked_blob(&self, repo: &str, digest: &str) -> Result<Option<BlobRecord>, StoreError> {
        if !self.exists(CF_REPO_BLOBS, &self.key(&[repo, digest]))? {
            return Ok(None);
        }
        self.store.blob(digest)
    }

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    pub fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(String, TagRecord)>, StoreError> {
        let prefix = self.repo_prefix(repo);
        let after = last.map(|l| self.key(&[repo, l]));
        self.scan(CF_TAGS, &prefix, after.as_deref(), n)?
            .into_iter()
            .map(|(k, v)| Ok((last_part(&k), crate::store::decode(CF_TAGS, &v)?)))
            .collect()
    }

    /// The tags of `repo` that tags/list shows (neither the tag nor its
    /// manifest has `list_enabled = false`), after `last`, at most `n`.
    pub fn listed_tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = last.map(str::to_string);
        let batch_len = n.clamp(1, 1000);
        while out.len() < n {
            let batch = self.tags(repo, cursor.as_deref(), batch_len)?;
            let exhausted = batch.len() < batch_len;
            for (name, t) in batch {
                cursor = Some(name.clone());
                let listed = t.attributes.list_enabled
                    && self
                        .manifest(repo, &t.digest)?
                        .is_none_or(|m| m.attributes.list_enabled);
                if listed && out.len() < n {
                    out.push(name);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(out)
    }

    /// The lock, if any, that refuses pulling manifest `digest` of `repo`,
    /// reached through `tag` (or by digest).
    pub fn read_lock(
        &self,
        repo: &str,
        tag: Option<&str>,
        manifest: &ManifestRecord,
        digest: &str,
    ) -> Result<Option<ApplyError>, StoreError> {
        let locks = match tag {
            Some(t) => self.tag(repo, t)?.map(|r| r.attributes),
            None => None,
        };
        self.read_lock_with(repo, tag.map(|t| (t, locks.as_ref())), manifest, digest)
    }

    /// `read_lock` with the tag's locks already read (with the tag's
    /// digest, by a pull): the tag is not read twice.
    pub fn read_lock_with(
        &self,
        repo: &str,
        tag: Option<(&str, Option<&crate::locks::Attributes>)>,
        manifest: &ManifestRecord,
        digest: &str,
    ) -> Result<Option<ApplyError>, StoreError> {
        let locked =
            |what: String| Some(ApplyError::Locked(format!("{what} has read-enabled false")));
        if !self.repository_reads_enabled(repo)? {
            return Ok(locked(format!("repository {repo}")));
        }
        if let Some((tag, Some(attributes))) = tag {
            if !attributes.read_enabled {
                return Ok(locked(format!("tag {repo}:{tag}")));
            }
        }
        if !manifest.attributes.read_enabled {
            return Ok(locked(format!("manifest {repo}@{digest}")));
        }
        Ok(None)
    }

    /// Repositories with a key in `cf` (whose keys are `registry \0 repo
    /// \0 ...`), after `last`, at most `n`: one seek per repository.
    pub(crate) fn distinct_repositories(
        &self,
        cf: &'static str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut it = self.store.db().raw_iterator_cf(self.cf(cf));
        // Every key of repository R sorts before `R \x01`.
        let past = |repo: &str| {
            let mut k = self.key(&[repo]);
            k.push(1);
            k
        };
        let prefix = self.prefix();
        match last {
            Some(l) => it.seek(past(l)),
            None => it.seek(&prefix),
        }
        let mut out = Vec::new();
        while out.len() < n && it.valid() {
            let Some(key) = it.key() else { break };
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let repo = String::from_utf8_lossy(&rest[..end]).into_owned();
            it.seek(past(&repo));
            out.push(repo);
        }
        it.status()?;
        Ok(out)
    }

    /// Repositories that link blobs (including deleted ones whose links a
    /// bin still needs), after `last`, at most `n`: what GC walks.
    pub fn linked_repositories(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.distinct_repositories(CF_REPO_BLOBS, last, n)
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn repositories(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(String, RepoRecord)>, StoreError> {
        let after = last.map(|l| self.key(&[l]));
        let prefix = self.prefix();
        self.scan(CF_REPOS, &prefix, after.as_deref(), n)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    crate::store::decode(CF_REPOS, &v)?,
                ))
            })
            .collect()
    }

    /// Manifests whose subject is `subject`, with their digests.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &str,
    ) -> Result<Vec<(String, ReferrerRecord)>, StoreError> {
        let mut prefix = self.key(&[repo, subject]);
        prefix.push(0);
        self.scan(CF_REFERRERS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((last_part(&k), crate::store::decode(CF_REFERRERS, &v)?)))
            .collect()
    }

    pub fn tags_of(&self, repo: &str, digest: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = self.key(&[repo, digest]);
        prefix.push(0);
        Ok(self
            .scan(CF_DIGEST_TAGS, &prefix, None, usize::MAX)?
            .iter()
            .map(|(k, _)| last_part(k))
            .collect())
    }

    /// How many tags `repo` has (keys counted, records not read).
    pub fn tag_count(&self, repo: &str) -> Result<usize, StoreError> {
        self.store.count(CF_TAGS, &self.repo_prefix(repo))
    }

    /// How many manifests `repo` holds (keys counted, records not read).
    pub fn manifest_count(&self, repo: &str) -> Result<usize, StoreError> {
        self.store.count(CF_MANIFESTS, &self.repo_prefix(repo))
    }

    pub fn manifests(&self, repo: &str) -> Result<Vec<ManifestSummary>, StoreError> {
        let prefix = self.repo_prefix(repo);
        let mut out = Vec::new();
        for (k, v) in self.scan(CF_MANIFESTS, &prefix, None, usize::MAX)? {
            let record: ManifestRecord = crate::store::decode(CF_MANIFESTS, &v)?;
            let digest = last_part(&k);
            out.push(ManifestSummary {
                tags: self.tags_of(repo, &digest)?,
                media_type: record.media_type,
                size: record.raw.len() as u64,
                created_ms: record.created_ms,
                artifact_type: record.artifact_type,
                attributes: record.attributes,
                digest,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn keys_are_the_prefix_then_the_parts_joined_by_nul() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::MetaStore::open(dir.path()).unwrap();
        let r = s.registry("team");
        assert_eq!(r.key(&[]), b"team\0");
        assert_eq!(r.key(&["app"]), b"team\0app");
        assert_eq!(r.key(&["app", "v1"]), b"team\0app\0v1");
        assert_eq!(r.key(&["", "x"]), b"team\0\0x");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Envelope;
    use crate::DEFAULT_REGISTRY;

    /// A store whose commands go to the default registry.
    struct S(MetaStore);

    impl S {
        fn apply(&self, cmd: &Command, sys: &[(&str, Vec<u8>)]) -> Result<Response, StoreError> {
            self.0
                .apply(&Envelope::new(DEFAULT_REGISTRY, cmd.clone(), 1), sys)
        }

        fn r(&self) -> Registry<'_> {
            self.0.registry(DEFAULT_REGISTRY)
        }

        fn blob(&self, digest: &str) -> Result<Option<BlobRecord>, StoreError> {
            self.0.blob(digest)
        }

        fn blobs_missing_in(
            &self,
            region: &str,
            n: usize,
        ) -> Result<Vec<(String, BlobRecord)>, StoreError> {
            // Every holder count: the tests' regions are not a cluster's.
            self.0.blobs_missing_in(region, usize::MAX, n)
        }

        fn read_sys(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.read_sys(key)
        }
    }

    fn store() -> (tempfile::TempDir, S) {
        let dir = tempfile::tempdir().unwrap();
        let s = S(MetaStore::open(dir.path()).unwrap());
        (dir, s)
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn link(repo: &str, d: &str) -> Command {
        Command::LinkBlobs {
            repo: repo.into(),
            region: "r1".into(),
            blobs: vec![BlobRef {
                digest: d.into(),
                size: 3,
            }],
            now_ms: 1,
        }
    }

    fn put(
        repo: &str,
        d: &str,
        tag: Option<&str>,
        blobs: &[&str],
        subject: Option<&str>,
    ) -> Command {
        Command::PutManifest(Box::new(PutManifest {
            repo: repo.into(),
            digest: d.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: format!("raw-{d}").into_bytes(),
            tag: tag.map(Into::into),
            blobs: blobs
                .iter()
                .map(|b| BlobRef {
                    digest: b.to_string(),
                    size: 3,
                })
                .collect(),
            children: vec![],
            subject: subject.map(Into::into),
            artifact_type: Some("x".into()),
            annotations_json: None,
            now_ms: 5,
            new_links: vec![],
            region: "r1".into(),
            replica_regions: vec![],
        }))
    }

    #[test]
    fn manifest_needs_its_blobs_linked_in_the_same_repository() {
        let (_d, s) = store();
        let r = s
            .apply(
                &put("a", &digest('m'), Some("v1"), &[&digest('b')], None),
                &[],
            )
            .unwrap();
        assert_eq!(
            r,
            Response::Refused(ApplyError::ManifestBlobUnknown(digest('b')))
        );
        assert!(
            s.r().tag("a", "v1").unwrap().is_none(),
            "a refused command changes nothing"
        );
        s.apply(&link("other", &digest('b')), &[]).unwrap();
        let r = s
            .apply(
                &put("a", &digest('m'), Some("v1"), &[&digest('b')], None),
                &[],
            )
            .unwrap();
        assert!(
            matches!(r, Response::Refused(_)),
            "a link in another repo does not count"
        );
        s.apply(&link("a", &digest('b')), &[]).unwrap();
        let r = s
            .apply(
                &put("a", &digest('m'), Some("v1"), &[&digest('b')], None),
                &[],
            )
            .unwrap();
        assert_eq!(r, Response::Ok);
        assert_eq!(s.r().tag("a", "v1").unwrap().unwrap().digest, digest('m'));
        assert_eq!(s.blob(&digest('b')).unwrap().unwrap().links, 2);
    }

    #[test]
    fn a_manifest_links_the_blobs_uploaded_with_it_in_one_command() {
        let (_d, s) = store();
        let mut cmd = put("a", &digest('m'), Some("v1"), &[&digest('b')], None);
        if let Command::PutManifest(p) = &mut cmd {
            p.new_links = vec![BlobRef {
                digest: digest('b'),
                size: 3,
            }];
        }
        assert_eq!(s.apply(&cmd, &[]).unwrap(), Response::Ok);
        let linked = s.r().linked_blob("a", &digest('b')).unwrap().unwrap();
        assert_eq!(
            (linked.links, linked.regions.clone()),
            (1, vec!["r1".to_string()])
        );
        // Refused for another reason: the new links are not kept either.
        let mut bad = put("z", &digest('n'), None, &[&digest('c')], None);
        if let Command::PutManifest(p) = &mut bad {
            p.new_links = vec![BlobRef {
                digest: digest('c'),
                size: 3,
            }];
            p.children = vec![digest('x')];
        }
        assert!(matches!(s.apply(&bad, &[]).unwrap(), Response::Refused(_)));
        assert!(s.r().linked_blob("z", &digest('c')).unwrap().is_none());
    }

    #[test]
    fn moving_a_tag_updates_reverse_index_and_delete_removes_tags() {
        let (_d, s) = store();
        s.apply(&put("a", &digest('1'), Some("t"), &[], None), &[])
            .unwrap();
        s.apply(&put("a", &digest('2'), Some("t"), &[], None), &[])
            .unwrap();
        assert!(s.r().tags_of("a", &digest('1')).unwrap().is_empty());
        assert_eq!(
            s.r().tags_of("a", &digest('2')).unwrap(),
            vec!["t".to_string()]
        );
        let r = s
            .apply(
                &Command::DeleteManifest {
                    repo: "a".into(),
                    digest: digest('2'),
                },
                &[],
            )
            .unwrap();
        assert_eq!(r, Response::Removed(2));
        assert!(s.r().tag("a", "t").unwrap().is_none());
        assert!(s.r().manifest("a", &digest('1')).unwrap().is_some());
    }

    #[test]
    fn tags_and_catalog_list_in_lexical_order_with_pagination() {
        let (_d, s) = store();
        for t in ["b", "a", "c", "a1"] {
            s.apply(&put("x/y", &digest('1'), Some(t), &[], None), &[])
                .unwrap();
        }
        s.apply(&put("x", &digest('1'), Some("z"), &[], None), &[])
            .unwrap();
        let names: Vec<_> = s
            .r()
            .tags("x/y", None, 10)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(names, ["a", "a1", "b", "c"]);
        let page: Vec<_> = s
            .r()
            .tags("x/y", Some("a1"), 1)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(page, ["b"]);
        let repos: Vec<_> = s
            .r()
            .repositories(None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(repos, ["x", "x/y"]);
        assert!(
            s.r().tags("x", None, 10).unwrap().len() == 1,
            "repo x does not see x/y's tags"
        );
    }

    #[test]
    fn referrers_follow_manifest_lifecycle() {
        let (_d, s) = store();
        s.apply(&put("a", &digest('s'), None, &[], None), &[])
            .unwrap();
        s.apply(&put("a", &digest('r'), None, &[], Some(&digest('s'))), &[])
            .unwrap();
        assert_eq!(s.r().referrers("a", &digest('s')).unwrap().len(), 1);
        s.apply(
            &Command::DeleteManifest {
                repo: "a".into(),
                digest: digest('r'),
            },
            &[],
        )
        .unwrap();
        assert!(s.r().referrers("a", &digest('s')).unwrap().is_empty());
    }

    #[test]
    fn deleting_a_repository_removes_everything_and_unlinks_blobs() {
        let (_d, s) = store();
        s.apply(&link("a/b", &digest('b')), &[]).unwrap();
        s.apply(
            &put("a/b", &digest('m'), Some("v"), &[&digest('b')], None),
            &[],
        )
        .unwrap();
        s.apply(&put("a", &digest('m'), Some("v"), &[], None), &[])
            .unwrap();
        let r = s
            .apply(&Command::DeleteRepository { repo: "a/b".into() }, &[])
            .unwrap();
        assert_eq!(r, Response::Removed(2));
        assert!(s.r().repository("a/b").unwrap().is_none());
        assert!(s.r().tag("a/b", "v").unwrap().is_none());
        assert!(
            s.r().tag("a", "v").unwrap().is_some(),
            "a sibling prefix survives"
        );
        assert!(
            s.blob(&digest('b')).unwrap().is_none(),
            "its last link gone, the blob is freed"
        );
        assert_eq!(s.0.sweeps_for("r1", 10).unwrap()[0].0, digest('b'));
        let again = s
            .apply(&Command::DeleteRepository { repo: "a/b".into() }, &[])
            .unwrap();
        assert_eq!(again, Response::Refused(ApplyError::NameUnknown));
    }

    #[test]
    fn the_missing_list_puts_blobs_with_fewest_holders_first() {
        let (_d, s) = store();
        let linked = |d: &str, region: &str, now_ms: u64| Command::LinkBlobs {
            repo: "a".into(),
            region: region.into(),
            blobs: vec![BlobRef {
                digest: d.into(),
                size: 3,
            }],
            now_ms,
        };
        let held = |d: &str, region: &str| Command::BlobsReplicated {
            region: region.into(),
            blobs: vec![BlobRef {
                digest: d.into(),
                size: 3,
            }],
        };
        // '1' is the oldest and only r1 holds it; '2' is newer and held
        // twice; '3' is the newest and its only holder's disk was lost.
        s.apply(&linked(&digest('1'), "r1", 1), &[]).unwrap();
        s.apply(&linked(&digest('2'), "r1", 2), &[]).unwrap();
        s.apply(&held(&digest('2'), "r2"), &[]).unwrap();
        s.apply(&linked(&digest('3'), "r4", 3), &[]).unwrap();
        s.apply(
            &Command::ForgetRegion {
                region: "r4".into(),
            },
            &[],
        )
        .unwrap();
        let missing: Vec<_> = s
            .blobs_missing_in("r3", 10)
            .unwrap()
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(
            missing,
            vec![digest('1'), digest('2'), digest('3')],
            "one holder before two, and a blob nobody holds last"
        );
    }

    #[test]
    fn replicated_blobs_leave_the_missing_list_of_their_region() {
        let (_d, s) = store();
        s.apply(&link("a", &digest('1')), &[]).unwrap();
        s.apply(
            &Command::LinkBlobs {
                repo: "a".into(),
                region: "r1".into(),
                blobs: vec![BlobRef {
                    digest: digest('2'),
                    size: 3,
                }],
                now_ms: 9,
            },
            &[],
        )
        .unwrap();
        let missing: Vec<_> = s
            .blobs_missing_in("r2", 10)
            .unwrap()
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(missing, vec![digest('2'), digest('1')], "newest first");
        assert!(s.blobs_missing_in("r1", 10).unwrap().is_empty());
        let done = Command::BlobsReplicated {
            region: "r2".into(),
            blobs: vec![
                BlobRef {
                    digest: digest('2'),
                    size: 3,
                },
                BlobRef {
                    digest: digest('9'),
                    size: 1,
                },
            ],
        };
        s.apply(&done, &[]).unwrap();
        assert_eq!(
            s.blob(&digest('2')).unwrap().unwrap().regions,
            vec!["r1", "r2"]
        );
        assert!(
            s.blob(&digest('9')).unwrap().is_none(),
            "unknown blobs are not invented"
        );
        assert_eq!(s.blobs_missing_in("r2", 10).unwrap().len(), 1);
        // r2 leaves (or comes back wiped): everything is missing there again,
        // and r1's copies are untouched.
        s.apply(
            &Command::ForgetRegion {
                region: "r2".into(),
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.blob(&digest('2')).unwrap().unwrap().regions, vec!["r1"]);
        assert_eq!(s.blobs_missing_in("r2", 10).unwrap().len(), 2);
        assert!(s.blobs_missing_in("r1", 10).unwrap().is_empty());
    }

    fn lock(repo: &str, target: LockTarget, change: AttributeChange) -> Command {
        Command::UpdateAttributes {
            repo: repo.into(),
            target,
            change,
        }
    }

    fn refused_by_lock(r: Response) -> String {
        match r {
            Response::Refused(ApplyError::Locked(what)) => what,
            other => panic!("expected a lock refusal, got {other:?}"),
        }
    }

    #[test]
    fn locks_refuse_writes_when_applied_and_only_what_they_name() {
        let (_d, s) = store();
        let (m1, m2) = (digest('1'), digest('2'));
        s.apply(&put("a", &m1, Some("v1"), &[], None), &[]).unwrap();
        s.apply(&put("a", &m1, Some("keep"), &[], None), &[])
            .unwrap();
        let no_write = AttributeChange {
            write_enabled: Some(false),
            ..Default::default()
        };
        // A tag lock: the tag cannot move or go, nor its manifest.
        let r = s
            .apply(&lock("a", LockTarget::Tag("v1".into()), no_write), &[])
            .unwrap();
        assert_eq!(r, Response::Changed(1));
        let moved = s.apply(&put("a", &m2, Some("v1"), &[], None), &[]).unwrap();
        assert_eq!(refused_by_lock(moved), "tag a:v1 has write-enabled false");
        assert_eq!(
            s.apply(&put("a", &m1, Some("v1"), &[], None), &[]).unwrap(),
            Response::Ok,
            "pushing the same manifest again under a locked tag changes nothing"
        );
        let del = Command::DeleteManifest {
            repo: "a".into(),
            digest: m1.clone(),
        };
        refused_by_lock(s.apply(&del, &[]).unwrap());
        refused_by_lock(
            s.apply(&Command::DeleteRepository { repo: "a".into() }, &[])
                .unwrap(),
        );
        let untag = |t: &str| Command::DeleteTag {
            repo: "a".into(),
            tag: t.into(),
        };
        refused_by_lock(s.apply(&untag("v1"), &[]).unwrap());
        assert_eq!(s.apply(&untag("keep"), &[]).unwrap(), Response::Removed(1));
        assert_eq!(s.r().tag("a", "v1").unwrap().unwrap().digest, m1);

        // A delete lock on a tag stays with it when it moves.
        let no_delete = AttributeChange {
            write_enabled: Some(true),
            delete_enabled: Some(false),
            ..Default::default()
        };
        s.apply(&lock("a", LockTarget::Tag("v1".into()), no_delete), &[])
            .unwrap();
        assert_eq!(
            s.apply(&put("a", &m2, Some("v1"), &[], None), &[]).unwrap(),
            Response::Ok
        );
        assert_eq!(
            refused_by_lock(s.apply(&untag("v1"), &[]).unwrap()),
            "tag a:v1 has delete-enabled false"
        );

        // A manifest lock: only deleting the manifest is refused.
        s.apply(&lock("a", LockTarget::Manifest(m1.clone()), no_delete), &[])
            .unwrap();
        assert_eq!(
            s.apply(&put("a", &m1, Some("again"), &[], None), &[])
                .unwrap(),
            Response::Ok
        );
        assert!(
            !s.r()
                .manifest("a", &m1)
                .unwrap()
                .unwrap()
                .attributes
                .delete_enabled,
            "a push of the same manifest keeps its locks"
        );
        s.apply(&untag("again"), &[]).unwrap();
        assert!(refused_by_lock(s.apply(&del, &[]).unwrap()).starts_with("manifest a@"));

        // A repository write lock: every push and delete in it.
        s.apply(&lock("a", LockTarget::Repository, no_write), &[])
            .unwrap();
        let pushed = s.apply(&put("a", &digest('3'), Some("new"), &[], None), &[]);
        assert_eq!(
            refused_by_lock(pushed.unwrap()),
            "repository a has write-enabled false"
        );
        assert!(s.r().manifest("a", &digest('3')).unwrap().is_none());
        s.apply(&put("b", &digest('3'), Some("new"), &[], None), &[])
            .unwrap();
        let unlock = AttributeChange {
            write_enabled: Some(true),
            ..Default::default()
        };
        s.apply(&lock("a", LockTarget::Repository, unlock), &[])
            .unwrap();
        assert_eq!(
            s.apply(&put("a", &digest('3'), Some("new"), &[], None), &[])
                .unwrap(),
            Response::Ok
        );
        let missing = s.apply(&lock("a", LockTarget::Tag("nope".into()), unlock), &[]);
        assert_eq!(missing.unwrap(), Response::Refused(ApplyError::TagUnknown));
    }

    #[test]
    fn list_and_read_locks_are_answered_from_the_records() {
        let (_d, s) = store();
        for (t, d) in [("a", '1'), ("b", '2'), ("c", '1'), ("d", '3')] {
            s.apply(&put("r", &digest(d), Some(t), &[], None), &[])
                .unwrap();
        }
        let hide = AttributeChange {
            list_enabled: Some(false),
            read_enabled: Some(false),
            ..Default::default()
        };
        s.apply(&lock("r", LockTarget::Tag("b".into()), hide), &[])
            .unwrap();
        s.apply(&lock("r", LockTarget::Manifest(digest('1')), hide), &[])
            .unwrap();
        assert_eq!(s.r().listed_tags("r", None, 10).unwrap(), ["d"]);
        assert!(s.r().listed_tags("r", Some("d"), 10).unwrap().is_empty());
        let m2 = s.r().manifest("r", &digest('2')).unwrap().unwrap();
        let by_tag = s.r().read_lock("r", Some("b"), &m2, &digest('2')).unwrap();
        assert_eq!(
            by_tag,
            Some(ApplyError::Locked("tag r:b has read-enabled false".into()))
        );
        assert_eq!(s.r().read_lock("r", None, &m2, &digest('2')).unwrap(), None);
        let m3 = s.r().manifest("r", &digest('3')).unwrap().unwrap();
        assert_eq!(
            s.r().read_lock("r", Some("d"), &m3, &digest('3')).unwrap(),
            None
        );
    }

    #[test]
    fn a_repository_read_lock_binds_the_next_pull_and_survives_a_snapshot() {
        let (_d, s) = store();
        let m = digest('1');
        s.apply(&put("a", &m, Some("v1"), &[], None), &[]).unwrap();
        s.apply(&put("b", &m, Some("v1"), &[], None), &[]).unwrap();
        let record = s.r().manifest("a", &m).unwrap().unwrap();
        let pull = |repo: &str| s.r().read_lock(repo, Some("v1"), &record, &m).unwrap();
        let locked = Some(ApplyError::Locked(
            "repository a has read-enabled false".into(),
        ));
        // The in-memory view of read-locked repositories is built here...
        assert_eq!(pull("a"), None);
        let reads = |on: bool| AttributeChange {
            read_enabled: Some(on),
            ..Default::default()
        };
        s.apply(&lock("a", LockTarget::Repository, reads(false)), &[])
            .unwrap();
        // ...and a lock applied after it binds the very next pull.
        assert_eq!(pull("a"), locked);
        assert_eq!(pull("b"), None);
        assert!(!s.r().repository_reads_enabled("a").unwrap());
        s.apply(&lock("a", LockTarget::Repository, reads(true)), &[])
            .unwrap();
        assert_eq!(pull("a"), None);

        // A node that catches up by a snapshot holding the lock sees it,
        // though it had built its view with the repository unlocked.
        s.apply(&lock("a", LockTarget::Repository, reads(false)), &[])
            .unwrap();
        let mut snapshot = Vec::new();
        s.0.write_snapshot(&mut snapshot, &[]).unwrap();
        let (_d2, lagging) = store();
        lagging
            .apply(&put("a", &m, Some("v1"), &[], None), &[])
            .unwrap();
        let lagging_pull = || lagging.r().read_lock("a", Some("v1"), &record, &m).unwrap();
        assert_eq!(lagging_pull(), None);
        lagging.0.install_snapshot(&mut &snapshot[..]).unwrap();
        assert_eq!(lagging_pull(), locked);

        // A locked repository deleted and pushed again is a new one: its
        // stale place in the view does not refuse it.
        s.apply(&Command::DeleteRepository { repo: "a".into() }, &[])
            .unwrap();
        s.apply(&put("a", &m, Some("v1"), &[], None), &[]).unwrap();
        assert_eq!(pull("a"), None);
    }

    #[test]
    fn sys_records_are_written_with_the_command() {
        let (_d, s) = store();
        s.apply(&link("a", &digest('b')), &[("applied", b"42".to_vec())])
            .unwrap();
        assert_eq!(s.read_sys("applied").unwrap(), Some(b"42".to_vec()));
        let r = s.apply(
            &Command::DeleteTag {
                repo: "a".into(),
                tag: "nope".into(),
            },
            &[("applied", b"43".to_vec())],
        );
        assert_eq!(r.unwrap(), Response::Refused(ApplyError::TagUnknown));
        assert_eq!(
            s.read_sys("applied").unwrap(),
            Some(b"43".to_vec()),
            "refused commands still advance"
        );
    }
}
