//! A cluster of `wharf serve` processes, one per region: the plan (how
//! many regions, which ports, which links, what to change in each node's
//! configuration), and the running cluster with its fault levers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wharf_config::{PeerRoute, ServeConfig};
use wharf_consensus::Peer;
use wharf_netem::{Link, LinkSpec};

use crate::process::Process;
use crate::{eventually, free_port, CLUSTER_KEY_FILE, LOG_FILE};

/// Region names of a launched cluster's regions, in order; beyond them,
/// `region-<n>`.
pub const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "us-west", "eu-north"];
/// A region whose disk is wiped comes back as a new node: region i's
/// incarnations have ids i+1, i+1+ID_STRIDE, ...
pub const ID_STRIDE: u64 = 10;
/// The most regions a cluster can have (ids and the port layout below).
pub const REGIONS_MAX: usize = 9;
/// With `Ports::Base(b)`: region i (1-based) serves HTTP on b+i, peer gRPC
/// on b+GRPC_OFFSET+i, and its link to region j listens on
/// b+LINK_OFFSET+10i+j.
const GRPC_OFFSET: u16 = 100;
const LINK_OFFSET: u16 = 300;

/// Which ports the nodes listen on.
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    /// Ephemeral ports (tests, jepsen: several clusters at once).
    Free,
    /// A fixed layout from a base port (`wharf up`: stable across restarts).
    Base(u16),
}

/// A change to node `index`'s generated configuration before it is written.
pub type Tune = Arc<dyn Fn(usize, &mut ServeConfig) -> std::io::Result<()> + Send + Sync>;

/// What to launch.
pub struct Plan {
    /// The `wharf` binary.
    pub exe: PathBuf,
    /// Node i's data, configuration and log are under `dir/node-<i+1>`;
    /// the cluster key is `dir/cluster.key` (created if missing).
    pub dir: PathBuf,
    pub regions: usize,
    pub ports: Ports,
    /// Route every peer connection through an emulated link starting
    /// with this behaviour (None: peers connect directly). Needs a tokio
    /// runtime, which runs the links.
    pub links: Option<LinkSpec>,
    /// Node ids routed through the links per region, up front, so a
    /// region rejoining under a new id is dialled through them too.
    pub incarnations: u64,
    /// The nodes serve HTTPS (their certificates come from `tune`).
    pub https: bool,
    /// A CA the readiness checks trust (with `https`).
    pub ca_file: Option<PathBuf>,
    /// Applied to every node's configuration.
    pub tune: Option<Tune>,
    /// Environment of every node.
    pub env: Vec<(String, String)>,
    /// Nodes get SIGTERM when the launcher dies (`wharf up`).
    pub die_with_parent: bool,
    /// Keep each region's blobs in a bucket of its own on this object
    /// store (None: each node's disk).
    pub object_store: Option<crate::s3::ObjectStore>,
    /// Nodes in each region (more than one needs `object_store`: the
    /// nodes of a region share its store). Node k serves region k / this.
    pub nodes_per_region: usize,
}

