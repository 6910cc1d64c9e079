//! A multi-region cluster of real `wharf serve` processes, one per region.
#![allow(dead_code)]

use std::path::Path;

use super::{free_port, Node};

pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Start `n` regions under `dir`; `extra_toml` is appended to every
    /// node's configuration (top-level keys first, then tables).
    pub fn start(dir: &Path, n: usize, extra_toml: &str) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut peers = String::new();
        for (i, (http, grpc)) in ports.iter().enumerate() {
            peers.push_str(&format!(
                "[[peers]]\nid = {}\nregion = \"{}\"\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"http://127.0.0.1:{http}\"\n",
                i + 1,
                REGIONS[i]
            ));
        }
        // Every node of a cluster holds the same cluster key.
        let key = dir.join("cluster.key");
        let hex: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        std::fs::write(&key, hex).unwrap();
        let mut nodes = Vec::new();
        for (i, (http, grpc)) in ports.iter().enumerate() {
            let ndir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&ndir).unwrap();
            let cfg = format!(
                "node_id = {}\nregion = \"{}\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\ngrpc_listen = \"127.0.0.1:{grpc}\"\nbootstrap = {}\n{extra_toml}\n{peers}\n[auth]\ncluster_key_file = \"{}\"\n[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n",
                i + 1,
                REGIONS[i],
                ndir.join("data").display(),
                i == 0,
                key.display()
            );
            let path = ndir.join("wharf.toml");
            std::fs::write(&path, cfg).unwrap();
            let args = vec![
                "serve".into(),
                "--config".into(),
                path.display().to_string(),
            ];
            nodes.push(Node::launch(&ndir, *http, *grpc, args));
        }
        for n in nodes.iter_mut() {
            n.wait_ready();
        }
        Cluster { nodes }
    }

    /// Index of the node leading the metadata group, as node 0 sees it.
    pub fn leader(&self) -> usize {
        for _ in 0..100 {
            for n in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                let out = super::curl_owner(&n.url("/api/v1/status"))
                    .output()
                    .unwrap();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    if let Some(l) = v["leader"].as_u64() {
                        return l as usize - 1;
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no leader");
    }

    /// Whether region `i` holds `digest` in its local blob store.
    pub fn holds(&self, i: usize, digest: &str) -> bool {
        let hex = &digest[7..];
        self.nodes[i]
            .dir
            .join("data/blobs/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists()
    }
}
