//! `wharf-jepsen`: run the fault-injection harness against a real cluster.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wharf_jepsen::nemesis::Fault;
use wharf_jepsen::run::{run, RunConfig};

/// Start a cluster of real `wharf serve` processes, drive clients in every
/// region while faults are injected, heal, and check the consistency
/// promises. Exits 0 only when every check passes.
#[derive(Parser)]
struct Args {
    /// The wharf binary to test.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// How long clients run while faults are injected, in seconds.
    #[arg(long, default_value_t = 120)]
    duration_s: u64,
    #[arg(long, default_value_t = 2)]
    clients_per_region: usize,
    /// Tags (registers) the clients share.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Operations per second per client, at most (0: no limit).
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Faults to draw from: kill, pause, isolate-leader, isolate, split,
    /// bridge, slow, lossy, flap, wipe, silence, corrupt (or "none": clients
    /// only, e.g. to measure).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,isolate-leader,isolate,split,bridge,slow,lossy,flap,wipe,silence,corrupt"
    )]
    faults: Vec<String>,
    /// How long each fault lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    fault_s: u64,
    /// Quiet time before each fault, in seconds.
    #[arg(long, default_value_t = 5)]
    quiet_s: u64,
    /// Results directory (history, nemesis timeline, verdict).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also race garbage collection: GC clients push images sharing
    /// layers, delete manifests and tags, mount across repositories, while
    /// collections run back to back (grace 2 s); checked: every image
    /// tagged at the end has every blob in every region.
    #[arg(long)]
    gc: bool,
    /// The nodes' read mode: linearizable (checked as linearizable
    /// registers) or local, the default of clusters (checked: misses never
    /// stale, monotonic reads per client, staleness bounded while healthy).
    #[arg(long, default_value = "linearizable", value_parser = ["linearizable", "local"])]
    reads: String,
    /// Nodes in each region, sharing its object store (more than one
    /// needs --object-store; the wipe and corrupt faults act on one node's
    /// disk and are refused then). Clients run on every node.
    #[arg(long, default_value_t = 1)]
    nodes_per_region: usize,
    /// Keep every region's blobs on an S3 server: `seaweedfs` (the local
    /// one, started if none runs) or an `http://host:port` endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    object_store: Option<String>,
}

fn main() {
    let a = Args::parse();
    let mut faults = Vec::new();
    for f in a.faults.iter().filter(|f| *f != "none") {
        match Fault::parse(f) {
            Some(x) => faults.push(x),
            None => {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                eprintln!("unknown fault {f:?}: one of {}", names.join(", "));
                std::process::exit(2);
            }
        }
    }
    if a.nodes_per_region > 1 && a.object_store.is_none() {
        eprintln!(
            "--nodes-per-region {} needs --object-store: a region's nodes share its store",
            a.nodes_per_region
        );
        std::process::exit(2);
    }
    if a.object_store.is_some() {
        if let Some(f) = faults
            .iter()
            .find(|f| matches!(f, Fault::Wipe | Fault::Corrupt))
        {
            eprintln!(
                "the {} fault acts on a node's disk; with --object-store the blobs are in the store (leave it out of --faults)",
                f.name()
            );
            std::process::exit(2);
        }
    }
    let object_store = match a.object_store.as_deref() {
        None => None,
        Some("seaweedfs") => Some(wharf_launcher::s3::ObjectStore::seaweedfs()),
        Some(e) => Some(wharf_launcher::s3::ObjectStore::at(e)),
    };
    let object_store = match object_store.transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--object-store: {e}");
            std::process::exit(2);
        }
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("jepsen/results/run-{stamp}")));
    let cfg = RunConfig {
        wharf: a.wharf,
        regions: a.regions,
        duration: Duration::from_secs(a.duration_s),
        clients_per_region: a.clients_per_region,
        keys: a.keys,
        rate: a.rate,
        faults,
        fault_for: Duration::from_secs(a.fault_s),
        quiet_for: Duration::from_secs(a.quiet_s),
        out: out.clone(),
        gc: a.gc,
        nodes_per_region: a.nodes_per_region,
        object_store,
        reads: if a.reads == "local" {
            wharf_config::ReadConsistency::Local
        } else {
            wharf_config::ReadConsistency::Linearizable
        },
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    match rt.block_on(run(&cfg)) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            println!("results in {}", out.display());
            std::process::exit(if v.valid { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("the run could not complete: {e}");
            std::process::exit(2);
        }
    }
}
