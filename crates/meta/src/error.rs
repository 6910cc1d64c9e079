use serde::{Deserialize, Serialize};

/// Deterministic outcomes of applying a command that refuse it. Every
/// replica reaches the same verdict, so these are answers, not failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("blob {0} is not known in this repository")]
    ManifestBlobUnknown(String),
    #[error("child manifest {0} is not known in this repository")]
    ManifestChildUnknown(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("tag unknown")]
    TagUnknown,
    #[error("blob unknown")]
    BlobUnknown,
    #[error("repository unknown")]
    NameUnknown,
    #[error("{0} already exists")]
    IdentityExists(String),
    #[error("{0} does not exist")]
    IdentityUnknown(String),
    #[error("scope map {0} is used by token {1}")]
    ScopeMapInUse(String, String),
    #[error("registry {0} already exists")]
    RegistryExists(String),
    #[error("registry {0} does not exist")]
    RegistryUnknown(String),
    #[error("the default registry cannot be deleted")]
    DefaultRegistry,
    #[error("invalid registry name {0:?}: 5 to 50 letters and digits")]
    RegistryNameInvalid(String),
    /// A lock refused the write; names the lock ("tag app:v1 has
    /// write-enabled false").
    #[error("locked: {0}")]
    Locked(String),
    #[error("webhook {0} already exists")]
    WebhookExists(String),
    #[error("webhook {0} does not exist")]
    WebhookUnknown(String),
    #[error("event {0} is not in the delivery log")]
    EventUnknown(String),
    /// A tier's limit refused the command; says which and the usage.
    #[error("{0}")]
    TierLimit(String),
    /// The registry's storage limit refused a push; says the limit, the
    /// usage and what the push adds.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("run {0} does not exist")]
    RunUnknown(String),
    /// An agent reported on a run it no longer holds (its lease ran out).
    #[error("run {0} is not this agent's any more")]
    RunNotYours(String),
    #[error("{0}")]
    TaskUnknown(String),
    #[error("{0}")]
    TaskExists(String),
}

/// Failures of the local store itself (disk, corruption).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in {cf}: {detail}")]
    Corrupt { cf: &'static str, detail: String },
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
}
