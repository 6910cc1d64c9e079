//! What each registry stores and does, kept by the state machine so that
//! quotas are checked in apply (every replica reaches the same verdict)
//! and usage is metered from the replicated state alone.
//!
//! - **Storage**: per registry, its deduplicated bytes (each blob it links
//!   once, however many of its repositories link it) and per repository
//!   the logical bytes (each blob it links). Apply notes every change of a
//!   link into a per-command scratch (`UsageDelta`), and the counters are
//!   written once at the end of the command, so a command touching many
//!   links (a repository delete, a GC sweep) reads each counter once.
//! - **GiB-days**: a registry's bytes integrated over command time (the
//!   envelope's clock), accrued into one bucket per UTC day whenever its
//!   storage changes; a query adds the part since the last change up to
//!   its own clock. Integer byte-milliseconds, so every replica has the
//!   same figures.
//! - **Operations**: requests served, by kind and day, counted by each
//!   node in memory and written in batches (`RecordOperations`): a node
//!   that dies loses at most one flush interval of counts.
//!
//! Keys (`usage`): `registry \0 s` totals, `registry \0 r \0 repo`
//! repository totals, `registry \0 d \0 day` GiB-day buckets and
//! `registry \0 o \0 day` operation counts (`day`: days since the epoch,
//! ten digits, so they sort). `\0layout` marks a store whose counters are
//! kept: a store written before them (or a snapshot from such a node) is
//! counted once from its links when opened or installed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::StoreError;
use crate::keys::*;
use crate::lifecycle::DAY_MS;
use crate::records::BlobRecord;
use crate::store::{decode, encode, MetaStore};

const LAYOUT_KEY: &[u8] = b"\0layout";
const LAYOUT_VERSION: u32 = 1;

/// A registry's storage and where its metering stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStorage {
    /// Deduplicated: each linked blob once.
    pub bytes: u64,
    pub blobs: u64,
    /// Logical: the sum over repositories of what each links.
    pub logical_bytes: u64,
    /// Command time up to which GiB-days are accrued (0: not started; a
    /// registry's metering starts at its creation, or for one created
    /// before metering existed, at its first storage change).
    pub metered_ms: u64,
}

/// What one repository links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStorage {
    pub bytes: u64,
    pub blobs: u64,
}

/// One day's accrued storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DayMeter {
    byte_seconds: u64,
    /// Byte-milliseconds not yet a whole byte-second (< 1000).
    rem_byte_ms: u64,
}

/// Kinds of operation, as rate limits classify requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    Read,
    Write,
    Delete,
    Referrers,
    Token,
}

impl OperationKind {
    pub const ALL: [OperationKind; 5] = [
        OperationKind::Read,
        OperationKind::Write,
        OperationKind::Delete,
        OperationKind::Referrers,
        OperationKind::Token,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Read => "read",
            OperationKind::Write => "write",
            OperationKind::Delete => "delete",
            OperationKind::Referrers => "referrers",
            OperationKind::Token => "token",
        }
    }
}

/// Requests of one kind a node served for a registry on a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCount {
    pub registry: String,
    /// Days since the epoch (UTC).
    pub day: u64,
    pub kind: OperationKind,
    pub count: u64,
}

/// One day's operations of a registry, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayOperations {
    #[serde(default)]
    pub counts: BTreeMap<OperationKind, u64>,
}

/// Usage commands (cluster-wide: they name their registries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageCommand {
    /// Add counts of operations one node served; counts for registries
    /// that do not exist (any more) are dropped.
    RecordOperations { counts: Vec<OperationCount> },
}

/// Storage changes noted while one command applies.
#[derive(Debug, Default)]
pub(crate) struct UsageDelta {
    /// registry -> (bytes, blobs, logical bytes).
    registries: BTreeMap<String, [i64; 3]>,
    /// (registry, repository) -> (bytes, blobs).
    repos: BTreeMap<(String, String), [i64; 2]>,
    /// Registries deleted by the command: nothing of theirs is written.
    gone: BTreeSet<String>,
}

