//! Slows password guessing: every failed login takes a token from the
//! bucket of the name tried and from the bucket of the source address;
//! while either is empty, logins for it are refused without checking the
//! password (which also spares the CPU an argon2 hash per guess).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed in a burst, and how fast they come back.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub burst: u32,
    pub refill_every: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            burst: 10,
            refill_every: Duration::from_secs(6),
        }
    }
}

/// Buckets beyond this many are pruned of the full ones.
const MAX_TRACKED: usize = 100_000;

struct Buckets<K> {
    // (tokens left, when last refilled)
    map: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn level(&mut self, k: &K, limits: LoginLimits, now: Instant) -> (u32, Instant) {
        let Some(&(tokens, since)) = self.map.get(k) else {
            return (limits.burst, now);
        };
        let per = limits.refill_every.as_millis().max(1);
        let earned = (now.duration_since(since).as_millis() / per) as u32;
        if earned == 0 {
            return (tokens, since);
        }
        let tokens = tokens.saturating_add(earned).min(limits.burst);
        let since = since + limits.refill_every * earned;
        (tokens, since)
    }

    /// Seconds until one attempt is allowed, or None if allowed now.
    fn wait(&mut self, k: &K, limits: LoginLimits, now: Instant) -> Option<u64> {
        let (tokens, since) = self.level(k, limits, now);
        (tokens == 0).then(|| {
            let next = since + limits.refill_every;
            next.saturating_duration_since(now).as_secs().max(1)
        })
    }

    fn take(&mut self, k: &K, limits: LoginLimits, now: Instant) {
        let (tokens, since) = self.level(k, limits, now);
        if self.map.len() >= MAX_TRACKED {
            self.map.retain(|_, (t, _)| *t < limits.burst);
        }
        self.map
            .insert(k.clone(), (tokens.saturating_sub(1), since));
    }
}

pub struct LoginLimiter {
    limits: LoginLimits,
    inner: Mutex<(Buckets<String>, Buckets<IpAddr>)>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            inner: Mutex::new((
                Buckets {
                    map: HashMap::new(),
                },
                Buckets {
                    map: HashMap::new(),
                },
            )),
        }
    }

    /// Seconds to wait before `name` may be tried again from `source`.
    pub fn check(&self, name: &str, source: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let by_name = g.0.wait(&name.to_string(), self.limits, now);
        let by_source = g.1.wait(&source, self.limits, now);
        by_name.max(by_source)
    }

    pub fn failed(&self, name: &str, source: IpAddr) {
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.take(&name.to_string(), self.limits, now);
        g.1.take(&source, self.limits, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_burst_are_refused_per_name_and_per_source() {
        let l = LoginLimiter::new(LoginLimits {
            burst: 3,
            refill_every: Duration::from_secs(60),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check("alice", a), None);
            l.failed("alice", a);
        }
        // The name is locked from any address; the address for any name.
        assert!(l.check("alice", b).is_some());
        assert!(l.check("bob", a).is_some());
        assert_eq!(l.check("bob", b), None);
    }

    #[test]
    fn attempts_come_back_with_time() {
        let l = LoginLimiter::new(LoginLimits {
            burst: 1,
            refill_every: Duration::from_millis(50),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        l.failed("x", a);
        assert!(l.check("x", a).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.check("x", a), None);
    }
}
