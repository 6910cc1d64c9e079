//! Roles a region runs once however many nodes serve it — its mover, its
//! GC sweeper, its scrub — held by one node at a time under a lease in the
//! replicated state.
//!
//! A node claims a role for `ttl_ms` of command time (the proposer's clock
//! in the envelope) and renews it well before it ends; when the holder
//! dies its lease runs out and the next claim of another node of the
//! region takes the role over. Nodes act on a role only while their own
//! clock says their lease runs for a safety margin more.
//!
//! The lease is about work, not about safety: every role's work is
//! idempotent on a content-addressed store (copying a blob the region
//! already holds, deleting a freed copy twice, hashing a copy again), so
//! two holders for a moment of clock drift waste effort and break nothing.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::StoreError;
use crate::keys::*;
use crate::store::{encode, MetaStore};

const SYS_ROLE: &str = "role.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleCommand {
    /// `node` takes `role` in `region` (or renews it) until `ttl_ms` after
    /// the command's time, if no other node holds an unexpired lease.
    Claim {
        region: String,
        role: String,
        node: u64,
        ttl_ms: u64,
    },
    /// `node` gives `role` up (a clean shutdown): another node of the
    /// region takes it at its next claim instead of after the lease.
    Release {
        region: String,
        role: String,
        node: u64,
    },
}

/// Who holds a role of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleLease {
    pub node: u64,
    /// Command time the lease runs to.
    pub until_ms: u64,
    /// Command time the current holder took it (renewals keep it).
    pub since_ms: u64,
}

fn key(region: &str, role: &str) -> String {
    format!("{SYS_ROLE}{region}.{role}")
}

impl MetaStore {
    /// `Changed(1)`: `node` holds the role now; `Changed(0)`: another node
    /// does (or, for a release, `node` did not).
    pub(crate) fn apply_role(
        &self,
        batch: &mut WriteBatch,
        cmd: &RoleCommand,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        match cmd {
            RoleCommand::Claim {
                region,
                role,
                node,
                ttl_ms,
            } => {
                let current = self.role_lease(region, role)?;
                let since_ms = match &current {
                    Some(l) if l.node == *node => l.since_ms,
                    Some(l) if l.until_ms > at_ms => return Ok(Response::Changed(0)),
                    _ => at_ms,
                };
                let lease = RoleLease {
                    node: *node,
                    // A renewal never shortens a lease (a proposer's clock
                    // behind the last one's).
                    until_ms: (at_ms + ttl_ms).max(
                        current
                            .filter(|l| l.node == *node)
                            .map_or(0, |l| l.until_ms),
                    ),
                    since_ms,
                };
                batch.put_cf(
                    self.cf(CF_SYS),
                    key(region, role).as_bytes(),
                    encode(&lease),
                );
                Ok(Response::Changed(1))
            }
            RoleCommand::Release { region, role, node } => match self.role_lease(region, role)? {
                Some(l) if l.node == *node => {
                    batch.delete_cf(self.cf(CF_SYS), key(region, role).as_bytes());
                    Ok(Response::Changed(1))
                }
                _ => Ok(Response::Changed(0)),
            },
        }
    }

    /// The lease of `role` in `region`, expired or not.
    pub fn role_lease(&self, region: &str, role: &str) -> Result<Option<RoleLease>, StoreError> {
        self.get(CF_SYS, key(region, role).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Envelope};

    fn claim(store: &MetaStore, node: u64, at_ms: u64) -> Response {
        let cmd = Command::Role(RoleCommand::Claim {
            region: "eu".into(),
            role: "mover".into(),
            node,
            ttl_ms: 10_000,
        });
        store
            .apply(&Envelope::new("default", cmd, at_ms), &[])
            .unwrap()
    }

    #[test]
    fn a_role_has_one_holder_until_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(claim(&store, 1, 1_000), Response::Changed(1));
        // Another node of the region is refused while the lease runs...
        assert_eq!(claim(&store, 2, 5_000), Response::Changed(0));
        // ...the holder renews (keeping when it took the role)...
        assert_eq!(claim(&store, 1, 8_000), Response::Changed(1));
        let l = store.role_lease("eu", "mover").unwrap().unwrap();
        assert_eq!((l.node, l.until_ms, l.since_ms), (1, 18_000, 1_000));
        // ...a renewal with a clock behind never shortens it...
        assert_eq!(claim(&store, 1, 2_000), Response::Changed(1));
        assert_eq!(
            store.role_lease("eu", "mover").unwrap().unwrap().until_ms,
            18_000
        );
        assert_eq!(claim(&store, 2, 17_999), Response::Changed(0));
        // ...and once it ran out (the holder died), the other takes over.
        assert_eq!(claim(&store, 2, 18_000), Response::Changed(1));
        let l = store.role_lease("eu", "mover").unwrap().unwrap();
        assert_eq!((l.node, l.since_ms), (2, 18_000));
        // Another region's role is its own.
        let other = Command::Role(RoleCommand::Claim {
            region: "us".into(),
            role: "mover".into(),
            node: 1,
            ttl_ms: 10_000,
        });
        assert_eq!(
            store
                .apply(&Envelope::new("default", other, 18_001), &[])
                .unwrap(),
            Response::Changed(1)
        );
    }

    #[test]
    fn a_released_role_is_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(claim(&store, 1, 1_000), Response::Changed(1));
        let release = |node| {
            Command::Role(RoleCommand::Release {
                region: "eu".into(),
                role: "mover".into(),
                node,
            })
        };
        // Only the holder can give it up.
        assert_eq!(
            store
                .apply(&Envelope::new("default", release(2), 1_500), &[])
                .unwrap(),
            Response::Changed(0)
        );
        assert_eq!(
            store
                .apply(&Envelope::new("default", release(1), 2_000), &[])
                .unwrap(),
            Response::Changed(1)
        );
        assert_eq!(claim(&store, 2, 2_001), Response::Changed(1));
    }
}
