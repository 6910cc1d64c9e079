//! Writes apply once: the state machine remembers the answer given to each
//! request id for `REQUEST_ID_TTL_MS` of command time and answers a repeat
//! with it, without applying the command again. A write forwarded to a
//! leader that failed before answering can so be retried safely, by the
//! node (after a failover) or by the client (with the same id).
//!
//! Expiry is deterministic: the clock is the largest `at_ms` of any applied
//! envelope (kept in the state, so every replica has the same one), and
//! each apply removes at most `EXPIRED_PER_APPLY_MAX` expired ids, bounding
//! the work of one entry however many ids expire at once.
//!
//! The ids by time are a queue: expired from the front, added at the back.
//! Seeking from the front of the range on every apply would step over
//! every deletion RocksDB has not compacted away yet, a number that grows
//! with the write rate times the TTL: at ~600 writes/s, 15 minutes into a
//! fill, applies slowed until the state machine starved heartbeats and the
//! cluster churned elections (bench/scale.py at a million tags). So each
//! node remembers where the live entries start (`ExpiryStart`), a hint
//! that never changes which ids expire: it is only ever at or before the
//! first live entry, forgotten at start and at a snapshot install.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::StoreError;
use crate::keys::CF_REQUESTS;
use crate::store::{encode, MetaStore};

/// How long a request id is remembered, in command time. Far longer than a
/// write waits for a leader (`write_timeout_ms`, 10 s) or a client retries.
pub const REQUEST_ID_TTL_MS: u64 = 15 * 60 * 1000;
/// Longest request id accepted (they are opaque to the state machine).
pub const REQUEST_ID_MAX_BYTES: usize = 128;
const EXPIRED_PER_APPLY_MAX: usize = 256;
const KEY_BY_ID: &str = "i";
const KEY_BY_TIME: &str = "t";
/// The state machine's clock, in the `sys` column family.
pub(crate) const SYS_CLOCK: &str = "meta_clock_ms";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RequestRecord {
    at_ms: u64,
    registry: String,
    response: Response,
}

fn by_id(id: &str) -> Vec<u8> {
    format!("{KEY_BY_ID}\0{id}").into_bytes()
}

fn by_time(at_ms: u64, id: &str) -> Vec<u8> {
    format!("{KEY_BY_TIME}\0{at_ms:020}\0{id}").into_bytes()
}

/// A key at or before every live entry of the ids by time (`None`: the
/// start of the range), and the one the apply being built will leave,
/// which becomes the hint only once that apply's batch is written.
#[derive(Default)]
pub(crate) struct ExpiryStart {
    hint: std::sync::Mutex<Hint>,
}

#[derive(Default)]
struct Hint {
    start: Option<Vec<u8>>,
    proposed: Option<Vec<u8>>,
}

impl ExpiryStart {
    fn lock(&self) -> std::sync::MutexGuard<'_, Hint> {
        self.hint.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self) -> Option<Vec<u8>> {
        self.lock().start.clone()
    }

    /// What the apply being built leaves (taken by `commit`).
    fn propose(&self, next: Option<Vec<u8>>) {
        self.lock().proposed = next;
    }

    /// The apply's batch is written: its proposal is the hint now.
    pub(crate) fn commit(&self) {
        let mut h = self.lock();
        if let Some(next) = h.proposed.take() {
            h.start = Some(next);
        }
    }

    /// The entries changed under the hint (a snapshot installed).
    pub(crate) fn reset(&self) {
        *self.lock() = Hint::default();
    }
}

impl MetaStore {
    /// The answer given the first time `id` was applied, if still remembered.
    pub fn remembered(&self, id: &str) -> Result<Option<Response>, StoreError> {
        Ok(self
            .get::<RequestRecord>(CF_REQUESTS, &by_id(id))?
            .map(|r| r.response))
    }

    /// The state machine's clock: the latest command time applied.
    pub fn clock_ms(&self) -> Result<u64, StoreError> {
        Ok(match self.read_sys(SYS_CLOCK)? {
            Some(v) => crate::store::decode(crate::keys::CF_SYS, &v)?,
            None => 0,
        })
    }

