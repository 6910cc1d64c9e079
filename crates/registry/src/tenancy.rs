//! The cluster's registries: create (with a first owner and, if asked, the
//! admin account), change the tier, delete, and choose replica regions.
//! Each is one command stating the change; these are cluster-wide, so they
//! are proposed through the default registry.

use wharf_auth::{secret, Authority};
use wharf_meta::{
    AdminChange, Command, IdentityCommand, RegistryCommand, RegistryRecord, Sku, DEFAULT_REGISTRY,
};
use wharf_oci::{ErrorCode, RegistryName};

use crate::{Service, ServiceError, ServiceResult};
use std::sync::Arc;

/// A request that makes no sense (400 UNSUPPORTED, as the registry verbs
/// have always answered).
fn bad(msg: impl Into<String>) -> ServiceError {
    ServiceError::Spec {
        code: ErrorCode::Unsupported,
        message: msg.into(),
        status: Some(400),
    }
}

/// A tier by its wire name.
pub fn parse_sku(s: &str) -> ServiceResult<Sku> {
    Sku::parse(s).ok_or_else(|| bad(format!("sku {s:?}: basic, standard or premium")))
}

/// A registry being created: its first owner's password is generated
/// (and returned once) when none is given.
pub struct NewRegistry<'a> {
    pub name: &'a str,
    pub sku: Sku,
    pub owner: &'a str,
    pub owner_password: Option<String>,
    pub admin_enabled: bool,
}

impl Service {
    fn registry_record(&self, name: &str) -> ServiceResult<RegistryRecord> {
        self.consensus
            .meta()
            .registry_record(name)?
            .ok_or_else(|| wharf_meta::ApplyError::RegistryUnknown(name.to_string()).into())
    }

    /// Create a registry; its record, and the owner's generated password.
    pub async fn create_registry(
        self: &Arc<Self>,
        auth: &Authority,
        req: NewRegistry<'_>,
        now_ms: u64,
    ) -> ServiceResult<(RegistryRecord, Option<String>)> {
        let name = RegistryName::parse(req.name)?;
        let (password, shown) = match req.owner_password {
            Some(p) => {
                secret::check_password_strength(&p).map_err(|e| bad(e.to_string()))?;
                (p, None)
            }
            None => {
                let p = secret::new_secret();
                (p.clone(), Some(p))
            }
        };
        let record = RegistryRecord {
            name: name.as_str().to_string(),
            sku: req.sku,
            created_ms: now_ms,
            replicas: Vec::new(),
            policies: Default::default(),
            network: Default::default(),
            storage_limit: None,
        };
        let cmd = auth
            .create_registry_command(record.clone(), req.owner, &password, now_ms)
            .map_err(|e| ServiceError::spec(ErrorCode::Internal, e.to_string()))?;
        self.registry(DEFAULT_REGISTRY)
            .write(Command::Registry(cmd))
            .await?;
        if req.admin_enabled {
            let mut change = AdminChange {
                enabled: Some(true),
                ..Default::default()
            };
            for slot in 0..2u8 {
                change
                    .fill_empty
                    .push((slot, auth.new_admin_password(usize::from(slot))));
            }
            self.registry(name.as_str())
                .write(Command::Identity(Box::new(IdentityCommand::UpdateAdmin(
                    change,
                ))))
                .await?;
        }
        Ok((record, shown))
    }

    /// Change a registry's tier and/or turn its admin account on or off;
    /// the record as it is then.
    pub async fn update_registry(
        self: &Arc<Self>,
        auth: &Authority,
        name: &str,
        sku: Option<Sku>,
        admin_enabled: Option<bool>,
    ) -> ServiceResult<RegistryRecord> {
        let name = name.to_ascii_lowercase();
        self.registry_record(&name)?;
        if sku.is_some() {
            // A downgrade is refused while the registry holds more than
            // the lower tier includes.
            self.registry(DEFAULT_REGISTRY)
                .write(self.gated(Command::Registry(RegistryCommand::Update {
                    name: name.clone(),
                    sku,
                })))
                .await?;
        }
        if let Some(enabled) = admin_enabled {
            // Both passwords are made the first time.
            self.registry(&name)
                .update_admin(auth.admin_change(Some(enabled), None))
                .await?;
        }
        self.registry_record(&name)
    }

