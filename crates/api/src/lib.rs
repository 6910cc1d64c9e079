//! The management API's wire types (`/api/v1`), one definition for the
//! server that answers and the CLI that asks (and, later, the console).
//! Adding a field: give it `#[serde(default)]`, so an older CLI or server
//! keeps understanding the other side.

mod registries;
mod repositories;

pub use registries::{
    CreatedRegistry, Deleted, Location, NameCheck, NewRegistry, Registry, RegistryChange, Replica,
};
pub use repositories::{Manifest, Region, Removed, Repository, Tag};
