//! Configuration of `wharf serve`: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_blobstore::StoreLimits;
use wharf_consensus::{Peer, RaftTimings};

/// A configuration that cannot be read or does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How long an uploaded blob waits for its manifest to link it before it
/// is registered on its own (the default of `uploads.link_grace_ms`).
pub const LINK_GRACE_MS: u64 = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Upload sessions in progress at once; beyond, 429 TOOMANYREQUESTS.
    pub sessions_max: usize,
    /// A request body that sends nothing for this long is abandoned.
    pub body_idle_timeout_s: u64,
    /// An upload session untouched for this long is deleted.
    pub session_expiry_s: u64,
    /// Largest blob accepted.
    pub blob_max_bytes: u64,
    /// How long an uploaded blob waits for its manifest to link it before
    /// it is registered on its own.
    pub link_grace_ms: u64,
    /// A manifest push is acknowledged once every blob it names is held
    /// by this many regions (capped at the number of regions). 1: once
    /// fsynced in the receiving region, fastest, but the loss of that
    /// region's disk before the mover copies the blobs loses them; 2
    /// survives the loss of any one region's disk.
    pub ack_regions: usize,
    /// How long a push waits for those copies before answering 503 (the
    /// manifest is stored; pushing again waits again).
    pub ack_timeout_ms: u64,
    /// Write uploaded bytes around the page cache (`O_DIRECT`) where the
    /// filesystem allows it: a push then spends less kernel CPU filling
    /// the page cache, but the first read of the blob (a pull, the mover
    /// copying it to another region) reads the disk and pays that fill.
    pub direct_io: bool,
}

impl Default for UploadConfig {
    fn default() -> Self {
        let d = StoreLimits::default();
        UploadConfig {
            sessions_max: d.sessions_max,
            body_idle_timeout_s: d.body_idle_timeout.as_secs(),
            session_expiry_s: d.session_expiry.as_secs(),
            blob_max_bytes: d.blob_max_bytes,
            link_grace_ms: LINK_GRACE_MS,
            ack_regions: 1,
            ack_timeout_ms: 30_000,
            direct_io: d.direct_io,
        }
    }
}

impl UploadConfig {
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            sessions_max: self.sessions_max,
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_s),
            session_expiry: Duration::from_secs(self.session_expiry_s),
            blob_max_bytes: self.blob_max_bytes,
            direct_io: self.direct_io,
        }
    }
}

/// Which store holds this region's blobs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// `<data_dir>/blobs` on this node's disk.
    #[default]
    Filesystem,
    /// A bucket of an S3-compatible object store, shared by the nodes of
    /// the region.
    S3,
}

/// `[storage]`: where this region's blobs live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// `http(s)://host:port` of an S3-compatible server; empty: AWS S3.
    pub endpoint: String,
    pub bucket: String,
    /// The bucket's region (AWS), or what the server expects.
    pub region: String,
    /// Keys start with this, so regions may share one bucket ("eu/").
    pub prefix: String,
    /// A TOML file with `access_key_id` and `secret_access_key`. Without
    /// it, the environment's `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (or the instance's role).
    pub credentials_file: Option<PathBuf>,
    /// Answer a blob GET with 307 to a presigned URL of the store, so the
    /// bytes flow from the store and not through the node. Clients must
    /// reach the endpoint.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_ttl_s: u64,
    /// One request to the store may take this long.
    pub request_timeout_s: u64,
    /// A failing request is retried with backoff for this long, then the
    /// client gets 503.
    pub retry_timeout_s: u64,
    pub max_retries: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Filesystem,
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            credentials_file: None,
            redirect: false,
            redirect_ttl_s: 300,
            request_timeout_s: 60,
            retry_timeout_s: 15,
            max_retries: 4,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
}

