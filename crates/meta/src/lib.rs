//! The metadata state machine of a Wharf registry.
//!
//! Commands are applied deterministically (time and region come inside the
//! command, never from the clock), each in one RocksDB write batch together
//! with the consensus layer's applied-state record, so a crash leaves either
//! all or none of an entry's effects. Queries read the same column families.

mod command;
mod error;
mod identity;
mod identity_store;
mod keys;
mod records;
mod snapshot;
mod store;

pub use command::{BlobRef, Command, PutManifest, Response};
pub use error::{ApplyError, StoreError};
pub use identity::{
    AccessSettings, AdminRecord, IdentityCommand, PrincipalKind, PrincipalRecord, Role,
    RoleAssignment, ScopeMapRecord, ScopeRule, SigningKeyRecord, TokenRecord,
};
pub use records::{BlobRecord, ManifestRecord, ReferrerRecord, RepoRecord, TagRecord};
pub use store::{ManifestSummary, MetaStore};
