//! Rate limits per registry and per identity, by category, as token
//! buckets with the cloud registry's figures per minute by tier (Premium
//! double), scaled by `rate_limits.scale`.
//!
//! Each node enforces them on the requests it serves, from memory: a
//! region's clients get the tier's rate in that region, and a client
//! spreading requests over R regions gets up to R times it (the error
//! bound; a replicated budget would cost a Raft round trip per request, or
//! per lease of tokens). A restarted node starts with full buckets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_meta::{OperationKind, Sku};
use wharf_oci::ErrorCode;

use crate::http::error::ApiError;
use crate::state::App;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Read,
    Write,
    Delete,
    Referrers,
    Token,
}

impl Category {
    /// The kind usage metering counts it as.
    fn operation(self) -> OperationKind {
        match self {
            Category::Read => OperationKind::Read,
            Category::Write => OperationKind::Write,
            Category::Delete => OperationKind::Delete,
            Category::Referrers => OperationKind::Referrers,
            Category::Token => OperationKind::Token,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Delete => "delete",
            Category::Referrers => "list referrers",
            Category::Token => "token",
        }
    }

    /// (per registry, per identity) per minute on Basic and Standard;
    /// Premium has twice as much. The token endpoint's limit is the
    /// registry's only.
    fn per_minute(self) -> (f64, Option<f64>) {
        match self {
            Category::Read => (10_000.0, Some(5_000.0)),
            Category::Write => (2_000.0, Some(1_000.0)),
            Category::Delete => (1_000.0, Some(500.0)),
            Category::Referrers => (500.0, Some(250.0)),
            Category::Token => (10_000.0, None),
        }
    }

    /// What an OCI request is.
    pub fn of(method: &Method, path: &str) -> Category {
        if path.contains("/referrers/") {
            return Category::Referrers;
        }
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Category::Read,
            Method::DELETE => Category::Delete,
            _ => Category::Write,
        }
    }
}

/// A bucket holding up to a minute's worth of requests, refilled evenly.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_minute: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_minute / 60.0).min(per_minute);
        self.at = now;
    }

    /// How long until one token is there.
    fn wait(&self, per_minute: f64) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing * 60.0 / per_minute.max(f64::MIN_POSITIVE))
    }
}

/// One registry's buckets: the registry's own per category, and each
/// identity's. Looked up by `&str` (no allocation once a bucket exists).
#[derive(Default)]
struct RegistryBuckets {
    whole: [Option<Bucket>; CATEGORIES],
    by_identity: [HashMap<String, Bucket>; CATEGORIES],
}

const CATEGORIES: usize = 5;

/// Identity buckets kept per registry and category before full (idle)
/// ones are dropped.
const BUCKETS_SWEPT_ABOVE: usize = 100_000;

pub struct Limiter {
    enabled: bool,
    scale: f64,
    buckets: Mutex<HashMap<String, RegistryBuckets>>,
}

/// Over the limit: which one, and when to try again.
#[derive(Debug, PartialEq)]
pub struct Throttled {
    pub what: String,
    pub retry_after: Duration,
}

