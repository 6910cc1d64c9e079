//! The `wharf` admin verbs, `wharf login` and `wharf drill`: clients of
//! a cluster's management and OCI APIs. The node's binary parses them
//! (its `main.rs`) and calls their `run`; nothing here depends on the node.

mod error;

pub mod bench;
pub mod build;
pub mod client;
pub mod drill;
pub mod gc;
pub mod identity;
pub mod lifecycle;
pub mod login;
pub mod network;
pub mod output;
pub mod registry;
pub mod replication;
pub mod repository;
pub mod run;
pub mod task;
pub mod webhook;

pub use error::CliError;

/// An HTTP client that also trusts `ca_file` (a cluster with its own CA).
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, CliError> {
    wharf_client::http_client(ca_file).map_err(|e| CliError::Config(e.to_string()))
}
