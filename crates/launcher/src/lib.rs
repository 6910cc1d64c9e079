//! Local Wharf clusters: one `wharf serve` child process per region, each
//! with its own data directory and generated configuration, optionally
//! with every peer link through an emulated WAN link (crates/netem).
//!
//! `wharf up`, the node's integration tests and the jepsen harness all
//! start clusters through this crate, so the three agree on how a cluster
//! is laid out, configured, started, checked for readiness and stopped.

pub mod balancer;
mod cluster;
mod process;
pub mod s3;

pub use cluster::{
    region_name, Cluster, Member, PeerLink, Plan, Ports, Tune, ID_STRIDE, REGIONS_MAX, REGION_NAMES,
};
pub use process::{tail, Process};

use std::time::{Duration, Instant};

/// The log of a launched node, in its directory.
pub const LOG_FILE: &str = "wharf.log";
/// The cluster key every node of a launched cluster shares, in its directory.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// A free TCP port on loopback for a server to listen on. It is drawn at
/// random below the kernel's ephemeral range: a port from bind(0) is one
/// the kernel also hands to outgoing connections (every HTTP or gRPC
/// client of the tests), which then take it before the server binds it.
/// Bound and released here: another process may still take it in between,
/// which is rare at random. Never the same port twice in one process: two
/// tests of one binary drawing the same port before either server bound
/// it made one of them fail with "address in use".
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let port = draw_port(&given)?;
    given.push(port);
    Ok(port)
}

fn draw_port(given: &[u16]) -> std::io::Result<u16> {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, first_ephemeral.max(10_001));
    for _ in 0..200 {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), low..high);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let first: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        for _ in 0..20 {
            let p = super::free_port().unwrap();
            assert!(p < first, "{p} is one outgoing connections may take");
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
