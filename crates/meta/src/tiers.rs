//! Service tiers as the state machine enforces them. What each tier
//! includes is the cluster configuration's (the proposer reads it); a
//! command that a tier limits travels wrapped in `Command::Gated` with the
//! whole table, and apply checks it against the registry's tier as it is
//! then, so a create racing a downgrade, or two creates racing each other
//! in two regions, cannot pass a limit.
//!
//! The wrapper keeps the gated commands' own shapes unchanged (release
//! 0.1's log decodes some of them positionally).

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::error::{ApplyError, StoreError};
use crate::identity::IdentityCommand;
use crate::keys::*;
use crate::store::MetaStore;
use crate::tenancy::{RegistryCommand, Sku};
use crate::webhooks::WebhookCommand;

/// What one tier includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLimits {
    pub webhooks: u32,
    pub tokens: u32,
    pub scope_maps: u32,
    pub anonymous_pull: bool,
    /// Storage the tier includes (what `show-usage` reports `Size`
    /// against); not a limit.
    #[serde(default)]
    pub included_storage_gib: u64,
    /// Network (IP) rules; 0: the tier has none.
    #[serde(default)]
    pub ip_rules: u32,
    /// Replica regions a registry may name (geo-replication); 0: none.
    #[serde(default)]
    pub replications: u32,
    /// Bytes a registry of the tier may store, unless its own limit says
    /// otherwise; `None`: no limit.
    #[serde(default)]
    pub storage_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTable {
    pub basic: TierLimits,
    pub standard: TierLimits,
    pub premium: TierLimits,
}

impl TierTable {
    pub fn of(&self, sku: Sku) -> &TierLimits {
        match sku {
            Sku::Basic => &self.basic,
            Sku::Standard => &self.standard,
            Sku::Premium => &self.premium,
        }
    }
}

/// What a registry holds of what tiers limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TierUsage {
    pub webhooks: u64,
    pub tokens: u64,
    pub scope_maps: u64,
    pub anonymous_pull: bool,
    pub ip_rules: u64,
    pub replications: u64,
}

impl MetaStore {
    /// Counted from the registry's records (webhooks and identities are
    /// hundreds, at most tens of thousands).
    pub fn tier_usage(&self, registry: &str) -> Result<TierUsage, StoreError> {
        let record = self.registry_record(registry)?;
        Ok(TierUsage {
            webhooks: self.count_keys(registry, CF_WEBHOOKS, None)?,
            tokens: self.count_keys(registry, CF_AUTH, Some(AUTH_TOKEN))?,
            scope_maps: self.count_keys(registry, CF_AUTH, Some(AUTH_SCOPE_MAP))?,
            anonymous_pull: self.registry(registry).access_settings()?.anonymous_pull,
            ip_rules: record
                .as_ref()
                .map_or(0, |r| r.network.ip_rules.len() as u64),
            // The first replica region is the registry's home; the
            // others are replications (as the cloud registry counts).
            replications: record.map_or(0, |r| r.replicas.len().saturating_sub(1) as u64),
        })
    }

    /// Keys of `registry` in `cf` (under `kind \0` when given).
    fn count_keys(
        &self,
        registry: &str,
        cf: &'static str,
        kind: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut prefix = registry_prefix(registry);
        if let Some(k) = kind {
            prefix.extend_from_slice(k.as_bytes());
            prefix.push(0);
        }
        Ok(self.scan(cf, &prefix, None, usize::MAX)?.len() as u64)
    }