/// The scratch of the command being applied (apply runs one command at a
/// time; the lock only makes the store shareable).
#[derive(Debug, Default)]
pub(crate) struct UsageScratch(Mutex<UsageDelta>);

impl UsageScratch {
    fn with<R>(&self, f: impl FnOnce(&mut UsageDelta) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

fn add(v: u64, d: i64) -> u64 {
    (v as i64).saturating_add(d).max(0) as u64
}

fn day_key(registry: &str, kind: u8, day: u64) -> Vec<u8> {
    let mut k = registry_prefix(registry);
    k.push(kind);
    k.push(0);
    k.extend_from_slice(format!("{day:010}").as_bytes());
    k
}

fn totals_key(registry: &str) -> Vec<u8> {
    let mut k = registry_prefix(registry);
    k.push(b's');
    k
}

fn repo_key(registry: &str, repo: &str) -> Vec<u8> {
    let mut k = registry_prefix(registry);
    k.extend_from_slice(b"r\0");
    k.extend_from_slice(repo.as_bytes());
    k
}

/// Byte-milliseconds of `bytes` held from `from_ms` to `to_ms`, split by
/// UTC day: (day, byte-ms).
fn split_by_day(bytes: u64, from_ms: u64, to_ms: u64) -> Vec<(u64, u128)> {
    let mut out = Vec::new();
    let mut t = from_ms;
    while t < to_ms {
        let day = t / DAY_MS;
        let end = ((day + 1) * DAY_MS).min(to_ms);
        out.push((day, u128::from(bytes) * u128::from(end - t)));
        t = end;
    }
    out
}

impl MetaStore {
    pub(crate) fn note_registry_storage(&self, registry: &str, bytes: i64, blobs: i64) {
        self.usage_scratch().with(|d| {
            let e = d.registries.entry(registry.to_string()).or_default();
            e[0] += bytes;
            e[1] += blobs;
        })
    }

    /// `repo` of `registry` links (`blobs` > 0) or no longer links a blob.
    pub(crate) fn note_repo_storage(&self, registry: &str, repo: &str, bytes: i64, blobs: i64) {
        self.usage_scratch().with(|d| {
            d.registries.entry(registry.to_string()).or_default()[2] += bytes;
            let e = d
                .repos
                .entry((registry.to_string(), repo.to_string()))
                .or_default();
            e[0] += bytes;
            e[1] += blobs;
        })
    }

    /// Start metering `registry` (created now).
    pub(crate) fn note_registry_created(&self, registry: &str) {
        self.note_registry_storage(registry, 0, 0)
    }

    pub(crate) fn note_registry_gone(&self, registry: &str) {
        self.usage_scratch().with(|d| {
            d.gone.insert(registry.to_string());
        })
    }

    pub(crate) fn discard_usage(&self) {
        self.usage_scratch().with(|d| *d = UsageDelta::default())
    }

    /// Write what the command changed, accruing GiB-days up to `at_ms`.
    pub(crate) fn flush_usage(&self, batch: &mut WriteBatch, at_ms: u64) -> Result<(), StoreError> {
        let delta = self.usage_scratch().with(std::mem::take);
        for (registry, [bytes, blobs, logical]) in &delta.registries {
            if delta.gone.contains(registry) {
                continue;
            }
            let mut s = self.storage_usage(registry)?;
            if s.metered_ms == 0 {
                s.metered_ms = at_ms;
            } else if at_ms > s.metered_ms {
                self.accrue(batch, registry, s.bytes, s.metered_ms, at_ms)?;
                s.metered_ms = at_ms;
            }
            s.bytes = add(s.bytes, *bytes);
            s.blobs = add(s.blobs, *blobs);
            s.logical_bytes = add(s.logical_bytes, *logical);
            batch.put_cf(self.cf(CF_USAGE), totals_key(registry), encode(&s));
        }
        for ((registry, repo), [bytes, blobs]) in &delta.repos {
            if delta.gone.contains(registry) {
                continue;
            }
            let key = repo_key(registry, repo);
            let mut r: RepoStorage = self.get(CF_USAGE, &key)?.unwrap_or_default();
            r.bytes = add(r.bytes, *bytes);
            r.blobs = add(r.blobs, *blobs);
            if r.blobs == 0 {
                batch.delete_cf(self.cf(CF_USAGE), &key);
            } else {
                batch.put_cf(self.cf(CF_USAGE), &key, encode(&r));
            }
        }
        Ok(())
    }

    fn accrue(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        bytes: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<(), StoreError> {
        if bytes == 0 {
            return Ok(());
        }
        for (day, byte_ms) in split_by_day(bytes, from_ms, to_ms) {
            let key = day_key(registry, b'd', day);
            let mut m: DayMeter = self.get(CF_USAGE, &key)?.unwrap_or_default();
            let total = u128::from(m.rem_byte_ms) + byte_ms;
            let secs = u64::try_from(total / 1000).unwrap_or(u64::MAX);
            m.byte_seconds = m.byte_seconds.saturating_add(secs);
            m.rem_byte_ms = (total % 1000) as u64;
            batch.put_cf(self.cf(CF_USAGE), key, encode(&m));
        }
        Ok(())
    }

    pub(crate) fn apply_usage(
        &self,
        batch: &mut WriteBatch,
        cmd: &UsageCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            UsageCommand::RecordOperations { counts } => {
                let mut days: BTreeMap<(String, u64), DayOperations> = BTreeMap::new();
                let mut known: BTreeMap<String, bool> = BTreeMap::new();
                for c in counts {
                    let registry = c.registry.to_ascii_lowercase();
                    if !*known.entry(registry.clone()).or_insert(
                        registry == crate::DEFAULT_REGISTRY
                            || self.exists(CF_REGISTRIES, registry.as_bytes())?,
                    ) {
                        continue;
                    }
                    let key = (registry, c.day);
                    if !days.contains_key(&key) {
                        let stored = self
                            .get(CF_USAGE, &day_key(&key.0, b'o', key.1))?
                            .unwrap_or_default();
                        days.insert(key.clone(), stored);
                    }
                    let day = days.get_mut(&key).expect("inserted above");
                    let n = day.counts.entry(c.kind).or_default();
                    *n = n.saturating_add(c.count);
                }
                let changed = days.len() as u64;
                for ((registry, day), ops) in days {
                    batch.put_cf(
                        self.cf(CF_USAGE),
                        day_key(&registry, b'o', day),
                        encode(&ops),
                    );
                }
                Ok(Response::Changed(changed))
            }
        }
    }

    // ---- queries ----------------------------------------------------------

    pub fn storage_usage(&self, registry: &str) -> Result<RegistryStorage, StoreError> {
        Ok(self
            .get(CF_USAGE, &totals_key(registry))?
            .unwrap_or_default())
    }

    /// Repositories and what each links, by name after `after`, at most
    /// `limit`.
    pub fn repository_storage(
        &self,
        registry: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RepoStorage)>, StoreError> {
        let prefix = repo_key(registry, "");
        let after = after.map(|a| repo_key(registry, a));
        self.scan(CF_USAGE, &prefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| {
                let repo = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((repo, decode(CF_USAGE, &v)?))
            })
            .collect()
    }

    /// Bytes of blobs `repo` links that no other repository of the
    /// registry does (what deleting it alone would give back). One read
    /// per blob the repository links.
    pub fn repository_unique_bytes(&self, registry: &str, repo: &str) -> Result<u64, StoreError> {
        let mut prefix = registry_prefix(registry);
        prefix.extend_from_slice(repo.as_bytes());
        prefix.push(0);
        let mut bytes = 0;
        for (k, _) in self.scan(CF_REPO_BLOBS, &prefix, None, usize::MAX)? {
            let digest = last_part(&k);
            let links: u64 = self
                .get(CF_BLOB_LINKS, format!("{digest}\0{registry}").as_bytes())?
                .unwrap_or(0);
            if links == 1 {
                if let Some(b) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
                    bytes += b.size;
                }
            }
        }
        Ok(bytes)
    }

    /// Byte-seconds stored per UTC day from `from_day` to `to_day`
    /// (inclusive), with what accrues after the last change up to
    /// `now_ms` (the caller's clock).
    pub fn metered_days(
        &self,
        registry: &str,
        from_day: u64,
        to_day: u64,
        now_ms: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut days: BTreeMap<u64, u128> = BTreeMap::new();
        for (day, m) in self.day_buckets::<DayMeter>(registry, b'd', from_day, to_day)? {
            days.insert(
                day,
                u128::from(m.byte_seconds) * 1000 + u128::from(m.rem_byte_ms),
            );
        }
        let s = self.storage_usage(registry)?;
        if s.bytes > 0 && s.metered_ms > 0 && now_ms > s.metered_ms {
            for (day, byte_ms) in split_by_day(s.bytes, s.metered_ms, now_ms) {
                if (from_day..=to_day).contains(&day) {
                    *days.entry(day).or_default() += byte_ms;
                }
            }
        }
        Ok(days
            .into_iter()
            .map(|(d, ms)| (d, u64::try_from(ms / 1000).unwrap_or(u64::MAX)))
            .collect())
    }

    /// Operations per UTC day from `from_day` to `to_day` (inclusive).
    pub fn operations(
        &self,
        registry: &str,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<(u64, DayOperations)>, StoreError> {
        self.day_buckets(registry, b'o', from_day, to_day)
    }

    /// The `kind` buckets of `registry` from `from_day` to `to_day`
    /// (inclusive), in day order.
    fn day_buckets<T: serde::de::DeserializeOwned>(
        &self,
        registry: &str,
        kind: u8,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let start = day_key(registry, kind, from_day);
        let prefix = &start[..start.len() - 10];
        let mut out = Vec::new();
        for item in self.db().iterator_cf(
            self.cf(CF_USAGE),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let Ok(day) = String::from_utf8_lossy(&k[prefix.len()..]).parse::<u64>() else {
                continue;
            };
            if day > to_day {
                break;
            }
            out.push((day, decode(CF_USAGE, &v)?));
        }
        Ok(out)
    }

    /// Bytes of `blobs` (unique digests) that `registry` does not link
    /// yet: what linking them adds to its storage.
    pub(crate) fn bytes_new_to(
        &self,
        registry: &str,
        blobs: &[crate::command::BlobRef],
    ) -> Result<u64, StoreError> {
        let mut seen = BTreeSet::new();
        let mut bytes = 0u64;
        for b in blobs {
            if !seen.insert(b.digest.as_str()) {
                continue;
            }
            let key = format!("{}\0{registry}", b.digest);
            if !self.exists(CF_BLOB_LINKS, key.as_bytes())? {
                bytes = bytes.saturating_add(b.size);
            }
        }
        Ok(bytes)
    }

    // ---- counting a store written before the counters ----------------------

    /// Count every registry's storage from its links, once, when the store
    /// (or an installed snapshot) predates the counters. A function of the
    /// state alone, so every node counts the same.
    pub(crate) fn count_usage_if_needed(&self) -> Result<bool, StoreError> {
        if self.get::<u32>(CF_USAGE, LAYOUT_KEY)?.is_some() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut registries: BTreeMap<String, RegistryStorage> = BTreeMap::new();
        let mut repos: BTreeMap<(String, String), RepoStorage> = BTreeMap::new();
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut size_of = |digest: &str| -> Result<u64, StoreError> {
            if let Some(s) = sizes.get(digest) {
                return Ok(*s);
            }
            let s = self
                .get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?
                .map_or(0, |b| b.size);
            sizes.insert(digest.to_string(), s);
            Ok(s)
        };
        for item in self
            .db()
            .iterator_cf(self.cf(CF_REPO_BLOBS), IteratorMode::Start)
        {
            let (k, _) = item?;
            let mut parts = k.splitn(3, |&b| b == 0);
            let (Some(registry), Some(repo), Some(digest)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (registry, repo, digest) = (
                String::from_utf8_lossy(registry).into_owned(),
                String::from_utf8_lossy(repo).into_owned(),
                String::from_utf8_lossy(digest).into_owned(),
            );
            let size = size_of(&digest)?;
            registries
                .entry(registry.clone())
                .or_default()
                .logical_bytes += size;
            let r = repos.entry((registry, repo)).or_default();
            r.bytes += size;
            r.blobs += 1;
        }
        for item in self
            .db()
            .iterator_cf(self.cf(CF_BLOB_LINKS), IteratorMode::Start)
        {
            let (k, _) = item?;
            let registry = last_part(&k);
            let digest = String::from_utf8_lossy(&k[..k.len() - registry.len() - 1]).into_owned();
            let size = size_of(&digest)?;
            let s = registries.entry(registry).or_default();
            s.bytes += size;
            s.blobs += 1;
        }
        for (registry, s) in &registries {
            batch.put_cf(self.cf(CF_USAGE), totals_key(registry), encode(s));
        }
        for ((registry, repo), r) in &repos {
            batch.put_cf(self.cf(CF_USAGE), repo_key(registry, repo), encode(r));
        }
        batch.put_cf(self.cf(CF_USAGE), LAYOUT_KEY, encode(&LAYOUT_VERSION));
        self.db().write(batch)?;
        Ok(!registries.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_split_at_midnight_utc() {
        let d = 20_000 * DAY_MS;
        assert_eq!(
            split_by_day(10, d - 1000, d + 500),
            vec![(19_999, 10_000), (20_000, 5_000)]
        );
        assert!(split_by_day(10, d, d).is_empty());
    }
}

#[cfg(test)]
mod accounting_tests {
    use super::*;
    use crate::command::{BlobRef, Command, Envelope, PutManifest};
    use crate::error::ApplyError;
    use crate::tenancy::RegistryCommand;

    const MIB: u64 = 1 << 20;

    fn open() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn blob(name: &str, size: u64) -> BlobRef {
        BlobRef {
            digest: format!("sha256:{name}"),
            size,
        }
    }

    fn link(repo: &str, blobs: &[BlobRef]) -> Command {
        Command::LinkBlobs {
            repo: repo.into(),
            region: "r1".into(),
            blobs: blobs.to_vec(),
            now_ms: 1,
        }
    }

    /// A push of a manifest in `repo` naming `layers`, uploaded with it.
    fn push(repo: &str, tag: &str, layers: &[BlobRef]) -> Command {
        Command::PutManifest(Box::new(PutManifest {
            repo: repo.into(),
            digest: format!("sha256:m-{repo}-{tag}"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: b"{}".to_vec(),
            tag: Some(tag.into()),
            blobs: layers.to_vec(),
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: None,
            now_ms: 1,
            new_links: layers.to_vec(),
            region: "r1".into(),
            replica_regions: vec![],
        }))
    }

    fn gated(cmd: Command, limit: Option<u64>) -> Command {
        Command::Gated {
            tiers: Box::new(crate::tiers::uniform_table(limit)),
            cmd: Box::new(cmd),
        }
    }

    fn at(s: &MetaStore, cmd: Command, at_ms: u64) -> Response {
        s.apply(&Envelope::new("default", cmd, at_ms), &[]).unwrap()
    }

    #[test]
    fn a_shared_layer_counts_once_for_the_registry_and_once_per_repository() {
        let (_d, s) = open();
        at(
            &s,
            link("a", &[blob("shared", 10 * MIB), blob("a1", MIB)]),
            1,
        );
        at(&s, link("b", &[blob("shared", 10 * MIB)]), 2);
        let u = s.storage_usage("default").unwrap();
        assert_eq!((u.bytes, u.blobs, u.logical_bytes), (11 * MIB, 2, 21 * MIB));
        let repos = s.repository_storage("default", None, 10).unwrap();
        assert_eq!(
            repos,
            vec![
                (
                    "a".into(),
                    RepoStorage {
                        bytes: 11 * MIB,
                        blobs: 2
                    }
                ),
                (
                    "b".into(),
                    RepoStorage {
                        bytes: 10 * MIB,
                        blobs: 1
                    }
                ),
            ]
        );
        // What deleting one repository alone would give back.
        assert_eq!(s.repository_unique_bytes("default", "a").unwrap(), MIB);
        assert_eq!(s.repository_unique_bytes("default", "b").unwrap(), 0);
        // Unlinking from one repository keeps the blob stored for the other.
        at(
            &s,
            Command::UnlinkBlob {
                repo: "a".into(),
                digest: "sha256:shared".into(),
            },
            3,
        );
        let u = s.storage_usage("default").unwrap();
        assert_eq!((u.bytes, u.logical_bytes), (11 * MIB, 11 * MIB));
        // Deleting the repositories gives everything back.
        for repo in ["a", "b"] {
            let r = at(&s, Command::DeleteRepository { repo: repo.into() }, 4);
            assert!(!matches!(r, Response::Refused(_)), "{r:?}");
        }
        let u = s.storage_usage("default").unwrap();
        assert_eq!((u.bytes, u.blobs, u.logical_bytes), (0, 0, 0));
        assert!(s
            .repository_storage("default", None, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_push_past_the_limit_is_refused_whole_and_one_adding_nothing_passes() {
        let (_d, s) = open();
        let limit = Some(20 * MIB);
        let first = [blob("base", 8 * MIB), blob("app1", 4 * MIB)];
        assert_eq!(
            at(&s, gated(push("app", "v1", &first), limit), 1),
            Response::Ok
        );
        // 12 MiB stored; 9 more would make 21.
        let second = [blob("base", 8 * MIB), blob("app2", 9 * MIB)];
        let Response::Refused(ApplyError::QuotaExceeded(why)) =
            at(&s, gated(push("app", "v2", &second), limit), 2)
        else {
            panic!("push over quota not refused")
        };
        assert!(
            why.contains("stores 12.0 MiB of its 20.0 MiB limit and this push adds 9.0 MiB"),
            "{why}"
        );
        // Nothing of it is visible: no tag, no link, no new bytes.
        let reg = s.registry("default");
        assert!(reg.tag("app", "v2").unwrap().is_none());
        assert!(reg.linked_blob("app", "sha256:app2").unwrap().is_none());
        assert_eq!(s.storage_usage("default").unwrap().bytes, 12 * MIB);
        // Layers it stores already: a new tag of them goes through, even
        // in another repository, and so does a blob upload of them.
        assert_eq!(
            at(&s, gated(push("other", "v1", &first), limit), 3),
            Response::Ok
        );
        assert!(!matches!(
            at(&s, gated(link("third", &first), limit), 3),
            Response::Refused(_)
        ));
        // A lone upload past the limit is refused like a push.
        assert!(matches!(
            at(&s, gated(link("app", &[blob("big", 9 * MIB)]), limit), 3),
            Response::Refused(ApplyError::QuotaExceeded(_))
        ));
        // Space given back (the repositories deleted) makes room again.
        for repo in ["app", "other", "third"] {
            at(&s, Command::DeleteRepository { repo: repo.into() }, 4);
        }
        assert_eq!(
            at(&s, gated(push("app", "v2", &second), limit), 5),
            Response::Ok
        );
    }

    #[test]
    fn a_registrys_own_limit_overrides_its_tiers() {
        let (_d, s) = open();
        let set = |bytes| {
            Command::Registry(RegistryCommand::SetStorageLimit {
                name: "default".into(),
                bytes,
            })
        };
        at(&s, set(Some(MIB)), 1);
        assert!(matches!(
            at(&s, gated(push("app", "v1", &[blob("l", 2 * MIB)]), None), 2),
            Response::Refused(ApplyError::QuotaExceeded(_))
        ));
        at(&s, set(None), 3);
        assert_eq!(
            at(&s, gated(push("app", "v1", &[blob("l", 2 * MIB)]), None), 4),
            Response::Ok
        );
    }

    #[test]
    fn gib_days_integrate_storage_over_command_time_by_utc_day() {
        let (_d, s) = open();
        let gib = 1u64 << 30;
        let day0 = 20_000 * DAY_MS;
        // Registry metering starts with the first change: 1 GiB from
        // noon of day 0 ...
        at(&s, link("a", &[blob("g", gib)]), day0 + DAY_MS / 2);
        // ... 2 GiB from midnight ...
        at(&s, link("a", &[blob("h", gib)]), day0 + DAY_MS);
        // ... and nothing from noon of day 1.
        at(
            &s,
            Command::DeleteRepository { repo: "a".into() },
            day0 + DAY_MS * 3 / 2,
        );
        let days = s
            .metered_days("default", 0, u64::MAX, day0 + 5 * DAY_MS)
            .unwrap();
        let gib_day = gib * 86_400;
        assert_eq!(days, vec![(20_000, gib_day / 2), (20_001, gib_day)]);
        // A registry holding bytes accrues up to the query's clock.
        at(&s, link("b", &[blob("k", gib)]), day0 + 2 * DAY_MS);
        let days = s
            .metered_days("default", 20_002, 20_002, day0 + 2 * DAY_MS + DAY_MS / 4)
            .unwrap();
        assert_eq!(days, vec![(20_002, gib_day / 4)]);
        // A change stamped by a clock behind the last one accrues nothing
        // into the past: the days before stay as they were.
        at(&s, link("b", &[blob("m", gib)]), day0);
        let before = s
            .metered_days("default", 0, 20_001, day0 + 5 * DAY_MS)
            .unwrap();
        assert_eq!(before, vec![(20_000, gib_day / 2), (20_001, gib_day)]);
    }

    #[test]
    fn operations_add_up_by_day_and_kind_and_unknown_registries_are_dropped() {
        let (_d, s) = open();
        let count = |registry: &str, day, kind, count| OperationCount {
            registry: registry.into(),
            day,
            kind,
            count,
        };
        let cmd = |counts| Command::Usage(UsageCommand::RecordOperations { counts });
        at(
            &s,
            cmd(vec![
                count("default", 7, OperationKind::Read, 5),
                count("default", 7, OperationKind::Read, 2),
                count("default", 8, OperationKind::Write, 1),
                count("nosuchreg", 7, OperationKind::Read, 9),
            ]),
            1,
        );
        at(
            &s,
            cmd(vec![count("default", 7, OperationKind::Token, 3)]),
            2,
        );
        let ops = s.operations("default", 7, 8).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].1.counts[&OperationKind::Read], 7);
        assert_eq!(ops[0].1.counts[&OperationKind::Token], 3);
        assert_eq!(ops[1].1.counts[&OperationKind::Write], 1);
        assert!(s.operations("nosuchreg", 0, 100).unwrap().is_empty());
    }

    /// A store written before the counters existed (none in it) is counted
    /// from its links when opened, and agrees with counting as it goes.
    #[test]
    fn a_store_from_before_the_counters_is_counted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let counted = {
            let s = MetaStore::open(dir.path()).unwrap();
            at(&s, link("a", &[blob("shared", 10), blob("a1", 1)]), 1);
            at(&s, link("b", &[blob("shared", 10)]), 2);
            let counted = (
                s.storage_usage("default").unwrap(),
                s.repository_storage("default", None, 10).unwrap(),
            );
            // What the previous release left: no usage column family
            // content at all.
            let keys: Vec<_> = s
                .db()
                .iterator_cf(s.cf(CF_USAGE), IteratorMode::Start)
                .map(|i| i.unwrap().0)
                .collect();
            for k in keys {
                s.db().delete_cf(s.cf(CF_USAGE), k).unwrap();
            }
            counted
        };
        let s = MetaStore::open(dir.path()).unwrap();
        let mut storage = s.storage_usage("default").unwrap();
        assert_eq!(storage.metered_ms, 0, "metering starts at the next change");
        storage.metered_ms = counted.0.metered_ms;
        assert_eq!(storage, counted.0);
        assert_eq!(
            s.repository_storage("default", None, 10).unwrap(),
            counted.1
        );
    }
}
