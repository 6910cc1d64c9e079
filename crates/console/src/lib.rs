//! The web console: its pages, served from the binary, and the rules of
//! its session (the cookie that carries it, the CSRF token that guards
//! every change). The pages are plain HTML, CSS and JavaScript that call
//! the management API (`/api/v1`) as the signed-in user; nothing is
//! fetched from outside at run time (no CDN, no npm registry here).
//!
//! The node owns the HTTP side (routes, login, verifying the session's
//! token); this crate holds what needs no node: the bytes, the headers a
//! page is served with, and the pure session helpers.

mod assets;
mod session;

pub use assets::{asset, Asset, PAGE_HEADERS};
pub use session::{
    clear_cookie, cookie_value, csrf_matches, csrf_token, session_cookie, CSRF_HEADER,
    SESSION_COOKIE,
};
