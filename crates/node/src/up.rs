//! `wharf up`: a whole local cluster in the foreground, one `wharf serve`
//! child process per region, each with its own data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use wharf_launcher::{Cluster, Member, Plan, Ports, CLUSTER_KEY_FILE};

use crate::error::NodeError;

/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Args)]
pub struct UpArgs {
    /// Number of regions (one node each). One voter per region: with three
    /// or more, losing any one region keeps a majority.
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Directory holding every node's data, logs and cluster.json.
    /// Restarting with the same directory resumes the same cluster.
    #[arg(long, default_value = ".wharf")]
    data_dir: PathBuf,
    /// HTTP of region i (1-based) listens on 127.0.0.1:<base-port + i>,
    /// its peer gRPC on <base-port + 100 + i>.
    #[arg(long, default_value_t = 5000)]
    base_port: u16,
    /// Emulated round-trip time between regions, in milliseconds (a
    /// user-space proxy on every link; 0 connects regions directly).
    #[arg(long, default_value_t = 0)]
    wan_rtt_ms: u64,
    /// Emulated bandwidth of each link and direction, in Mbit/s (0: none).
    #[arg(long, default_value_t = 0)]
    wan_bandwidth_mbit: u64,
    /// Emulated packet loss on each link, in percent (a lost piece arrives
    /// one RTT late, as TCP retransmits it).
    #[arg(long, default_value_t = 0.0)]
    wan_loss_pct: f64,
    /// Serve HTTPS and use mutual TLS between regions, with a local CA
    /// created in DATA_DIR/tls (kept across restarts); prints how to trust it.
    #[arg(long)]
    tls: bool,
    /// Login servers of registries: NAME.<registry-domain> (names under
    /// .localhost reach loopback in browsers and curl; add /etc/hosts
    /// entries for docker and podman). TLS certificates cover it.
    #[arg(long, default_value = "wharf.localhost")]
    registry_domain: String,
    /// A TOML file laid over every node's generated configuration, e.g.
    /// `[rate_limits]` / `enabled = false` for a benchmark.
    #[arg(long)]
    config_overlay: Option<PathBuf>,
    /// Keep each region's blobs in a bucket of its own on an S3-compatible
    /// server at this `http://host:port` (which must accept any
    /// credentials, as a local SeaweedFS or MinIO in its default setup
    /// does), or `seaweedfs` to use (or start) a local `weed mini`.
    #[arg(long, value_name = "ENDPOINT")]
    object_store: Option<String>,
}

impl UpArgs {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
}

/// With --tls (a local CA): node i's certificate, HTTPS, peer mTLS.
fn node_tls(
    ca: &crate::tls::LocalCa,
    i: usize,
    registry_domain: &str,
) -> Result<crate::config::TlsSettings, NodeError> {
    // Every registry's login server, and the domain itself.
    let wildcard = format!("*.{registry_domain}");
    let (cert, key) = ca.node_cert(
        &format!("node-{i}"),
        &["127.0.0.1", "localhost", registry_domain, &wildcard],
    )?;
    Ok(crate::config::TlsSettings {
        cert_file: Some(cert),
        key_file: Some(key),
        ca_file: Some(ca.ca_file()),
        peer_mtls: true,
    })
}

