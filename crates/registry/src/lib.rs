//! The registry service layer: what a push, a pull, a delete or a lookup
//! means, decided in one place above consensus and the blob store. HTTP
//! handlers parse a request, call a [`Handle`] of the request's registry
//! and turn its answer (or its [`ServiceError`], which names the spec's
//! error code) into a response; they build no command themselves. This is
//! where locks, quotas, rate limits and events hook in.

mod blobs;
mod copies;
mod error;
mod identities;
mod lifecycle;
mod locks;
mod operations;
mod pulls;
mod push;
mod service;
mod tenancy;
mod webhooks;

pub use copies::AckPolicy;
pub use error::ServiceError;
pub use identities::{check_admin_slot, kind_name, role_name, SIGNING_KEYS_KEPT};
pub use lifecycle::days_allowed;
pub use operations::OperationLog;
pub use pulls::PullLog;
pub use push::{ManifestPush, Pushed};
pub use service::{envelope, new_request_id, split_pending_key, Handle, Service};
pub use tenancy::{parse_cidr, parse_sku, NewRegistry};
pub use webhooks::{NewWebhook, WebhookUpdate};

pub type ServiceResult<T> = Result<T, ServiceError>;
