/// Failures that stop a `wharf` command.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Startup(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Consensus(#[from] wharf_consensus::ConsensusError),
    #[error(transparent)]
    Blob(#[from] wharf_blobstore::BlobError),
    /// A management API call failed; the message is the server's.
    #[error("{0}")]
    Api(String),
}
