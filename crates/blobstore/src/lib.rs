//! Content-addressed blob storage for one region, behind a trait with two
//! backends: the local filesystem and an S3-compatible object store.
//!
//! Whatever the backend, a blob becomes visible only after its bytes were
//! hashed and verified against the digest the client claimed, and durably
//! stored; nothing partial is ever served. Upload sessions live in the
//! backend (a directory each on disk, objects in the bucket), so a restart
//! resumes them and, on an object store, any node of the region can
//! continue one; idle sessions are swept.

mod backend;
mod direct;
mod error;
mod fs;
mod layout;
mod pending;
mod s3;
mod session;
mod store;
mod sums;
mod writer;

pub use backend::{Backend, ByteStream, CopyId, Opened, ReadStream, Removal, READ_CHUNK_BYTES};
pub use error::BlobError;
pub use fs::FsBackend;
pub use s3::{S3Backend, S3Settings};
pub use session::SessionInfo;
pub use store::{BlobStore, StoreLimits};
pub use sums::{BlockSums, SumsBuilder};

/// Where the filesystem backend under `root` keeps `digest` (for tests and
/// tools that inspect a store on disk).
pub fn fs_blob_path(root: &std::path::Path, digest: &wharf_oci::Digest) -> std::path::PathBuf {
    layout::blob_path(root, digest)
}
