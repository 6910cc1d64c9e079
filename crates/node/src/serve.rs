//! `wharf serve`: one node of one region.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use wharf_blobstore::{BlobStore, S3Backend};
use wharf_config::StorageBackend;
use wharf_consensus::{Consensus, ConsensusConfig};

use wharf_mover::{run_recorder, run_replicator, FetchLimits, Fetcher, ReplicatorConfig};

use crate::config::ServeConfig;
use crate::directory::NodeDirectory;
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::state::AppState;

/// How long in-flight requests may run on after SIGTERM (TLS listener).
const GRACE_S: u64 = 60;

/// How often expired upload sessions are swept.
const SWEEP_INTERVAL_S: u64 = 60;

/// Hold an exclusive lock on the data directory for the process lifetime,
/// so two nodes can never share (and corrupt) one directory.
/// How often the blob store is asked whether it answers (`/readyz`).
const STORE_PROBE_INTERVAL_S: u64 = 5;

/// The region's blob store as `[storage]` configures it. Pending links and
/// the mover's staging stay in `<data_dir>/blobs` whatever the backend.
fn open_blob_store(cfg: &ServeConfig) -> Result<BlobStore, NodeError> {
    let local = cfg.data_dir.join("blobs");
    let node_tag = format!("n{}", cfg.node_id);
    let store = match cfg.storage.backend {
        StorageBackend::Filesystem => BlobStore::open(&local, &node_tag, cfg.uploads.limits())?,
        StorageBackend::S3 => {
            let settings = cfg
                .storage
                .s3_settings()
                .map_err(|e| NodeError::Config(e.to_string()))?;
            let backend = S3Backend::connect(settings, &node_tag, cfg.uploads.limits())?;
            BlobStore::with_backend(&local, Arc::new(backend))?
        }
    };
    tracing::info!(store = %store.describe(), "blob store");
    Ok(store)
}

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, NodeError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(NodeError::Startup(format!(
            "data directory {} is in use by another wharf process",
            dir.display()
        )));
    }
    Ok(f)
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