/// The launcher's plan for this local cluster.
fn plan(args: &UpArgs) -> Result<Plan, NodeError> {
    let mut plan = Plan::new(&std::env::current_exe()?, &args.data_dir, args.regions);
    plan.ports = Ports::Base(args.base_port);
    plan.die_with_parent = true;
    plan.object_store = match args.object_store.as_deref() {
        None => None,
        Some("seaweedfs") => Some(wharf_launcher::s3::ObjectStore::seaweedfs()?),
        Some(endpoint) => Some(wharf_launcher::s3::ObjectStore::at(endpoint)?),
    };
    if wan_enabled(args) {
        plan.links = Some(wharf_netem::LinkSpec {
            one_way_delay: Duration::from_millis(args.wan_rtt_ms / 2),
            bytes_per_s: args.wan_bandwidth_mbit * 1_000_000 / 8,
            loss_pct: args.wan_loss_pct,
        });
    }
    // Certificates are made once, before any node starts.
    let tls: Vec<crate::config::TlsSettings> = if args.tls {
        let ca = crate::tls::LocalCa::open(&args.tls_dir())?;
        plan.https = true;
        plan.ca_file = Some(ca.ca_file());
        (1..=args.regions)
            .map(|i| node_tls(&ca, i, &args.registry_domain))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let domain = args.registry_domain.clone();
    let overlay =
        match &args.config_overlay {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                NodeError::Config(format!("--config-overlay {}: {e}", path.display()))
            })?),
            None => None,
        };
    Ok(plan.tune(move |i, cfg| {
        cfg.registry_domain = Some(domain.clone());
        if let Some(t) = tls.get(i) {
            cfg.tls = t.clone();
        }
        if let Some(text) = &overlay {
            *cfg = cfg.overlay(text).map_err(std::io::Error::other)?;
        }
        Ok(())
    }))
}

fn wan_enabled(args: &UpArgs) -> bool {
    args.wan_rtt_ms > 0 || args.wan_bandwidth_mbit > 0 || args.wan_loss_pct > 0.0
}

/// How long to wait for the bootstrap owner to exist.
const BOOTSTRAP_TIMEOUT_S: u64 = 60;

/// The owner's credentials: from WHARF_BOOTSTRAP_PASSWORD or the file the
/// bootstrap node wrote; returned once they work against `node`.
async fn owner_credentials(
    client: &reqwest::Client,
    node: &Member,
    data_dir: &Path,
) -> Result<(String, String), NodeError> {
    let user = crate::config::AuthSettings::default().bootstrap_user;
    let file = data_dir.join(crate::bootstrap::CREDENTIALS_FILE);
    let deadline = Instant::now() + Duration::from_secs(BOOTSTRAP_TIMEOUT_S);
    loop {
        let creds = match std::env::var(crate::bootstrap::PASSWORD_ENV) {
            Ok(p) => Some((user.clone(), p)),
            Err(_) => std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| {
                    serde_json::from_str::<crate::bootstrap::BootstrapCredentials>(&t).ok()
                })
                .map(|c| (c.username, c.password)),
        };
        if let Some((u, p)) = creds {
            let ok = client
                .get(node.url("/v2/"))
                .basic_auth(&u, Some(&p))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok((u, p));
            }
        }
        if Instant::now() > deadline {
            return Err(NodeError::Startup(format!(
                "the bootstrap owner did not appear within {BOOTSTRAP_TIMEOUT_S} s (is {} from \
                 another cluster? see {})",
                crate::bootstrap::PASSWORD_ENV,
                node.process.log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_cluster_json(
    dir: &Path,
    nodes: &[Member],
    (username, password): &(String, String),
    ca_file: Option<PathBuf>,
    registry_domain: &str,
) -> Result<PathBuf, NodeError> {
    let regions: Vec<_> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.region,
                "endpoint": n.endpoint(),
                "nodes": [{"id": n.id, "pid": n.process.pid(), "endpoint": n.endpoint()}],
            })
        })
        .collect();
    let doc = json!({
        "regions": regions,
        "credentials": {"username": username, "password": password},
        "ca_file": ca_file,
        "registry_domain": registry_domain,
    });
    let path = dir.join("cluster.json");
    // It holds the owner's password: readable by its owner only.
    let text = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    wharf_auth::write_private(&path, &text)?;
    Ok(path)
}

