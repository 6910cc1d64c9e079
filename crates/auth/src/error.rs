use wharf_meta::StoreError;

/// Why a request is not authenticated or a secret cannot be handled.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown name or wrong secret: deliberately one answer for both.
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0} is disabled")]
    Disabled(String),
    #[error("{0} has expired")]
    Expired(String),
    #[error("too many failed logins; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("cluster key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
