//! The region's background role on this node: the mover's copies, GC's
//! sweep of freed files and the scrub run on one node of a region at a
//! time, since the region's nodes share one store. The holder keeps a
//! lease in the replicated state (`wharf_meta::RoleCommand`); when it dies
//! the lease runs out and another node of the region takes the role over.
//!
//! A node alone in its region holds the role without a lease (no write
//! every few seconds for nothing); once the membership shows another node
//! of its region, both claim and one wins. Two holders for a moment (a
//! node joining, clocks drifting) only repeat idempotent work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wharf_consensus::{now_unix_ms, Consensus};
use wharf_meta::{Command, Response, RoleCommand, DEFAULT_REGISTRY};

use crate::shutdown::Stop;

/// The one role: all of a region's background work goes together.
pub const BACKGROUND: &str = "background";
/// A lease runs this long past the claim's command time.
pub const LEASE_MS: u64 = 15_000;
/// Claims are renewed this often (several per lease).
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// A holder stops acting this long before its lease ends by its own
/// clock, for the drift between its clock and the proposers' after it.
const MARGIN_MS: u64 = 3_000;

/// Whether this node holds its region's background role now.
#[derive(Default)]
pub struct RegionRole {
    held: Arc<AtomicBool>,
    /// Local clock (ms) until which the last granted claim lets it act.
    until_ms: AtomicU64,
}

impl RegionRole {
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The flag itself, for tasks in crates that know nothing of roles.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.held.clone()
    }
}

/// Other nodes of `region` in the membership.
fn region_peers(consensus: &Consensus, region: &str) -> usize {
    let me = consensus.node_id();
    consensus
        .members()
        .into_iter()
        .filter(|(id, n)| *id != me && n.region == region)
        .count()
}

async fn propose(consensus: &Consensus, cmd: RoleCommand) -> Option<bool> {
    let env = crate::tenant::envelope(DEFAULT_REGISTRY, Command::Role(cmd), None);
    match consensus.write(env).await {
        Ok(Response::Changed(n)) => Some(n == 1),
        Ok(_) => Some(false),
        Err(e) => {
            tracing::debug!(error = %e, "role claim not committed");
            None
        }
    }
}

/// Claim and renew the role until `stop`; give it up on the way out.
pub async fn claimer(
    consensus: Arc<Consensus>,
    region: String,
    role: Arc<RegionRole>,
    mut stop: Stop,
) {
    let node = consensus.node_id();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => break,
        }
        let was = role.held();
        if region_peers(&consensus, &region) == 0 {
            role.held.store(true, Ordering::Relaxed);
        } else {
            let sent = now_unix_ms();
            let claim = RoleCommand::Claim {
                region: region.clone(),
                role: BACKGROUND.into(),
                node,
                ttl_ms: LEASE_MS,
            };
            match propose(&consensus, claim).await {
                Some(true) => role
                    .until_ms
                    .store(sent + LEASE_MS - MARGIN_MS, Ordering::Relaxed),
                Some(false) => role.until_ms.store(0, Ordering::Relaxed),
                // Not committed: act on the last grant until it runs out.
                None => {}
            }
            let until = role.until_ms.load(Ordering::Relaxed);
            role.held.store(now_unix_ms() < until, Ordering::Relaxed);
        }
        match (was, role.held()) {
            (false, true) => {
                tracing::info!(%region, "this node runs the region's mover, GC sweep and scrub")
            }
            (true, false) => {
                tracing::info!(%region, "another node of the region runs its mover, GC sweep and scrub")
            }
            _ => {}
        }
    }
    if role.held() && region_peers(&consensus, &region) > 0 {
        role.held.store(false, Ordering::Relaxed);
        let release = RoleCommand::Release {
            region,
            role: BACKGROUND.into(),
            node,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), propose(&consensus, release)).await;
    }
}
