//! deploy/k8s and deploy/compose hold what they claim: kubectl parses the
//! manifests client-side (no cluster here), every region is a StatefulSet
//! of two nodes with its Services and a configuration for each of its pods,
//! and every node configuration of both deployments loads and validates as
//! `wharf serve` would load it, with ids, regions and peers that agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use wharf_config::{ServeConfig, StorageBackend};

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Load a node configuration the way `wharf serve --config` does.
fn load(name: &str, text: &str) -> ServeConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let cfg = ServeConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    cfg
}

/// Six nodes, two per region, every one naming all six as peers, one
/// bootstrapping, all on the object store.
fn check_cluster(configs: &[ServeConfig]) {
    assert_eq!(configs.len(), 6);
    let ids: BTreeSet<u64> = configs.iter().map(|c| c.node_id).collect();
    assert_eq!(ids.len(), 6, "node ids are unique");
    let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
    for c in configs {
        *per_region.entry(c.region.as_str()).or_default() += 1;
        assert_eq!(c.storage.backend, StorageBackend::S3, "node {}", c.node_id);
        let peers: BTreeSet<u64> = c.peers.iter().map(|p| p.id).collect();
        assert_eq!(peers, ids, "node {} names every node as a peer", c.node_id);
        let me = c.peers.iter().find(|p| p.id == c.node_id).unwrap();
        assert_eq!(me.region, c.region);
        assert_eq!(
            Some(&me.grpc),
            c.advertise_grpc.as_ref(),
            "node {}",
            c.node_id
        );
    }
    assert_eq!(per_region.values().collect::<Vec<_>>(), vec![&2, &2, &2]);
    assert_eq!(configs.iter().filter(|c| c.bootstrap).count(), 1);
}

#[test]
fn the_kubernetes_manifests_parse_and_configure_three_regions_of_two_nodes() {
    if !common_have("kubectl") {
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    // Client-side only: `label --local` reads and checks every object
    // without a cluster to ask.
    let out = Command::new("kubectl")
        .args([
            "label",
            "--local",
            "--dry-run=client",
            "-o",
            "json",
            "checked=true",
            "-f",
        ])
        .arg(deploy("k8s"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON document per object.
    let items: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let of_kind =
        |k: &str| -> Vec<&serde_json::Value> { items.iter().filter(|i| i["kind"] == k).collect() };
    let wharf_sets: Vec<_> = of_kind("StatefulSet")
        .into_iter()
        .filter(|s| s["spec"]["template"]["metadata"]["labels"]["app"] == "wharf")
        .collect();
    assert_eq!(wharf_sets.len(), 3, "a StatefulSet per region");
    let mut configs = Vec::new();
    for set in wharf_sets {
        let name = set["metadata"]["name"].as_str().unwrap();
        assert_eq!(set["spec"]["replicas"], 2, "{name}");
        let args = set["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains("$(POD_NAME).toml"),
            "{name} picks its pod's configuration"
        );
        let map = of_kind("ConfigMap")
            .into_iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("a ConfigMap {name}"));
        for ordinal in 0..2 {
            let file = format!("{name}-{ordinal}.toml");
            let text = map["data"][&file]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has {file}"));
            configs.push(load(&file, text));
        }
        let services: Vec<_> = of_kind("Service")
            .into_iter()
            .filter(|s| s["metadata"]["name"].as_str().unwrap().starts_with(name))
            .collect();
        assert_eq!(
            services.len(),
            2,
            "{name}: peers' headless Service and clients' Service"
        );
    }
    assert_eq!(of_kind("Secret").len(), 1);
    check_cluster(&configs);
}

#[test]
fn the_compose_node_configurations_load_and_agree() {
    let configs: Vec<ServeConfig> = (1..=6)
        .map(|i| {
            let name = format!("node-{i}.toml");
            let text = std::fs::read_to_string(deploy("compose/config").join(&name)).unwrap();
            load(&name, &text)
        })
        .collect();
    check_cluster(&configs);
    let compose = std::fs::read_to_string(deploy("compose/docker-compose.yml")).unwrap();
    for c in &configs {
        let host = c
            .advertise_grpc
            .as_ref()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string();
        assert!(compose.contains(&format!("  {host}:")), "a service {host}");
    }
}

fn common_have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
