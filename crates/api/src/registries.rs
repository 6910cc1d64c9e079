//! `/api/v1/registries` and `/api/v1/registries/{name}/replications`.

use serde::{Deserialize, Serialize};

/// A registry as listed and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub name: String,
    /// basic, standard or premium.
    pub sku: String,
    /// `NAME.<registry_domain>`; empty for the default registry (any host).
    #[serde(default)]
    pub login_server: String,
    /// Regions holding its blobs; empty: every region.
    #[serde(default)]
    pub replicas: Vec<String>,
    #[serde(default)]
    pub created_ms: u64,
    /// The registry's own storage limit in bytes; absent: its tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_limit: Option<u64>,
}

/// `POST /registries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewRegistry {
    pub name: String,
    #[serde(default)]
    pub sku: Option<String>,
    /// The first owner's name (default "owner").
    #[serde(default)]
    pub owner: Option<String>,
    /// Its password; generated (and answered once) when absent.
    #[serde(default)]
    pub owner_password: Option<String>,
    /// Enable the registry's admin account at once.
    #[serde(default)]
    pub admin_enabled: bool,
}

/// The answer to a create: the registry, and its first owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedRegistry {
    #[serde(flatten)]
    pub registry: Registry,
    pub owner: String,
    /// Only when it was generated: shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_password: Option<String>,
    #[serde(default)]
    pub admin_enabled: bool,
}

/// `PATCH /registries/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistryChange {
    #[serde(default)]
    pub sku: Option<String>,
    /// Enable or disable the registry's admin account.
    #[serde(default)]
    pub admin_enabled: Option<bool>,
    /// `Allow` or `Deny`: what happens to clients outside the IP rules.
    #[serde(default)]
    pub default_action: Option<String>,
    /// The registry's own storage limit (`20GiB`, `500MB`, a number of
    /// bytes), or `tier` to follow its tier's again.
    #[serde(default)]
    pub storage_limit: Option<String>,
}

/// `GET /registries/check-name?name=N`, in the cloud CLI's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCheck {
    #[serde(rename = "nameAvailable")]
    pub name_available: bool,
    /// `Invalid` or `AlreadyExists` when not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One replica region of a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub registry: String,
    pub location: String,
    /// False while the registry has no replica set (it is in every region).
    #[serde(default)]
    pub explicit: bool,
}

/// A replica region to add or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub location: String,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
    /// Repositories removed with it.
    #[serde(default)]
    pub repositories: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_wire_names_and_older_answers_still_parse() {
        let check = NameCheck {
            name_available: false,
            reason: Some("AlreadyExists".into()),
            message: None,
        };
        let v = serde_json::to_value(&check).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"nameAvailable": false, "reason": "AlreadyExists"})
        );
        // A created registry is the registry plus its owner, flat.
        let created: CreatedRegistry = serde_json::from_value(serde_json::json!({
            "name": "teamone", "sku": "premium", "owner": "owner"
        }))
        .unwrap();
        assert_eq!(created.registry.name, "teamone");
        assert!(created.registry.replicas.is_empty());
        assert!(created.owner_password.is_none());
        // Requests refuse fields they do not know (a typo is an error).
        assert!(
            serde_json::from_value::<RegistryChange>(serde_json::json!({"skew": "x"})).is_err()
        );
    }
}

/// One figure of `GET /registries/{name}/usage`, in the cloud CLI's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageItem {
    pub name: String,
    pub limit: u64,
    #[serde(rename = "currentValue")]
    pub current_value: u64,
    pub unit: String,
}

/// `wharf registry show-usage`: the cloud CLI's `value[]`, then what
/// Wharf meters besides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub value: Vec<UsageItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageUsage>,
    /// Only when asked for (`?repositories=true`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering: Option<Metering>,
}

/// A registry's stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageUsage {
    /// Deduplicated: each blob once (what the limit counts).
    pub bytes: u64,
    /// Logical: each repository's blobs, shared ones once per repository.
    pub logical_bytes: u64,
    pub blobs: u64,
    /// The limit in force (the registry's own, or its tier's); absent:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// What the tier includes.
    pub included_bytes: u64,
}

/// What one repository stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryUsage {
    pub name: String,
    /// Every blob it links.
    pub logical_bytes: u64,
    /// Blobs no other repository of the registry links: what deleting it
    /// alone gives back.
    pub unique_bytes: u64,
    pub blobs: u64,
}

/// GiB-days and operations over one billing period (a UTC month).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metering {
    /// `YYYY-MM`.
    pub period: String,
    pub gib_days: f64,
    /// Requests served in the period, by kind (read, write, delete,
    /// referrers, token).
    pub operations: std::collections::BTreeMap<String, u64>,
    pub days: Vec<MeteredDay>,
}

/// One UTC day of a billing period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeteredDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub gib_days: f64,
    pub byte_seconds: u64,
    pub operations: std::collections::BTreeMap<String, u64>,
}

/// `GET /registries/{name}/network-rules` (and the answer to changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRuleSet {
    /// `Allow` or `Deny`.
    #[serde(rename = "defaultAction")]
    pub default_action: String,
    #[serde(rename = "ipRules")]
    pub ip_rules: Vec<String>,
}

/// `POST` / `DELETE /registries/{name}/network-rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRule {
    pub ip_address: String,
}
