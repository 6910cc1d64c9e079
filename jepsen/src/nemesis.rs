//! Faults, injected one at a time on a schedule, each healed before the
//! next: kill -9 and restart, SIGSTOP and SIGCONT, isolating a node (the
//! leader or any) by resets or by silence, splitting majority from minority, a bridge (two sides
//! that reach each other only through one node), slow, lossy and flapping
//! links, and a region coming back with its disk wiped (a new node, through
//! membership change). Faults are drawn in rounds: every kind once, in a
//! random order, before any repeats. Every action is logged with its time
//! for the report.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use wharf_netem::LinkSpec;

use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    Pause,
    IsolateLeader,
    Isolate,
    Split,
    Bridge,
    Slow,
    Lossy,
    Flap,
    Wipe,
    Silence,
    /// One byte flipped in one stored blob of one region (the disk lies).
    Corrupt,
}

/// A region behind a slow line: 150 ms one way (300 ms round trips on top
/// of Raft's 100 ms heartbeats) and 4 Mbit/s.
const SLOW: LinkSpec = LinkSpec {
    one_way_delay: Duration::from_millis(150),
    bytes_per_s: 500_000,
    loss_pct: 0.0,
};
/// A lossy WAN: 20 ms one way, 20 % of pieces retransmitted.
const LOSSY: LinkSpec = LinkSpec {
    one_way_delay: Duration::from_millis(20),
    bytes_per_s: 0,
    loss_pct: 20.0,
};
/// A flapping link changes state this often (at random in this range).
const FLAP_MS: std::ops::Range<u64> = 200..800;

impl Fault {
    pub const ALL: [Fault; 12] = [
        Fault::Kill,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::Isolate,
        Fault::Split,
        Fault::Bridge,
        Fault::Slow,
        Fault::Lossy,
        Fault::Flap,
        Fault::Wipe,
        Fault::Silence,
        Fault::Corrupt,
    ];

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Isolate => "isolate",
            Fault::Split => "split",
            Fault::Bridge => "bridge",
            Fault::Slow => "slow",
            Fault::Lossy => "lossy",
            Fault::Flap => "flap",
            Fault::Wipe => "wipe",
            Fault::Silence => "silence",
            Fault::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub action: String,
}

pub struct Nemesis {
    pub faults: Vec<Fault>,
    /// How long a fault lasts, and the quiet time after healing.
    pub fault_for: Duration,
    pub quiet_for: Duration,
    pub timeline: Vec<Event>,
    /// Faults injected so far.
    pub injected: usize,
    /// When faults were in force (ms since the start, from injection to
    /// heal), for checkers that only hold while none is.
    pub windows: Vec<(u64, u64)>,
    /// Each partition healed, with the term before and after it.
    pub heals: Vec<Heal>,
    /// The last heal, its term afterwards not read yet.
    watching: Option<Heal>,
    start: Instant,
}

/// A partition (isolate, split, silence) and the term its majority side
/// agreed on when it healed (None: an election was still unsettled
/// there, and the heal is not judged), against the highest term anywhere
/// at the end of the quiet time after it. Healing must elect nobody: a
/// node that was cut off may not come back with a higher term and
/// depose the majority's leader (pre-vote).
#[derive(Debug, Clone, Serialize)]
pub struct Heal {
    pub at_ms: u64,
    pub fault: String,
    pub term_before: Option<u64>,
    pub term_after: Option<u64>,
}

impl Heal {
    /// Did the heal raise the term (an election)?
    pub fn elected(&self) -> bool {
        matches!((self.term_before, self.term_after), (Some(b), Some(a)) if a > b)
    }
}

impl Nemesis {
    pub fn new(
        faults: Vec<Fault>,
        fault_for: Duration,
        quiet_for: Duration,
        start: Instant,
    ) -> Nemesis {
        Nemesis {
            faults,
            fault_for,
            quiet_for,
            timeline: Vec::new(),
            injected: 0,
            windows: Vec::new(),
            heals: Vec::new(),
            watching: None,
            start,
        }
    }

    fn log(&mut self, action: String) {
        eprintln!(
            "[nemesis {:>7.1}s] {action}",
            self.start.elapsed().as_secs_f64()
        );
        self.timeline.push(Event {
            at_ms: self.start.elapsed().as_millis() as u64,
            action,
        });
    }

