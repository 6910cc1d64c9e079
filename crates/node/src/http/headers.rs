//! Header names and values shared by the route families.

use axum::http::{HeaderMap, HeaderName};

// Names set on every pull are `HeaderName`s, parsed once: a `&str` name
// is parsed and hashed again by every insert.
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const API_VERSION_VALUE: &str = "registry/2.0";
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: &str = "docker-upload-uuid";
pub const OCI_SUBJECT: &str = "oci-subject";
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// The `Range` header of upload answers: bytes received so far, as
/// `0-<last>` (the reference registry answers `0-0` for an empty upload).
pub fn range_value(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The start offset of an upload chunk's `Content-Range: <start>-<end>`
/// (a leading `bytes ` is tolerated). `Err` when present but malformed.
pub fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let Some(v) = get(headers, "content-range") else {
        return Ok(None);
    };
    let v = v
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let (start, end) = v.split_once('-').ok_or(())?;
    let start: u64 = start.trim().parse().map_err(|_| ())?;
    let end: u64 = end.trim().parse().map_err(|_| ())?;
    if end < start {
        return Err(());
    }
    Ok(Some(start))
}

/// A single byte range of a GET, resolved against the blob's size.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// Inclusive start and end.
    Part(u64, u64),
    Unsatisfiable,
}

pub fn byte_range(headers: &HeaderMap, size: u64) -> ByteRange {
    let Some(v) = get(headers, "range") else {
        return ByteRange::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole; // unknown units are ignored, per RFC 9110
    };
    if spec.contains(',') {
        return ByteRange::Whole; // multipart ranges: serve the whole blob
    }
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) | Err(_) => None,
            Ok(suffix) => Some((size.saturating_sub(suffix), size.saturating_sub(1))),
        }
    } else {
        match (a.parse::<u64>(), b) {
            (Ok(start), "") => Some((start, size.saturating_sub(1))),
            (Ok(start), b) => b
                .parse::<u64>()
                .ok()
                .map(|end| (start, end.min(size.saturating_sub(1)))),
            _ => None,
        }
    };
    match range {
        Some((start, end)) if start <= end && start < size => ByteRange::Part(start, end),
        _ => ByteRange::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, v.parse().unwrap());
        m
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(byte_range(&HeaderMap::new(), 10), ByteRange::Whole);
        assert_eq!(
            byte_range(&h("range", "bytes=0-3"), 10),
            ByteRange::Part(0, 3)
        );
        assert_eq!(
            byte_range(&h("range", "bytes=5-"), 10),
            ByteRange::Part(5, 9)
        );
        assert_eq!(
            byte_range(&h("range", "bytes=-4"), 10),
            ByteRange::Part(6, 9)
        );
        assert_eq!(
            byte_range(&h("range", "bytes=8-100"), 10),
            ByteRange::Part(8, 9)
        );
        assert_eq!(
            byte_range(&h("range", "bytes=10-"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            byte_range(&h("range", "bytes=4-2"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            byte_range(&h("range", "bytes=x-"), 10),
            ByteRange::Unsatisfiable
        );
    }

    #[test]
    fn content_range_of_chunks() {
        assert_eq!(content_range_start(&HeaderMap::new()), Ok(None));
        assert_eq!(
            content_range_start(&h("content-range", "0-99")),
            Ok(Some(0))
        );
        assert_eq!(
            content_range_start(&h("content-range", "bytes 100-199")),
            Ok(Some(100))
        );
        assert!(content_range_start(&h("content-range", "9-1")).is_err());
        assert!(content_range_start(&h("content-range", "abc")).is_err());
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(10), "0-9");
    }
}