impl StorageConfig {
    /// The object store's settings, credentials read from their file.
    pub fn s3_settings(&self) -> Result<wharf_blobstore::S3Settings, ConfigError> {
        let (access_key_id, secret_access_key) = match &self.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("storage.credentials_file {}: {e}", path.display()))
                })?;
                let c: CredentialsFile = toml::from_str(&text).map_err(|e| {
                    ConfigError(format!("storage.credentials_file {}: {e}", path.display()))
                })?;
                (Some(c.access_key_id), Some(c.secret_access_key))
            }
            None => (None, None),
        };
        Ok(wharf_blobstore::S3Settings {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key_id,
            secret_access_key,
            prefix: self.prefix.clone(),
            request_timeout: Duration::from_secs(self.request_timeout_s),
            retry_timeout: Duration::from_secs(self.retry_timeout_s),
            max_retries: self.max_retries,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.backend != StorageBackend::S3 {
            if self.redirect {
                return Err(ConfigError(
                    "storage.redirect needs backend = \"s3\" (files have no URL)".into(),
                ));
            }
            return Ok(());
        }
        if self.bucket.is_empty() {
            return Err(ConfigError("storage: backend \"s3\" needs a bucket".into()));
        }
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|p| self.endpoint.starts_with(p));
        if !self.endpoint.is_empty() && !scheme_ok {
            return Err(ConfigError(format!(
                "storage.endpoint {:?} must start with http:// or https://",
                self.endpoint
            )));
        }
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') {
            return Err(ConfigError(format!(
                "storage.prefix {:?} must end with '/'",
                self.prefix
            )));
        }
        if self.request_timeout_s == 0 || self.redirect_ttl_s == 0 {
            return Err(ConfigError(
                "storage: request_timeout_s and redirect_ttl_s must be 1 or more".into(),
            ));
        }
        Ok(())
    }
}

/// Background replication of blobs into this region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MoverConfig {
    /// Background transfers at once (on-demand fetches come on top);
    /// 0 turns background replication off (blobs arrive on demand only).
    pub concurrency: usize,
    /// Background bandwidth cap in Mbit/s, 0 for none.
    pub bandwidth_mbit: u64,
    /// Rescan the blob index at least this often.
    pub rescan_s: u64,
    /// Background bandwidth caps per link, in Mbit/s, by the region copied
    /// from (`[mover.links] eu = 50`): the mover prefers other holders over
    /// a capped link, and what it must copy over one goes at most this
    /// fast, on top of `bandwidth_mbit`. On-demand fetches are not capped.
    pub links: std::collections::BTreeMap<String, u64>,
}

impl Default for MoverConfig {
    fn default() -> Self {
        MoverConfig {
            concurrency: 4,
            bandwidth_mbit: 0,
            rescan_s: 5,
            links: Default::default(),
        }
    }
}

/// Online garbage collection (see the README's "Garbage collection").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// A blob link no manifest references is collected only after nothing
    /// named it for this long; a freed file younger than this is kept.
    /// Longer than an upload session lives, and than a push takes.
    pub grace_s: u64,
    /// A mark stands this long before the sweep: pushes in flight that
    /// name a marked blob revive it meanwhile.
    pub hold_s: u64,
    /// The leader runs a collection this often; 0: only `wharf gc run`.
    pub interval_s: u64,
    /// Each region deletes freed files this often.
    pub sweep_interval_s: u64,
    /// Each node writes the last-pull times it saw (for keep policies)
    /// this often, in one command per registry.
    pub pulls_flush_s: u64,
    /// Percent of the time GC's steps (its proposed commands, the
    /// sweeper's passes) may take; it rests the remainder, so pushes
    /// queued behind it wait little. 1 to 100 (100: no rest).
    pub share_pct: u32,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace_s: 3600,
            hold_s: 10,
            interval_s: 3600,
            sweep_interval_s: 5,
            pulls_flush_s: 60,
            share_pct: 25,
        }
    }
}

