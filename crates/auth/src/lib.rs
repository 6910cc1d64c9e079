//! Authentication and authorization for Wharf.
//!
//! Identities live in the replicated metadata (`wharf-meta`), so every
//! node in every region authenticates locally. This crate holds the logic
//! around them: secret hashing, sealing with the cluster key, signed
//! access tokens, the role and scope-map policy, and the login limiter.

mod authority;
mod error;
mod limiter;
mod policy;
mod private_file;
mod seal;
pub mod secret;
mod token;

pub use authority::{AuthConfig, Authority};
pub use error::AuthError;
pub use limiter::{LoginLimiter, LoginLimits};
pub use policy::{scope_matches, validate_pattern, Action, ScopeRequest, Subject, ADMIN_NAME};
pub use private_file::write_private;
pub use seal::ClusterKey;
pub use token::{Claims, Grant, TokenUse};
