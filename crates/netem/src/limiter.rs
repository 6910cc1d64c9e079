//! A shared bytes-per-second limit (background transfers, emulated links).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Credit a limiter may bank while idle or while its timers wake late.
const BURST_MS: u64 = 20;

pub struct RateLimiter {
    /// 0: unlimited. Changeable at run time (a link that slows down).
    bytes_per_s: AtomicU64,
    /// When the bytes granted so far will have been "spent" at the rate.
    next_free: Mutex<Instant>,
}

impl RateLimiter {
    /// `bytes_per_s == 0` means unlimited.
    pub fn new(bytes_per_s: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_s: AtomicU64::new(bytes_per_s),
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Wait until `n` more bytes may be moved.
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.bytes_per_s.store(bytes_per_s, Ordering::Relaxed);
    }

    pub async fn take(&self, n: u64) {
        let rate = self.bytes_per_s.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let wait = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Unused capacity accumulates up to a short burst only. Keeping
            // that little credit matters: timers wake late, and forgetting
            // the lateness on every grant would shave the rate each time.
            let floor = now
                .checked_sub(Duration::from_millis(BURST_MS))
                .unwrap_or(now);
            if *next < floor {
                *next = floor;
            }
            *next += Duration::from_secs_f64(n as f64 / rate as f64);
            next.saturating_duration_since(now)
        };
        if wait > Duration::from_millis(1) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_the_rate() {
        let l = RateLimiter::new(1_000_000);
        let start = Instant::now();
        for _ in 0..5 {
            l.take(100_000).await;
        }
        // 500 kB at 1 MB/s: about half a second (the first grant is free).
        assert!(
            start.elapsed() >= Duration::from_millis(390),
            "{:?}",
            start.elapsed()
        );
        let unlimited = RateLimiter::new(0);
        let start = Instant::now();
        unlimited.take(u64::MAX).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