pub async fn run(args: UpArgs) -> Result<(), NodeError> {
    if args.regions == 0 || args.regions > wharf_launcher::REGIONS_MAX {
        return Err(NodeError::Config(format!(
            "--regions must be 1 to {}",
            wharf_launcher::REGIONS_MAX
        )));
    }
    std::fs::create_dir_all(&args.data_dir)?;
    wharf_auth::ClusterKey::load_or_create(&args.data_dir.join(CLUSTER_KEY_FILE), true)
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let mut cluster =
        Cluster::start(plan(&args)?).map_err(|e| NodeError::Startup(e.to_string()))?;
    // On an error the cluster is dropped, which kills its nodes.
    cluster
        .wait_all_ready(READY_TIMEOUT)
        .await
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let creds = owner_credentials(
        cluster.http(),
        &cluster.nodes[0],
        &cluster.nodes[0].dir.join("data"),
    )
    .await?;
    let description = write_cluster_json(
        &args.data_dir,
        &cluster.nodes,
        &creds,
        args.tls.then(|| args.tls_dir().join("ca.pem")),
        &args.registry_domain,
    )?;
    println!(
        "Wharf is up: {} region(s). Cluster description: {}",
        cluster.nodes.len(),
        description.display()
    );
    if wan_enabled(&args) {
        println!(
            "Emulated WAN between regions: {} ms RTT, {} Mbit/s per link (0: unlimited), {}% loss",
            args.wan_rtt_ms, args.wan_bandwidth_mbit, args.wan_loss_pct
        );
    }
    for n in &cluster.nodes {
        println!(
            "  {:<10} {}   (node {}, pid {}, log {})",
            n.region,
            n.endpoint(),
            n.id,
            n.process.pid().unwrap_or_default(),
            n.process.log().display()
        );
    }
    let endpoint = cluster.nodes[0].endpoint();
    let host = endpoint
        .trim_start_matches(args.scheme())
        .trim_start_matches("://");
    println!(
        "Registry owner: {} / {} (also under \"credentials\" in {}, mode 0600)",
        creds.0,
        creds.1,
        description.display()
    );
    if args.tls {
        let ca = std::fs::canonicalize(args.tls_dir().join("ca.pem"))?;
        let certs = std::fs::canonicalize(args.tls_dir())?;
        println!(
            "TLS: HTTPS with certificates from the local CA {}; mutual TLS between regions.",
            ca.display()
        );
        println!(
            "  Trust it: skopeo/podman/buildah --cert-dir DIR (DIR holding ca.crt = that file), or"
        );
        println!(
            "  /etc/containers/certs.d/{host}/ca.crt; docker: /etc/docker/certs.d/{host}/ca.crt;"
        );
        println!(
            "  curl --cacert {}; wharf --cacert {} (or WHARF_CACERT).",
            ca.display(),
            ca.display()
        );
        println!(
            "  (the CA and node certificates are in {})",
            certs.display()
        );
        println!(
            "Try: skopeo copy --dest-creds {}:PASSWORD --dest-cert-dir DIR oci:LAYOUT:TAG docker://{host}/REPO:TAG",
            creds.0
        );
        println!(
            "     wharf repository list --credentials {} --cacert {} --endpoint {}",
            description.display(),
            ca.display(),
            endpoint
        );
    } else {
        println!(
            "Try: skopeo copy --dest-tls-verify=false --dest-creds {}:PASSWORD oci:LAYOUT:TAG docker://{host}/REPO:TAG",
            creds.0
        );
        println!(
            "     wharf repository list --credentials {} --endpoint {}",
            description.display(),
            endpoint
        );
    }
    println!("Press Ctrl-C to stop.");

    // Stay in the foreground until told to stop. A node that dies (or is
    // killed in a failover drill) is reported, and the other regions keep
    // serving: that is what a multi-region cluster is for.
    let mut reported = std::collections::BTreeSet::new();
    let exited = loop {
        tokio::select! {
            _ = crate::serve::shutdown_signal() => break None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for n in cluster.nodes.iter_mut() {
                    if n.process.exited().is_some() && reported.insert(n.id) {
                        eprintln!(
                            "node {} ({}) exited; the other regions keep serving. Last lines of {}:\n{}",
                            n.id, n.region, n.process.log().display(), n.process.tail(15)
                        );
                    }
                }
                if reported.len() == cluster.nodes.len() {
                    break Some("every node has exited".to_string());
                }
            }
        }
    };
    eprintln!("Stopping {} node(s)...", cluster.nodes.len());
    cluster.stop_all(STOP_TIMEOUT);
    match exited {
        Some(why) => Err(NodeError::Startup(why)),
        None => {
            eprintln!("Stopped.");
            Ok(())
        }
    }
}
