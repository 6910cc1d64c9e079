use wharf_blobstore::BlobError;
use wharf_consensus::ConsensusError;
use wharf_meta::{ApplyError, StoreError};
use wharf_oci::{DigestError, ErrorCode, ManifestError, NameError};

/// Why a registry operation did not happen. The HTTP layer maps each to
/// the spec's error code and status; `Spec` is an answer the service
/// decided itself.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A deterministic refusal of the state machine.
    #[error(transparent)]
    Refused(#[from] ApplyError),
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("{message}")]
    Spec {
        code: ErrorCode,
        message: String,
        /// Overrides the code's usual status.
        status: Option<u16>,
    },
}

impl ServiceError {
    pub fn spec(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError::Spec {
            code,
            message: message.into(),
            status: None,
        }
    }

    /// Whether the registry's storage limit refused the write.
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(self, ServiceError::Refused(ApplyError::QuotaExceeded(_)))
    }

    /// Whether the state machine refused because a blob is not linked
    /// (the manifest named a blob its push has not registered yet).
    pub fn is_blob_unknown(&self) -> bool {
        matches!(
            self,
            ServiceError::Refused(ApplyError::ManifestBlobUnknown(_))
                | ServiceError::Refused(ApplyError::ManifestChildUnknown(_))
        )
    }
}
