//! `n` / `last` pagination with `Link` headers (spec: "Listing Tags").

use axum::http::Uri;
use serde::Deserialize;
use wharf_oci::ErrorCode;

use crate::http::error::{ApiError, ApiResult};

/// Largest page served, whatever `n` asks for; a bigger listing continues
/// through the `Link` header.
pub const PAGE_MAX: usize = 10_000;

#[derive(Debug, Deserialize, Default)]
struct Raw {
    n: Option<String>,
    last: Option<String>,
}

#[derive(Debug)]
pub struct Page {
    pub n: usize,
    pub last: Option<String>,
}

pub fn parse(uri: &Uri) -> ApiResult<Page> {
    let raw: Raw = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::PaginationInvalid, e.to_string()))?;
    let n = match raw.n {
        None => PAGE_MAX,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::PaginationInvalid,
                    format!("n must be a non-negative integer, got {s:?}"),
                )
            })?
            .min(PAGE_MAX),
    };
    Ok(Page {
        n,
        last: raw.last.filter(|l| !l.is_empty()),
    })
}

/// Trim `items` (fetched with one extra) to the page and build the `Link`
/// header value naming the next page, if there is one.
pub fn finish(mut items: Vec<String>, page: &Page, path: &str) -> (Vec<String>, Option<String>) {
    if items.len() <= page.n || page.n == 0 {
        items.truncate(page.n);
        return (items, None);
    }
    items.truncate(page.n);
    let last = items.last().cloned().unwrap_or_default();
    let query = serde_urlencoded::to_string([("n", page.n.to_string()), ("last", last)])
        .unwrap_or_default();
    (items, Some(format!("<{path}?{query}>; rel=\"next\"")))
}
