/// Why a verb failed, as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags, files or credentials the verb cannot use.
    #[error("configuration: {0}")]
    Config(String),
    /// The cluster refused or could not be reached.
    #[error("{0}")]
    Api(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
