//! A multi-region cluster of real `wharf serve` processes, one per region,
//! laid out and configured by the shared launcher (`wharf-launcher`).
#![allow(dead_code)]

use std::path::Path;

use wharf_launcher::{Plan, REGION_NAMES};

use super::Node;

pub const REGIONS: [&str; 3] = [REGION_NAMES[0], REGION_NAMES[1], REGION_NAMES[2]];

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Per node, its region's key prefix in the shared bucket when blobs
    /// live on the object store.
    pub prefixes: Vec<String>,
    pub store: Option<wharf_launcher::s3::ObjectStore>,
}

impl Cluster {
    /// Start `n` regions under `dir`; `extra_toml` is laid over every
    /// node's generated configuration (`ServeConfig::overlay`).
    pub fn start(dir: &Path, n: usize, extra_toml: &str) -> Cluster {
        Cluster::start_nodes(dir, n, 1, extra_toml)
    }

    /// `regions` regions of `per` nodes each (node k serves region k /
    /// per); several per region keep blobs on the object store (the one
    /// `WHARF_TEST_S3` names, or SeaweedFS).
    pub fn start_nodes(dir: &Path, regions: usize, per: usize, extra_toml: &str) -> Cluster {
        let n = regions * per;
        let extra = extra_toml.to_string();
        let mut plan = Plan::new(Path::new(env!("CARGO_BIN_EXE_wharf")), dir, regions)
            .env("WHARF_BOOTSTRAP_PASSWORD", super::OWNER_PASSWORD)
            .tune(move |_, c| {
                c.raft.heartbeat_ms = 100;
                c.raft.election_timeout_min_ms = 500;
                c.raft.election_timeout_max_ms = 1000;
                *c = c.overlay(&extra).map_err(std::io::Error::other)?;
                Ok(())
            });
        plan.object_store = super::object_store();
        plan.nodes_per_region = per;
        if per > 1 && plan.object_store.is_none() {
            plan.object_store = Some(wharf_launcher::s3::ObjectStore::seaweedfs().unwrap());
        }
        let store = plan.object_store.clone();
        let launched = wharf_launcher::Cluster::start(plan).unwrap();
        let prefixes = (0..n)
            .filter_map(|i| launched.object_prefix(i).map(str::to_string))
            .collect();
        let mut nodes: Vec<Node> = launched
            .into_members()
            .into_iter()
            .map(Node::from)
            .collect();
        for n in nodes.iter_mut() {
            n.wait_ready();
        }
        Cluster {
            nodes,
            prefixes,
            store,
        }
    }

    /// Index of the node leading the metadata group, as node 0 sees it.
    pub fn leader(&self) -> usize {
        for _ in 0..100 {
            for n in &self.nodes {
                if !n.running() {
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

    /// Where region `i` keeps its copy of `digest` (on its disk).
    pub fn blob_file(&self, i: usize, digest: &str) -> std::path::PathBuf {
        assert!(
            self.prefixes.is_empty(),
            "blob files exist only on the filesystem backend"
        );
        let hex = &digest[7..];
        self.nodes[i]
            .dir
            .join("data/blobs/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Whether region `i` holds `digest` in its local blob store.
    pub fn holds(&self, i: usize, digest: &str) -> bool {
        match (self.store.as_ref(), self.prefixes.get(i)) {
            (Some(store), Some(prefix)) => {
                let hex = &digest[7..];
                let key = format!("{prefix}blobs/sha256/{}/{hex}", &hex[..2]);
                store.exists(wharf_launcher::s3::SHARED_BUCKET, &key)
            }
            _ => self.blob_file(i, digest).exists(),
        }
    }
}
