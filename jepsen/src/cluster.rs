//! A real Wharf cluster for a run: one `wharf serve` process per region,
//! every peer link through a cuttable proxy, reads linearizable.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_netem::{Link, LinkSpec};

pub const REGIONS: [&str; 5] = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];
pub const USER: &str = "owner";
pub const PASSWORD: &str = "jepsen owner password";
/// A region whose disk is wiped comes back as a new node: region i's
/// incarnations have ids i+1, i+1+ID_STRIDE, ... Routes through the links
/// are configured for this many incarnations up front, so that every
/// node dials a newcomer through the emulated links too.
const ID_STRIDE: u64 = 10;
const INCARNATIONS: u64 = 20;

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Node {
    pub index: usize,
    /// Raft node id of the current incarnation.
    pub id: u64,
    pub region: String,
    pub http: u16,
    pub grpc: u16,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

/// The emulated link carrying node `from`'s peer traffic to node `to`.
pub struct PeerLink {
    pub from: usize,
    pub to: usize,
    pub link: Arc<Link>,
}

pub struct Cluster {
    wharf: PathBuf,
    pub nodes: Vec<Node>,
    pub links: Vec<PeerLink>,
    /// Per node: its routes to every incarnation of every other node.
    routes: Vec<String>,
    key: PathBuf,
}

impl Cluster {
    /// Start `n` regions under `dir` (their processes and proxies).
    pub async fn start(wharf: &Path, dir: &Path, n: usize) -> std::io::Result<Cluster> {
        assert!((1..=REGIONS.len()).contains(&n), "1 to 5 regions");
        std::fs::create_dir_all(dir)?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()?;
        // Every node of the cluster holds the same cluster key.
        let key = dir.join("cluster.key");
        let hex: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        std::fs::write(&key, hex)?;
        let mut links = Vec::new();
        let mut routes = vec![String::new(); n];
        for (i, route) in routes.iter_mut().enumerate() {
            for (j, (_, grpc)) in ports.iter().enumerate() {
                if i == j {
                    continue;
                }
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let via = listener.local_addr()?;
                links.push(PeerLink {
                    from: i,
                    to: j,
                    link: Link::start(listener, format!("127.0.0.1:{grpc}"), LinkSpec::default()),
                });
                for k in 0..INCARNATIONS {
                    route.push_str(&format!(
                        "[[peer_routes]]\nnode = {}\nvia = \"{via}\"\n",
                        j as u64 + 1 + k * ID_STRIDE
                    ));
                }
            }
        }
        let mut nodes = Vec::new();
        for (i, (http, grpc)) in ports.iter().enumerate() {
            let ndir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&ndir)?;
            nodes.push(Node {
                index: i,
                id: i as u64 + 1,
                region: REGIONS[i].to_string(),
                http: *http,
                grpc: *grpc,
                config: ndir.join("wharf.toml"),
                dir: ndir,
                child: None,
                paused: false,
            });
        }
        let mut c = Cluster {
            wharf: wharf.to_path_buf(),
            nodes,
            links,
            routes,
            key,
        };
        for i in 0..n {
            c.write_config(i, i == 0)?;
            c.spawn(i)?;
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(c)
    }

    /// Write node `i`'s configuration for its current incarnation.
    fn write_config(&self, i: usize, bootstrap: bool) -> std::io::Result<()> {
        let node = &self.nodes[i];
        // The members as they are now (a node's own incarnation included).
        let peers: String = self
            .nodes
            .iter()
            .map(|p| {
                format!(
                    "[[peers]]\nid = {}\nregion = \"{}\"\ngrpc = \"127.0.0.1:{}\"\nhttp = \"{}\"\n",
                    p.id,
                    p.region,
                    p.grpc,
                    p.url("")
                )
            })
            .collect();
        std::fs::write(
            &node.config,
            format!(
                "node_id = {}\nregion = \"{}\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{}\"\n\
                 grpc_listen = \"127.0.0.1:{}\"\nbootstrap = {bootstrap}\nreads = \"linearizable\"\n\
                 write_timeout_ms = 5000\n{}{}\n[auth]\ncluster_key_file = \"{}\"\n\
                 [raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\
                 [mover]\nrescan_s = 1\nconcurrency = 16\n\
                 [uploads]\nack_regions = 2\n",
                node.id,
                node.region,
                node.dir.join("data").display(),
                node.http,
                node.grpc,
                peers,
                self.routes[i],
                self.key.display()
            ),
        )
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("node.log"))?;
        let child = Command::new(&self.wharf)
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env("WHARF_BOOTSTRAP_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Wait for /readyz of node `i`.
    pub async fn wait_ready(&self, i: usize, limit: Duration) -> std::io::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = client.get(self.nodes[i].url("/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "node {} not ready after {limit:?}",
                    i + 1
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9: nothing is flushed.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
    }

    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(pid) = self.nodes[i].pid() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGSTOP: the process is frozen (a GC pause, a stuck VM).
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Cut every link into and out of node `i`.
    pub fn isolate(&self, i: usize) {
        for l in &self.links {
            if l.from == i || l.to == i {
                l.link.cut();
            }
        }
    }

    /// Silence every link of node `i`: its packets vanish, nothing is
    /// reset, connections hang until their own timeouts (a partition as
    /// dropped packets, harsher than a cut's resets).
    pub fn silence(&self, i: usize) {
        for l in &self.links {
            if l.from == i || l.to == i {
                l.link.silence();
            }
        }
    }

    /// Cut the links between the two sides of a split.
    pub fn split(&self, side: &[usize]) {
        for l in &self.links {
            if side.contains(&l.from) != side.contains(&l.to) {
                l.link.cut();
            }
        }
    }

    /// Cut every link between the two groups, leaving each group's links
    /// (and a bridge node's links to both, when it is in neither) intact.
    pub fn cut_between(&self, a: &[usize], b: &[usize]) {
        for l in &self.links {
            let across = (a.contains(&l.from) && b.contains(&l.to))
                || (b.contains(&l.from) && a.contains(&l.to));
            if across {
                l.link.cut();
            }
        }
    }

    /// Make every link into and out of node `i` behave as `spec` (every
    /// link when `i` is None).
    pub fn shape(&self, i: Option<usize>, spec: LinkSpec) {
        for l in &self.links {
            if i.is_none_or(|i| l.from == i || l.to == i) {
                l.link.set_spec(spec);
            }
        }
    }

    pub fn heal(&self) {
        for l in &self.links {
            l.link.heal();
            l.link.set_spec(LinkSpec::default());
        }
    }

    /// The leader as some running node reports it (index), if any.
    pub async fn leader(&self) -> Option<usize> {
        let client = reqwest::Client::new();
        for n in self.nodes.iter().filter(|n| n.running() && !n.paused) {
            let Ok(r) = client
                .get(n.url("/api/v1/status"))
                .basic_auth(USER, Some(PASSWORD))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
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
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            for n in self
                .nodes
                .iter()
                .filter(|n| n.index != i && n.running() && !n.paused)
            {
                let mut req = client
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

    /// Node `i` (already killed) loses its disk and comes back as a new
    /// node of the same region: removed from the group, started empty with
    /// a new id, added back (it catches up as a learner, then votes) while
    /// the mover copies every blob into it again. Returns the new id.
    pub async fn rejoin_wiped(&mut self, i: usize) -> std::io::Result<u64> {
        self.kill(i);
        let data = self.nodes[i].dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let region = self.nodes[i].region.clone();
        self.admin(
            i,
            reqwest::Method::DELETE,
            &format!("/api/v1/replications?region={region}"),
            None,
            Duration::from_secs(30),
        )
        .await?;
        let id = self.nodes[i].id + ID_STRIDE;
        if id > INCARNATIONS * ID_STRIDE {
            return Err(std::io::Error::other("too many incarnations of one region"));
        }
        self.nodes[i].id = id;
        self.write_config(i, false)?;
        self.spawn(i)?;
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

    /// Resume, restart and reconnect everything.
    pub async fn heal_all(&mut self) -> std::io::Result<()> {
        self.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.restart(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.kill(i);
        }
    }
}
