//! Registries: several per cluster, each with its own repositories,
//! identities and replica regions under its key prefix. The registry
//! records themselves are the cluster's (`registries`, by name).
//!
//! The default registry always exists: hosts that name no registry use it,
//! release 0.1 data was migrated into it, and its owners are the cluster's
//! operators (they create the other registries and their first owners).

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::{ApplyError, StoreError};
use crate::identity::{PrincipalRecord, SigningKeyRecord};
use crate::keys::*;
use crate::store::{encode, MetaStore};
use crate::DEFAULT_REGISTRY;

/// The service tier of a registry (what it includes is decided above the
/// state machine, from the cluster configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sku {
    Basic,
    Standard,
    Premium,
}

impl Sku {
    pub fn as_str(self) -> &'static str {
        match self {
            Sku::Basic => "basic",
            Sku::Standard => "standard",
            Sku::Premium => "premium",
        }
    }

    pub fn parse(s: &str) -> Option<Sku> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Some(Sku::Basic),
            "standard" => Some(Sku::Standard),
            "premium" => Some(Sku::Premium),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// Lower case: names are unique whatever their case.
    pub name: String,
    pub sku: Sku,
    pub created_ms: u64,
    /// Regions that hold this registry's blobs; empty: every region.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Retention and soft delete (absent: both off).
    #[serde(default)]
    pub policies: crate::lifecycle::Policies,
    /// Which client addresses may reach the registry (absent: all).
    #[serde(default)]
    pub network: NetworkRules,
    /// Bytes the registry may store, overriding its tier's limit
    /// (absent: the tier's).
    #[serde(default)]
    pub storage_limit: Option<u64>,
}

/// A registry's network rules: with `default_deny`, only clients whose
/// address falls in one of `ip_rules` (CIDR, canonical) reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    #[serde(default)]
    pub default_deny: bool,
    #[serde(default)]
    pub ip_rules: Vec<String>,
}

impl RegistryRecord {
    /// The default registry as it is before anyone changed it.
    fn default_registry() -> RegistryRecord {
        RegistryRecord {
            name: DEFAULT_REGISTRY.to_string(),
            sku: Sku::Premium,
            created_ms: 0,
            replicas: Vec::new(),
            policies: Default::default(),
            network: Default::default(),
            storage_limit: None,
        }
    }
}

/// Changes to registries (cluster-wide commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    /// Create a registry with its first owner and signing key; refused
    /// when the name is taken (in any case).
    Create {
        /// Boxed: much larger than the other variants (same encoding).
        record: Box<RegistryRecord>,
        owner: PrincipalRecord,
        signing_key: SigningKeyRecord,
    },
    /// Change the tier; `None` leaves it.
    Update { name: String, sku: Option<Sku> },
    /// Remove a registry and everything under its prefix. The default
    /// registry cannot be deleted.
    Delete { name: String },
    /// Add (`add` = true) or remove a replica region.
    SetReplica {
        name: String,
        region: String,
        add: bool,
    },
    /// Change a retention or soft-delete policy: only what is named.
    SetPolicy {
        name: String,
        policy: crate::lifecycle::PolicyKind,
        enabled: Option<bool>,
        days: Option<u32>,
    },
    /// Add a keep rule, or replace the one with the same pattern.
    PutKeepRule {
        name: String,
        rule: crate::lifecycle::KeepRule,
    },
    /// Remove the keep rule of `pattern`.
    RemoveKeepRule { name: String, pattern: String },
    /// Add (`add` = true) or remove an IP rule (a canonical CIDR).
    SetIpRule {
        name: String,
        cidr: String,
        add: bool,
    },
    /// Deny (or allow) clients outside the IP rules.
    SetDefaultAction { name: String, deny: bool },
    /// The registry's own storage limit in bytes (`None`: its tier's).
    SetStorageLimit { name: String, bytes: Option<u64> },
}

