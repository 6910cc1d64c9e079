//! The `wharf` admin verbs, `wharf login` and `wharf drill`: clients of
//! a cluster's management and OCI APIs. The node's binary parses them
//! (its `main.rs`) and calls their `run`; nothing here depends on the node.

mod error;

pub mod client;
pub mod drill;
pub mod identity;
pub mod login;
pub mod output;
pub mod registry;
pub mod replication;
pub mod repository;

pub use error::CliError;

/// An HTTP client that also trusts `ca_file` (a cluster with its own CA).
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, CliError> {
    let mut b = reqwest::Client::builder();
    if let Some(p) = ca_file {
        let pem =
            std::fs::read(p).map_err(|e| CliError::Config(format!("tls: {}: {e}", p.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| CliError::Config(format!("tls: {}: {e}", p.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| CliError::Config(format!("tls: HTTP client: {e}")))
}
