//! Request ids: every write carries one, so the state machine applies it
//! once however often it is sent (a retry after a leader failover, or a
//! client's own retry). A client names its write with an `Idempotency-Key`
//! header (the IETF httpapi draft's name); the id is then the caller's
//! name with that key, so two callers cannot collide. Without the header
//! the service layer draws a random id for the write
//! (`wharf_registry::new_request_id`), which still makes the node's own
//! retries safe.

use axum::http::{HeaderMap, HeaderName};
use wharf_oci::ErrorCode;

use crate::http::error::{ApiError, ApiResult};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header's name parsed once: looking a header up by `&str` parses
/// and hashes the name on every request.
const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY);
/// Longest key accepted from a client (the id adds the caller's name).
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 64;

/// The id of a write the caller `subject` names with `headers`' key, if any.
pub fn from_headers(headers: &HeaderMap, subject: &str) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = v.to_str().ok().filter(|k| {
        !k.is_empty()
            && k.len() <= IDEMPOTENCY_KEY_MAX_BYTES
            && k.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(k) => Ok(Some(format!("k:{subject}:{k}"))),
        None => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "{IDEMPOTENCY_KEY} must be 1 to {IDEMPOTENCY_KEY_MAX_BYTES} visible ASCII characters"
            ),
        )
        .with_status(axum::http::StatusCode::BAD_REQUEST)),
    }
}

/// Longest header value copied into an event.
const ORIGIN_FIELD_MAX_BYTES: usize = 256;

/// The request as webhook events report it: its `X-Request-Id` (empty:
/// the write's own id is used), host, method and user agent, each bounded.
pub fn origin<B>(req: &axum::http::Request<B>) -> wharf_meta::Origin {
    origin_of(req.method(), req.headers())
}

/// `origin` from a request's method and headers.
pub fn origin_of(method: &axum::http::Method, headers: &HeaderMap) -> wharf_meta::Origin {
    let header = |name: &str| {
        let v = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut end = v.len().min(ORIGIN_FIELD_MAX_BYTES);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v[..end].to_string()
    };
    wharf_meta::Origin {
        id: header("x-request-id"),
        host: header("host"),
        method: method.as_str().to_string(),
        useragent: header("user-agent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_by_caller_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h, "alice").unwrap(), None);
        h.insert(IDEMPOTENCY_KEY, "push-42".parse().unwrap());
        assert_eq!(
            from_headers(&h, "alice").unwrap().as_deref(),
            Some("k:alice:push-42")
        );
        assert_ne!(
            from_headers(&h, "bob").unwrap(),
            from_headers(&h, "alice").unwrap()
        );
        h.insert(IDEMPOTENCY_KEY, "x".repeat(65).parse().unwrap());
        assert!(from_headers(&h, "alice").is_err());
        h.insert(IDEMPOTENCY_KEY, "has space".parse().unwrap());
        assert!(from_headers(&h, "alice").is_err());
    }
}
