//! The one place that knows the consistency rules: writes go through Raft
//! (forwarded to the leader), and "not found" answers are confirmed with a
//! read-index before being given.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;
use wharf_meta::{Envelope, MetaStore, Response};

use crate::codec::{decode, encode};
use crate::config::ConsensusConfig;
use crate::error::ConsensusError;
use crate::fence::{now_unix_ms, Fence};
use crate::log_store::LogStore;
use crate::network::{self, NetworkFactory, Rpc};
use crate::pb::raft_client::RaftClient;
use crate::pb::raft_server::RaftServer;
use crate::prevote::{spawn_campaigner, Liveness};
use crate::server::{ForwardError, ForwardReply, PeerService, ReadIndexReply};
use crate::state_machine::StateMachine;
use crate::types::{NodeId, NodeInfo, Raft};

/// Pause between attempts while no leader is known (an election is running).
const NO_LEADER_RETRY_MS: u64 = 50;
/// Largest gRPC message between peers (Raft batches, snapshot chunks).
pub(crate) const PEER_MESSAGE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A node's view of the group, for /readyz, metrics and the CLI.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    pub region: String,
    pub role: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    /// On the leader: entries each other member is behind its log.
    #[serde(default)]
    pub follower_lag: BTreeMap<NodeId, u64>,
    /// Fenced: out of the group until the fence is lifted or expires.
    #[serde(default)]
    pub fenced: bool,
}

/// Pause between attempts of the catch-up barrier after a start.
const CATCH_UP_RETRY_MS: u64 = 200;

pub struct Consensus {
    pub(crate) raft: Arc<Raft>,
    meta: Arc<MetaStore>,
    applied: watch::Receiver<u64>,
    pub(crate) cfg: ConsensusConfig,
    pub(crate) fence: Arc<Fence>,
    /// The election timer: when a leader was last heard (see `prevote`).
    pub(crate) liveness: Arc<Liveness>,
    /// The Raft log, read by pre-votes (a handle on the same RocksDB).
    pub(crate) log: LogStore,
    grpc_stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    /// Reused clients for forwarding and read-index: (address, client).
    peer_clients: std::sync::Mutex<BTreeMap<NodeId, (String, RaftClient<Channel>)>>,
    /// Set once a read barrier succeeded since this process started: the
    /// local state then holds everything committed before it, so it is
    /// never older than anything this node served before a restart or a
    /// lost disk (see `caught_up`).
    caught_up: std::sync::atomic::AtomicBool,
}