impl Plan {
    pub fn new(exe: &Path, dir: &Path, regions: usize) -> Plan {
        Plan {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            regions,
            ports: Ports::Free,
            links: None,
            incarnations: 1,
            https: false,
            ca_file: None,
            tune: None,
            env: Vec::new(),
            die_with_parent: false,
            object_store: None,
            nodes_per_region: 1,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn tune(
        mut self,
        f: impl Fn(usize, &mut ServeConfig) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.tune = Some(Arc::new(f));
        self
    }
}

/// The name of region `index` (0-based).
pub fn region_name(index: usize) -> String {
    REGION_NAMES
        .get(index)
        .map_or_else(|| format!("region-{}", index + 1), |s| s.to_string())
}

/// One node of the cluster.
pub struct Member {
    pub index: usize,
    /// Raft node id of its current incarnation.
    pub id: u64,
    pub region: String,
    pub http: u16,
    pub grpc: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub process: Process,
    scheme: &'static str,
}

impl Member {
    /// Its HTTP endpoint: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.http)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint())
    }

    pub fn running(&self) -> bool {
        self.process.running()
    }

    fn peer(&self) -> Peer {
        Peer {
            id: self.id,
            region: self.region.clone(),
            grpc: format!("127.0.0.1:{}", self.grpc),
            http: self.endpoint(),
        }
    }
}

/// The emulated link carrying node `from`'s peer traffic to node `to`.
pub struct PeerLink {
    pub from: usize,
    pub to: usize,
    pub link: Arc<Link>,
}

pub struct Cluster {
    pub nodes: Vec<Member>,
    pub links: Vec<PeerLink>,
    /// Per node: its routes to every incarnation of every other node.
    routes: Vec<Vec<PeerRoute>>,
    plan: Plan,
    http: reqwest::Client,
    /// Per node, its region's key prefix in the shared bucket (with
    /// `Plan::object_store`).
    prefixes: Vec<String>,
}

/// The key prefixes of a cluster's regions start with a name drawn once
/// and kept in its directory, so a restarted cluster finds its blobs and
/// two clusters on one store never share keys.
const BUCKET_PREFIX_FILE: &str = "bucket-prefix";

fn bucket_prefix(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(BUCKET_PREFIX_FILE);
    if let Ok(p) = std::fs::read_to_string(&path) {
        return Ok(p.trim().to_string());
    }
    let p = format!("wharf-{:08x}", rand::random::<u32>());
    std::fs::write(&path, &p)?;
    Ok(p)
}

fn port(base: u16, offset: usize) -> std::io::Result<u16> {
    u16::try_from(offset)
        .ok()
        .and_then(|o| base.checked_add(o))
        .ok_or_else(|| std::io::Error::other(format!("base port {base} is too high")))
}

/// A hex cluster key in `path`, unless one is there; readable by its owner only.
fn ensure_cluster_key(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        return Ok(());
    }
    let hex: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()
}

