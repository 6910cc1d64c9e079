use wharf_oci::DigestError;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("upload session unknown or expired")]
    UploadUnknown,
    #[error("digest mismatch: client claimed {claimed}, content hashes to {actual}")]
    DigestMismatch { claimed: String, actual: String },
    #[error("invalid digest: {0}")]
    BadDigest(#[from] DigestError),
    #[error("chunk starts at {got}, but the upload is at offset {expected}")]
    RangeInvalid { expected: u64, got: u64 },
    #[error("body length {got} does not match Content-Length {expected}")]
    SizeInvalid { expected: u64, got: u64 },
    #[error("too many upload sessions in progress (limit {0})")]
    TooManySessions(usize),
    #[error("client sent no data for {0} s")]
    Stalled(u64),
    #[error("reading the request body failed: {0}")]
    Client(String),
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    #[error("blob store configuration: {0}")]
    Config(String),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
}