pub async fn run(cfg: ServeConfig) -> Result<(), NodeError> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let me = cfg.me();
    // Only a bootstrap node starting on an empty directory may create the
    // cluster key; every other node must be given the cluster's key.
    let key_path = cfg.cluster_key_path();
    let cluster_key = wharf_auth::ClusterKey::load_or_create(
        &key_path,
        cfg.bootstrap && crate::bootstrap::is_fresh(&cfg.data_dir),
    )
    .map_err(|e| {
        NodeError::Config(format!(
            "{e} (every node needs the cluster key: copy cluster.key from a node of the \
             cluster, or set [auth] cluster_key_file)"
        ))
    })?;
    let blobs = Arc::new(open_blob_store(&cfg)?);
    if let Err(e) = blobs.probe().await {
        tracing::warn!(store = %blobs.describe(), error = %e, "the blob store does not answer yet; not ready until it does");
    }
    let members = if cfg.peers.is_empty() {
        vec![me.clone()]
    } else {
        cfg.peers.clone()
    };
    let http_tls = crate::tls::http_config(&cfg.tls).await?;
    let peer_tls = crate::tls::peer_config(&cfg.tls)?;
    let peer_services = tonic::service::Routes::new(wharf_mover::service(blobs.clone()));
    let consensus = Consensus::start(
        ConsensusConfig {
            node_id: cfg.node_id,
            region: cfg.region.clone(),
            data_dir: cfg.data_dir.clone(),
            grpc_listen: cfg.grpc_listen,
            advertise: me.clone(),
            initial_members: members,
            bootstrap: cfg.bootstrap,
            timings: cfg.raft.clone(),
            write_timeout_ms: cfg.write_timeout_ms,
            peer_overrides: cfg
                .peer_routes
                .iter()
                .map(|r| (r.node, r.via.clone()))
                .collect(),
            peer_tls: peer_tls.clone(),
            fenced_until_ms: crate::fence::load(&cfg.data_dir)?,
        },
        peer_services,
    )
    .await?;
    let directory = Arc::new(NodeDirectory {
        consensus: consensus.clone(),
        region: cfg.region.clone(),
    });
    let fetcher = Fetcher::new(
        directory,
        blobs.clone(),
        FetchLimits {
            background_bytes_per_s: cfg.mover.bandwidth_mbit * 1_000_000 / 8,
            link_bytes_per_s: cfg
                .mover
                .links
                .iter()
                .map(|(region, mbit)| (region.clone(), mbit * 1_000_000 / 8))
                .collect(),
            tls: peer_tls.map(|t| t.client),
            ..FetchLimits::default()
        },
    );
    let mover_queue = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Shutdown::new();
    let region_role = Arc::new(crate::roles::RegionRole::default());
    tasks.spawn(
        "region role",
        crate::roles::claimer(
            consensus.clone(),
            cfg.region.clone(),
            region_role.clone(),
            tasks.stop(),
        ),
    );
    // Copies by the replicator and by on-demand fetches alike.
    tasks.spawn(
        "recorder",
        run_recorder(fetcher.clone(), tasks.stop().receiver()),
    );
    // concurrency = 0: no background copies; blobs arrive on demand only.
    if cfg.mover.concurrency > 0 {
        tasks.spawn(
            "replicator",
            run_replicator(
                fetcher.clone(),
                consensus.applied_watch(),
                ReplicatorConfig {
                    concurrency: cfg.mover.concurrency,
                    rescan: Duration::from_secs(cfg.mover.rescan_s.max(1)),
                    active: Some(region_role.flag()),
                    ..ReplicatorConfig::default()
                },
                mover_queue.clone(),
                tasks.stop().receiver(),
            ),
        );
    }
    // Runs on every node; delivers only while this node leads.
    let w = &cfg.webhooks;
    let deliverer = wharf_webhooks::Deliverer::new(
        consensus.clone(),
        crate::tls::http_client(cfg.tls.ca_file.as_deref())?,
        wharf_webhooks::Settings {
            timeout: Duration::from_secs(w.timeout_s.max(1)),
            max_attempts: w.max_attempts.max(1),
            max_age: Duration::from_secs(w.max_age_s),
            backoff_base: Duration::from_millis(w.backoff_base_ms.max(1)),
            backoff_max: Duration::from_secs(w.backoff_max_s.max(1)),
            retention: Duration::from_secs(u64::from(w.log_retention_days) * 86_400),
            ..wharf_webhooks::Settings::default()
        },
    );
    tasks.spawn("webhooks", deliverer.clone().run(tasks.stop().receiver()));
    let app = Arc::new(AppState {
        consensus: consensus.clone(),
        blobs: blobs.clone(),
        fetcher,
        mover_queue,
        network_rules: Default::default(),
        trusted_proxies: crate::network::parse_proxies(&cfg.trusted_proxies)
            .map_err(NodeError::Config)?,
        limiter: crate::ratelimit::Limiter::new(
            cfg.rate_limits.enabled,
            cfg.rate_limits.scale.max(0.0),
        ),
        webhooks: deliverer,
        region: cfg.region.clone(),
        data_dir: cfg.data_dir.clone(),
        registry_domain: cfg.registry_domain.clone(),
        service: Arc::new(wharf_registry::Service {
            consensus: consensus.clone(),
            blobs: blobs.clone(),
            region: cfg.region.clone(),
            linearizable_reads: cfg.reads == crate::config::ReadConsistency::Linearizable,
            ack: wharf_registry::AckPolicy {
                regions: cfg.uploads.ack_regions,
                timeout: Duration::from_millis(cfg.uploads.ack_timeout_ms),
            },
            registration_window: Duration::from_millis(crate::registrar::WINDOW_MS),
            pulls: Default::default(),
            operations: Default::default(),
            tiers: tier_table(&cfg.tiers),
        }),
        metrics: Metrics::default(),
        auth: wharf_auth::Authority::new(cfg.auth.auth_config(), cluster_key),
        auth_realm: cfg.auth.realm.as_deref().map(Into::into),
        auth_service: cfg.auth.service.as_str().into(),
        scheme: if cfg.tls.https() { "https" } else { "http" },
        http: crate::tls::http_client(cfg.tls.ca_file.as_deref())?,
        gc: wharf_gc::GcSettings {
            grace: Duration::from_secs(cfg.gc.grace_s),
            hold: Duration::from_secs(cfg.gc.hold_s),
            pace: wharf_gc::Pace::new(cfg.gc.share_pct),
        },
        scrub: cfg.scrub.clone(),
        tasks: cfg.tasks.clone(),
        redirect_ttl: cfg
            .storage
            .redirect
            .then(|| Duration::from_secs(cfg.storage.redirect_ttl_s)),
        region_role,
    });
    if cfg.scrub.mib_per_s > 0 {
        tasks.spawn(
            "scrub",
            crate::scrub::scrubber(
                app.clone(),
                cfg.scrub.mib_per_s.saturating_mul(1 << 20),
                Duration::from_secs(cfg.scrub.interval_s),
                tasks.stop(),
            ),
        );
    }
    tasks.spawn(
        "gc sweeper",
        crate::gc::sweeper(
            app.clone(),
            Duration::from_secs(cfg.gc.sweep_interval_s),
            tasks.stop(),
        ),
    );
    tasks.spawn(
        "pull times",
        crate::gc::pull_flusher(
            app.clone(),
            Duration::from_secs(cfg.gc.pulls_flush_s.max(1)),
            tasks.stop(),
        ),
    );
    if cfg.gc.interval_s > 0 {
        tasks.spawn(
            "gc scheduler",
            crate::gc::scheduler(
                app.clone(),
                Duration::from_secs(cfg.gc.interval_s),
                tasks.stop(),
            ),
        );
    }
    if cfg.bootstrap {
        tasks.spawn(
            "bootstrap",
            crate::bootstrap::run(
                app.clone(),
                cfg.data_dir.clone(),
                cfg.auth.bootstrap_user.clone(),
                tasks.stop(),
            ),
        );
    }

    let (probed, mut stop) = (blobs.clone(), tasks.stop());
    tasks.spawn("blob store probe", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(STORE_PROBE_INTERVAL_S));
        let mut was_down = probed.unavailable().is_some();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let down = probed.probe().await.err();
            match (&down, was_down) {
                (Some(e), false) => tracing::error!(store = %probed.describe(), error = %e, "the blob store stopped answering: clients get 503 until it is back"),
                (None, true) => tracing::info!(store = %probed.describe(), "the blob store answers again"),
                _ => {}
            }
            was_down = down.is_some();
        }
    });

    let mut stop = tasks.stop();
    tasks.spawn("session sweeper", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(SWEEP_INTERVAL_S));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let n = blobs.sweep_expired().await;
            if n > 0 {
                tracing::info!(expired = n, "removed idle upload sessions");
            }
        }
    });

    tasks.spawn(
        "task timers",
        crate::tasks::timers(app.clone(), tasks.stop()),
    );
    tasks.spawn(
        "run expiry",
        crate::tasks::expirer(app.clone(), cfg.tasks.clone(), tasks.stop()),
    );
    if cfg.tasks.agent {
        tasks.spawn(
            "task agent",
            crate::tasks::agent(app.clone(), cfg.tasks.clone(), tasks.stop()),
        );
    }
    tasks.spawn(
        "registrar",
        crate::registrar::run(
            app.clone(),
            Duration::from_millis(cfg.uploads.link_grace_ms),
            tasks.stop(),
        ),
    );
    let listener = std::net::TcpListener::bind(cfg.http_listen)
        .map_err(|e| NodeError::Startup(format!("cannot listen on {}: {e}", cfg.http_listen)))?;
    listener.set_nonblocking(true)?;
    tracing::info!(node = cfg.node_id, region = %cfg.region, http = %cfg.http_listen, grpc = %cfg.grpc_listen, tls = http_tls.is_some(), peer_mtls = cfg.tls.peer_mtls, "wharf node serving");
    // Connection addresses feed the per-source login limiter.
    let service =
        crate::http::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Graceful: stop accepting, let in-flight requests (uploads) finish,
    // then stop Raft and sync the metadata store.
    match http_tls {
        None => {
            axum::serve(tokio::net::TcpListener::from_std(listener)?, service)
                .with_graceful_shutdown(shutdown_signal())
                .await?
        }
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                h.graceful_shutdown(Some(Duration::from_secs(GRACE_S)));
            });
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(service)
                .await?
        }
    }
    tracing::info!("shutting down");
    tasks.run().await;
    consensus.shutdown().await;
    Ok(())
}

/// The configuration's tiers as the state machine checks them.
fn tier_table(t: &crate::config::TiersConfig) -> wharf_meta::TierTable {
    let limits = |c: &crate::config::TierConfig| wharf_meta::TierLimits {
        webhooks: c.webhooks,
        tokens: c.tokens,
        scope_maps: c.scope_maps,
        anonymous_pull: c.anonymous_pull,
        included_storage_gib: c.included_storage_gib,
        ip_rules: c.ip_rules,
        replications: c.replications,
        storage_limit: (c.storage_limit_gib > 0).then_some(c.storage_limit_gib << 30),
    };
    wharf_meta::TierTable {
        basic: limits(&t.basic),
        standard: limits(&t.standard),
        premium: limits(&t.premium),
    }
}
