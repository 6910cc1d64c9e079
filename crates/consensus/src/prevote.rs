//! Pre-vote (the Raft thesis, §9.6) in front of openraft 0.9, which has
//! none.
//!
//! Without it, a region cut off from the others times out, raises its term
//! and campaigns, again and again; when the link comes back, the leader's
//! next append meets that higher term and steps down: an election, and
//! about a second without writes, caused by a region that was merely away.
//!
//! So openraft's own election timer is off (`Config::enable_elect =
//! false`) and this module decides when to campaign: after
//! `election_timeout_max + rand(min..=max)` without hearing from a leader
//! (openraft's own rule for a follower that knew a leader), it first asks
//! every voter whether it *would* vote — a question that changes nothing
//! on either side — and calls `trigger().elect()` only when a quorum of
//! every configuration says yes. A voter says yes only if it is not the
//! leader, has not heard from one for `election_timeout_max` (openraft's
//! leader lease, inside which the real vote would be refused anyway), and
//! the candidate's log is at least as up to date as its own. A cut-off
//! node hears no yes, so its term never moves, and the leader's first
//! append after the heal is simply accepted.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::ServerState;
use rand::Rng;
use tokio::task::JoinSet;

use crate::handle::Consensus;
use crate::log_store::LogStore;
use crate::pb::{PreVoteReply, PreVoteRequest};
use crate::types::NodeId;

/// How often the campaigner looks at the clock.
const TICK_MS: u64 = 20;

/// When this node last heard from a leader it follows (an accepted append
/// or snapshot), granted a vote, or was the leader: the election timer.
#[derive(Debug)]
pub(crate) struct Liveness {
    heard: Mutex<Instant>,
}

impl Liveness {
    /// A timer started now: a node that just started waits a whole
    /// timeout for a leader before it campaigns.
    pub(crate) fn new() -> Liveness {
        Liveness {
            heard: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn heard(&self) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub(crate) fn since(&self) -> Duration {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// A log position as elections order them: (term, index) of the last
/// entry, None for an empty log (openraft's `Option<LogId>` order, whose
/// committed leader id is the term alone).
pub(crate) type LogPosition = Option<(u64, u64)>;

/// Why a voter would not vote for a candidate now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It is the leader itself.
    Leader,
    /// It heard from a leader this long ago, within the lease.
    LeaderHeard(Duration),
    /// Its log is ahead of the candidate's.
    LogBehind { mine: LogPosition },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Leader => write!(f, "I am the leader"),
            Refusal::LeaderHeard(d) => write!(f, "heard from the leader {} ms ago", d.as_millis()),
            Refusal::LogBehind { mine } => write!(f, "my log is ahead ({mine:?})"),
        }
    }
}

/// Would a voter vote for `candidate`'s log now? Pure, so each rule is a
/// unit test.
pub(crate) fn judge(
    is_leader: bool,
    heard_ago: Duration,
    lease: Duration,
    mine: LogPosition,
    candidate: LogPosition,
) -> Result<(), Refusal> {
    if is_leader {
        return Err(Refusal::Leader);
    }
    if heard_ago <= lease {
        return Err(Refusal::LeaderHeard(heard_ago));
    }
    if candidate < mine {
        return Err(Refusal::LogBehind { mine });
    }
    Ok(())
}

/// Did `granted` reach a majority of every configuration (one, or two
/// during a joint membership change)?
pub(crate) fn quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.iter().filter(|n| granted.contains(n)).count() * 2 > c.len())
}

/// The last entry of `log`.
pub(crate) async fn last_position(log: &LogStore) -> Result<LogPosition, String> {
    let state = log
        .clone()
        .get_log_state()
        .await
        .map_err(|e| e.to_string())?;
    Ok(state.last_log_id.map(|l| (l.leader_id.term, l.index)))
}

/// The election timeout of one round: openraft's for a follower that knew
/// a leader (lease plus a random timeout), so that by then the voters'
/// leases have run out too.
fn round_timeout(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(max_ms + rand::thread_rng().gen_range(min_ms..=max_ms))
}

/// Run the election timer of `consensus` until it stops.
pub(crate) fn spawn_campaigner(consensus: &Arc<Consensus>) {
    let weak = Arc::downgrade(consensus);
    let (min_ms, max_ms) = {
        let t = &consensus.cfg.timings;
        (t.election_timeout_min_ms, t.election_timeout_max_ms)
    };
    tokio::spawn(async move {
        let mut timeout = round_timeout(min_ms, max_ms);
        loop {
            tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
            let Some(c) = weak.upgrade() else { return };
            let state = c.raft.metrics().borrow().campaign_view(c.cfg.node_id);
            match state {
                None => return,
                // A leader hears itself; a fenced node campaigns not (and
                // after its fence waits a whole timeout for the leader).
                Some((ServerState::Leader, _)) => c.liveness.heard(),
                _ if c.fence.is_fenced() => c.liveness.heard(),
                Some((_, Voice::None)) => {}
                // Nobody to wait for or ask (as openraft does).
                Some((ServerState::Follower, Voice::Alone)) => {
                    c.liveness.heard();
                    if let Err(e) = c.raft.trigger().elect().await {
                        tracing::warn!(error = %e, "could not start an election");
                    }
                }
                Some(_) if c.liveness.since() < timeout => {}
                Some(_) => {
                    let won = c.pre_vote().await;
                    // Win or lose, the next round waits a whole timeout.
                    c.liveness.heard();
                    timeout = round_timeout(min_ms, max_ms);
                    if won {
                        tracing::info!("pre-vote won: starting an election");
                        if let Err(e) = c.raft.trigger().elect().await {
                            tracing::warn!(error = %e, "could not start an election");
                        }
                    }
                }
            }
        }
    });
}

