//! `wharf up`: a whole local cluster in the foreground, one `wharf serve`
//! child process per region, each with its own data directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::config::ServeConfig;
use crate::error::NodeError;

/// Region names given to a local cluster's regions, in order.
pub const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "us-west", "eu-north"];
/// How long a node may take to become ready.
const READY_TIMEOUT_S: u64 = 60;
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT_S: u64 = 20;
/// Offset from the HTTP port to the peer gRPC port of the same node.
const GRPC_PORT_OFFSET: u16 = 100;

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

/// Offset from the base port to the emulated link from region i to j:
/// <base-port + 300 + 10 i + j>.
const WAN_PORT_OFFSET: u16 = 300;
/// The most regions a local cluster can have (port layout above).
const REGIONS_MAX: usize = 9;

struct Node {
    id: u64,
    region: String,
    endpoint: String,
    child: Child,
    log: PathBuf,
}

fn port(args: &UpArgs, offset: usize) -> Result<u16, NodeError> {
    u16::try_from(offset)
        .ok()
        .and_then(|o| args.base_port.checked_add(o))
        .ok_or_else(|| NodeError::Config(format!("--base-port {} is too high", args.base_port)))
}

fn wan_port(args: &UpArgs, from: usize, to: usize) -> Result<u16, NodeError> {
    port(args, WAN_PORT_OFFSET as usize + 10 * from + to)
}

fn wan_enabled(args: &UpArgs) -> bool {
    args.wan_rtt_ms > 0 || args.wan_bandwidth_mbit > 0 || args.wan_loss_pct > 0.0
}

fn region_name(i: usize) -> String {
    REGION_NAMES
        .get(i - 1)
        .map_or_else(|| format!("region-{i}"), |s| s.to_string())
}

