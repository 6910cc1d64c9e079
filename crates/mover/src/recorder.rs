//! Recording copies in the replicated blob index, many per command.
//!
//! A copy is recorded after its file is durable and renamed into place. One
//! Raft write per copy made the index, not the network, the mover's limit:
//! a follower forwards each write to the leader's region, and a burst of
//! small copies queued so many of them that they timed out, were retried
//! one by one, and stalled the mover. Copies that finish together now share
//! one command, with one command in flight per node. A copy not recorded
//! when the node stops is found on disk by the replicator and recorded then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use wharf_oci::Digest;

use crate::directory::Directory;
use crate::fetcher::Fetcher;

/// Copies per command: bounds an entry's size (about 100 bytes each).
const BATCH_MAX: usize = 512;
/// After the first copy of a batch, wait this long for others to join.
const GATHER: Duration = Duration::from_millis(20);
/// Pause after a failed command (no quorum, a leader change) before the
/// same copies are proposed again.
const RETRY: Duration = Duration::from_secs(1);

/// Copies held in this region and not yet in the index.
#[derive(Default)]
pub struct Recorder {
    pending: Mutex<HashMap<Digest, u64>>,
    wake: Notify,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `digest` is held here (durably) and is to be recorded.
    pub fn add(&self, digest: Digest, size: u64) {
        self.lock().insert(digest, size);
        self.wake.notify_one();
    }

    /// Whether `digest` waits to be recorded (the replicator leaves it be).
    pub fn is_pending(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }

    /// Copies waiting to be recorded.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Up to `BATCH_MAX` waiting copies; they stay pending until `done`.
    fn batch(&self) -> Vec<(Digest, u64)> {
        self.lock()
            .iter()
            .take(BATCH_MAX)
            .map(|(d, s)| (d.clone(), *s))
            .collect()
    }

    fn done(&self, batch: &[(Digest, u64)]) {
        let mut pending = self.lock();
        for (d, _) in batch {
            pending.remove(d);
        }
    }
}

/// Record this region's copies until `stop` turns true.
pub async fn run_recorder<D: Directory>(fetcher: Arc<Fetcher<D>>, mut stop: watch::Receiver<bool>) {
    let recorder = fetcher.recorder();
    loop {
        let batch = recorder.batch();
        if batch.is_empty() {
            tokio::select! {
                _ = recorder.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::time::sleep(GATHER).await;
            continue;
        }
        let n = batch.len();
        match fetcher.directory().report(batch.clone()).await {
            Ok(()) => recorder.done(&batch),
            Err(e) => {
                tracing::warn!(copies = n, error = %e, "could not record copies in the blob index; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn copies_stay_pending_until_recorded() {
        let r = Recorder::default();
        r.add(digest('a'), 1);
        r.add(digest('b'), 2);
        r.add(digest('a'), 1);
        let batch = r.batch();
        assert_eq!(batch.len(), 2, "a copy added twice is recorded once");
        assert!(r.is_pending(&digest('a')), "still pending while proposed");
        r.done(&batch[..1]);
        assert_eq!(r.pending(), 1);
        r.done(&batch);
        assert_eq!(r.pending(), 0);
        assert!(r.batch().is_empty());
    }

    #[test]
    fn a_batch_is_bounded() {
        let r = Recorder::default();
        for i in 0..(BATCH_MAX + 10) {
            let d: Digest = format!("sha256:{i:064x}").parse().unwrap();
            r.add(d, 1);
        }
        assert_eq!(r.batch().len(), BATCH_MAX);
    }
}