    /// Why `registry` at its current tier may not take `cmd`, if it may not.
    pub(crate) fn tier_refusal(
        &self,
        registry: &str,
        tiers: &TierTable,
        cmd: &Command,
    ) -> Result<Option<ApplyError>, StoreError> {
        // A tier change is checked against the tier it goes to, for the
        // registry it names.
        if let Command::Registry(RegistryCommand::Update {
            name,
            sku: Some(to),
        }) = cmd
        {
            let name = name.to_ascii_lowercase();
            let Some(record) = self.registry_record(&name)? else {
                return Ok(None);
            };
            if record.sku == *to {
                return Ok(None);
            }
            let over = over_limits(&self.tier_usage(&name)?, tiers.of(*to), *to);
            let storage = self.storage_usage(&name)?.bytes;
            let storage_limit = record.storage_limit.or(tiers.of(*to).storage_limit);
            let over = over
                .into_iter()
                .chain(storage_limit.filter(|l| storage > *l).map(|l| {
                    format!(
                        "storage: {}, {} allows {}",
                        human_bytes(storage),
                        to.as_str(),
                        human_bytes(l)
                    )
                }))
                .chain(
                    (record.network.default_deny && tiers.of(*to).ip_rules == 0).then(|| {
                        format!("network rules deny by default, {} has none", to.as_str())
                    }),
                )
                .collect::<Vec<_>>();
            return Ok((!over.is_empty()).then(|| {
                ApplyError::TierLimit(format!(
                    "registry {name} cannot move to {}: {}",
                    to.as_str(),
                    over.join("; ")
                ))
            }));
        }
        let Some(record) = self.registry_record(registry)? else {
            return Ok(None);
        };
        let sku = record.sku;
        let limits = tiers.of(sku);
        let refused = |what: &str, now: u64, limit: u32| {
            Some(ApplyError::TierLimit(format!(
                "the {} tier includes {limit} {what} and registry {registry} has {now}",
                sku.as_str()
            )))
        };
        Ok(match cmd {
            // Network rules name their registry (the envelope's is the
            // operator's, the default one).
            Command::Registry(RegistryCommand::SetIpRule {
                name, add: true, ..
            }) => {
                let name = name.to_ascii_lowercase();
                let Some(target) = self.registry_record(&name)? else {
                    return Ok(None);
                };
                let limit = tiers.of(target.sku).ip_rules;
                let now = target.network.ip_rules.len() as u64;
                (now >= u64::from(limit)).then(|| {
                    ApplyError::TierLimit(format!(
                        "the {} tier includes {limit} IP rules and registry {name} has {now}{}",
                        target.sku.as_str(),
                        if limit == 0 { " (network rules are premium's)" } else { "" }
                    ))
                })
            }
            Command::Registry(RegistryCommand::SetReplica {
                name,
                region,
                add: true,
            }) => {
                let name = name.to_ascii_lowercase();
                let Some(target) = self.registry_record(&name)? else {
                    return Ok(None);
                };
                let limit = tiers.of(target.sku).replications;
                // Regions beyond the home one.
                let now = target.replicas.len().saturating_sub(1) as u64;
                let grows = !target.replicas.is_empty() && !target.replicas.contains(region);
                (grows && now >= u64::from(limit)).then(|| {
                    ApplyError::TierLimit(format!(
                        "the {} tier includes {limit} replications and registry {name} has {now}{}",
                        target.sku.as_str(),
                        if limit == 0 { " (geo-replication is premium's)" } else { "" }
                    ))
                })
            }
            Command::PutManifest(p) => {
                self.quota_refusal(registry, &record, limits, &p.new_links)?
            }
            Command::LinkBlobs { blobs, .. } => {
                self.quota_refusal(registry, &record, limits, blobs)?
            }
            Command::Webhook(WebhookCommand::Create { .. }) => {
                let now = self.count_keys(registry, CF_WEBHOOKS, None)?;
                (now >= u64::from(limits.webhooks))
                    .then(|| refused("webhooks", now, limits.webhooks))
                    .flatten()
            }
            Command::Identity(c) => match c.as_ref() {
                IdentityCommand::PutToken { create: true, .. } => {
                    let now = self.count_keys(registry, CF_AUTH, Some(AUTH_TOKEN))?;
                    (now >= u64::from(limits.tokens))
                        .then(|| refused("tokens", now, limits.tokens))
                        .flatten()
                }
                IdentityCommand::PutScopeMap { create: true, .. } => {
                    let now = self.count_keys(registry, CF_AUTH, Some(AUTH_SCOPE_MAP))?;
                    (now >= u64::from(limits.scope_maps))
                        .then(|| refused("scope maps", now, limits.scope_maps))
                        .flatten()
                }
                IdentityCommand::SetAccess(a) if a.anonymous_pull && !limits.anonymous_pull => {
                    Some(ApplyError::TierLimit(format!(
                        "anonymous pull is not included in the {} tier (standard and premium include it)",
                        sku.as_str()
                    )))
                }
                _ => None,
            },
            _ => None,
        })
    }
}

