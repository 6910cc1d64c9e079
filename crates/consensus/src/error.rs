use wharf_meta::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// No leader reachable, or no quorum within the timeout: retryable.
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
