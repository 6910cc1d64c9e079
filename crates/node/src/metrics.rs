//! Prometheus metrics of a node, kept as plain atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub blob_bytes_served: AtomicU64,
    pub blob_redirects: AtomicU64,
    pub blob_bytes_received: AtomicU64,
    pub manifests_pushed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_throttled: AtomicU64,
    /// Requests refused by the rate limits (429).
    pub throttled: AtomicU64,
    pub scrub_bytes_verified: AtomicU64,
    /// Corrupt (or missing) copies found, by scrub or while serving.
    pub scrub_corrupt: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition format, with values read elsewhere supplied by
    /// the caller (`*_total` ones are counters, the rest gauges).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counters = [
            (
                "wharf_http_requests_total",
                "HTTP requests received",
                &self.requests,
            ),
            (
                "wharf_http_responses_4xx_total",
                "HTTP answers with a 4xx status",
                &self.responses_4xx,
            ),
            (
                "wharf_http_responses_5xx_total",
                "HTTP answers with a 5xx status",
                &self.responses_5xx,
            ),
            (
                "wharf_blob_bytes_served_total",
                "Blob bytes sent to clients",
                &self.blob_bytes_served,
            ),
            (
                "wharf_blob_redirects_total",
                "Blob GETs answered with a redirect to the object store",
                &self.blob_redirects,
            ),
            (
                "wharf_blob_bytes_received_total",
                "Blob bytes stored from uploads",
                &self.blob_bytes_received,
            ),
            (
                "wharf_scrub_bytes_verified_total",
                "Stored blob bytes the background scrub verified",
                &self.scrub_bytes_verified,
            ),
            (
                "wharf_scrub_corrupt_total",
                "Corrupt or missing blob copies found (scrub or serving) and quarantined",
                &self.scrub_corrupt,
            ),
            (
                "wharf_manifests_pushed_total",
                "Manifests accepted",
                &self.manifests_pushed,
            ),
            (
                "wharf_auth_failures_total",
                "Refused credentials and tokens (wrong, disabled, expired, tampered)",
                &self.auth_failures,
            ),
            (
                "wharf_auth_throttled_total",
                "Logins refused by the failed-login limiter (429)",
                &self.auth_throttled,
            ),
            (
                "wharf_rate_limited_total",
                "Requests refused by a registry's or an identity's rate limit (429)",
                &self.throttled,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}
