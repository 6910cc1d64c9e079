//! A real Wharf cluster for a run: one `wharf serve` process per region,
//! every peer link through a cuttable proxy, reads linearizable.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::Link;

pub const REGIONS: [&str; 5] = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];
pub const USER: &str = "owner";
pub const PASSWORD: &str = "jepsen owner password";

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Node {
    pub index: usize,
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

pub struct Cluster {
    wharf: PathBuf,
    pub nodes: Vec<Node>,
    pub links: Vec<Arc<Link>>,
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
                links.push(Link::start(i, j, listener, format!("127.0.0.1:{grpc}")));
                route.push_str(&format!(
                    "[[peer_routes]]\nnode = {}\nvia = \"{via}\"\n",
                    j + 1
                ));
            }
        }
        let mut peers = String::new();
        for (i, (http, grpc)) in ports.iter().enumerate() {
            peers.push_str(&format!(
                "[[peers]]\nid = {}\nregion = \"{}\"\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"http://127.0.0.1:{http}\"\n",
                i + 1,
                REGIONS[i]
            ));
        }
        let mut nodes = Vec::new();
        for (i, (http, grpc)) in ports.iter().enumerate() {
            let ndir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&ndir)?;
            let config = ndir.join("wharf.toml");
            std::fs::write(
                &config,
                format!(
                    "node_id = {}\nregion = \"{}\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
                     grpc_listen = \"127.0.0.1:{grpc}\"\nbootstrap = {}\nreads = \"linearizable\"\n\
                     write_timeout_ms = 5000\n{peers}{}\n[auth]\ncluster_key_file = \"{}\"\n\
                     [raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\
                     [mover]\nrescan_s = 1\nconcurrency = 16\n",
                    i + 1,
                    REGIONS[i],
                    ndir.join("data").display(),
                    i == 0,
                    routes[i],
                    key.display()
                ),
            )?;
            nodes.push(Node {
                index: i,
                region: REGIONS[i].to_string(),
                http: *http,
                grpc: *grpc,
                dir: ndir,
                config,
                child: None,
                paused: false,
            });
        }
        let mut c = Cluster {
            wharf: wharf.to_path_buf(),
            nodes,
            links,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(c)
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
                l.cut();
            }
        }
    }

    /// Cut the links between the two sides of a split.
    pub fn split(&self, side: &[usize]) {
        for l in &self.links {
            if side.contains(&l.from) != side.contains(&l.to) {
                l.cut();
            }
        }
    }

    pub fn heal(&self) {
        for l in &self.links {
            l.heal();
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
                return Some(l as usize - 1);
            }
        }
        None
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
