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
    /// Blobs this region should hold but does not and another region
    /// holds, most urgent first (fewest holders, then newest).
    fn missing(&self, limit: usize) -> Vec<(Digest, u64)>;
    /// Record that this region now holds verified copies of `blobs`
    /// (digest, size), in one write.
    fn report(&self, blobs: Vec<(Digest, u64)>) -> impl Future<Output = Result<(), String>> + Send;
}
