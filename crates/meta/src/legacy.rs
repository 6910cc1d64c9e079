//! Reading what release 0.1 wrote, once: its records were bincode
//! (positional, not evolvable) under keys with no registry. Opening such a
//! store rewrites every record in the current format under the default
//! registry's prefix, in one synced write batch together with the format
//! marker, so a crash leaves the store either wholly old (and migrated again
//! at the next start) or wholly new.
//!
//! The batch holds the whole metadata: fine for the stores 0.1 deployments
//! have (thousands of images), not for a million tags; a later format
//! change of that size would migrate column family by column family.

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::identity::*;
use crate::keys::*;
use crate::records::*;
use crate::store::{encode, MetaStore};

/// The sys key naming the store's format; absent in release 0.1 stores.
pub(crate) const SYS_FORMAT: &str = "meta_format";
pub(crate) const FORMAT_CURRENT: u32 = 2;

/// Column families of release 0.1 (all but `sys`, which the consensus
/// layer owns and migrates itself).
const V1_DATA_CFS: [&str; 8] = [
    CF_REPOS,
    CF_MANIFESTS,
    CF_TAGS,
    CF_DIGEST_TAGS,
    CF_REFERRERS,
    CF_BLOBS,
    CF_REPO_BLOBS,
    CF_AUTH,
];

fn corrupt(cf: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf,
        detail: format!("release 0.1 record: {}", detail.to_string()),
    }
}

/// Decode a 0.1 (bincode) value as `T` and encode it in the current format.
fn reencode<T: DeserializeOwned + Serialize>(
    cf: &'static str,
    v: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let record: T = bincode::deserialize(v).map_err(|e| corrupt(cf, e))?;
    Ok(encode(&record))
}

/// Decode a 0.1 value as its frozen layout `T` (bincode is positional: a
/// record that gained fields since cannot read it) and encode it as the
/// current record `R`.
fn upgrade<T: DeserializeOwned, R: Serialize + From<T>>(
    cf: &'static str,
    v: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let record: T = bincode::deserialize(v).map_err(|e| corrupt(cf, e))?;
    Ok(encode(&R::from(record)))
}

/// The 0.1 layouts of records that have gained fields since.
mod v01 {
    use serde::Deserialize;

    use crate::command::BlobRef;
    use crate::locks::Attributes;
    use crate::records::{ManifestRecord, RepoRecord, TagRecord};

    #[derive(Deserialize)]
    pub struct Repo {
        created_ms: u64,
        updated_ms: u64,
    }

    #[derive(Deserialize)]
    pub struct Manifest {
        media_type: String,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        created_ms: u64,
        blobs: Vec<BlobRef>,
        children: Vec<String>,
        subject: Option<String>,
        artifact_type: Option<String>,
        annotations_json: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Tag {
        digest: String,
        updated_ms: u64,
    }

    impl From<Repo> for RepoRecord {
        fn from(r: Repo) -> RepoRecord {
            RepoRecord {
                created_ms: r.created_ms,
                updated_ms: r.updated_ms,
                attributes: Attributes::default(),
            }
        }
    }

    impl From<Manifest> for ManifestRecord {
        fn from(m: Manifest) -> ManifestRecord {
            ManifestRecord {
                media_type: m.media_type,
                raw: m.raw,
                created_ms: m.created_ms,
                blobs: m.blobs,
                children: m.children,
                subject: m.subject,
                artifact_type: m.artifact_type,
                annotations_json: m.annotations_json,
                attributes: Attributes::default(),
                untagged_ms: None,
            }
        }
    }

    impl From<Tag> for TagRecord {
        fn from(t: Tag) -> TagRecord {
            TagRecord {
                digest: t.digest,
                updated_ms: t.updated_ms,
                attributes: Attributes::default(),
                pulled_ms: None,
            }
        }
    }
}

/// The current encoding of one 0.1 record of `cf` under `key`.
fn convert(cf: &'static str, key: &[u8], v: &[u8]) -> Result<Vec<u8>, StoreError> {
    let starts = |kind: &str| key.starts_with(format!("{kind}\0").as_bytes());
    match cf {
        CF_REPOS => upgrade::<v01::Repo, RepoRecord>(cf, v),
        CF_MANIFESTS => upgrade::<v01::Manifest, ManifestRecord>(cf, v),
        CF_TAGS => upgrade::<v01::Tag, TagRecord>(cf, v),
        CF_REFERRERS => reencode::<ReferrerRecord>(cf, v),
        CF_BLOBS => reencode::<BlobRecord>(cf, v),
        // Index entries: the key is the data, the value is empty.
        CF_DIGEST_TAGS | CF_REPO_BLOBS => Ok(v.to_vec()),
        CF_AUTH if starts(AUTH_PRINCIPAL) => reencode::<PrincipalRecord>(cf, v),
        CF_AUTH if starts(AUTH_SCOPE_MAP) => reencode::<ScopeMapRecord>(cf, v),
        CF_AUTH if starts(AUTH_TOKEN) => reencode::<TokenRecord>(cf, v),
        CF_AUTH if starts(AUTH_KEY) => reencode::<SigningKeyRecord>(cf, v),
        CF_AUTH if key == AUTH_ADMIN.as_bytes() => reencode::<AdminRecord>(cf, v),
        CF_AUTH if key == AUTH_ACCESS.as_bytes() => reencode::<AccessSettings>(cf, v),
        _ => Err(corrupt(
            cf,
            format!("unknown key {:?}", String::from_utf8_lossy(key)),
        )),
    }
}

impl MetaStore {
    /// The store's format: `None` for a release 0.1 store not migrated yet.
    pub(crate) fn format(&self) -> Result<Option<u32>, StoreError> {
        match self.read_sys(SYS_FORMAT)? {
            Some(v) => Ok(Some(crate::store::decode(CF_SYS, &v)?)),
            None => Ok(None),
        }
    }