/// Build task runs (see the README's "Build tasks").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Run queued runs on this node (it needs the executor's engine).
    pub agent: bool,
    /// `docker`: the Docker engine through its CLI.
    pub executor: String,
    /// Runs this node runs at once.
    pub concurrency: usize,
    /// A claimed run's lease; renewed every third of it. A run whose
    /// agent stops renewing is queued again (or failed) this long after.
    pub lease_s: u64,
    /// Run logs are kept this long on the agent's disk.
    pub log_retention_days: u32,
    /// A build context may hold at most this many MiB of files: the CLI
    /// refuses a larger one before uploading it, and an agent stops
    /// unpacking or fetching one that grows past it.
    pub max_context_mib: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            agent: false,
            executor: "docker".into(),
            concurrency: 2,
            lease_s: 30,
            log_retention_days: 30,
            max_context_mib: 512,
        }
    }
}

/// Scrub: verifying stored blobs against their digests (see the README's
/// "Scrub").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// The background pass reads at most this much per second; 0: no
    /// background pass.
    pub mib_per_s: u64,
    /// Pause between two passes over every blob the region holds.
    pub interval_s: u64,
    /// Whole reads of blobs up to this size are verified before their
    /// first byte is sent (a bad copy is replaced, the client served).
    pub verify_below_bytes: u64,
    /// Whole reads of larger blobs are hashed as they stream, and end with
    /// an error rather than complete with a corrupt byte.
    pub verify_reads: bool,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            mib_per_s: 20,
            interval_s: 86_400,
            verify_below_bytes: 1 << 20,
            verify_reads: true,
        }
    }
}

/// Webhook delivery (see the README's "Webhooks and events").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// One request's limit, connecting and reading the answer included.
    pub timeout_s: u64,
    /// Attempts before an event is dead-lettered (re-sendable with
    /// `wharf webhook redeliver`).
    pub max_attempts: u32,
    /// A failing event is dead-lettered once it is this old.
    pub max_age_s: u64,
    /// The first retry waits about this long; each next one twice as long.
    pub backoff_base_ms: u64,
    /// No retry waits longer than this.
    pub backoff_max_s: u64,
    /// Delivered and dead events stay in the delivery log this long.
    pub log_retention_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_s: 10,
            max_attempts: 10,
            max_age_s: 86_400,
            backoff_base_ms: 1000,
            backoff_max_s: 300,
            log_retention_days: 7,
        }
    }
}

/// What one service tier includes (see the README's "Service tiers").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub webhooks: u32,
    pub tokens: u32,
    pub scope_maps: u32,
    pub anonymous_pull: bool,
    /// What `show-usage` reports `Size` against (not a limit).
    pub included_storage_gib: u64,
    /// Network (IP) rules a registry may have; 0: none.
    pub ip_rules: u32,
    /// Replica regions a registry may name (geo-replication); 0: none.
    pub replications: u32,
    /// What a registry of the tier may store, unless the registry has a
    /// limit of its own (`wharf registry update --storage-limit`); 0: no
    /// limit. The cloud registry's 40 TiB by default.
    #[serde(default = "default_storage_limit_gib")]
    pub storage_limit_gib: u64,
}

fn default_storage_limit_gib() -> u64 {
    40 * 1024
}

/// The tiers; every node of a cluster should have the same table (the
/// node proposing a change applies its own).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    pub basic: TierConfig,
    pub standard: TierConfig,
    pub premium: TierConfig,
}

impl Default for TiersConfig {
    /// The cloud registry's figures.
    fn default() -> Self {
        let tier = |webhooks, ids, anonymous_pull, included_storage_gib, premium| TierConfig {
            webhooks,
            tokens: ids,
            scope_maps: ids,
            anonymous_pull,
            included_storage_gib,
            ip_rules: if premium { 200 } else { 0 },
            replications: if premium { 100 } else { 0 },
            storage_limit_gib: default_storage_limit_gib(),
        };
        TiersConfig {
            basic: tier(2, 100, false, 10, false),
            standard: tier(10, 500, true, 100, false),
            premium: tier(500, 50_000, true, 500, true),
        }
    }
}

/// Rate limits (see the README's "Rate limits").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Every limit times this (1: the cloud registry's figures; 10: ten
    /// times as many requests; 0.01: a hundredth, for tests).
    pub scale: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            scale: 1.0,
        }
    }
}

