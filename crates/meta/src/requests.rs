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
        for (k, _) in self.scan(CF_REQUESTS, &prefix, None, EXPIRED_PER_APPLY_MAX)? {
            let rest = &k[prefix.len()..];
            let Some((at, id)) = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.split_once('\0'))
            else {
                continue;
            };
            let at: u64 = at.parse().unwrap_or(0);
            if at >= horizon {
                break;
            }
            batch.delete_cf(self.cf(CF_REQUESTS), &k);
            batch.delete_cf(self.cf(CF_REQUESTS), by_id(id));
        }
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
}
