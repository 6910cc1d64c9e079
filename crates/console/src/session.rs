//! A console session is a signed token of use `session` in an `HttpOnly`
//! cookie. Because a browser sends cookies with requests other sites
//! cause, every change must also carry a CSRF token: one only a page of
//! this origin can know. It is derived from the session token (which
//! scripts cannot read), handed to the page by `/console/api/session`
//! (which another origin cannot read), and sent back in `x-wharf-csrf`.
//! `SameSite=Strict` is the second fence, not the only one.

use sha2::{Digest, Sha256};

/// The cookie that carries the session token.
pub const SESSION_COOKIE: &str = "wharf_session";
/// The header that carries the CSRF token on every change.
pub const CSRF_HEADER: &str = "x-wharf-csrf";

/// The CSRF token bound to `session` (hex, 32 digits).
pub fn csrf_token(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"wharf console csrf\0");
    h.update(session.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether `presented` is `session`'s CSRF token, compared in constant time.
pub fn csrf_matches(session: &str, presented: &str) -> bool {
    let want = csrf_token(session);
    want.len() == presented.len()
        && want
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `Set-Cookie` for a new session lasting `max_age_s`; `secure` when the
/// node serves TLS (a cookie marked Secure is not sent over plain HTTP).
pub fn session_cookie(token: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    session_cookie("", 0, secure)
}

/// The value of cookie `name` in a `Cookie` header, if present and not
/// empty.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let a = csrf_token("header.claims.sig-a");
        assert_eq!(a.len(), 32);
        assert!(csrf_matches("header.claims.sig-a", &a));
        assert!(!csrf_matches("header.claims.sig-b", &a));
        assert!(!csrf_matches("header.claims.sig-a", &a[..31]));
        assert!(!csrf_matches("header.claims.sig-a", ""));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let plain = session_cookie("t", 60, false);
        assert!(plain.starts_with("wharf_session=t;"));
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(session_cookie("t", 60, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn the_session_is_found_among_other_cookies() {
        let h = "theme=dark; wharf_session=abc.def.ghi ; other=1";
        assert_eq!(cookie_value(h, SESSION_COOKIE), Some("abc.def.ghi"));
        assert_eq!(cookie_value("wharf_session=", SESSION_COOKIE), None);
        assert_eq!(cookie_value("xwharf_session=a", SESSION_COOKIE), None);
    }
}