/// How manifest, tag and blob-link reads are answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Hits from the local state machine; a miss is confirmed through the
    /// leader (read-index) before a 404. A moved or deleted tag may be seen
    /// at its previous value for as long as this region lags (milliseconds).
    #[default]
    Local,
    /// Every read goes through read-index first: linearizable, at the cost
    /// of a round trip to the leader's region.
    Linearizable,
}

/// Authentication settings. Identities themselves are replicated state,
/// managed with `wharf user|role|token|scope-map|credential`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The cluster key (64 hex digits): identical on every node of a
    /// cluster; it seals the token signing keys and admin passwords.
    /// Default: DATA_DIR/cluster.key, generated by the bootstrap node.
    pub cluster_key_file: Option<PathBuf>,
    /// The `service` in challenges and tokens; the same on every node.
    pub service: String,
    /// Token endpoint URL sent in challenges (default: from the Host header).
    pub realm: Option<String>,
    /// Name of the owner created at first start.
    pub bootstrap_user: String,
    pub access_token_ttl_s: u64,
    pub refresh_token_ttl_s: u64,
    /// How long a web console login lasts.
    pub console_session_ttl_s: u64,
    /// Failed logins allowed in a burst, per name and per source address.
    pub login_burst: u32,
    /// One more failed login is allowed after this long.
    pub login_refill_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let d = wharf_auth::AuthConfig::default();
        AuthSettings {
            cluster_key_file: None,
            service: d.service,
            realm: None,
            bootstrap_user: "owner".into(),
            access_token_ttl_s: d.access_ttl.as_secs(),
            refresh_token_ttl_s: d.refresh_ttl.as_secs(),
            console_session_ttl_s: d.session_ttl.as_secs(),
            login_burst: d.login_limits.burst,
            login_refill_ms: d.login_limits.refill_every.as_millis() as u64,
        }
    }
}

impl AuthSettings {
    pub fn auth_config(&self) -> wharf_auth::AuthConfig {
        wharf_auth::AuthConfig {
            service: self.service.clone(),
            access_ttl: Duration::from_secs(self.access_token_ttl_s),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_s),
            session_ttl: Duration::from_secs(self.console_session_ttl_s),
            login_limits: wharf_auth::LoginLimits {
                burst: self.login_burst,
                refill_every: Duration::from_millis(self.login_refill_ms),
            },
        }
    }
}

/// TLS for the HTTP API and, optionally, mutual TLS between peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain of this node; with `key_file`, the HTTP API
    /// is served over TLS (https).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) of the cluster: trusted when this node calls
    /// peers' HTTP APIs and, with `peer_mtls`, required of peers on gRPC.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS on the peer gRPC port (Raft, forwarding, blob transfer):
    /// peers present certificates signed by `ca_file` naming "wharf-peer".
    pub peer_mtls: bool,
}

