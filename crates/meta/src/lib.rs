//! The metadata state machine of a Wharf registry.
//!
//! Commands are applied deterministically (time and region come inside the
//! command, never from the clock), each in one RocksDB write batch together
//! with the consensus layer's applied-state record, so a crash leaves either
//! all or none of an entry's effects. Queries read the same column families.

mod churn;
pub mod codec;
mod command;
mod command_v01;
mod error;
mod gc;
mod holders;
mod identity;
mod identity_store;
mod keys;
mod legacy;
mod lifecycle;
mod locks;
mod read_locks;
mod records;
mod repo;
mod requests;
mod roles;
mod scrub;
mod snapshot;
mod store;
mod stored_tasks;
mod tasks;
mod tenancy;
mod tiers;
mod usage;
mod webhooks;

/// The registry of hosts that name none, and the one release 0.1 data is
/// migrated into.
pub const DEFAULT_REGISTRY: &str = "default";

pub use command::{BlobRef, Command, Envelope, Origin, PutManifest, Response, COMMAND_VERSION};
pub use command_v01::{CommandV01, PutManifestV01};
pub use error::{ApplyError, StoreError};
pub use gc::{FreedBlob, GcCommand, GcRun, LinkRecord, RegionSweeps, SweepRecord};
pub use identity::{
    AccessSettings, AdminChange, AdminRecord, IdentityCommand, PrincipalChange, PrincipalKind,
    PrincipalRecord, Role, RoleAssignment, ScopeMapRecord, ScopeRule, SigningKeyRecord,
    TokenChange, TokenRecord,
};
pub use lifecycle::{
    BinEntry, DayPolicy, DeletedTag, KeepRule, LifecycleCommand, Policies, PolicyKind, Pull,
    TagExpiry, DAY_MS,
};
pub use locks::{AttributeChange, Attributes, LockTarget};
pub use records::{BlobRecord, ManifestRecord, ReferrerRecord, RepoRecord, TagRecord};
pub use repo::Registry;
pub use requests::{REQUEST_ID_MAX_BYTES, REQUEST_ID_TTL_MS};
pub use roles::{RoleCommand, RoleLease};
pub use scrub::{CorruptCopy, RegionScrub, ScrubCommand, MISSING as SCRUB_MISSING};
pub use snapshot::is_release_0_1_snapshot;
pub use store::{ManifestSummary, MetaStore};
pub use stored_tasks::{
    SecretRecord, TaskChange, TaskCommand, TaskRecord, TimerRecord, SECRETS_MAX, TIMERS_MAX,
};
pub use tasks::{
    run_id, run_number, BuiltImage, ImageRef, RunArtifacts, RunCommand, RunRecord, RunSpec,
    RunStatus, StepRecord, StepStatus, MAX_ATTEMPTS_DEFAULT, RENEWED_CANCELED,
};
pub use tenancy::{NetworkRules, RegistryCommand, RegistryRecord, Sku};
pub use tiers::{TierLimits, TierTable, TierUsage};
pub use usage::{
    DayOperations, OperationCount, OperationKind, RegistryStorage, RepoStorage, UsageCommand,
};
pub use webhooks::{
    scope_matches, Attempt, AttemptReport, Delivery, DeliveryState, Event, EventFormat,
    EventTarget, ImageWait, Outcome, WebhookAction, WebhookAttempts, WebhookChange, WebhookCommand,
    WebhookRecord, ATTEMPTS_KEPT, HELM_CONFIG_MEDIA_TYPE,
};