impl Limiter {
    pub fn new(enabled: bool, scale: f64) -> Limiter {
        Limiter {
            enabled,
            scale,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request of `category` from the registry's bucket and the
    /// identity's (`None`: the registry's only), or say which is empty.
    pub fn take(
        &self,
        registry: &str,
        sku: Sku,
        category: Category,
        identity: Option<&str>,
        now: Instant,
    ) -> Result<(), Throttled> {
        if !self.enabled {
            return Ok(());
        }
        let tier = if sku == Sku::Premium { 2.0 } else { 1.0 };
        let (reg_rate, id_rate) = category.per_minute();
        let reg_rate = (reg_rate * tier * self.scale).max(1.0);
        let id_rate = id_rate.map(|r| (r * tier * self.scale).max(1.0));
        let c = category as usize;
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !all.contains_key(registry) {
            all.insert(registry.to_string(), RegistryBuckets::default());
        }
        let Some(mine) = all.get_mut(registry) else {
            return Ok(());
        };
        let fresh = |rate: f64| Bucket {
            tokens: rate,
            at: now,
        };
        let whole = mine.whole[c].get_or_insert_with(|| fresh(reg_rate));
        whole.refill(now, reg_rate);
        let mut refusal: Option<Throttled> = None;
        if whole.tokens < 1.0 {
            refusal = Some(Throttled {
                what: format!(
                    "registry {registry}'s {} limit of {reg_rate:.0} requests a minute",
                    category.as_str()
                ),
                retry_after: whole.wait(reg_rate),
            });
        }
        let per_identity = &mut mine.by_identity[c];
        let mut id = match (identity, id_rate) {
            (Some(name), Some(rate)) => {
                if per_identity.len() > BUCKETS_SWEPT_ABOVE {
                    // Full buckets hold nothing a new one would not.
                    per_identity.retain(|_, b| {
                        b.refill(now, rate);
                        b.tokens < rate
                    });
                }
                if !per_identity.contains_key(name) {
                    per_identity.insert(name.to_string(), fresh(rate));
                }
                per_identity.get_mut(name).map(|b| (name, b, rate))
            }
            _ => None,
        };
        if let Some((name, b, rate)) = &mut id {
            b.refill(now, *rate);
            if b.tokens < 1.0
                && refusal
                    .as_ref()
                    .is_none_or(|r| b.wait(*rate) > r.retry_after)
            {
                let who = if name.is_empty() {
                    "anonymous callers"
                } else {
                    name
                };
                refusal = Some(Throttled {
                    what: format!(
                        "the {} limit of {rate:.0} requests a minute for {who}",
                        category.as_str()
                    ),
                    retry_after: b.wait(*rate),
                });
            }
        }
        if let Some(r) = refusal {
            return Err(r);
        }
        if let Some((_, b, _)) = id {
            b.tokens -= 1.0;
        }
        if let Some(w) = mine.whole[c].as_mut() {
            w.tokens -= 1.0;
        }
        Ok(())
    }
}

/// 429 with the spec's error body and a `Retry-After` in whole seconds.
fn too_many(t: Throttled) -> Response {
    let secs = t.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        ErrorCode::TooManyRequests,
        format!("over {}; retry after {secs} s", t.what),
    )
    .with_header("retry-after", secs.to_string())
    .into_response()
}

/// From the parsed-registry cache (a store read only when registries
/// changed).
fn sku_of(app: &crate::tenant::Tenant) -> Sku {
    app.network_rules
        .rules(app.consensus.meta(), app.name())
        .map_or(Sku::Premium, |r| r.sku)
}

/// Count `response` for usage metering when it served the request (a
/// refusal or a failure is not an operation).
fn served(app: &App, registry: &str, category: Category, response: Response) -> Response {
    if response.status().as_u16() < 400 {
        app.service
            .operations
            .record(registry, category.operation(), crate::state::now_ms());
    }
    response
}

/// OCI requests: after authentication, so the identity is known.
/// Anonymous callers share one identity (""), as do the admin account's.
pub async fn limit_oci(State(app): State<App>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/v2") {
        return next.run(req).await;
    }
    let tenant = crate::tenant::of(&req, &app);
    let caller = crate::http::access::caller_of(&req);
    let category = Category::of(req.method(), path);
    let taken = app.limiter.take(
        tenant.name(),
        sku_of(&tenant),
        category,
        Some(caller.subject.name()),
        Instant::now(),
    );
    match taken {
        Ok(()) => served(&app, tenant.name(), category, next.run(req).await),
        Err(t) => {
            crate::metrics::Metrics::add(&app.metrics.throttled, 1);
            too_many(t)
        }
    }
}