    /// Remember `response` for `id` and drop ids older than the TTL.
    pub(crate) fn remember(
        &self,
        batch: &mut WriteBatch,
        id: Option<&str>,
        registry: &str,
        at_ms: u64,
        response: &Response,
    ) -> Result<(), StoreError> {
        let clock = self.clock_ms()?.max(at_ms);
        batch.put_cf(
            self.cf(crate::keys::CF_SYS),
            SYS_CLOCK.as_bytes(),
            encode(&clock),
        );
        if let Some(id) = id {
            let record = RequestRecord {
                at_ms,
                registry: registry.to_string(),
                response: response.clone(),
            };
            batch.put_cf(self.cf(CF_REQUESTS), by_id(id), encode(&record));
            batch.put_cf(self.cf(CF_REQUESTS), by_time(at_ms, id), []);
        }
        let horizon = clock.saturating_sub(REQUEST_ID_TTL_MS);
        let prefix = format!("{KEY_BY_TIME}\0").into_bytes();
        // The same first entries a walk from the front of the range finds
        // (every key before `start` is deleted), without stepping over the
        // deletions that precede them.
        let start = self
            .request_expiry
            .start()
            .unwrap_or_else(|| prefix.clone());
        let mut it = self.db().raw_iterator_cf(self.cf(CF_REQUESTS));
        it.seek(&start);
        let mut next_start = Some(start);
        // The hint moves only over entries this batch deletes.
        let mut contiguous = true;
        let mut seen = 0;
        while seen < EXPIRED_PER_APPLY_MAX {
            let Some(k) = it.key().filter(|k| k.starts_with(&prefix)) else {
                break;
            };
            seen += 1;
            let rest = &k[prefix.len()..];
            match std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.split_once('\0'))
            {
                Some((at, id)) => {
                    let at: u64 = at.parse().unwrap_or(0);
                    if at >= horizon {
                        break;
                    }
                    batch.delete_cf(self.cf(CF_REQUESTS), k);
                    batch.delete_cf(self.cf(CF_REQUESTS), by_id(id));
                    if contiguous {
                        next_start = Some(k.to_vec());
                    }
                }
                None => contiguous = false,
            }
            it.next();
        }
        it.status()?;
        // An id written now may sort before where the live entries start
        // (its proposer's clock behind the others').
        if let Some(id) = id {
            let added = by_time(at_ms, id);
            if next_start.as_ref().is_some_and(|s| added < *s) {
                next_start = Some(added);
            }
        }
        self.request_expiry.propose(next_start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobRef, Command, Envelope, PutManifest, DEFAULT_REGISTRY};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn put(tag: &str, d: char, at_ms: u64, id: &str) -> Envelope {
        let cmd = Command::PutManifest(Box::new(PutManifest {
            repo: "a".into(),
            digest: digest(d),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: b"{}".to_vec(),
            tag: Some(tag.into()),
            blobs: vec![],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: None,
            now_ms: at_ms,
            new_links: vec![],
            region: "r".into(),
            replica_regions: vec![],
        }));
        Envelope::new(DEFAULT_REGISTRY, cmd, at_ms).with_request_id(id)
    }

    fn delete_tag(tag: &str, at_ms: u64, id: &str) -> Envelope {
        let cmd = Command::DeleteTag {
            repo: "a".into(),
            tag: tag.into(),
        };
        Envelope::new(DEFAULT_REGISTRY, cmd, at_ms).with_request_id(id)
    }

