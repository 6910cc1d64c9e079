//! The management API's wire types (`/api/v1`), one definition for the
//! server that answers and the CLI that asks (and, later, the console).
//! Adding a field: give it `#[serde(default)]`, so an older CLI or server
//! keeps understanding the other side.

/// The header naming the registry a management request addresses (the
/// CLI's `--registry N`), where its host does not.
pub const REGISTRY_HEADER: &str = "wharf-registry";

mod cluster;
mod gc;
mod identities;
mod registries;
mod repositories;
mod runs;
mod tasks;
mod webhooks;

pub use cluster::{FenceRequest, FenceState, MemberChanged, NewMember};
pub use gc::{
    CorruptFinding, GcRegionFreed, GcRegionStatus, GcReport, GcRequest, GcRunSummary, GcStatus,
    ScrubRegionStatus, ScrubStatus,
};
pub use identities::{
    Access, Credential, CredentialChange, NewPrincipal, NewToken, Principal, PrincipalChange,
    PrincipalSecret, RoleChange, RoleChanged, RoleGrant, ScopeMap, ScopeRule, SigningKey, Token,
    TokenChange, TokenSecrets,
};
pub use registries::{
    CreatedRegistry, Deleted, IpRule, Location, MeteredDay, Metering, NameCheck, NetworkRuleSet,
    NewRegistry, Registry, RegistryChange, Replica, RepositoryUsage, StorageUsage, Usage,
    UsageItem,
};
pub use repositories::{
    Attributes, AttributesChange, DayPolicy, DeletedManifest, ImageChild, ImageDetail, KeepRule,
    Layer, Manifest, Policies, PolicyChange, Region, Removed, Repository, RestoreRequest, Restored,
    Tag,
};
pub use runs::{BuiltImage, ImageRef, NewRun, QuickBuild, Run, RunLimits, RunStep};
pub use tasks::{NewTask, NewTimer, Secret, SecretValue, Task, TaskUpdate, Timer, TimerUpdate};
pub use webhooks::{
    EventAttempt, NewWebhook, Redeliver, Webhook, WebhookChange, WebhookConfig, WebhookEvent,
};

/// A size as operators write it on the command line or in a request:
/// `20GiB`, `500 MB`, or a number of bytes. `None` when it is not one.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse::<u64>()
        .ok()
        .or_else(|| s.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()))
}