fn node_config(
    args: &UpArgs,
    i: usize,
    dir: &Path,
    ca: Option<&crate::tls::LocalCa>,
) -> Result<ServeConfig, NodeError> {
    let peers = (1..=args.regions)
        .map(|j| {
            Ok(wharf_consensus::Peer {
                id: j as u64,
                region: region_name(j),
                grpc: format!("127.0.0.1:{}", port(args, GRPC_PORT_OFFSET as usize + j)?),
                http: format!("{}://127.0.0.1:{}", args.scheme(), port(args, j)?),
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let peer_routes = if wan_enabled(args) {
        (1..=args.regions)
            .filter(|j| *j != i)
            .map(|j| {
                Ok(crate::config::PeerRoute {
                    node: j as u64,
                    via: format!("127.0.0.1:{}", wan_port(args, i, j)?),
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?
    } else {
        Vec::new()
    };
    Ok(ServeConfig {
        node_id: i as u64,
        region: region_name(i),
        data_dir: dir.join("data"),
        http_listen: ([127, 0, 0, 1], port(args, i)?).into(),
        grpc_listen: ([127, 0, 0, 1], port(args, GRPC_PORT_OFFSET as usize + i)?).into(),
        bootstrap: i == 1,
        peers,
        peer_routes,
        auth: crate::config::AuthSettings {
            cluster_key_file: Some(args.data_dir.join(CLUSTER_KEY_FILE)),
            ..Default::default()
        },
        tls: node_tls(ca, i, &args.registry_domain)?,
        registry_domain: Some(args.registry_domain.clone()),
        ..ServeConfig::default()
    })
}

/// With --tls (a local CA): node i's certificate, HTTPS, peer mTLS.
fn node_tls(
    ca: Option<&crate::tls::LocalCa>,
    i: usize,
    registry_domain: &str,
) -> Result<crate::config::TlsSettings, NodeError> {
    let Some(ca) = ca else {
        return Ok(Default::default());
    };
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

/// A client that trusts the local CA when --tls is on.
fn client(args: &UpArgs) -> Result<reqwest::Client, NodeError> {
    let ca = args.tls.then(|| args.tls_dir().join("ca.pem"));
    crate::tls::http_client(ca.as_deref())
}

/// The one cluster key every node of the local cluster shares.
const CLUSTER_KEY_FILE: &str = "cluster.key";
/// How long to wait for the bootstrap owner to exist.
const BOOTSTRAP_TIMEOUT_S: u64 = 60;

/// The owner's credentials: from WHARF_BOOTSTRAP_PASSWORD or the file the
/// bootstrap node wrote; returned once they work against `node`.
async fn owner_credentials(
    client: &reqwest::Client,
    node: &Node,
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
                .get(format!("{}/v2/", node.endpoint))
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
                node.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start one proxy per directed link between regions.
async fn start_wan(args: &UpArgs) -> Result<(), NodeError> {
    let spec = wharf_netem::LinkSpec {
        one_way_delay: Duration::from_millis(args.wan_rtt_ms / 2),
        bytes_per_s: args.wan_bandwidth_mbit * 1_000_000 / 8,
        loss_pct: args.wan_loss_pct,
    };
    for i in 1..=args.regions {
        for j in (1..=args.regions).filter(|j| *j != i) {
            let listen = format!("127.0.0.1:{}", wan_port(args, i, j)?);
            let upstream = format!("127.0.0.1:{}", port(args, GRPC_PORT_OFFSET as usize + j)?);
            let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
                NodeError::Startup(format!(
                    "emulated link {i}->{j} cannot listen on {listen}: {e}"
                ))
            })?;
            // Lives as long as the runtime: `wharf up` runs until Ctrl-C.
            wharf_netem::Link::start(listener, upstream, spec);
        }
    }
    Ok(())
}

fn spawn(cfg: &ServeConfig, dir: &Path, scheme: &str) -> Result<Node, NodeError> {
    std::fs::create_dir_all(dir)?;
    let cfg_path = dir.join("wharf.toml");
    std::fs::write(&cfg_path, cfg.to_toml())?;
    let log = dir.join("wharf.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: prctl is async-signal-safe; it makes the child receive
    // SIGTERM if this launcher dies, so no node is ever left orphaned.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Node {
        id: cfg.node_id,
        region: cfg.region.clone(),
        endpoint: format!("{scheme}://{}", cfg.http_listen),
        child,
        log,
    })
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn wait_ready(client: &reqwest::Client, node: &mut Node) -> Result<(), NodeError> {
    let deadline = Instant::now() + Duration::from_secs(READY_TIMEOUT_S);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            return Err(NodeError::Startup(format!(
                "node {} ({}) exited with {status}; last lines of {}:\n{}",
                node.id,
                node.region,
                node.log.display(),
                tail(&node.log)
            )));
        }
        if let Ok(r) = client.get(format!("{}/readyz", node.endpoint)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(NodeError::Startup(format!(
                "node {} ({}) not ready after {READY_TIMEOUT_S} s; see {}",
                node.id,
                node.region,
                node.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_cluster_json(
    dir: &Path,
    nodes: &[Node],
    (username, password): &(String, String),
    ca_file: Option<PathBuf>,
    registry_domain: &str,
) -> Result<PathBuf, NodeError> {
    let regions: Vec<_> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.region,
                "endpoint": n.endpoint,
                "nodes": [{"id": n.id, "pid": n.child.id(), "endpoint": n.endpoint}],
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

fn stop(nodes: &mut [Node]) {
    for n in nodes.iter() {
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(n.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(STOP_TIMEOUT_S);
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!(
                        "node {} did not stop in {STOP_TIMEOUT_S} s; killing it",
                        n.id
                    );
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

pub async fn run(args: UpArgs) -> Result<(), NodeError> {
    if args.regions == 0 || args.regions > REGIONS_MAX {
        return Err(NodeError::Config(format!(
            "--regions must be 1 to {REGIONS_MAX}"
        )));
    }
    std::fs::create_dir_all(&args.data_dir)?;
    wharf_auth::ClusterKey::load_or_create(&args.data_dir.join(CLUSTER_KEY_FILE), true)
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    if wan_enabled(&args) {
        start_wan(&args).await?;
    }
    let ca = if args.tls {
        Some(crate::tls::LocalCa::open(&args.tls_dir())?)
    } else {
        None
    };
    let http = client(&args)?;
    let mut nodes = Vec::new();
    for i in 1..=args.regions {
        let dir = args.data_dir.join(format!("node-{i}"));
        let cfg = node_config(&args, i, &dir, ca.as_ref())?;
        nodes.push(spawn(&cfg, &dir, args.scheme())?);
    }
    for n in nodes.iter_mut() {
        if let Err(e) = wait_ready(&http, n).await {
            stop(&mut nodes);
            return Err(e);
        }
    }
    let creds =
        match owner_credentials(&http, &nodes[0], &args.data_dir.join("node-1").join("data")).await
        {
            Ok(c) => c,
            Err(e) => {
                stop(&mut nodes);
                return Err(e);
            }
        };
    let cluster = write_cluster_json(
        &args.data_dir,
        &nodes,
        &creds,
        args.tls.then(|| args.tls_dir().join("ca.pem")),
        &args.registry_domain,
    )?;
    println!(
        "Wharf is up: {} region(s). Cluster description: {}",
        nodes.len(),
        cluster.display()
    );
    if wan_enabled(&args) {
        println!(
            "Emulated WAN between regions: {} ms RTT, {} Mbit/s per link (0: unlimited), {}% loss",
            args.wan_rtt_ms, args.wan_bandwidth_mbit, args.wan_loss_pct
        );
    }
    for n in &nodes {
        println!(
            "  {:<10} {}   (node {}, pid {}, log {})",
            n.region,
            n.endpoint,
            n.id,
            n.child.id(),
            n.log.display()
        );
    }
    let host = nodes[0]
        .endpoint
        .trim_start_matches(args.scheme())
        .trim_start_matches("://");
    println!(
        "Registry owner: {} / {} (also under \"credentials\" in {}, mode 0600)",
        creds.0,
        creds.1,
        cluster.display()
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
            cluster.display(),
            ca.display(),
            nodes[0].endpoint
        );
    } else {
        println!(
            "Try: skopeo copy --dest-tls-verify=false --dest-creds {}:PASSWORD oci:LAYOUT:TAG docker://{host}/REPO:TAG",
            creds.0
        );
        println!(
            "     wharf repository list --credentials {} --endpoint {}",
            cluster.display(),
            nodes[0].endpoint
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
                for n in nodes.iter_mut() {
                    if matches!(n.child.try_wait(), Ok(Some(_))) && reported.insert(n.id) {
                        eprintln!(
                            "node {} ({}) exited; the other regions keep serving. Last lines of {}:\n{}",
                            n.id, n.region, n.log.display(), tail(&n.log)
                        );
                    }
                }
                if reported.len() == nodes.len() {
                    break Some("every node has exited".to_string());
                }
            }
        }
    };
    eprintln!("Stopping {} node(s)...", nodes.len());
    stop(&mut nodes);
    match exited {
        Some(why) => Err(NodeError::Startup(why)),
        None => {
            eprintln!("Stopped.");
            Ok(())
        }
    }
}
