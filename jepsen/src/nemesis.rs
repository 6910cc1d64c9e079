//! Faults, injected one at a time on a schedule, each healed before the
//! next: kill -9 and restart, SIGSTOP and SIGCONT, isolating a node (the
//! leader or any), and splitting majority from minority. Every action is
//! logged with its time for the report.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    Pause,
    IsolateLeader,
    Isolate,
    Split,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::Isolate,
        Fault::Split,
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
    start: Instant,
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
        while Instant::now() + self.fault_for < until {
            tokio::time::sleep(self.quiet_for).await;
            if self.faults.is_empty() {
                continue;
            }
            let fault = *self
                .faults
                .choose(&mut rand::thread_rng())
                .unwrap_or(&Fault::Kill);
            self.injected += 1;
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
                    self.log("heal network".into());
                    cluster.heal();
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
                    self.log("heal network".into());
                    cluster.heal();
                }
            }
        }
        self.log("heal everything".into());
        cluster.heal_all().await
    }
}
