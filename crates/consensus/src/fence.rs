//! A fence takes this node out of the group without touching the
//! membership: it neither sends nor answers peer RPCs (Raft, forwarding,
//! blob transfers), does not campaign, and refuses writes and reads that
//! need the leader. To the other regions it looks like a region that went
//! dark, which is what a failover drill rehearses. A fence carries its own
//! expiry, so a drill that dies half-way cannot leave a region out forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Default)]
pub struct Fence {
    /// Unix ms until which the node is fenced; 0 when it is not.
    until_ms: AtomicU64,
}

impl Fence {
    pub fn new(until_ms: Option<u64>) -> Fence {
        Fence {
            until_ms: AtomicU64::new(until_ms.unwrap_or(0)),
        }
    }

    /// One relaxed load on the hot path; the clock is read only while a
    /// fence is set.
    pub fn is_fenced(&self) -> bool {
        self.until().is_some()
    }

    /// When the current fence ends (None: not fenced, or already expired).
    pub fn until(&self) -> Option<u64> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until != 0 && now_unix_ms() < until).then_some(until)
    }

    /// The stored expiry, expired or not (0: none).
    pub(crate) fn raw_until(&self) -> u64 {
        self.until_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, until_ms: Option<u64>) {
        self.until_ms
            .store(until_ms.unwrap_or(0), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_its_expiry_and_can_be_lifted() {
        let f = Fence::new(None);
        assert!(!f.is_fenced());
        f.set(Some(now_unix_ms() + 60_000));
        assert!(f.is_fenced());
        assert!(f.until().is_some());
        f.set(None);
        assert!(!f.is_fenced());
        // An expired fence no longer fences, even before anyone lifts it.
        f.set(Some(now_unix_ms().saturating_sub(1)));
        assert!(!f.is_fenced());
        assert_eq!(f.until(), None);
    }
}