    /// Bring the store to the current format. Returns the number of 0.1
    /// records rewritten (0 for a new or current store).
    pub(crate) fn migrate(&self, default_registry: &str) -> Result<u64, StoreError> {
        match self.format()? {
            Some(FORMAT_CURRENT) => return Ok(0),
            Some(v) => {
                return Err(StoreError::Corrupt {
                    cf: CF_SYS,
                    detail: format!("metadata format {v} is unknown to this release"),
                })
            }
            None => {}
        }
        let db = self.db();
        let prefix = registry_prefix(default_registry);
        let mut deletes = WriteBatch::default();
        let mut puts = Vec::new();
        for name in V1_DATA_CFS {
            let cf = self.cf(name);
            for item in db.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item?;
                let value = convert(name, &k, &v)?;
                let key = if name == CF_BLOBS {
                    // The blob index is the cluster's, not a registry's.
                    k.to_vec()
                } else {
                    let mut scoped = prefix.clone();
                    scoped.extend_from_slice(&k);
                    scoped
                };
                deletes.delete_cf(cf, &k);
                puts.push((name, key, value));
            }
        }
        // Which registry links each blob, for replica sets: in 0.1 every
        // link was the (now default) registry's.
        let mut per_blob: std::collections::BTreeMap<String, u64> = Default::default();
        for (name, k, _) in &puts {
            if *name == CF_REPO_BLOBS {
                *per_blob.entry(last_part(k)).or_default() += 1;
            }
        }
        let migrated = puts.len() as u64;
        for (digest, n) in per_blob {
            let key = format!("{digest}\0{default_registry}").into_bytes();
            puts.push((CF_BLOB_LINKS, key, encode(&n)));
        }
        // Every delete before any put: an old key can never erase a new one.
        let mut batch = deletes;
        for (name, k, v) in puts {
            batch.put_cf(self.cf(name), k, v);
        }
        batch.put_cf(
            self.cf(CF_SYS),
            SYS_FORMAT.as_bytes(),
            encode(&FORMAT_CURRENT),
        );
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        db.write_opt(batch, &sync)?;
        if migrated > 0 {
            self.bump_identity_epoch();
            self.read_locks().changed();
        }
        Ok(migrated)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::{MetaStore, Role, DEFAULT_REGISTRY};

    /// The metadata store of the release 0.1 fixture, unpacked.
    fn release_0_1_meta(dir: &Path) -> PathBuf {
        let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../node/tests/fixtures/release-0.1/node.tar.gz");
        let status = std::process::Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
        dir.join("meta")
    }

    #[test]
    fn a_release_0_1_store_opens_migrated_into_the_default_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = release_0_1_meta(dir.path());
        let store = MetaStore::open(&path).unwrap();
        let reg = store.registry(DEFAULT_REGISTRY);
        let repos: Vec<_> = reg
            .repositories(None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(repos, ["fixture/app", "other/repo"]);
        let tags: Vec<_> = reg
            .tags("fixture/app", None, 10)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(tags, ["multi", "stable", "v1"]);
        let v1 = reg.tag("fixture/app", "v1").unwrap().unwrap();
        let manifest = reg.manifest("fixture/app", &v1.digest).unwrap().unwrap();
        assert_eq!(manifest.blobs.len(), 2);
        for b in &manifest.blobs {
            let blob = reg.linked_blob("fixture/app", &b.digest).unwrap().unwrap();
            assert_eq!(blob.links, 2, "linked in both repositories");
            assert_eq!(blob.regions, ["us-east"]);
        }
        let alice = reg.principal("alice").unwrap().unwrap();
        for b in &manifest.blobs {
            assert_eq!(
                store.registries_linking(&b.digest).unwrap(),
                [DEFAULT_REGISTRY]
            );
        }
        assert_eq!(alice.roles.len(), 1);
        assert_eq!(alice.roles[0].role, Role::Reader);
        assert_eq!(alice.roles[0].scope, "fixture/*");
        assert_eq!(reg.token("ci").unwrap().unwrap().scope_map, "ci-pull");
        assert!(reg.admin().unwrap().enabled);
        assert!(reg.access_settings().unwrap().anonymous_pull);
        assert_eq!(reg.signing_keys().unwrap().len(), 1);
        // Another registry sees none of it.
        let other = store.registry("another");
        assert!(other.repositories(None, 10).unwrap().is_empty());
        assert!(other.principal("alice").unwrap().is_none());
        drop(store);

        // Migrated once: opening again changes nothing.
        let store = MetaStore::open(&path).unwrap();
        assert_eq!(store.migrate(DEFAULT_REGISTRY).unwrap(), 0);
        assert_eq!(
            store
                .registry(DEFAULT_REGISTRY)
                .tags("fixture/app", None, 10)
                .unwrap()
                .len(),
            3
        );
    }
}
