//! What the mover needs to know about the cluster, supplied by the node
//! (from the replicated blob index and the Raft membership).

use std::future::Future;

use wharf_oci::Digest;

/// A node holding a verified copy of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub region: String,
    /// host:port of its peer gRPC server.
    pub addr: String,
}

pub trait Directory: Send + Sync + 'static {
    /// Nodes of other regions holding `digest`.
    fn holders(&self, digest: &Digest) -> Vec<Holder>;
    /// Blobs this region should hold but does not, newest first.
    fn missing(&self, limit: usize) -> Vec<(Digest, u64)>;
    /// Record that this region now holds a verified copy.
    fn report(&self, digest: Digest, size: u64) -> impl Future<Output = Result<(), String>> + Send;
}
