//! The background mover: copies every blob this region lacks, those with
//! the fewest holders first, with bounded concurrency. Its work list is
//! recomputed from the replicated blob index, so nothing queued only in
//! memory is lost on a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use wharf_oci::Digest;

use crate::directory::Directory;
use crate::fetcher::{Fetcher, Priority};

#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Background transfers at once (on-demand fetches come on top).
    pub concurrency: usize,
    /// Rescan at least this often even without new metadata.
    pub rescan: Duration,
    /// Blobs considered per scan.
    pub scan_limit: usize,
    /// How long a blob that failed to copy waits before another try.
    pub retry_after: Duration,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            concurrency: 4,
            rescan: Duration::from_secs(5),
            scan_limit: 10_000,
            retry_after: Duration::from_secs(10),
        }
    }
}

/// Smallest pause between two scans, so bursts of applied entries do not
/// turn into a scan each.
const SCAN_SPACING_MS: u64 = 200;

/// How long one scan's list keeps feeding transfer slots as they free up.
/// Older than this, it is scanned again: what became urgent since (blobs
/// a lost disk left with one holder) goes to the front, and what was done
/// meanwhile drops out.
const LIST_MAX_AGE: Duration = Duration::from_secs(2);

/// How long a stopping replicator waits for its transfers in flight; one
/// cut short resumes from its partial file at the next start.
const STOP_DRAIN: Duration = Duration::from_secs(4);

/// Copy what this region lacks until `stop` turns true; then start nothing
/// new and give the transfers in flight a moment to finish.
pub async fn run_replicator<D: Directory>(
    fetcher: Arc<Fetcher<D>>,
    mut applied: watch::Receiver<u64>,
    cfg: ReplicatorConfig,
    queue_depth: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    // Blobs started recently are not started again until their cooldown
    // ends: a failing blob is retried, but not in a tight loop.
    let mut cooldown: HashMap<Digest, Instant> = HashMap::new();
    'scans: loop {
        let wants = fetcher.dir.missing(cfg.scan_limit);
        let scanned = Instant::now();
        queue_depth.store(wants.len() as u64, Ordering::Relaxed);
        cooldown.retain(|_, until| *until > Instant::now());
        let mut stale = false;
        for (digest, size) in wants {
            if fetcher.is_inflight(&digest)
                || fetcher.recorder().is_pending(&digest)
                || cooldown.contains_key(&digest)
            {
                continue;
            }
            // Held but not recorded (a crash between rename and record).
            if matches!(fetcher.blobs.stat(&digest).await, Ok(Some(_))) {
                fetcher.recorder().add(digest, size);
                continue;
            }
            // Wait for a slot rather than for the next scan: a scan costs a
            // pass over the blob index, a slot frees up in one transfer.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'scans,
                },
                _ = stop.wait_for(|s| *s) => break 'scans,
            };
            let t = fetcher.fetch(&digest, size, Priority::Background);
            cooldown.insert(digest, Instant::now() + cfg.retry_after);
            tokio::spawn(async move {
                let _ = t.finished().await;
                drop(permit);
            });
            if scanned.elapsed() >= LIST_MAX_AGE {
                stale = true;
                break;
            }
        }
        if stale {
            continue; // more work waits: scan again at once
        }
        // Space scans out first: changes applied meanwhile are not missed
        // (the watch remembers them), and an idle mover reacts at once.
        tokio::time::sleep(Duration::from_millis(SCAN_SPACING_MS)).await;
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    break; // the state machine is gone: the node is stopping
                }
            }
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(cfg.rescan) => {}
        }
    }
    let all = u32::try_from(cfg.concurrency.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(STOP_DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!("stopping with transfers in flight; they resume at the next start");
    }
}
