//! The console's files, compiled into the binary.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// A strong validator (the body's hash), so a browser revalidates a
    /// cached file with one small request and an upgraded node's new
    /// files are fetched at once.
    pub etag: String,
}

/// Headers every console response carries: scripts and styles only from
/// this origin (no inline script can run, whatever a repository name
/// holds), never framed (no clickjacking of the delete button), no MIME
/// sniffing, no referrer leaking a repository's name elsewhere.
pub const PAGE_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "logo.svg",
        "image/svg+xml",
        include_bytes!("../assets/logo.svg"),
    ),
];

fn all() -> &'static [(&'static str, Asset)] {
    static ALL: OnceLock<Vec<(&'static str, Asset)>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, content_type, body)| {
                let etag = format!("\"{}\"", hex::encode(&Sha256::digest(body)[..12]));
                (
                    *name,
                    Asset {
                        content_type,
                        body,
                        etag,
                    },
                )
            })
            .collect()
    })
}

/// The file `name` (`index.html`, `app.js`, …), if the console has it.
pub fn asset(name: &str) -> Option<&'static Asset> {
    all().iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_nothing_else_is() {
        let page = asset("index.html").expect("the page");
        assert!(page.content_type.starts_with("text/html"));
        let html = std::str::from_utf8(page.body).unwrap();
        // The page loads only its own files: the CSP forbids the rest.
        assert!(html.contains("/console/assets/app.js"));
        assert!(!html.contains("<script>"), "no inline script (CSP)");
        assert!(asset("app.js").unwrap().etag.starts_with('"'));
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }
}