    /// Delete a registry with everything it holds; how many repositories.
    pub async fn delete_registry(self: &Arc<Self>, name: &str) -> ServiceResult<u64> {
        self.registry(DEFAULT_REGISTRY)
            .write(Command::Registry(RegistryCommand::Delete {
                name: name.to_string(),
            }))
            .await
    }

    /// Add or remove a replica region of a registry. The first one added
    /// makes the set explicit: from then on its blobs belong there only.
    pub async fn set_replica(
        self: &Arc<Self>,
        name: &str,
        location: &str,
        add: bool,
    ) -> ServiceResult<RegistryRecord> {
        let name = name.to_ascii_lowercase();
        let known = self
            .consensus
            .members()
            .into_iter()
            .any(|(_, n)| n.region == location);
        if add && !known {
            return Err(bad(format!(
                "{location:?} is not a region of this cluster (wharf replication list shows them)"
            )));
        }
        let current = self.registry_record(&name)?;
        if !add && current.replicas.len() == 1 && current.replicas[0] == location {
            return Err(bad(
                "a registry keeps at least one replica region: add another first",
            ));
        }
        // How many replica regions a registry may name is its tier's.
        self.registry(DEFAULT_REGISTRY)
            .write(self.gated(Command::Registry(RegistryCommand::SetReplica {
                name: name.clone(),
                region: location.to_string(),
                add,
            })))
            .await?;
        self.registry_record(&name)
    }

    /// Add or remove an IP rule of a registry (`cidr`: `10.0.0.0/8`, or
    /// one address); the tier decides how many it may have.
    pub async fn set_ip_rule(
        self: &Arc<Self>,
        name: &str,
        cidr: &str,
        add: bool,
    ) -> ServiceResult<RegistryRecord> {
        let name = name.to_ascii_lowercase();
        let cidr = parse_cidr(cidr)?;
        self.registry_record(&name)?;
        self.registry(DEFAULT_REGISTRY)
            .write(self.gated(Command::Registry(RegistryCommand::SetIpRule {
                name: name.clone(),
                cidr,
                add,
            })))
            .await?;
        self.registry_record(&name)
    }

    /// A registry's own storage limit (`None`: its tier's again). Lower
    /// than what it stores, it refuses pushes of new bytes until deletes
    /// and GC bring it under.
    pub async fn set_storage_limit(
        self: &Arc<Self>,
        name: &str,
        bytes: Option<u64>,
    ) -> ServiceResult<RegistryRecord> {
        let name = name.to_ascii_lowercase();
        self.registry_record(&name)?;
        self.registry(DEFAULT_REGISTRY)
            .write(Command::Registry(RegistryCommand::SetStorageLimit {
                name: name.clone(),
                bytes,
            }))
            .await?;
        self.registry_record(&name)
    }

    /// Deny (or allow) clients outside a registry's IP rules.
    pub async fn set_default_action(
        self: &Arc<Self>,
        name: &str,
        deny: bool,
    ) -> ServiceResult<RegistryRecord> {
        let name = name.to_ascii_lowercase();
        let current = self.registry_record(&name)?;
        if deny && self.tiers.of(current.sku).ip_rules == 0 {
            return Err(bad(format!(
                "the {} tier has no network rules (premium has)",
                current.sku.as_str()
            )));
        }
        self.registry(DEFAULT_REGISTRY)
            .write(Command::Registry(RegistryCommand::SetDefaultAction {
                name: name.clone(),
                deny,
            }))
            .await?;
        self.registry_record(&name)
    }
}

/// A CIDR or a single address, in canonical form (`10.1.2.3` is
/// `10.1.2.3/32`; host bits are cleared: `10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidr(s: &str) -> ServiceResult<String> {
    let s = s.trim();
    let net = match s.parse::<ipnet::IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(a) => ipnet::IpNet::from(a),
            Err(_) => {
                return Err(bad(format!(
                    "{s:?} is not an IP address or CIDR range (e.g. 203.0.113.0/24)"
                )))
            }
        },
    };
    Ok(net.trunc().to_string())
}
