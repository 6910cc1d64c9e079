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
    /// Number of regions (one node each). Multi-region clusters replicate
    /// metadata; cross-region blob transfer arrives with geo-replication,
    /// so only 1 is accepted for now.
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// Directory holding every node's data, logs and cluster.json.
    /// Restarting with the same directory resumes the same cluster.
    #[arg(long, default_value = ".wharf")]
    data_dir: PathBuf,
    /// HTTP of region i (1-based) listens on 127.0.0.1:<base-port + i>,
    /// its peer gRPC on <base-port + 100 + i>.
    #[arg(long, default_value_t = 5000)]
    base_port: u16,
}

struct Node {
    id: u64,
    region: String,
    endpoint: String,
    child: Child,
    log: PathBuf,
}

fn node_config(args: &UpArgs, i: usize, dir: &Path) -> Result<ServeConfig, NodeError> {
    let http = args
        .base_port
        .checked_add(i as u16)
        .ok_or_else(|| NodeError::Config("base port too high".into()))?;
    let grpc = http
        .checked_add(GRPC_PORT_OFFSET)
        .ok_or_else(|| NodeError::Config("base port too high".into()))?;
    Ok(ServeConfig {
        node_id: i as u64,
        region: REGION_NAMES
            .get(i - 1)
            .map_or_else(|| format!("region-{i}"), |s| s.to_string()),
        data_dir: dir.join("data"),
        http_listen: ([127, 0, 0, 1], http).into(),
        grpc_listen: ([127, 0, 0, 1], grpc).into(),
        bootstrap: i == 1,
        ..ServeConfig::default()
    })
}

fn spawn(cfg: &ServeConfig, dir: &Path) -> Result<Node, NodeError> {
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
        endpoint: format!("http://{}", cfg.http_listen),
        child,
        log,
    })
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn wait_ready(node: &mut Node) -> Result<(), NodeError> {
    let client = reqwest::Client::new();
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

fn write_cluster_json(dir: &Path, nodes: &[Node]) -> Result<PathBuf, NodeError> {
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
    let doc = json!({"regions": regions, "credentials": null});
    let path = dir.join("cluster.json");
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
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
    if args.regions != 1 {
        return Err(NodeError::Config(format!(
            "--regions {}: multi-region local clusters need cross-region blob transfer, which is not built yet; use --regions 1",
            args.regions
        )));
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let mut nodes = Vec::new();
    for i in 1..=args.regions {
        let dir = args.data_dir.join(format!("node-{i}"));
        let cfg = node_config(&args, i, &dir)?;
        nodes.push(spawn(&cfg, &dir)?);
    }
    for n in nodes.iter_mut() {
        if let Err(e) = wait_ready(n).await {
            stop(&mut nodes);
            return Err(e);
        }
    }
    let cluster = write_cluster_json(&args.data_dir, &nodes)?;
    println!(
        "Wharf is up: {} region(s). Cluster description: {}",
        nodes.len(),
        cluster.display()
    );
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
    println!(
        "Try: skopeo copy --dest-tls-verify=false oci:LAYOUT:TAG docker://{}/REPO:TAG",
        nodes[0].endpoint.trim_start_matches("http://")
    );
    println!("Press Ctrl-C to stop.");

    // Stay in the foreground until told to stop or a node dies.
    let exited = loop {
        tokio::select! {
            _ = crate::serve::shutdown_signal() => break None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(n) = nodes.iter_mut().find_map(|n| matches!(n.child.try_wait(), Ok(Some(_))).then_some(&*n)) {
                    break Some(format!("node {} ({}) exited; see {}:\n{}", n.id, n.region, n.log.display(), tail(&n.log)));
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