impl TlsSettings {
    pub fn https(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// Dial `via` instead of node `node`'s advertised gRPC address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerRoute {
    pub node: u64,
    pub via: String,
}

// Not `Eq`: `rate_limits.scale` is a float.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Unique, stable id of this node in the cluster (1, 2, ...).
    pub node_id: u64,
    /// The region this node serves.
    pub region: String,
    /// Where metadata, the Raft log and blobs are kept.
    pub data_dir: PathBuf,
    /// Address of the OCI and management HTTP API.
    pub http_listen: SocketAddr,
    /// Address of the peer gRPC API (Raft, forwarding).
    pub grpc_listen: SocketAddr,
    /// URL clients and peers use for this node's HTTP API
    /// (default: http://<http_listen>).
    pub advertise_http: Option<String>,
    /// host:port peers use for this node's gRPC API (default: grpc_listen).
    pub advertise_grpc: Option<String>,
    /// Initialize the metadata group with `peers` on the very first start.
    /// Exactly one node of a new cluster sets it.
    pub bootstrap: bool,
    /// Voters of a new cluster. Empty: this node alone.
    pub peers: Vec<Peer>,
    /// How long a write waits for the leader and a commit.
    pub write_timeout_ms: u64,
    /// Reach some peers through another address (an emulated WAN link,
    /// a tunnel). `[[peer_routes]] node = 2, via = "host:port"`.
    pub peer_routes: Vec<PeerRoute>,
    /// `local` (default) or `linearizable`.
    pub reads: ReadConsistency,
    /// Login servers: a request for `N.<registry_domain>` addresses
    /// registry N; other hosts the default registry. None: every request
    /// addresses the default registry.
    pub registry_domain: Option<String>,
    pub raft: RaftTimings,
    pub storage: StorageConfig,
    pub uploads: UploadConfig,
    pub mover: MoverConfig,
    pub gc: GcConfig,
    pub scrub: ScrubConfig,
    pub tasks: TasksConfig,
    pub webhooks: WebhooksConfig,
    pub tiers: TiersConfig,
    pub rate_limits: RateLimitConfig,
    /// Addresses (CIDR) of proxies whose `X-Forwarded-For` is believed
    /// for network rules; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            node_id: 1,
            region: "us-east".into(),
            data_dir: PathBuf::from("wharf-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 5001)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 5101)),
            advertise_http: None,
            advertise_grpc: None,
            bootstrap: true,
            peers: Vec::new(),
            write_timeout_ms: 10_000,
            peer_routes: Vec::new(),
            reads: ReadConsistency::Local,
            registry_domain: None,
            raft: RaftTimings::default(),
            storage: StorageConfig::default(),
            uploads: UploadConfig::default(),
            mover: MoverConfig::default(),
            gc: GcConfig::default(),
            scrub: ScrubConfig::default(),
            tasks: TasksConfig::default(),
            webhooks: WebhooksConfig::default(),
            tiers: TiersConfig::default(),
            rate_limits: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl ServeConfig {
    pub fn load(path: &std::path::Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// This configuration with the keys of `toml` laid over it (tables
    /// merged key by key), checked as a whole: how a launcher applies a
    /// caller's settings to the configuration it generated.
    pub fn overlay(&self, toml: &str) -> Result<ServeConfig, ConfigError> {
        let over: toml::Table = toml::from_str(toml).map_err(|e| ConfigError(e.to_string()))?;
        let mut base = toml::Table::try_from(self).map_err(|e| ConfigError(e.to_string()))?;
        merge(&mut base, over);
        base.try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))
    }

    /// This node as its peers see it.
    pub fn me(&self) -> Peer {
        Peer {
            id: self.node_id,
            region: self.region.clone(),
            grpc: self
                .advertise_grpc
                .clone()
                .unwrap_or_else(|| self.grpc_listen.to_string()),
            http: self.advertise_http.clone().unwrap_or_else(|| {
                let scheme = if self.tls.https() { "https" } else { "http" };
                format!("{scheme}://{}", self.http_listen)
            }),
        }
    }

    pub fn cluster_key_path(&self) -> PathBuf {
        self.auth
            .cluster_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cluster.key"))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError(
                "tls: cert_file and key_file go together".into(),
            ));
        }
        if self.tls.peer_mtls && (!self.tls.https() || self.tls.ca_file.is_none()) {
            return Err(ConfigError(
                "tls.peer_mtls needs cert_file, key_file and ca_file".into(),
            ));
        }
        if self.auth.login_burst == 0 || self.auth.access_token_ttl_s == 0 {
            return Err(ConfigError(
                "auth: login_burst and access_token_ttl_s must be 1 or more".into(),
            ));
        }
        self.storage.validate()?;
        if self.gc.sweep_interval_s == 0 {
            return Err(ConfigError("gc.sweep_interval_s must be 1 or more".into()));
        }
        if !(1..=100).contains(&self.gc.share_pct) {
            return Err(ConfigError("gc.share_pct must be 1 to 100".into()));
        }
        if self.uploads.ack_regions == 0 {
            return Err(ConfigError("uploads.ack_regions must be 1 or more".into()));
        }
        if self.tasks.executor != "docker" {
            return Err(ConfigError(format!(
                "tasks.executor {:?} is not one this release has (docker)",
                self.tasks.executor
            )));
        }
        if self.tasks.max_context_mib == 0 {
            return Err(ConfigError(
                "tasks.max_context_mib must be 1 or more".into(),
            ));
        }
        if self.tasks.concurrency == 0 || self.tasks.lease_s < 3 {
            return Err(ConfigError(
                "tasks: concurrency must be 1 or more and lease_s 3 or more".into(),
            ));
        }
        if self.node_id == 0 {
            return Err(ConfigError("node_id must be 1 or more".into()));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError(format!(
                "region {:?} must be letters, digits and '-'",
                self.region
            )));
        }
        if !self.peers.is_empty() && !self.peers.iter().any(|p| p.id == self.node_id) {
            return Err(ConfigError("peers must include this node's own id".into()));
        }
        if self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms
            || self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms
        {
            return Err(ConfigError(
                "raft: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml_and_unknown_keys_are_refused() {
        let c = ServeConfig::default();
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<ServeConfig>("nodeid = 3").is_err());
        let partial: ServeConfig =
            toml::from_str("region = \"eu-west\"\n[raft]\nheartbeat_ms = 100").unwrap();
        assert_eq!(partial.region, "eu-west");
        assert_eq!(partial.raft.heartbeat_ms, 100);
        assert_eq!(
            partial.raft.election_timeout_min_ms,
            RaftTimings::default().election_timeout_min_ms
        );
    }

    #[test]
    fn an_overlay_changes_only_the_keys_it_names() {
        let base = ServeConfig {
            region: "eu-west".into(),
            ..ServeConfig::default()
        };
        let c = base
            .overlay("reads = \"linearizable\"\n[raft]\nheartbeat_ms = 100\n")
            .unwrap();
        assert_eq!(c.region, "eu-west");
        assert_eq!(c.reads, ReadConsistency::Linearizable);
        assert_eq!(c.raft.heartbeat_ms, 100);
        assert_eq!(
            c.raft.election_timeout_min_ms,
            base.raft.election_timeout_min_ms
        );
        assert!(base.overlay("no_such_key = 1").is_err());
        assert!(base.overlay("[raft]\nheartbeat_ms = \"fast\"").is_err());
    }

    /// A tier table written before storage limits (and before `[mover]`
    /// links) still loads: the new keys take their defaults.
    #[test]
    fn a_config_from_before_storage_limits_and_link_caps_loads() {
        let old = r#"
            [mover]
            concurrency = 2
            [tiers.basic]
            webhooks = 3
            tokens = 10
            scope_maps = 10
            anonymous_pull = false
            included_storage_gib = 1
            ip_rules = 0
            replications = 0
        "#;
        let c: ServeConfig = toml::from_str(old).unwrap();
        assert_eq!(c.tiers.basic.webhooks, 3);
        assert_eq!(c.tiers.basic.storage_limit_gib, 40 * 1024);
        assert_eq!(c.tiers.premium, TiersConfig::default().premium);
        assert!(c.mover.links.is_empty());
        // Before `[storage]`: the filesystem, as it was.
        assert_eq!(c.storage, StorageConfig::default());
        assert_eq!(c.storage.backend, StorageBackend::Filesystem);
        c.validate().unwrap();
        let capped: ServeConfig = toml::from_str(
            "[mover.links]
eu-west = 50
",
        )
        .unwrap();
        assert_eq!(capped.mover.links["eu-west"], 50);
    }

    #[test]
    fn validation_explains_bad_settings() {
        let mut c = ServeConfig {
            region: "bad region".into(),
            ..ServeConfig::default()
        };
        assert!(c.validate().is_err());
        c.region = "eu-west".into();
        c.raft.heartbeat_ms = 5000;
        assert!(c.validate().is_err());
    }
}
