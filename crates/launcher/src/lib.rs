//! Local Wharf clusters: one `wharf serve` child process per region, each
//! with its own data directory and generated configuration, optionally
//! with every peer link through an emulated WAN link (crates/netem).
//!
//! `wharf up`, the node's integration tests and the jepsen harness all
//! start clusters through this crate, so the three agree on how a cluster
//! is laid out, configured, started, checked for readiness and stopped.

mod cluster;
mod process;

pub use cluster::{
    region_name, Cluster, Member, PeerLink, Plan, Ports, Tune, ID_STRIDE, REGIONS_MAX, REGION_NAMES,
};
pub use process::{tail, Process};

use std::time::{Duration, Instant};

/// The log of a launched node, in its directory.
pub const LOG_FILE: &str = "wharf.log";
/// The cluster key every node of a launched cluster shares, in its directory.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// A free TCP port on loopback (bound and released: another process may
/// take it in between, which a test then sees as a start failure).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Poll `check` every `every` until it returns `Some`, for at most
/// `limit`: the way to wait for a condition instead of sleeping a fixed
/// time and hoping.
pub async fn eventually<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
