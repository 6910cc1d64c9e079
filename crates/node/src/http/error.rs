//! Errors on the wire: the OCI Distribution Spec's JSON error body
//! (`{"errors":[{"code","message","detail"}]}`) with the status its code
//! calls for. Every failure inside the node maps to one of these.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wharf_blobstore::BlobError;
use wharf_consensus::ConsensusError;
use wharf_meta::{ApplyError, StoreError};
use wharf_oci::{DigestError, ErrorCode, ManifestError, NameError};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides the code's usual status where the spec asks for another.
    pub status: Option<StatusCode>,
    /// Extra header (e.g. Range on 416 answers).
    pub header: Option<(&'static str, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            status: None,
            header: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = Some(status);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.header = Some((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"errors": [{"code": self.code.as_str(), "message": self.message, "detail": null}]});
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some((name, value)) = self.header {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        match e {
            NameError::Repository(_) => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
            NameError::Tag(_) => ApiError::new(ErrorCode::ManifestInvalid, e.to_string()),
            NameError::Digest(_) => ApiError::new(ErrorCode::DigestInvalid, e.to_string()),
            NameError::Registry(_) => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
        }
    }
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> ApiError {
        ApiError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        match e {
            ManifestError::TooLarge(_) => ApiError::new(ErrorCode::SizeInvalid, e.to_string())
                .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            _ => ApiError::new(ErrorCode::ManifestInvalid, e.to_string()),
        }
    }
}

impl From<ConsensusError> for ApiError {
    fn from(e: ConsensusError) -> ApiError {
        match e {
            ConsensusError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
            _ => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        let code = match &e {
            ApplyError::ManifestBlobUnknown(_) | ApplyError::ManifestChildUnknown(_) => {
                ErrorCode::ManifestBlobUnknown
            }
            ApplyError::ManifestUnknown | ApplyError::TagUnknown => ErrorCode::ManifestUnknown,
            ApplyError::BlobUnknown => ErrorCode::BlobUnknown,
            ApplyError::NameUnknown => ErrorCode::NameUnknown,
            ApplyError::IdentityUnknown(_)
            | ApplyError::RegistryUnknown(_)
            | ApplyError::WebhookUnknown(_)
            | ApplyError::EventUnknown(_)
            | ApplyError::RunUnknown(_)
            | ApplyError::TaskUnknown(_) => {
                return ApiError::new(ErrorCode::NameUnknown, e.to_string())
                    .with_status(StatusCode::NOT_FOUND)
            }
            ApplyError::RegistryNameInvalid(_) => ErrorCode::NameInvalid,
            ApplyError::DefaultRegistry
            | ApplyError::Locked(_)
            | ApplyError::TierLimit(_)
            | ApplyError::QuotaExceeded(_) => ErrorCode::Denied,
            ApplyError::IdentityExists(_)
            | ApplyError::ScopeMapInUse(..)
            | ApplyError::RegistryExists(_)
            | ApplyError::WebhookExists(_)
            | ApplyError::RunNotYours(_)
            | ApplyError::TaskExists(_) => {
                return ApiError::new(ErrorCode::Denied, e.to_string())
                    .with_status(StatusCode::CONFLICT)
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<wharf_registry::ServiceError> for ApiError {
    fn from(e: wharf_registry::ServiceError) -> ApiError {
        use wharf_registry::ServiceError as S;
        match e {
            S::Refused(e) => e.into(),
            S::Consensus(e) => e.into(),
            S::Store(e) => e.into(),
            S::Blob(e) => e.into(),
            S::Manifest(e) => e.into(),
            S::Name(e) => e.into(),
            S::Digest(e) => e.into(),
            S::Spec {
                code,
                message,
                status,
            } => {
                let err = ApiError::new(code, message);
                match status.and_then(|s| StatusCode::from_u16(s).ok()) {
                    Some(s) => err.with_status(s),
                    None => err,
                }
            }
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        match &e {
            BlobError::UploadUnknown => ApiError::new(ErrorCode::BlobUploadUnknown, e.to_string()),
            BlobError::DigestMismatch { .. } | BlobError::BadDigest(_) => {
                ApiError::new(ErrorCode::DigestInvalid, e.to_string())
            }
            BlobError::RangeInvalid { expected, .. } => {
                ApiError::new(ErrorCode::RangeInvalid, e.to_string())
                    .with_header("range", crate::http::headers::range_value(*expected))
            }
            BlobError::SizeInvalid { .. } => ApiError::new(ErrorCode::SizeInvalid, e.to_string()),
            BlobError::TooManySessions(_) => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            }
            BlobError::Stalled(_) | BlobError::Client(_) => {
                ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())
            }
            BlobError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => ApiError::new(
                ErrorCode::Unavailable,
                "the blob store is out of disk space",
            )
            .with_status(StatusCode::INSUFFICIENT_STORAGE),
            // The object store failed even after the client's retries:
            // the client may retry; nothing was stored.
            BlobError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
            BlobError::Io(_) | BlobError::Config(_) => ApiError::internal(e),
        }
    }
}
