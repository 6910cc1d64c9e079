//! Content-addressed blob storage for one region, on the local filesystem.
//!
//! A blob becomes visible only after its bytes were hashed, verified against
//! the digest the client claimed, fsynced, and renamed into place; nothing
//! partial is ever served. Upload sessions live on disk (one directory each)
//! so a restart resumes them, and are swept when idle for too long.

mod error;
mod layout;
mod pending;
mod session;
mod store;
mod writer;

pub use error::BlobError;
pub use session::SessionInfo;
pub use store::{BlobStore, FileId, Removal, StoreLimits};