    #[test]
    fn a_repeated_request_id_answers_the_first_answer_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let reg = s.registry(DEFAULT_REGISTRY);
        assert_eq!(
            s.apply(&put("t", '1', 10, "w1"), &[]).unwrap(),
            Response::Ok
        );
        assert_eq!(
            s.apply(&delete_tag("t", 11, "d1"), &[]).unwrap(),
            Response::Removed(1)
        );
        // The first write is retried after the delete (a client that never
        // saw its answer): it must not bring the tag back.
        assert_eq!(
            s.apply(&put("t", '1', 12, "w1"), &[]).unwrap(),
            Response::Ok
        );
        assert!(reg.tag("a", "t").unwrap().is_none());
        // The delete retried answers as it did, not "tag unknown".
        assert_eq!(
            s.apply(&delete_tag("t", 13, "d1"), &[]).unwrap(),
            Response::Removed(1)
        );
        // A refusal is remembered too.
        let refused = s.apply(&delete_tag("nope", 14, "d2"), &[]).unwrap();
        assert!(matches!(refused, Response::Refused(_)));
        assert_eq!(
            s.apply(&delete_tag("nope", 15, "d2"), &[]).unwrap(),
            refused
        );
        // Without an id, nothing is remembered.
        let link = Command::LinkBlobs {
            repo: "a".into(),
            region: "r".into(),
            blobs: vec![BlobRef {
                digest: digest('b'),
                size: 1,
            }],
            now_ms: 16,
        };
        s.apply(&Envelope::new(DEFAULT_REGISTRY, link, 16), &[])
            .unwrap();
        assert_eq!(s.clock_ms().unwrap(), 16);
    }

    #[test]
    fn request_ids_expire_by_command_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        s.apply(&put("t", '1', 1_000, "old"), &[]).unwrap();
        s.apply(&put("t", '2', 2_000, "newer"), &[]).unwrap();
        assert!(s.remembered("old").unwrap().is_some());
        // A proposer with a slower clock does not move time backwards.
        s.apply(&put("u", '3', 500, "slow"), &[]).unwrap();
        assert_eq!(s.clock_ms().unwrap(), 2_000);
        // Just inside the TTL: still remembered.
        s.apply(&put("v", '4', 1_000 + REQUEST_ID_TTL_MS, "a"), &[])
            .unwrap();
        assert!(s.remembered("old").unwrap().is_some());
        // Past it: forgotten, the newer one kept.
        s.apply(&put("v", '4', 1_001 + REQUEST_ID_TTL_MS, "b"), &[])
            .unwrap();
        assert!(s.remembered("old").unwrap().is_none());
        assert!(s.remembered("slow").unwrap().is_none());
        assert!(s.remembered("newer").unwrap().is_some());
    }

    /// Every key of the request-id column family, in order.
    fn remembered_keys(s: &MetaStore) -> Vec<Vec<u8>> {
        s.scan(CF_REQUESTS, b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    // Where expiry starts looking is a node-local hint: a node that
    // restarts (and forgets it) must expire exactly the ids one that ran
    // on did, through bursts larger than one apply's share, proposers with
    // slow clocks, and writes without ids.
    #[test]
    fn where_expiry_starts_never_changes_which_ids_expire() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = MetaStore::open(a_dir.path()).unwrap();
        let mut b = MetaStore::open(b_dir.path()).unwrap();
        let mut at = 1_000u64;
        for i in 0..2_000u64 {
            // Bursts of ids at one time, so a later apply finds far more
            // expired than it may remove; every 7th proposer's clock lags
            // by more than the TTL (its id is expired on arrival).
            at += if i % 500 == 0 {
                REQUEST_ID_TTL_MS / 2
            } else {
                i % 3
            };
            let when = if i % 7 == 0 {
                at.saturating_sub(REQUEST_ID_TTL_MS + 5)
            } else {
                at
            };
            let d = char::from(b'a' + (i % 26) as u8);
            let env = if i % 11 == 0 {
                let mut e = put("t", d, when, "unused");
                e.request_id = None;
                e
            } else {
                put(&format!("t{}", i % 5), d, when, &format!("w{i}"))
            };
            let ra = a.apply(&env, &[]).unwrap();
            let rb = b.apply(&env, &[]).unwrap();
            assert_eq!(ra, rb, "apply {i}");
            if i % 97 == 0 {
                drop(b);
                b = MetaStore::open(b_dir.path()).unwrap();
            }
            if i % 50 == 0 {
                assert_eq!(remembered_keys(&a), remembered_keys(&b), "after apply {i}");
            }
        }
        assert_eq!(remembered_keys(&a), remembered_keys(&b));
        assert!(a.remembered("w1999").unwrap().is_some());
        assert!(a.remembered("w1").unwrap().is_none(), "expired long ago");
    }

    // The cost of an apply does not grow with the ids expired before it:
    // it steps over no more deletions than it makes (counted by RocksDB,
    // not timed), where a walk from the front of the range stepped over
    // every deletion not yet compacted away.
    #[test]
    fn expiry_does_not_step_over_earlier_deletions() {
        use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        for i in 0..5_000u64 {
            s.apply(&put("t", 'a', 1_000 + i, &format!("old{i}")), &[])
                .unwrap();
        }
        // Far past the TTL: every apply from here expires up to 256 ids.
        let late = 1_000 + REQUEST_ID_TTL_MS * 2;
        for i in 0..18u64 {
            s.apply(&put("t", 'b', late + i, &format!("new{i}")), &[])
                .unwrap();
        }
        // 18 applies, 256 each: the first 4,608 are gone.
        assert!(s.remembered("old4607").unwrap().is_none());
        assert!(s.remembered("old4608").unwrap().is_some());
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        ctx.reset();
        s.apply(&put("t", 'c', late + 100, "last"), &[]).unwrap();
        let skipped = ctx.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert!(
            skipped <= 2 * EXPIRED_PER_APPLY_MAX as u64,
            "stepped over {skipped} deletions (4,608 ids were expired before it)"
        );
        assert!(s.remembered("old4863").unwrap().is_none());
        assert!(s.remembered("old4864").unwrap().is_some());
    }
}