    /// Inject faults until `until`, leaving the cluster healed.
    pub async fn run(&mut self, cluster: &mut Cluster, until: Instant) -> std::io::Result<()> {
        let n = cluster.nodes.len();
        let mut round: Vec<Fault> = Vec::new();
        while Instant::now() + self.fault_for < until {
            tokio::time::sleep(self.quiet_for).await;
            self.read_heal(cluster).await;
            if self.faults.is_empty() {
                continue;
            }
            if round.is_empty() {
                round = self.faults.clone();
                round.shuffle(&mut rand::thread_rng());
            }
            let Some(fault) = round.pop() else { continue };
            self.injected += 1;
            let began = self.start.elapsed().as_millis() as u64;
            let victim = rand::thread_rng().gen_range(0..n);
            match fault {
                Fault::Kill => {
                    self.log(format!("kill -9 node {}", victim + 1));
                    cluster.kill(victim);
                    tokio::time::sleep(self.fault_for).await;
                    self.log(format!("restart node {}", victim + 1));
                    cluster.restart(victim)?;
                }
                Fault::Pause => {
                    self.log(format!("SIGSTOP node {}", victim + 1));
                    cluster.pause(victim);
                    tokio::time::sleep(self.fault_for).await;
                    self.log(format!("SIGCONT node {}", victim + 1));
                    cluster.resume(victim);
                }
                Fault::IsolateLeader | Fault::Isolate => {
                    let target = match fault {
                        Fault::IsolateLeader => cluster.leader().await.unwrap_or(victim),
                        _ => victim,
                    };
                    self.log(format!("isolate node {} ({})", target + 1, fault.name()));
                    cluster.isolate(target);
                    tokio::time::sleep(self.fault_for).await;
                    self.heal_watched(cluster, fault, &[target]).await;
                }
                Fault::Split => {
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.shuffle(&mut rand::thread_rng());
                    let minority: Vec<usize> = idx[..n / 2].to_vec();
                    self.log(format!(
                        "split: minority {:?} | majority {:?}",
                        minority.iter().map(|i| i + 1).collect::<Vec<_>>(),
                        idx[n / 2..].iter().map(|i| i + 1).collect::<Vec<_>>()
                    ));
                    cluster.split(&minority);
                    tokio::time::sleep(self.fault_for).await;
                    self.heal_watched(cluster, fault, &minority).await;
                }
                Fault::Bridge => {
                    // Two sides that reach each other only through the
                    // bridge node (with 3 regions: 1 | bridge | 1).
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.shuffle(&mut rand::thread_rng());
                    let bridge = idx[0];
                    let rest = &idx[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    self.log(format!(
                        "bridge: {:?} | {} | {:?}",
                        a.iter().map(|i| i + 1).collect::<Vec<_>>(),
                        bridge + 1,
                        b.iter().map(|i| i + 1).collect::<Vec<_>>()
                    ));
                    cluster.cut_between(a, b);
                    tokio::time::sleep(self.fault_for).await;
                    self.log("heal network".into());
                    cluster.heal();
                }
                Fault::Slow | Fault::Lossy => {
                    let (spec, what) = match fault {
                        Fault::Slow => (SLOW, "slow"),
                        _ => (LOSSY, "lossy"),
                    };
                    // Half the time one region's links, else every link.
                    let target = rand::thread_rng().gen_bool(0.5).then_some(victim);
                    self.log(match target {
                        Some(t) => format!("{what} links at node {} ({spec:?})", t + 1),
                        None => format!("{what} links everywhere ({spec:?})"),
                    });
                    cluster.shape(target, spec);
                    tokio::time::sleep(self.fault_for).await;
                    self.log("heal network".into());
                    cluster.heal();
                }
                Fault::Wipe => {
                    self.log(format!("kill -9 node {} and wipe its disk", victim + 1));
                    cluster.kill(victim);
                    tokio::time::sleep(self.fault_for).await;
                    let id = cluster.rejoin_wiped(victim).await?;
                    self.log(format!(
                        "node {} rejoined empty as node id {id} (removed, re-added)",
                        victim + 1
                    ));
                }
                Fault::Silence => {
                    self.log(format!(
                        "silence node {} (its packets vanish; nothing is reset)",
                        victim + 1
                    ));
                    cluster.silence(victim);
                    tokio::time::sleep(self.fault_for).await;
                    self.heal_watched(cluster, fault, &[victim]).await;
                }
                Fault::Corrupt => {
                    match flip_a_stored_byte(&cluster.nodes[victim].dir) {
                        Some(what) => self.log(format!(
                            "flip one byte of {what} in node {}'s store",
                            victim + 1
                        )),
                        None => self.log(format!("node {} stores no blob yet", victim + 1)),
                    }
                    // Nothing to heal: the scrub or a whole read finds it.
                    tokio::time::sleep(self.fault_for).await;
                }
                Fault::Flap => {
                    self.log(format!("flap the links of node {}", victim + 1));
                    let end = Instant::now() + self.fault_for;
                    let mut flaps = 0;
                    while Instant::now() < end {
                        if flaps % 2 == 0 {
                            cluster.isolate(victim);
                        } else {
                            cluster.heal();
                        }
                        flaps += 1;
                        let ms = rand::thread_rng().gen_range(FLAP_MS);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    self.log(format!("heal network (after {flaps} flaps)"));
                    cluster.heal();
                }
            }
            self.windows
                .push((began, self.start.elapsed().as_millis() as u64));
        }
        self.read_heal(cluster).await;
        self.log("heal everything".into());
        let began = self.start.elapsed().as_millis() as u64;
        let healed = cluster.heal_all().await;
        self.windows
            .push((began, self.start.elapsed().as_millis() as u64));
        healed
    }

    /// Heal a partition whose cut-off side was `away`, noting the highest
    /// term on the other side first.
    async fn heal_watched(&mut self, cluster: &Cluster, fault: Fault, away: &[usize]) {
        let majority: Vec<usize> = (0..cluster.nodes.len())
            .filter(|i| !away.contains(i))
            .collect();
        // Only a settled majority is a baseline: a heal during its own
        // election (a split vote, say) may end in a later term honestly.
        let term_before = cluster.settled_term(&majority).await;
        self.log(format!("heal network (majority's term {term_before:?})"));
        cluster.heal();
        self.watching = Some(Heal {
            at_ms: self.start.elapsed().as_millis() as u64,
            fault: fault.name().into(),
            term_before,
            term_after: None,
        });
    }

    /// After the quiet time that followed a watched heal: the highest term
    /// anywhere now.
    async fn read_heal(&mut self, cluster: &Cluster) {
        let Some(mut heal) = self.watching.take() else {
            return;
        };
        let all: Vec<usize> = (0..cluster.nodes.len()).collect();
        heal.term_after = cluster.max_term(&all).await;
        if heal.elected() {
            self.log(format!(
                "the heal of {} at {} ms raised the term: {:?} -> {:?}",
                heal.fault, heal.at_ms, heal.term_before, heal.term_after
            ));
        }
        self.heals.push(heal);
    }

    /// Was a fault in force at `at_ms`, or healed less than `grace_ms`
    /// before it (a restarted node takes a moment to serve again)?
    pub fn faulty_at(&self, at_ms: u64, grace_ms: u64) -> bool {
        self.windows
            .iter()
            .any(|(from, to)| at_ms >= *from && at_ms <= to + grace_ms)
    }
}

/// Flip one byte in the middle of a stored blob of the node at `dir`,
/// chosen at random; which blob, if it found one.
fn flip_a_stored_byte(dir: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let root = dir.join("data/blobs/blobs/sha256");
    let mut files = Vec::new();
    for fan in std::fs::read_dir(&root).ok()?.flatten() {
        for f in std::fs::read_dir(fan.path()).ok()?.flatten() {
            files.push(f.path());
        }
    }
    let path = files.get(rand::thread_rng().gen_range(0..files.len().max(1)))?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    let len = f.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let at = len / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).ok()?;
    f.read_exact(&mut b).ok()?;
    f.seek(SeekFrom::Start(at)).ok()?;
    f.write_all(&[b[0] ^ 0x01]).ok()?;
    f.sync_all().ok()?;
    Some(format!(
        "sha256:{} (at byte {at})",
        path.file_name()?.to_string_lossy()
    ))
}