/// Whether a node votes, and with whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Voice {
    /// A learner, or not a member.
    None,
    /// The only voter.
    Alone,
    /// One voter among others.
    Among,
}

/// The metrics the campaigner reads.
trait CampaignView {
    /// (state, how `id` votes); None once Raft has shut down.
    fn campaign_view(&self, id: NodeId) -> Option<(ServerState, Voice)>;
}

impl CampaignView for openraft::RaftMetrics<NodeId, crate::types::NodeInfo> {
    fn campaign_view(&self, id: NodeId) -> Option<(ServerState, Voice)> {
        if self.state == ServerState::Shutdown {
            return None;
        }
        let membership = self.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let voice = match voters.contains(&id) {
            false => Voice::None,
            true if voters.len() == 1 => Voice::Alone,
            true => Voice::Among,
        };
        Some((self.state, voice))
    }
}

impl Consensus {
    /// Ask every voter whether it would vote for this node now; true once
    /// a quorum of every configuration said yes.
    async fn pre_vote(&self) -> bool {
        let me = self.cfg.node_id;
        let mine = match last_position(&self.log).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "pre-vote: cannot read the log");
                return false;
            }
        };
        let (configs, nodes) = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let configs = m.membership().get_joint_config().clone();
            let nodes: Vec<_> = m
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            (configs, nodes)
        };
        let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
        let request = PreVoteRequest {
            candidate: me,
            has_log: mine.is_some(),
            last_log_term: mine.map_or(0, |p| p.0),
            last_log_index: mine.map_or(0, |p| p.1),
        };
        let timeout = Duration::from_millis(self.cfg.timings.election_timeout_min_ms);
        let mut asks = JoinSet::new();
        for (id, node) in nodes {
            if id == me || !voters.contains(&id) {
                continue;
            }
            let Ok(mut client) = self.peer_client(id, &node) else {
                continue;
            };
            asks.spawn(async move {
                let mut req = tonic::Request::new(request);
                req.set_timeout(timeout);
                let answer = tokio::time::timeout(timeout, client.pre_vote(req)).await;
                (id, answer)
            });
        }
        let mut granted = BTreeSet::from([me]);
        let mut refusals = Vec::new();
        while !quorum(&configs, &granted) {
            let Some(done) = asks.join_next().await else {
                break;
            };
            let Ok((id, answer)) = done else { continue };
            match answer {
                Ok(Ok(r)) => {
                    let r: PreVoteReply = r.into_inner();
                    if r.granted {
                        granted.insert(id);
                    } else {
                        refusals.push(format!("{id}: {}", r.reason));
                    }
                }
                // A node of an earlier release: its real vote decides.
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                    granted.insert(id);
                }
                Ok(Err(s)) => refusals.push(format!("{id}: {}", s.message())),
                Err(_) => refusals.push(format!("{id}: no answer in {} ms", timeout.as_millis())),
            }
        }
        asks.abort_all();
        let won = quorum(&configs, &granted);
        if !won {
            tracing::info!(
                granted = ?granted,
                refusals = ?refusals,
                "pre-vote lost: not campaigning (the term stays)"
            );
        }
        won
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1500);

    #[test]
    fn a_voter_that_heard_from_the_leader_within_the_lease_says_no() {
        let heard = Duration::from_millis(100);
        assert_eq!(
            judge(false, heard, LEASE, Some((3, 10)), Some((3, 10))),
            Err(Refusal::LeaderHeard(heard))
        );
    }

    #[test]
    fn the_leader_never_grants_a_pre_vote() {
        let long = Duration::from_secs(60);
        assert_eq!(
            judge(true, long, LEASE, None, Some((9, 9))),
            Err(Refusal::Leader)
        );
    }

    #[test]
    fn a_candidate_behind_the_voters_log_is_refused_even_after_the_lease() {
        let long = Duration::from_secs(5);
        // Same term, fewer entries.
        assert!(judge(false, long, LEASE, Some((3, 10)), Some((3, 9))).is_err());
        // An older term loses whatever its index.
        assert!(judge(false, long, LEASE, Some((4, 2)), Some((3, 900))).is_err());
        // An empty log is behind any entry.
        assert!(judge(false, long, LEASE, Some((1, 1)), None).is_err());
    }

    #[test]
    fn an_up_to_date_candidate_is_granted_once_the_lease_ran_out() {
        let long = Duration::from_secs(5);
        assert_eq!(
            judge(false, long, LEASE, Some((3, 10)), Some((3, 10))),
            Ok(())
        );
        assert_eq!(
            judge(false, long, LEASE, Some((3, 10)), Some((4, 1))),
            Ok(())
        );
        assert_eq!(judge(false, long, LEASE, None, None), Ok(()));
    }

    #[test]
    fn a_quorum_is_a_majority_of_every_configuration() {
        let c = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<_>>();
        let one = vec![c(&[1, 2, 3])];
        assert!(!quorum(&one, &c(&[1])));
        assert!(quorum(&one, &c(&[1, 3])));
        // Four voters need three.
        assert!(!quorum(&[c(&[1, 2, 3, 4])], &c(&[1, 2])));
        assert!(quorum(&[c(&[1, 2, 3, 4])], &c(&[1, 2, 4])));
        // Joint: both the old and the new configuration.
        let joint = vec![c(&[1, 2, 3]), c(&[3, 4, 5])];
        assert!(!quorum(&joint, &c(&[1, 2, 3])));
        assert!(quorum(&joint, &c(&[1, 3, 4])));
        assert!(!quorum(&[], &c(&[1])));
    }
}
