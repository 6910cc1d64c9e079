//! Pure OCI types shared by every Wharf crate: digests, repository names and
//! references, media types, manifest parsing and validation, and the error
//! codes of the OCI Distribution Spec v1.1. Nothing here does I/O.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{
    split_image, validate_repository, validate_tag, NameError, Reference, RegistryName,
};
