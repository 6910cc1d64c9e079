//! A real Wharf cluster for a run, started by the shared launcher
//! (`wharf-launcher`): one `wharf serve` process per region, every peer
//! link through a cuttable emulated link, reads linearizable. What is
//! jepsen's own here: the settings of a run, and the membership changes
//! around a wiped region.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use wharf_launcher::{Plan, REGIONS_MAX};
use wharf_netem::LinkSpec;

pub const USER: &str = "owner";
pub const PASSWORD: &str = "jepsen owner password";
/// Routes through the links are configured for this many incarnations of
/// each region up front, so that every node dials a newcomer through the
/// emulated links too.
const INCARNATIONS: u64 = 20;
/// How long a node may take to become ready.
const READY: Duration = Duration::from_secs(60);

pub struct Cluster {
    inner: wharf_launcher::Cluster,
}

impl Deref for Cluster {
    type Target = wharf_launcher::Cluster;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Cluster {
    /// Start `n` regions under `dir` (their processes and links).
    /// With `store`, every region's blobs live on that object store and
    /// a region may have several nodes (`per`).
    pub async fn start(
        wharf: &Path,
        dir: &Path,
        n: usize,
        per: usize,
        store: Option<wharf_launcher::s3::ObjectStore>,
        reads: wharf_config::ReadConsistency,
    ) -> std::io::Result<Cluster> {
        assert!(
            (1..=REGIONS_MAX).contains(&(n * per)),
            "1 to {REGIONS_MAX} nodes"
        );
        let mut plan = Plan::new(wharf, dir, n)
            .env("WHARF_BOOTSTRAP_PASSWORD", PASSWORD)
            .tune(move |_, c| {
                c.reads = reads;
                c.write_timeout_ms = 5000;
                c.raft.heartbeat_ms = 100;
                c.raft.election_timeout_min_ms = 500;
                c.raft.election_timeout_max_ms = 1000;
                c.mover.rescan_s = 1;
                c.mover.concurrency = 16;
                // Faults are the subject, not throttling: the clients'
                // bursts would meet the cloud registry's figures.
                c.rate_limits.enabled = false;
                c.uploads.ack_regions = 2;
                // The GC race (`--gc`): seconds of grace, runs driven by
                // the harness; a fast scrub for the corrupt nemesis.
                c.gc.grace_s = 2;
                c.gc.hold_s = 1;
                c.gc.interval_s = 0;
                c.gc.sweep_interval_s = 1;
                c.scrub.mib_per_s = 64;
                c.scrub.interval_s = 2;
                Ok(())
            });
        plan.links = Some(LinkSpec::default());
        plan.object_store = store;
        plan.nodes_per_region = per;
        plan.incarnations = INCARNATIONS;
        let mut inner = wharf_launcher::Cluster::start(plan)?;
        inner.wait_all_ready(READY).await?;
        Ok(Cluster { inner })
    }

    /// Node `i`'s `/api/v1/status`, if it is running and answers.
    async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let n = &self.nodes[i];
        if !n.running() || n.process.paused() {
            return None;
        }
        let r = self
            .http()
            .get(n.url("/api/v1/status"))
            .basic_auth(USER, Some(PASSWORD))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader as some running node reports it (index), if any.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            let Some(v) = self.status(i).await else {
                continue;
            };
            if let Some(l) = v["leader"].as_u64() {
                if let Some(i) = self.nodes.iter().position(|n| n.id == l) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The leader and term that every running node in `among` reports,
    /// when they all agree on one (None while an election is unsettled,
    /// or if none answers).
    pub async fn settled_term(&self, among: &[usize]) -> Option<u64> {
        let mut seen = None;
        for &i in among {
            let Some(v) = self.status(i).await else {
                continue;
            };
            let view = (v["leader"].as_u64()?, v["term"].as_u64()?);
            if seen.is_some_and(|s| s != view) {
                return None;
            }
            seen = Some(view);
        }
        seen.map(|(_, term)| term)
    }

    /// The highest Raft term that the running nodes in `among` report
    /// (None if none answers).
    pub async fn max_term(&self, among: &[usize]) -> Option<u64> {
        let mut max = None;
        for &i in among {
            if let Some(v) = self.status(i).await {
                max = max.max(v["term"].as_u64());
            }
        }
        max
    }

    /// Ask the running nodes other than `i`, in turn, until one answers
    /// 2xx (membership changes need a leader, which may be being elected).
    async fn admin(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        limit: Duration,
    ) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            for n in self
                .nodes
                .iter()
                .filter(|n| n.index != i && n.running() && !n.process.paused())
            {
                let mut req = self
                    .http()
                    .request(method.clone(), n.url(path))
                    .basic_auth(USER, Some(PASSWORD))
                    .timeout(limit);
                if let Some(b) = &body {
                    req = req.json(b);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => {
                        last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(std::io::Error::other(format!("{method} {path}: {last}")))
    }

    /// Node `i` loses its disk and comes back as a new node of the same
    /// region: removed from the group, started empty with a new id, added
    /// back (it catches up as a learner, then votes) while the mover
    /// copies every blob into it again. Returns the new id.
    pub async fn rejoin_wiped(&mut self, i: usize) -> std::io::Result<u64> {
        let id = self.reincarnate(i)?;
        let region = self.nodes[i].region.clone();
        self.admin(
            i,
            reqwest::Method::DELETE,
            &format!("/api/v1/replications?region={region}"),
            None,
            Duration::from_secs(30),
        )
        .await?;
        self.restart(i)?;
        let n = &self.nodes[i];
        let body = serde_json::json!({
            "node_id": id,
            "region": region,
            "grpc": format!("127.0.0.1:{}", n.grpc),
            "http": n.url(""),
        });
        self.admin(
            i,
            reqwest::Method::POST,
            "/api/v1/replications",
            Some(body),
            Duration::from_secs(60),
        )
        .await?;
        Ok(id)
    }

    /// Node `i`'s region's copy of `digest`, from its disk or its object
    /// store; None if there is none.
    pub fn stored_copy(&self, i: usize, digest: &str) -> Option<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:")?;
        let key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
        match (&self.inner.plan_object_store(), self.object_prefix(i)) {
            (Some(store), Some(prefix)) => store
                .get(wharf_launcher::s3::SHARED_BUCKET, &format!("{prefix}{key}"))
                .ok()
                .flatten(),
            _ => std::fs::read(self.nodes[i].dir.join("data/blobs").join(key)).ok(),
        }
    }

    /// Resume, restart and reconnect everything.
    pub async fn heal_all(&mut self) -> std::io::Result<()> {
        self.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.paused() {
                self.resume(i);
            }
            self.restart(i)?;
        }
        self.wait_all_ready(READY).await
    }
}