impl Cluster {
    /// Lay out, configure and spawn every node; they become ready
    /// together (see `wait_ready`).
    pub fn start(plan: Plan) -> std::io::Result<Cluster> {
        let per = plan.nodes_per_region.max(1);
        let n = plan.regions * per;
        if !(1..=REGIONS_MAX).contains(&n) {
            return Err(std::io::Error::other(format!(
                "a cluster has 1 to {REGIONS_MAX} nodes, not {n}"
            )));
        }
        if per > 1 && plan.object_store.is_none() {
            return Err(std::io::Error::other(
                "several nodes per region share the region's object store: set Plan::object_store",
            ));
        }
        std::fs::create_dir_all(&plan.dir)?;
        ensure_cluster_key(&plan.dir.join(CLUSTER_KEY_FILE))?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|i| match plan.ports {
                Ports::Free => Ok((free_port()?, free_port()?)),
                Ports::Base(b) => Ok((port(b, i + 1)?, port(b, GRPC_OFFSET as usize + i + 1)?)),
            })
            .collect::<std::io::Result<_>>()?;
        let mut links = Vec::new();
        let mut routes = vec![Vec::new(); n];
        if let Some(spec) = plan.links {
            for (i, route) in routes.iter_mut().enumerate() {
                // Nodes of one region talk over its LAN, not a WAN link.
                for (j, (_, grpc)) in ports.iter().enumerate().filter(|(j, _)| j / per != i / per) {
                    let listen = match plan.ports {
                        Ports::Free => "127.0.0.1:0".to_string(),
                        Ports::Base(b) => {
                            format!(
                                "127.0.0.1:{}",
                                port(b, LINK_OFFSET as usize + 10 * (i + 1) + j + 1)?
                            )
                        }
                    };
                    let std_listener = std::net::TcpListener::bind(&listen).map_err(|e| {
                        std::io::Error::other(format!(
                            "emulated link {}->{} cannot listen on {listen}: {e}",
                            i + 1,
                            j + 1
                        ))
                    })?;
                    std_listener.set_nonblocking(true)?;
                    let via = std_listener.local_addr()?;
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    links.push(PeerLink {
                        from: i,
                        to: j,
                        link: Link::start(listener, format!("127.0.0.1:{grpc}"), spec),
                    });
                    for k in 0..plan.incarnations {
                        route.push(PeerRoute {
                            node: j as u64 + 1 + k * ID_STRIDE,
                            via: via.to_string(),
                        });
                    }
                }
            }
        }
        let scheme = if plan.https { "https" } else { "http" };
        let mut nodes = Vec::new();
        for (i, (http, grpc)) in ports.into_iter().enumerate() {
            let dir = plan.dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("wharf.toml");
            let mut process = Process::new(
                &plan.exe,
                vec!["serve".into(), "--config".into(), config.clone().into()],
                dir.join(LOG_FILE),
            );
            for (k, v) in &plan.env {
                process = process.env(k, v);
            }
            if plan.die_with_parent {
                process = process.die_with_parent();
            }
            nodes.push(Member {
                index: i,
                id: i as u64 + 1,
                region: region_name(i / per),
                http,
                grpc,
                dir,
                config,
                process,
                scheme,
            });
        }
        let http = wharf_client::http_client(plan.ca_file.as_deref())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut prefixes = Vec::new();
        if let Some(store) = &plan.object_store {
            store.create_bucket(crate::s3::SHARED_BUCKET)?;
            let prefix = bucket_prefix(&plan.dir)?;
            // One store per region, the same for its nodes.
            prefixes = (0..n)
                .map(|i| format!("{prefix}/{}/", region_name(i / per)))
                .collect();
        }
        let mut c = Cluster {
            nodes,
            links,
            routes,
            plan,
            http,
            prefixes,
        };
        for i in 0..n {
            c.write_config(i, i == 0)?;
        }
        for i in 0..n {
            if let Err(e) = c.nodes[i].process.spawn() {
                c.stop_all(Duration::from_secs(5));
                return Err(e);
            }
        }
        Ok(c)
    }

    /// The configuration node `i` would be written with now.
    pub fn config(&self, i: usize, bootstrap: bool) -> std::io::Result<ServeConfig> {
        let node = &self.nodes[i];
        let mut cfg = ServeConfig {
            node_id: node.id,
            region: node.region.clone(),
            data_dir: node.dir.join("data"),
            http_listen: ([127, 0, 0, 1], node.http).into(),
            grpc_listen: ([127, 0, 0, 1], node.grpc).into(),
            bootstrap,
            // The members as they are now (its own incarnation included).
            peers: self.nodes.iter().map(Member::peer).collect(),
            peer_routes: self.routes[i].clone(),
            ..ServeConfig::default()
        };
        cfg.auth.cluster_key_file = Some(self.plan.dir.join(CLUSTER_KEY_FILE));
        if let (Some(store), Some(prefix)) = (&self.plan.object_store, self.prefixes.get(i)) {
            cfg.storage.backend = wharf_config::StorageBackend::S3;
            cfg.storage.endpoint = store.endpoint.clone();
            cfg.storage.bucket = crate::s3::SHARED_BUCKET.to_string();
            cfg.storage.prefix = prefix.clone();
            cfg.storage.credentials_file = Some(store.credentials_file(&self.plan.dir)?);
        }
        if let Some(tune) = &self.plan.tune {
            tune(i, &mut cfg)?;
        }
        Ok(cfg)
    }

    /// Write node `i`'s configuration for its current incarnation.
    pub fn write_config(&self, i: usize, bootstrap: bool) -> std::io::Result<()> {
        let cfg = self.config(i, bootstrap)?;
        std::fs::write(&self.nodes[i].config, cfg.to_toml())
    }

    /// The object store the cluster keeps blobs on, if it does.
    pub fn plan_object_store(&self) -> Option<&crate::s3::ObjectStore> {
        self.plan.object_store.as_ref()
    }

    /// The key prefix of node `i`'s region in `s3::SHARED_BUCKET`, when
    /// the cluster keeps blobs on an object store.
    pub fn object_prefix(&self, i: usize) -> Option<&str> {
        self.prefixes.get(i).map(String::as_str)
    }

    /// The HTTP client the launcher checks nodes with (it trusts the
    /// plan's CA).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Wait until node `i` answers /readyz with 200 (a leader is known and
    /// the identities have arrived); an error if it exits or `limit` passes.
    pub async fn wait_ready(&mut self, i: usize, limit: Duration) -> std::io::Result<()> {
        let http = self.http.clone();
        let url = self.nodes[i].url("/readyz");
        let node = &mut self.nodes[i];
        let mut exited = None;
        let ready = eventually(limit, Duration::from_millis(100), || {
            exited = exited.or_else(|| node.process.exited());
            let req = http.get(&url).timeout(Duration::from_secs(2)).send();
            let gone = exited.is_some();
            async move {
                if gone {
                    return Some(false);
                }
                match req.await {
                    Ok(r) if r.status().is_success() => Some(true),
                    _ => None,
                }
            }
        })
        .await;
        let node = &self.nodes[i];
        match (ready, exited) {
            (Some(true), _) => Ok(()),
            (_, Some(status)) => Err(std::io::Error::other(format!(
                "node {} ({}) exited with {status}; last lines of {}:\n{}",
                node.id,
                node.region,
                node.process.log().display(),
                node.process.tail(15)
            ))),
            _ => Err(std::io::Error::other(format!(
                "node {} ({}) not ready after {limit:?}; last lines of {}:\n{}",
                node.id,
                node.region,
                node.process.log().display(),
                node.process.tail(15)
            ))),
        }
    }

    /// Wait for every running node.
    pub async fn wait_all_ready(&mut self, limit: Duration) -> std::io::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].running() {
                self.wait_ready(i, limit).await?;
            }
        }
        Ok(())
    }

    /// kill -9 node `i`: nothing is flushed.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.kill();
    }

    /// Start node `i` again (same id and data) unless it runs.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].process.spawn()
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].process.pause();
    }

    pub fn resume(&mut self, i: usize) {
        self.nodes[i].process.resume();
    }

    /// SIGTERM every node at once, then wait up to `grace` for them all
    /// (killing whichever is still running after it).
    pub fn stop_all(&mut self, grace: Duration) {
        for n in self.nodes.iter_mut().filter(|n| n.running()) {
            if n.process.paused() {
                n.process.resume();
            }
            if let Some(pid) = n.process.pid() {
                // SAFETY: signalling our own child process.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = std::time::Instant::now() + grace;
        for n in self.nodes.iter_mut() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            n.process.terminate(left);
        }
    }

    /// Node `i` loses its disk and is to come back as a new node of the
    /// same region: killed, its data removed, given the next id and a
    /// configuration that joins rather than bootstraps. The caller
    /// removes the old member, spawns it (`restart`) and adds it back.
    pub fn reincarnate(&mut self, i: usize) -> std::io::Result<u64> {
        self.kill(i);
        let data = self.nodes[i].dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let id = self.nodes[i].id + ID_STRIDE;
        if id > self.plan.incarnations * ID_STRIDE {
            return Err(std::io::Error::other(
                "too many incarnations of one region (Plan::incarnations)",
            ));
        }
        self.nodes[i].id = id;
        self.write_config(i, false)?;
        Ok(id)
    }

    /// Hand the nodes over to the caller, who then owns their processes
    /// (each is killed when dropped); the links, if any, stop.
    pub fn into_members(mut self) -> Vec<Member> {
        std::mem::take(&mut self.nodes)
    }

    /// Cut every link into and out of node `i`.
    pub fn isolate(&self, i: usize) {
        self.each_link(|l| l.from == i || l.to == i, |l| l.cut());
    }

    /// Silence every link of node `i`: its packets vanish, nothing is
    /// reset, connections hang until their own timeouts (a partition as
    /// dropped packets, harsher than a cut's resets).
    pub fn silence(&self, i: usize) {
        self.each_link(|l| l.from == i || l.to == i, |l| l.silence());
    }

    /// Cut the links between the two sides of a split.
    pub fn split(&self, side: &[usize]) {
        self.each_link(
            |l| side.contains(&l.from) != side.contains(&l.to),
            |l| l.cut(),
        );
    }

    /// Cut every link between the two groups, leaving each group's links
    /// (and a bridge node's links to both, when it is in neither) intact.
    pub fn cut_between(&self, a: &[usize], b: &[usize]) {
        self.each_link(
            |l| {
                (a.contains(&l.from) && b.contains(&l.to))
                    || (b.contains(&l.from) && a.contains(&l.to))
            },
            |l| l.cut(),
        );
    }

    /// Make every link into and out of node `i` behave as `spec` (every
    /// link when `i` is None).
    pub fn shape(&self, i: Option<usize>, spec: LinkSpec) {
        self.each_link(
            |l| i.is_none_or(|i| l.from == i || l.to == i),
            |l| l.set_spec(spec),
        );
    }

    /// Reconnect every link, with the plan's link behaviour.
    pub fn heal(&self) {
        let spec = self.plan.links.unwrap_or_default();
        self.each_link(
            |_| true,
            |l| {
                l.heal();
                l.set_spec(spec);
            },
        );
    }

    fn each_link(&self, pick: impl Fn(&PeerLink) -> bool, act: impl Fn(&Link)) {
        for l in self.links.iter().filter(|l| pick(l)) {
            act(&l.link);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            n.process.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_is_configured_as_a_member_of_the_same_cluster() {
        let dir = tempfile::tempdir().unwrap();
        // /bin/true stands in for wharf: only the layout is looked at.
        let plan = Plan::new(Path::new("/bin/true"), dir.path(), 3).tune(|i, c| {
            c.mover.rescan_s = 1 + i as u64;
            Ok(())
        });
        let c = Cluster::start(plan).unwrap();
        let configs: Vec<ServeConfig> = (0..3)
            .map(|i| {
                let text = std::fs::read_to_string(&c.nodes[i].config).unwrap();
                ServeConfig::overlay(&ServeConfig::default(), &text).unwrap()
            })
            .collect();
        for (i, cfg) in configs.iter().enumerate() {
            assert_eq!(cfg.node_id, i as u64 + 1);
            assert_eq!(cfg.region, REGION_NAMES[i]);
            assert_eq!(cfg.bootstrap, i == 0, "only the first node bootstraps");
            assert_eq!(cfg.peers, configs[0].peers, "one membership for all");
            assert_eq!(cfg.mover.rescan_s, 1 + i as u64, "the tune applied");
            assert_eq!(
                cfg.auth.cluster_key_file.as_deref(),
                Some(dir.path().join(CLUSTER_KEY_FILE).as_path())
            );
            assert!(cfg.validate().is_ok());
        }
        let key = std::fs::read_to_string(dir.path().join(CLUSTER_KEY_FILE)).unwrap();
        assert_eq!(key.len(), 64);
    }

    #[test]
    fn fixed_ports_follow_the_documented_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::new(Path::new("/bin/true"), dir.path(), 2);
        plan.ports = Ports::Base(47000);
        let c = Cluster::start(plan).unwrap();
        assert_eq!((c.nodes[0].http, c.nodes[0].grpc), (47001, 47101));
        assert_eq!((c.nodes[1].http, c.nodes[1].grpc), (47002, 47102));
        assert!(Cluster::start(Plan::new(Path::new("/bin/true"), dir.path(), 10)).is_err());
    }

    #[tokio::test]
    async fn links_route_every_incarnation_and_a_rejoin_takes_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::new(Path::new("/bin/true"), dir.path(), 3);
        plan.links = Some(LinkSpec::default());
        plan.incarnations = 2;
        let mut c = Cluster::start(plan).unwrap();
        assert_eq!(c.links.len(), 6, "one link per direction of each pair");
        let cfg = c.config(0, true).unwrap();
        let mut routed: Vec<u64> = cfg.peer_routes.iter().map(|r| r.node).collect();
        routed.sort();
        assert_eq!(routed, vec![2, 3, 12, 13]);
        assert_eq!(c.reincarnate(1).unwrap(), 12);
        let cfg = c.config(1, false).unwrap();
        assert_eq!(cfg.node_id, 12);
        assert!(!cfg.bootstrap);
        assert!(cfg.peers.iter().any(|p| p.id == 12));
        assert!(c.reincarnate(1).is_err(), "only two incarnations planned");
    }
}