impl MetaStore {
    pub(crate) fn apply_registry(
        &self,
        now_ms: u64,
        batch: &mut WriteBatch,
        cmd: &RegistryCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            RegistryCommand::Create {
                record,
                owner,
                signing_key,
            } => {
                let Ok(name) = wharf_oci::RegistryName::parse(&record.name) else {
                    return Ok(Response::Refused(ApplyError::RegistryNameInvalid(
                        record.name.clone(),
                    )));
                };
                let name = name.as_str().to_string();
                if self.registry_record(&name)?.is_some() {
                    return Ok(Response::Refused(ApplyError::RegistryExists(name)));
                }
                let mut record = record.clone();
                record.name = name.clone();
                batch.put_cf(self.cf(CF_REGISTRIES), name.as_bytes(), encode(&record));
                let reg = self.registry(&name);
                reg.bootstrap_identities(batch, owner, signing_key)?;
                self.note_registry_created(&name);
                Ok(Response::Ok)
            }
            RegistryCommand::Update { name, sku } => {
                let Some(mut record) = self.registry_record(name)? else {
                    return Ok(Response::Refused(ApplyError::RegistryUnknown(name.clone())));
                };
                if let Some(s) = sku {
                    record.sku = *s;
                }
                batch.put_cf(
                    self.cf(CF_REGISTRIES),
                    record.name.as_bytes(),
                    encode(&record),
                );
                Ok(Response::Ok)
            }
            RegistryCommand::SetReplica { name, region, add } => {
                let mut set = None;
                let response = self.change_registry(batch, name, |record| {
                    match (add, record.replicas.binary_search(region)) {
                        (true, Err(pos)) => record.replicas.insert(pos, region.clone()),
                        (false, Ok(pos)) => {
                            record.replicas.remove(pos);
                        }
                        _ => return false,
                    }
                    set = Some((record.name.clone(), record.replicas.clone()));
                    true
                })?;
                // Where its blobs belong changed: some are placed now, or
                // no longer (see `holders`).
                if let Some((name, set)) = set {
                    self.reindex_registry_blobs(batch, &name, &set)?;
                }
                Ok(response)
            }
            RegistryCommand::SetPolicy {
                name,
                policy,
                enabled,
                days,
            } => self.change_registry(batch, name, |record| {
                let p = match policy {
                    crate::lifecycle::PolicyKind::Retention => &mut record.policies.retention,
                    crate::lifecycle::PolicyKind::SoftDelete => &mut record.policies.soft_delete,
                };
                let before = *p;
                p.enabled = enabled.unwrap_or(p.enabled);
                p.days = days.unwrap_or(p.days);
                if *p == before {
                    return false;
                }
                p.changed_ms = now_ms;
                true
            }),
            RegistryCommand::SetIpRule { name, cidr, add } => {
                self.change_registry(batch, name, |record| {
                    let rules = &mut record.network.ip_rules;
                    match (add, rules.binary_search(cidr)) {
                        (true, Err(pos)) => rules.insert(pos, cidr.clone()),
                        (false, Ok(pos)) => {
                            rules.remove(pos);
                        }
                        _ => return false,
                    }
                    true
                })
            }
            RegistryCommand::SetStorageLimit { name, bytes } => {
                self.change_registry(batch, name, |record| {
                    let changed = record.storage_limit != *bytes;
                    record.storage_limit = *bytes;
                    changed
                })
            }
            RegistryCommand::SetDefaultAction { name, deny } => {
                self.change_registry(batch, name, |record| {
                    let changed = record.network.default_deny != *deny;
                    record.network.default_deny = *deny;
                    changed
                })
            }
            RegistryCommand::PutKeepRule { name, rule } => {
                self.change_registry(batch, name, |record| {
                    let keep = &mut record.policies.keep;
                    match keep.iter_mut().find(|r| r.pattern == rule.pattern) {
                        Some(existing) if existing == rule => return false,
                        Some(existing) => *existing = rule.clone(),
                        None => keep.push(rule.clone()),
                    }
                    true
                })
            }
            RegistryCommand::RemoveKeepRule { name, pattern } => {
                self.change_registry(batch, name, |record| {
                    let before = record.policies.keep.len();
                    record.policies.keep.retain(|r| r.pattern != *pattern);
                    record.policies.keep.len() != before
                })
            }
            RegistryCommand::Delete { name } => {
                let name = name.to_ascii_lowercase();
                if name == DEFAULT_REGISTRY {
                    return Ok(Response::Refused(ApplyError::DefaultRegistry));
                }
                if self.registry_record(&name)?.is_none() {
                    return Ok(Response::Refused(ApplyError::RegistryUnknown(name)));
                }
                // Proportional to the registry's size: acceptable for a
                // rare, operator-only command.
                let prefix = registry_prefix(&name);
                let mut removed = 0;
                // Several repositories may link one blob: drop each blob's
                // links once, by their number.
                let mut links: std::collections::BTreeMap<String, u64> = Default::default();
                for cf in REGISTRY_SCOPED_CFS {
                    for (k, _) in self.scan(cf, &prefix, None, usize::MAX)? {
                        batch.delete_cf(self.cf(cf), &k);
                        match cf {
                            CF_REPO_BLOBS => *links.entry(last_part(&k)).or_default() += 1,
                            CF_REPOS => removed += 1,
                            _ => {}
                        }
                    }
                }
                for (digest, n) in links {
                    self.drop_link(batch, &name, None, &digest, n, now_ms)?;
                }
                self.note_registry_gone(&name);
                batch.delete_cf(self.cf(CF_REGISTRIES), name.as_bytes());
                Ok(Response::Removed(removed))
            }
        }
    }

    /// Change registry `name`'s record with `f` (which says whether it
    /// changed anything): `Changed(1)` and the record written, or
    /// `Changed(0)` and nothing written.
    fn change_registry(
        &self,
        batch: &mut WriteBatch,
        name: &str,
        f: impl FnOnce(&mut RegistryRecord) -> bool,
    ) -> Result<Response, StoreError> {
        let Some(mut record) = self.registry_record(name)? else {
            return Ok(Response::Refused(ApplyError::RegistryUnknown(
                name.to_string(),
            )));
        };
        if !f(&mut record) {
            return Ok(Response::Changed(0));
        }
        batch.put_cf(
            self.cf(CF_REGISTRIES),
            record.name.as_bytes(),
            encode(&record),
        );
        Ok(Response::Changed(1))
    }

    /// A registry's record; the default registry always has one.
    pub fn registry_record(&self, name: &str) -> Result<Option<RegistryRecord>, StoreError> {
        let name = name.to_ascii_lowercase();
        let stored = self.get::<RegistryRecord>(CF_REGISTRIES, name.as_bytes())?;
        Ok(match stored {
            None if name == DEFAULT_REGISTRY => Some(RegistryRecord::default_registry()),
            other => other,
        })
    }

    /// Every registry, by name (the default one included).
    pub fn registries(&self) -> Result<Vec<RegistryRecord>, StoreError> {
        let mut out: Vec<RegistryRecord> = self
            .scan(CF_REGISTRIES, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| crate::store::decode(CF_REGISTRIES, v))
            .collect::<Result<_, _>>()?;
        if !out.iter().any(|r| r.name == DEFAULT_REGISTRY) {
            out.push(RegistryRecord::default_registry());
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::{PrincipalKind, Role, RoleAssignment};
    use crate::{BlobRef, Command, Envelope};

    fn owner(name: &str) -> PrincipalRecord {
        PrincipalRecord {
            name: name.into(),
            kind: PrincipalKind::User,
            secrets: vec!["hash".into()],
            enabled: true,
            generation: 1,
            roles: vec![RoleAssignment {
                scope: String::new(),
                role: Role::Owner,
            }],
            created_ms: 1,
        }
    }

    pub(crate) fn create(name: &str) -> Envelope {
        let cmd = Command::Registry(RegistryCommand::Create {
            record: Box::new(RegistryRecord {
                name: name.into(),
                sku: Sku::Standard,
                created_ms: 5,
                replicas: vec![],
                policies: Default::default(),
                network: Default::default(),
                storage_limit: None,
            }),
            owner: owner(&format!("{}-owner", name.to_lowercase())),
            signing_key: SigningKeyRecord {
                kid: format!("{name}-key"),
                sealed: vec![1],
                created_ms: 5,
            },
        });
        Envelope::new(DEFAULT_REGISTRY, cmd, 5)
    }

    fn link(registry: &str, repo: &str, digest: &str) -> Envelope {
        let cmd = Command::LinkBlobs {
            repo: repo.into(),
            region: "r1".into(),
            blobs: vec![BlobRef {
                digest: digest.into(),
                size: 1,
            }],
            now_ms: 6,
        };
        Envelope::new(registry, cmd, 6)
    }

    #[test]
    fn registries_are_unique_whatever_the_case_and_isolated_from_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        assert_eq!(s.apply(&create("TeamOne"), &[]).unwrap(), Response::Ok);
        assert!(matches!(
            s.apply(&create("teamone"), &[]).unwrap(),
            Response::Refused(ApplyError::RegistryExists(_))
        ));
        assert_eq!(s.apply(&create("teamtwo"), &[]).unwrap(), Response::Ok);
        assert!(matches!(
            s.apply(&create("t-1"), &[]).unwrap(),
            Response::Refused(ApplyError::RegistryNameInvalid(_))
        ));
        let names: Vec<_> = s
            .registries()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["default", "teamone", "teamtwo"]);
        assert!(s.registry_record("TEAMONE").unwrap().is_some());

        // Each has its first owner and key, and only its own.
        let one = s.registry("teamone");
        let two = s.registry("teamtwo");
        assert!(one.principal("teamone-owner").unwrap().is_some());
        assert!(two.principal("teamone-owner").unwrap().is_none());
        assert_eq!(two.signing_keys().unwrap()[0].kid, "teamtwo-key");

        // The same repository name holds different things in each.
        let d = format!("sha256:{}", "d".repeat(64));
        s.apply(&link("teamone", "app", &d), &[]).unwrap();
        s.apply(&link("teamone", "lib", &d), &[]).unwrap();
        assert_eq!(s.registries_linking(&d).unwrap(), ["teamone"]);
        assert!(one.linked_blob("app", &d).unwrap().is_some());
        assert!(two.linked_blob("app", &d).unwrap().is_none());
        assert!(two.repositories(None, 10).unwrap().is_empty());
        assert_eq!(s.blob(&d).unwrap().unwrap().links, 2);

        // Deleting one removes its repositories, identities and links.
        let del = |name: &str| {
            Envelope::new(
                DEFAULT_REGISTRY,
                Command::Registry(RegistryCommand::Delete { name: name.into() }),
                7,
            )
        };
        assert_eq!(s.apply(&del("teamone"), &[]).unwrap(), Response::Removed(2));
        assert!(s.registry_record("teamone").unwrap().is_none());
        assert!(one.principal("teamone-owner").unwrap().is_none());
        assert!(one.repositories(None, 10).unwrap().is_empty());
        assert!(
            s.blob(&d).unwrap().is_none(),
            "both links dropped at once, and the blob freed"
        );
        assert!(s.registries_linking(&d).unwrap().is_empty());
        assert!(
            two.principal("teamtwo-owner").unwrap().is_some(),
            "the other stays"
        );
        assert!(matches!(
            s.apply(&del("default"), &[]).unwrap(),
            Response::Refused(ApplyError::DefaultRegistry)
        ));
    }

    #[test]
    fn tiers_and_replicas_change_on_the_record_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        s.apply(&create("teamone"), &[]).unwrap();
        let replica = |region: &str, add| {
            let cmd = Command::Registry(RegistryCommand::SetReplica {
                name: "teamone".into(),
                region: region.into(),
                add,
            });
            Envelope::new(DEFAULT_REGISTRY, cmd, 8)
        };
        assert_eq!(
            s.apply(&replica("eu", true), &[]).unwrap(),
            Response::Changed(1)
        );
        assert_eq!(
            s.apply(&replica("ap", true), &[]).unwrap(),
            Response::Changed(1)
        );
        assert_eq!(
            s.apply(&replica("eu", true), &[]).unwrap(),
            Response::Changed(0)
        );
        let update = Command::Registry(RegistryCommand::Update {
            name: "teamone".into(),
            sku: Some(Sku::Premium),
        });
        s.apply(&Envelope::new(DEFAULT_REGISTRY, update, 9), &[])
            .unwrap();
        let r = s.registry_record("teamone").unwrap().unwrap();
        assert_eq!(r.replicas, ["ap", "eu"]);
        assert_eq!(r.sku, Sku::Premium);
        assert_eq!(
            s.apply(&replica("eu", false), &[]).unwrap(),
            Response::Changed(1)
        );
        assert_eq!(
            s.registry_record("teamone").unwrap().unwrap().replicas,
            ["ap"]
        );
    }
}