impl MetaStore {
    /// Why linking `blobs` would take `registry` past its storage limit,
    /// if it would. Only what the registry does not store yet counts: a
    /// push of layers it holds (a new tag, a rebuilt index) always goes
    /// through, so a registry over a lowered limit can still be tidied.
    fn quota_refusal(
        &self,
        registry: &str,
        record: &crate::tenancy::RegistryRecord,
        limits: &TierLimits,
        blobs: &[crate::command::BlobRef],
    ) -> Result<Option<ApplyError>, StoreError> {
        let Some(limit) = record.storage_limit.or(limits.storage_limit) else {
            return Ok(None);
        };
        let adds = self.bytes_new_to(registry, blobs)?;
        if adds == 0 {
            return Ok(None);
        }
        let used = self.storage_usage(registry)?.bytes;
        Ok((used.saturating_add(adds) > limit).then(|| {
            ApplyError::QuotaExceeded(format!(
                "storage quota exceeded: registry {registry} stores {} of its {} limit and this push adds {}",
                human_bytes(used),
                human_bytes(limit),
                human_bytes(adds)
            ))
        }))
    }
}

/// `1.5 GiB`, `20.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Every tier alike, generous but for `storage_limit` (tests of other
/// modules that gate commands).
#[cfg(test)]
pub(crate) fn uniform_table(storage_limit: Option<u64>) -> TierTable {
    let tier = TierLimits {
        webhooks: 10,
        tokens: 100,
        scope_maps: 100,
        anonymous_pull: true,
        included_storage_gib: 10,
        ip_rules: 0,
        replications: 0,
        storage_limit,
    };
    TierTable {
        basic: tier,
        standard: tier,
        premium: tier,
    }
}

