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
    /// An admin verb failed (its message says why).
    #[error(transparent)]
    Cli(#[from] wharf_cli::CliError),
}

impl From<wharf_config::ConfigError> for NodeError {
    fn from(e: wharf_config::ConfigError) -> Self {
        NodeError::Config(e.0)
    }
}
