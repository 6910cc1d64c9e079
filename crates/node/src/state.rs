//! Shared state of a serving node. The reads and writes that follow the
//! consistency rules are the service layer's (`wharf_registry`), reached
//! per request through a `Tenant`.

use std::sync::Arc;
use std::time::Duration;

use wharf_blobstore::BlobStore;
use wharf_consensus::Consensus;

use crate::directory::NodeDirectory;
use crate::metrics::Metrics;
use wharf_mover::Fetcher;

pub struct AppState {
    pub consensus: Arc<Consensus>,
    pub blobs: Arc<BlobStore>,
    pub fetcher: Arc<Fetcher<NodeDirectory>>,
    /// Blobs this region still has to copy (the replicator's last scan).
    pub mover_queue: Arc<std::sync::atomic::AtomicU64>,
    /// Registries' network rules, parsed, and the proxies whose
    /// `X-Forwarded-For` is believed.
    pub network_rules: crate::network::RulesCache,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limits per registry and identity (this node's buckets).
    pub limiter: crate::ratelimit::Limiter,
    /// The webhook deliverer (its counters, for /metrics).
    pub webhooks: Arc<wharf_webhooks::Deliverer>,
    pub region: String,
    /// This node's data directory (its fence is recorded there).
    pub data_dir: std::path::PathBuf,
    /// Hosts `N.<registry_domain>` address registry N (see `tenant`).
    pub registry_domain: Option<String>,
    /// The registry service layer: what pushes, pulls and deletes mean.
    pub service: Arc<wharf_registry::Service>,
    pub metrics: Metrics,
    pub auth: wharf_auth::Authority,
    /// Token endpoint URL for challenges; None: derived from Host.
    pub auth_realm: Option<Arc<str>>,
    /// The `service` of challenges (`auth.service`), shared by every
    /// request's caller rather than copied into each.
    pub auth_service: Arc<str>,
    /// "http" or "https", for URLs derived from Host.
    pub scheme: &'static str,
    /// For calls to peers' HTTP APIs (trusts the cluster CA).
    pub http: reqwest::Client,
    /// Garbage collection's grace and hold (runs on demand use them too).
    pub gc: wharf_gc::GcSettings,
    /// How reads verify what they serve (and the background scrub's pace).
    pub scrub: wharf_config::ScrubConfig,
    /// Build task settings: the context limit the API announces.
    pub tasks: wharf_config::TasksConfig,
    /// Blob GETs answer 307 to a presigned URL of the store valid this
    /// long (`storage.redirect`); None: the node streams the bytes.
    pub redirect_ttl: Option<Duration>,
    /// Whether this node runs its region's mover, GC sweep and scrub now.
    pub region_role: Arc<crate::roles::RegionRole>,
}

pub type App = Arc<AppState>;

pub fn now_ms() -> u64 {
    wharf_consensus::now_unix_ms()
}
