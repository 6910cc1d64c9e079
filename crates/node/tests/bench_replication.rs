//! `wharf bench replication` against a live three-region cluster of real
//! processes: every ordered pair of regions is measured with the samples
//! asked for, figures are consistent (p50 ≤ p99, blobs local no sooner
//! than the manifest served), progress and the upload size go to stderr,
//! the probe repository is removed after, and credentials that may not
//! push are refused before anything is pushed.

mod common;

use std::process::Command;

use common::cluster::{Cluster, REGIONS};
use serde_json::Value;

fn bench(node: &common::Node) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.args(["bench", "replication", "--endpoint", &node.url("")]);
    c
}

#[test]
fn every_region_pair_is_measured_and_the_probes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, "");
    let out = bench(&cluster.nodes[1])
        .envs(common::owner_env())
        .args(["--size", "64KiB,300KiB", "--count", "2", "-o", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 3 regions × 2 sizes × 2 probes = 12 images of 64 KiB or 300 KiB.
    assert!(stderr.contains("pushing 12 probe images"), "{stderr}");
    assert!(stderr.contains("2.1 MiB uploaded"), "{stderr}");
    assert!(stderr.contains("probe 12/12"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = v["results"].as_array().unwrap();
    assert_eq!(cells.len(), 3 * 2 * 2, "{v}");
    let mut pairs = std::collections::BTreeSet::new();
    for c in cells {
        assert_ne!(c["from"], c["to"]);
        assert!(REGIONS.contains(&c["from"].as_str().unwrap()));
        pairs.insert((c["from"].to_string(), c["to"].to_string()));
        assert_eq!(c["samples"], 2, "{c}");
        assert_eq!(c["timed_out"], 0, "{c}");
        let f = |k: &str, p: &str| c[k][p].as_f64().unwrap();
        assert!(f("manifest_ms", "p50") <= f("manifest_ms", "p99"), "{c}");
        assert!(
            f("blobs_local_ms", "p50") <= f("blobs_local_ms", "p99"),
            "{c}"
        );
        assert!(f("manifest_ms", "p50") <= f("blobs_local_ms", "p50"), "{c}");
        assert!(f("blobs_local_ms", "max") < 60_000.0, "{c}");
    }
    assert_eq!(pairs.len(), 6, "every ordered pair of regions");
    // The probes are gone.
    let tags = common::curl_owner(&cluster.nodes[0].url("/v2/wharf-bench/replication/tags/list"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tags.stdout), "404");

    // A token that may only pull is refused before anything is pushed.
    let wharf = |args: &[&str]| {
        common::run(
            Command::new(env!("CARGO_BIN_EXE_wharf"))
                .envs(common::owner_env())
                .args(args)
                .args(["--endpoint", &cluster.nodes[0].url(""), "-o", "json"]),
        )
    };
    wharf(&[
        "scope-map",
        "create",
        "pull",
        "--repository",
        "*=content/read",
    ]);
    let token: Value = serde_json::from_str(&wharf(&[
        "token",
        "create",
        "reader",
        "--scope-map",
        "pull",
    ]))
    .unwrap();
    let refused = bench(&cluster.nodes[0])
        .env("WHARF_USERNAME", "reader")
        .env("WHARF_PASSWORD", token["password1"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("may not push to wharf-bench/replication"),
        "{err}"
    );
    assert!(!err.contains("pushing"), "it announced an upload: {err}");
}