impl Consensus {
    /// Open the stores under `cfg.data_dir`, start Raft and the peer server,
    /// and bootstrap the group on the very first start of a bootstrap node.
    /// `services` are served on the same peer gRPC port (blob transfer).
    pub async fn start(
        cfg: ConsensusConfig,
        services: tonic::service::Routes,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let log = LogStore::open(&cfg.data_dir.join("raft-log"))
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let meta = Arc::new(MetaStore::open(&cfg.data_dir.join("meta"))?);
        let (applied_tx, applied) = watch::channel(StateMachine::applied_index(&meta)?);
        let sm = StateMachine::new(
            meta.clone(),
            cfg.data_dir.join("snapshots"),
            Arc::new(applied_tx),
        )?;

        let fence = Arc::new(Fence::new(None));
        let t = &cfg.timings;
        let config = Config {
            cluster_name: "wharf".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: t.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
            max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
            // Elections start after a pre-vote (`prevote`), not on
            // openraft's own timer.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let raft = Arc::new(
            Raft::new(
                cfg.node_id,
                Arc::new(config),
                NetworkFactory {
                    fence: fence.clone(),
                    overrides: cfg.peer_overrides.clone(),
                    tls: cfg.peer_tls.as_ref().map(|t| t.client.clone()),
                },
                log.clone(),
                sm,
            )
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?,
        );

        // Before the peer port opens: a fenced node must not vote at all.
        set_fence(&raft, &fence, cfg.fenced_until_ms);

        let listener = tokio::net::TcpListener::bind(cfg.grpc_listen).await?;
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let liveness = Arc::new(Liveness::new());
        let service = RaftServer::new(PeerService {
            raft: raft.clone(),
            liveness: liveness.clone(),
            log: log.clone(),
            lease: Duration::from_millis(t.election_timeout_max_ms),
        })
        .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &cfg.peer_tls {
            builder = builder
                .tls_config(tls.server.clone())
                .map_err(|e| ConsensusError::Raft(format!("peer TLS: {e}")))?;
        }
        // Every peer service (Raft, forwarding, blob transfer) goes dark
        // while fenced; UNAVAILABLE is what callers treat as "unreachable".
        let gate = fence.clone();
        let builder = builder.layer(tonic::service::interceptor(
            move |req: tonic::Request<()>| {
                if gate.is_fenced() {
                    Err(tonic::Status::unavailable("this node is fenced"))
                } else {
                    Ok(req)
                }
            },
        ));
        tokio::spawn(async move {
            let served = builder
                .initial_stream_window_size(Some(network::WINDOW_STREAM_BYTES))
                .initial_connection_window_size(Some(network::WINDOW_CONNECTION_BYTES))
                .add_routes(services.add_service(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "peer gRPC server stopped");
            }
        });

        if cfg.bootstrap {
            let members: BTreeMap<NodeId, NodeInfo> = cfg
                .initial_members
                .iter()
                .map(|p| {
                    (
                        p.id,
                        NodeInfo {
                            grpc: p.grpc.clone(),
                            http: p.http.clone(),
                            region: p.region.clone(),
                        },
                    )
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!("bootstrapped a new metadata group"),
                // Already initialized: a restart of an existing cluster.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ConsensusError::Raft(e.to_string())),
            }
        }

        let consensus = Arc::new(Consensus {
            raft,
            meta,
            applied,
            cfg,
            fence,
            grpc_stop: std::sync::Mutex::new(Some(stop_tx)),
            peer_clients: std::sync::Mutex::new(BTreeMap::new()),
            caught_up: std::sync::atomic::AtomicBool::new(false),
            liveness,
            log,
        });
        spawn_campaigner(&consensus);
        // Catch up once, in the background, so local reads resume without
        // waiting for a client's miss; a weak handle lets the node stop.
        let weak = Arc::downgrade(&consensus);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { return };
                if c.read_barrier().await.is_ok() {
                    return;
                }
                drop(c);
                tokio::time::sleep(Duration::from_millis(CATCH_UP_RETRY_MS)).await;
            }
        });
        Ok(consensus)
    }

    /// Whether local state may answer reads: false from the start of this
    /// process until a read barrier succeeded. A node restarted, or rebuilt
    /// empty after a lost disk, holds only a prefix of the log while it
    /// replays or receives it; answering hits from that prefix would show
    /// clients tags older than the ones this region already served them.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The address to dial for a peer (its advertised one, or an override).
    pub fn peer_address<'a>(&'a self, id: NodeId, node: &'a NodeInfo) -> &'a str {
        self.cfg
            .peer_overrides
            .get(&id)
            .map_or(node.grpc.as_str(), String::as_str)
    }

    /// Fence this node until `until_ms` (Unix ms), or lift the fence
    /// (None). The caller persists it first, so it survives a restart.
    pub fn set_fence(&self, until_ms: Option<u64>) {
        set_fence(&self.raft, &self.fence, until_ms);
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    fn refuse_if_fenced(&self) -> Result<(), ConsensusError> {
        if self.fence.is_fenced() {
            return Err(ConsensusError::Unavailable(
                "this region is fenced (a drill or maintenance): use another region".into(),
            ));
        }
        Ok(())
    }

    /// Every member of the group (voters and learners) with its address.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// The distinct regions of the members, sorted.
    pub fn regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = self.members().into_iter().map(|(_, n)| n.region).collect();
        regions.sort();
        regions.dedup();
        regions
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// Changes whenever this node applies new entries.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The local state machine, for reads served from local state.
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Status {
            node_id: m.id,
            region: self.cfg.region.clone(),
            role: role.into(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            follower_lag: m
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| {
                    let at = matched.map_or(0, |l| l.index);
                    (*id, m.last_log_index.unwrap_or(0).saturating_sub(at))
                })
                .collect(),
            fenced: self.fence.is_fenced(),
        }
    }

    /// Ready to serve: a leader is known and this node has applied at least
    /// up to where it was when it started answering.
    pub fn is_ready(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.cfg.write_timeout_ms)
    }

    /// Propose `cmd` and return its apply result once it is committed by a
    /// majority and applied on this node.
    ///
    /// A write with a request id is sent again when the leader it was in
    /// flight to is replaced: the state machine applies an id once and
    /// answers a repeat with the first answer, so the retry cannot apply it
    /// twice. Without an id, the outcome is then unknown and not retried.
    pub async fn write(&self, cmd: Envelope) -> Result<Response, ConsensusError> {
        self.refuse_if_fenced()?;
        let deadline = self.deadline();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt =
                tokio::time::timeout(remaining, self.raft.client_write(cmd.clone())).await;
            let leader = match attempt {
                Err(_) => {
                    return Err(ConsensusError::Unavailable(
                        "write not committed within the timeout".into(),
                    ))
                }
                Ok(Ok(r)) => return Ok(r.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    f.leader_id.zip(f.leader_node)
                }
                Ok(Err(e)) => return Err(ConsensusError::Raft(e.to_string())),
            };
            if let Some((id, node)) = leader {
                // A leader that went silent (dropped packets, no reset)
                // would hold the call until the deadline; once this node
                // hears of another leader, stop waiting. Whether the write
                // was applied is then unknown, so it is not sent again.
                let forwarded = tokio::select! {
                    r = self.forward_write(id, &node, &cmd, deadline) => r?,
                    _ = self.leader_moved_from(id) => {
                        if cmd.request_id.is_none() {
                            return Err(ConsensusError::Unavailable(
                                "the leader changed while this write was in flight to it; \
                                 it may or may not have been applied"
                                    .into(),
                            ));
                        }
                        tracing::debug!(leader = id, "leader replaced mid-write; sending it again");
                        None
                    }
                };
                // None: that node was not (or no longer) the leader.
                if let Some((response, index)) = forwarded {
                    self.wait_applied(index, deadline).await?;
                    return Ok(response);
                }
            }
            if Instant::now() >= deadline {
                return Err(ConsensusError::Unavailable(
                    "no leader elected within the timeout".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(NO_LEADER_RETRY_MS)).await;
        }
    }

    /// Send `cmd` to the leader. `Ok(None)` means it was not the leader and
    /// the command was not proposed, so trying again is safe.
    async fn forward_write(
        &self,
        id: NodeId,
        node: &NodeInfo,
        cmd: &Envelope,
        deadline: Instant,
    ) -> Result<Option<(Response, u64)>, ConsensusError> {
        let bytes = self
            .peer_call(id, node, Rpc::Forward, encode(cmd), deadline)
            .await?;
        let Some(bytes) = bytes else { return Ok(None) };
        let reply: ForwardReply =
            decode(&bytes).map_err(|e| ConsensusError::Raft(e.to_string()))?;
        match reply {
            Ok(ok) => Ok(Some(ok)),
            Err(ForwardError::NotLeader(_)) => Ok(None),
            Err(ForwardError::Failed(e)) => Err(ConsensusError::Unavailable(e)),
        }
    }

    /// Call a peer. `Ok(None)` when it could not be reached at all (the
    /// request was not delivered, so a retry cannot duplicate it).
    /// A client for a peer, dialing its overridden address if any. One
    /// HTTP/2 connection per peer is kept and reused: opening one per
    /// forwarded write would cost an extra round trip on a WAN link.
    pub(crate) fn peer_client(
        &self,
        id: NodeId,
        node: &NodeInfo,
    ) -> Result<RaftClient<Channel>, ConsensusError> {
        let addr = self.peer_address(id, node).to_string();
        let mut clients = self.peer_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, c)) = clients.get(&id) {
            if *a == addr {
                return Ok(c.clone());
            }
        }
        let tls = self.cfg.peer_tls.as_ref().map(|t| &t.client);
        let channel =
            network::channel(&addr, tls).map_err(|e| ConsensusError::Unavailable(e.to_string()))?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(PEER_MESSAGE_MAX_BYTES);
        clients.insert(id, (addr, client.clone()));
        Ok(client)
    }

    async fn peer_call(
        &self,
        id: NodeId,
        node: &NodeInfo,
        rpc: Rpc,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ConsensusError> {
        let mut client = self.peer_client(id, node)?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        match network::call(&mut client, rpc, payload, Some(timeout)).await {
            Ok(b) => Ok(Some(b)),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tracing::debug!(peer = id, error = %s, "peer unreachable");
                Ok(None)
            }
            Err(s) => Err(ConsensusError::Unavailable(format!(
                "peer {id}: {}",
                s.message()
            ))),
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ConsensusError> {
        let mut rx = self.applied.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited =
            tokio::time::timeout(remaining, rx.wait_for(|applied| *applied >= index)).await;
        match waited.map(|r| r.map(|_| ())) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ConsensusError::Raft("state machine stopped".into())),
            Err(_) => Err(ConsensusError::Unavailable(format!(
                "index {index} not applied locally in time"
            ))),
        }
    }

    /// Linearizable read barrier (read-index): when it returns, local state
    /// reflects every write acknowledged anywhere before the call.
    pub async fn read_barrier(&self) -> Result<(), ConsensusError> {
        let done = self.read_index().await;
        if done.is_ok() {
            self.caught_up
                .store(true, std::sync::atomic::Ordering::Release);
        }
        done
    }

    async fn read_index(&self) -> Result<(), ConsensusError> {
        self.refuse_if_fenced()?;
        let deadline = self.deadline();
        let mut last: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(remaining, self.raft.ensure_linearizable()).await;
            let leader = match attempt {
                Err(_) => return Err(ConsensusError::Unavailable("read-index timed out".into())),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    f.leader_id.zip(f.leader_node)
                }
                // This leader's heartbeat round missed a quorum (a new
                // term starting, a follower slow to answer): a read is safe
                // to ask again until the deadline.
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    tracing::debug!(error = %e, "read-index: no quorum this round; asking again");
                    last = Some(e.to_string());
                    None
                }
                Ok(Err(e)) => return Err(ConsensusError::Unavailable(e.to_string())),
            };
            if let Some((id, node)) = leader {
                // Reads can be retried: if another leader appears while
                // this one is silent, ask the new one.
                let asked = tokio::select! {
                    r = self.peer_call(id, &node, Rpc::ReadIndex, Vec::new(), deadline) => r?,
                    _ = self.leader_moved_from(id) => None,
                };
                if let Some(bytes) = asked {
                    let reply: ReadIndexReply =
                        decode(&bytes).map_err(|e| ConsensusError::Raft(e.to_string()))?;
                    match reply {
                        Ok(index) => return self.wait_applied(index, deadline).await,
                        Err(ForwardError::NotLeader(_)) => {}
                        // The leader's round missed a quorum (as above, on
                        // its side): a read is safe to ask again.
                        Err(ForwardError::Failed(e)) => {
                            tracing::debug!(error = %e, "read-index at the leader failed; asking again");
                            last = Some(e);
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ConsensusError::Unavailable(
                    last.unwrap_or_else(|| "no leader for read-index".into()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(NO_LEADER_RETRY_MS)).await;
        }
    }

    /// Resolves once this node knows of a leader other than `id`.
    async fn leader_moved_from(&self, id: NodeId) {
        let mut metrics = self.raft.metrics();
        let _ = metrics
            .wait_for(|m| m.current_leader.is_some_and(|l| l != id))
            .await;
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let id = self.raft.metrics().borrow().current_leader?;
        self.members().into_iter().find(|(n, _)| *n == id)
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.cfg.node_id)
    }

    /// Add a region's node: it joins as a learner, catches up from the log
    /// or a snapshot, and is then promoted to voter. Call on the leader.
    /// A node that has not caught up within `catch_up` stays a learner and
    /// the call fails: promoting it would shrink the group's tolerance
    /// (a voter that cannot vote), and adding it again is safe.
    pub async fn add_voter(
        &self,
        id: NodeId,
        node: NodeInfo,
        catch_up: Duration,
    ) -> Result<(), ConsensusError> {
        let raft_err = |e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                ConsensusError::Unavailable("not the leader".into())
            }
            other => ConsensusError::Raft(other.to_string()),
        };
        // Not openraft's blocking mode: its wait gives up after 500 ms
        // without saying so.
        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(raft_err)?;
        let goal = added.log_id.index;
        let mut metrics = self.raft.metrics();
        let caught_up = tokio::time::timeout(catch_up, async {
            loop {
                let matched = metrics
                    .borrow()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten());
                if matched.is_some_and(|m| m.index >= goal) {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        if caught_up != Ok(true) {
            return Err(ConsensusError::Unavailable(format!(
                "node {id} joined as a learner but did not catch up within {} s, so it does \
                 not vote: check that it runs and that the leader reaches it, then add it again",
                catch_up.as_secs()
            )));
        }
        let mut voters: BTreeSet<NodeId> = self.status().voters.into_iter().collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    /// Remove a region's node from the group (it stops voting and receiving
    /// the log). Call on the leader.
    pub async fn remove_voter(&self, id: NodeId) -> Result<(), ConsensusError> {
        let mut voters: BTreeSet<NodeId> = self.status().voters.into_iter().collect();
        if !voters.remove(&id) {
            return Err(ConsensusError::Raft(format!("node {id} is not a voter")));
        }
        if voters.is_empty() {
            return Err(ConsensusError::Raft("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Stop Raft and the peer server. Applied state is synced first.
    pub async fn shutdown(&self) {
        if let Ok(mut stop) = self.grpc_stop.lock() {
            if let Some(tx) = stop.take() {
                let _ = tx.send(());
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.meta.sync() {
            tracing::warn!(error = %e, "syncing metadata at shutdown");
        }
    }
}

/// Apply a fence to Raft: no elections and no heartbeats while it holds (a
/// fenced node that campaigned would come back with an inflated term and
/// depose the leader the others elected). The fence lifts itself when it
/// expires, unless a newer one replaced it meanwhile.
fn set_fence(raft: &Arc<Raft>, fence: &Arc<Fence>, until_ms: Option<u64>) {
    let until_ms = until_ms.filter(|u| *u > now_unix_ms());
    let was = fence.raw_until();
    fence.set(until_ms);
    // Campaigning is the pre-vote timer's, which skips fenced nodes.
    raft.runtime_config().heartbeat(until_ms.is_none());
    let Some(until) = until_ms else {
        if was != 0 {
            tracing::info!("fence lifted: rejoining the group");
        }
        return;
    };
    tracing::warn!(until_unix_ms = until, "fenced: out of the group");
    let (raft, fence) = (raft.clone(), fence.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_unix_ms()))).await;
        // Only the fence this task was started for; not a newer one.
        if fence.raw_until() == until {
            set_fence(&raft, &fence, None);
        }
    });
}