/// The token endpoint: the registry's token limit.
pub async fn limit_token(State(app): State<App>, req: Request, next: Next) -> Response {
    let tenant = crate::tenant::of(&req, &app);
    match app.limiter.take(
        tenant.name(),
        sku_of(&tenant),
        Category::Token,
        None,
        Instant::now(),
    ) {
        Ok(()) => served(&app, tenant.name(), Category::Token, next.run(req).await),
        Err(t) => {
            crate::metrics::Metrics::add(&app.metrics.throttled, 1);
            too_many(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_gets_its_share_then_waits_and_others_keep_going() {
        // scale 0.01: read 100 a minute per registry, 50 per identity.
        let l = Limiter::new(true, 0.01);
        let t0 = Instant::now();
        for _ in 0..50 {
            assert!(l
                .take("r", Sku::Basic, Category::Read, Some("a"), t0)
                .is_ok());
        }
        let refused = l
            .take("r", Sku::Basic, Category::Read, Some("a"), t0)
            .unwrap_err();
        assert!(refused.what.contains("for a"), "{}", refused.what);
        // One token a 1.2 s at 50 a minute.
        assert!((refused.retry_after.as_secs_f64() - 1.2).abs() < 0.01);
        // The wait counts down, and then it goes through.
        let later = t0 + Duration::from_millis(700);
        let again = l
            .take("r", Sku::Basic, Category::Read, Some("a"), later)
            .unwrap_err();
        assert!(again.retry_after < refused.retry_after);
        assert!(l
            .take(
                "r",
                Sku::Basic,
                Category::Read,
                Some("a"),
                t0 + Duration::from_millis(1300)
            )
            .is_ok());
        // Other identities share what is left of the registry's minute
        // (about 51 now); the refusal then names the registry's limit.
        let t1 = t0 + Duration::from_millis(1300);
        for _ in 0..40 {
            assert!(l
                .take("r", Sku::Basic, Category::Read, Some("b"), t1)
                .is_ok());
        }
        let taken_by_c = (0..40)
            .take_while(|_| {
                l.take("r", Sku::Basic, Category::Read, Some("c"), t1)
                    .is_ok()
            })
            .count();
        assert_eq!(taken_by_c, 11);
        let reg = l
            .take("r", Sku::Basic, Category::Read, Some("c"), t1)
            .unwrap_err();
        assert!(
            reg.what.contains("registry r's read limit of 100"),
            "{}",
            reg.what
        );
        // Categories and registries are separate; premium has twice as much.
        assert!(l
            .take("r", Sku::Basic, Category::Write, Some("a"), t0)
            .is_ok());
        for _ in 0..100 {
            assert!(l
                .take("p", Sku::Premium, Category::Read, Some("a"), t0)
                .is_ok());
        }
        assert!(l
            .take("p", Sku::Premium, Category::Read, Some("a"), t0)
            .is_err());
    }

    #[test]
    fn requests_fall_in_the_cloud_registrys_categories() {
        assert_eq!(
            Category::of(&Method::GET, "/v2/a/manifests/v1"),
            Category::Read
        );
        assert_eq!(
            Category::of(&Method::HEAD, "/v2/a/blobs/sha256:x"),
            Category::Read
        );
        assert_eq!(
            Category::of(&Method::PUT, "/v2/a/manifests/v1"),
            Category::Write
        );
        assert_eq!(
            Category::of(&Method::PATCH, "/v2/a/blobs/uploads/x"),
            Category::Write
        );
        assert_eq!(
            Category::of(&Method::DELETE, "/v2/a/manifests/v1"),
            Category::Delete
        );
        assert_eq!(
            Category::of(&Method::GET, "/v2/a/referrers/sha256:x"),
            Category::Referrers
        );
    }

    #[test]
    fn disabled_limits_refuse_nothing() {
        let l = Limiter::new(false, 0.0001);
        for _ in 0..1000 {
            assert!(l
                .take("r", Sku::Basic, Category::Read, Some("a"), Instant::now())
                .is_ok());
        }
    }
}
