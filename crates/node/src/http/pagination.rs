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
    parse_up_to(uri, PAGE_MAX)
}

/// `n` and `last` from the query, `n` at most (and by default) `max`.
pub fn parse_up_to(uri: &Uri, max: usize) -> ApiResult<Page> {
    let raw: Raw = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::PaginationInvalid, e.to_string()))?;
    let n = match raw.n {
        None => max,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::PaginationInvalid,
                    format!("n must be a non-negative integer, got {s:?}"),
                )
            })?
            .min(max),
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
    let link = next_link(path, page.n, &last);
    (items, Some(link))
}

/// The `Link` header value of the page of `n` after `last`.
pub fn next_link(path: &str, n: usize, last: &str) -> String {
    let query = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.to_string())])
        .unwrap_or_default();
    format!("<{path}?{query}>; rel=\"next\"")
}