/// Each limit of `to` that `usage` exceeds, in words.
fn over_limits(usage: &TierUsage, to: &TierLimits, sku: Sku) -> Vec<String> {
    let mut over = Vec::new();
    let tier = sku.as_str();
    for (what, now, limit) in [
        ("webhooks", usage.webhooks, to.webhooks),
        ("tokens", usage.tokens, to.tokens),
        ("scope maps", usage.scope_maps, to.scope_maps),
        ("IP rules", usage.ip_rules, to.ip_rules),
        ("replications", usage.replications, to.replications),
    ] {
        if now > u64::from(limit) {
            over.push(format!("{what}: {now}, {tier} includes {limit}"));
        }
    }
    if usage.anonymous_pull && !to.anonymous_pull {
        over.push(format!("anonymous pull is on, {tier} does not include it"));
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Envelope, Response};
    use crate::identity::{AccessSettings, PrincipalKind, PrincipalRecord, SigningKeyRecord};
    use crate::tenancy::RegistryRecord;
    use crate::webhooks::{EventFormat, WebhookAction, WebhookRecord};

    const TIERS: TierTable = TierTable {
        basic: TierLimits {
            webhooks: 2,
            tokens: 100,
            scope_maps: 100,
            anonymous_pull: false,
            included_storage_gib: 10,
            ip_rules: 0,
            replications: 0,
            storage_limit: None,
        },
        standard: TierLimits {
            webhooks: 10,
            tokens: 500,
            scope_maps: 500,
            anonymous_pull: true,
            included_storage_gib: 100,
            ip_rules: 0,
            replications: 0,
            storage_limit: None,
        },
        premium: TierLimits {
            webhooks: 500,
            tokens: 50_000,
            scope_maps: 50_000,
            anonymous_pull: true,
            included_storage_gib: 500,
            ip_rules: 200,
            replications: 100,
            storage_limit: None,
        },
    };

    fn gated(registry: &str, cmd: Command) -> Envelope {
        Envelope::new(
            registry,
            Command::Gated {
                tiers: Box::new(TIERS),
                cmd: Box::new(cmd),
            },
            1,
        )
    }

    fn webhook(name: &str) -> Command {
        Command::Webhook(WebhookCommand::Create {
            record: Box::new(WebhookRecord {
                name: name.into(),
                uri: "http://x/".into(),
                actions: vec![WebhookAction::Push],
                scope: None,
                headers: vec![],
                enabled: true,
                format: EventFormat::Default,
                secret: None,
                created_ms: 1,
            }),
        })
    }

    /// A store holding registry `name` of tier `sku`.
    fn store_with(name: &str, sku: Sku) -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let create = Command::Registry(RegistryCommand::Create {
            record: Box::new(RegistryRecord {
                name: name.into(),
                sku,
                created_ms: 1,
                replicas: vec![],
                policies: Default::default(),
                network: Default::default(),
                storage_limit: None,
            }),
            owner: PrincipalRecord {
                name: "owner".into(),
                kind: PrincipalKind::User,
                secrets: vec!["hash".into()],
                enabled: true,
                generation: 1,
                roles: vec![],
                created_ms: 1,
            },
            signing_key: SigningKeyRecord {
                kid: "k".into(),
                sealed: vec![1],
                created_ms: 1,
            },
        });
        let r = s.apply(&Envelope::new("default", create, 1), &[]).unwrap();
        assert_eq!(r, Response::Ok);
        (dir, s)
    }

    /// A registry record as the release before network rules stored it
    /// (no `network`) still decodes: no rules, allow by default.
    #[test]
    fn registry_records_written_before_network_rules_decode() {
        #[derive(Serialize)]
        struct Before {
            name: String,
            sku: Sku,
            created_ms: u64,
            replicas: Vec<String>,
        }
        let old = Before {
            name: "teamreg".into(),
            sku: Sku::Basic,
            created_ms: 5,
            replicas: vec!["r1".into()],
        };
        let r: RegistryRecord = crate::codec::decode(&crate::codec::encode(&old)).unwrap();
        assert_eq!(r.network, crate::tenancy::NetworkRules::default());
        assert_eq!((r.sku, r.replicas.len()), (Sku::Basic, 1));
    }

    /// A gated command written before storage limits (its tier table
    /// has none) decodes with no limit, and its registry record with no
    /// limit of its own: a log from the previous release applies as it did.
    #[test]
    fn tier_tables_and_records_from_before_storage_limits_decode_without_one() {
        #[derive(Serialize)]
        struct LimitsBefore {
            webhooks: u32,
            tokens: u32,
            scope_maps: u32,
            anonymous_pull: bool,
            included_storage_gib: u64,
            ip_rules: u32,
            replications: u32,
        }
        let old = LimitsBefore {
            webhooks: 2,
            tokens: 100,
            scope_maps: 100,
            anonymous_pull: false,
            included_storage_gib: 10,
            ip_rules: 0,
            replications: 0,
        };
        let l: TierLimits = crate::codec::decode(&crate::codec::encode(&old)).unwrap();
        assert_eq!((l.webhooks, l.storage_limit), (2, None));
        #[derive(Serialize)]
        struct RecordBefore {
            name: String,
            sku: Sku,
            created_ms: u64,
            replicas: Vec<String>,
            network: crate::tenancy::NetworkRules,
        }
        let r: RegistryRecord = crate::codec::decode(&crate::codec::encode(&RecordBefore {
            name: "teamreg".into(),
            sku: Sku::Basic,
            created_ms: 5,
            replicas: vec![],
            network: Default::default(),
        }))
        .unwrap();
        assert_eq!(r.storage_limit, None);
    }

    #[test]
    fn storage_counts_each_blob_of_a_registry_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let link = |registry: &str, repo: &str, digest: &str, size: u64| {
            let cmd = Command::LinkBlobs {
                repo: repo.into(),
                region: "r1".into(),
                blobs: vec![crate::command::BlobRef {
                    digest: digest.into(),
                    size,
                }],
                now_ms: 1,
            };
            s.apply(&Envelope::new(registry, cmd, 1), &[]).unwrap();
        };
        // A layer shared by two repositories counts once; another
        // registry's links are its own.
        link("default", "a", "sha256:shared", 1000);
        link("default", "b", "sha256:shared", 1000);
        link("default", "b", "sha256:own", 24);
        link("other", "a", "sha256:shared", 1000);
        link("other", "a", "sha256:big", 5000);
        let stored = |r: &str| {
            let u = s.storage_usage(r).unwrap();
            (u.blobs, u.bytes)
        };
        assert_eq!(stored("default"), (2, 1024));
        assert_eq!(stored("other"), (2, 6000));
        assert_eq!(stored("none"), (0, 0));
    }

    #[test]
    fn basic_keeps_one_home_region_and_premium_replicates() {
        let (_dir, s) = store_with("georeg", Sku::Basic);
        let replica = |region: &str| {
            Command::Registry(RegistryCommand::SetReplica {
                name: "georeg".into(),
                region: region.into(),
                add: true,
            })
        };
        // The home region is not a replication; a second region is.
        assert!(matches!(
            s.apply(&gated("default", replica("r1")), &[]).unwrap(),
            Response::Changed(1)
        ));
        let Response::Refused(ApplyError::TierLimit(why)) =
            s.apply(&gated("default", replica("r2")), &[]).unwrap()
        else {
            panic!("a replication on basic was not refused")
        };
        assert!(why.contains("geo-replication is premium's"), "{why}");
        let up = Command::Registry(RegistryCommand::Update {
            name: "georeg".into(),
            sku: Some(Sku::Premium),
        });
        s.apply(&gated("default", up), &[]).unwrap();
        assert!(matches!(
            s.apply(&gated("default", replica("r2")), &[]).unwrap(),
            Response::Changed(1)
        ));
        let down = Command::Registry(RegistryCommand::Update {
            name: "georeg".into(),
            sku: Some(Sku::Standard),
        });
        let Response::Refused(ApplyError::TierLimit(why)) =
            s.apply(&gated("default", down), &[]).unwrap()
        else {
            panic!("downgrade not refused")
        };
        assert!(
            why.contains("replications: 1, standard includes 0"),
            "{why}"
        );
    }

    #[test]
    fn a_basic_registry_takes_two_webhooks_and_a_downgrade_names_what_is_over() {
        let (_dir, s) = store_with("teamreg", Sku::Standard);
        for i in 0..3 {
            let r = s
                .apply(&gated("teamreg", webhook(&format!("hook{i}"))), &[])
                .unwrap();
            assert_eq!(r, Response::Ok, "standard includes 10");
        }
        let anon = Command::Identity(Box::new(IdentityCommand::SetAccess(AccessSettings {
            anonymous_pull: true,
        })));
        assert_eq!(
            s.apply(&gated("teamreg", anon.clone()), &[]).unwrap(),
            Response::Ok
        );
        let down = Command::Registry(RegistryCommand::Update {
            name: "teamreg".into(),
            sku: Some(Sku::Basic),
        });
        let Response::Refused(ApplyError::TierLimit(why)) =
            s.apply(&gated("default", down.clone()), &[]).unwrap()
        else {
            panic!("downgrade not refused")
        };
        assert!(why.contains("webhooks: 3, basic includes 2"), "{why}");
        assert!(why.contains("anonymous pull is on"), "{why}");
        // Back within basic's limits: the downgrade goes through, and
        // basic then refuses a third webhook and anonymous pull.
        for c in [
            Command::Webhook(WebhookCommand::Delete {
                name: "hook2".into(),
            }),
            Command::Identity(Box::new(IdentityCommand::SetAccess(AccessSettings {
                anonymous_pull: false,
            }))),
        ] {
            s.apply(&Envelope::new("teamreg", c, 1), &[]).unwrap();
        }
        let r = s.apply(&gated("default", down), &[]).unwrap();
        assert!(!matches!(r, Response::Refused(_)), "{r:?}");
        assert_eq!(
            s.registry_record("teamreg").unwrap().unwrap().sku,
            Sku::Basic
        );
        let Response::Refused(ApplyError::TierLimit(why)) =
            s.apply(&gated("teamreg", webhook("hook9")), &[]).unwrap()
        else {
            panic!("third webhook on basic not refused")
        };
        assert!(why.contains("basic tier includes 2 webhooks"), "{why}");
        assert!(matches!(
            s.apply(&gated("teamreg", anon), &[]).unwrap(),
            Response::Refused(ApplyError::TierLimit(_))
        ));
    }
}
