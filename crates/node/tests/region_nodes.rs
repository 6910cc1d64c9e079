//! Several nodes per region on a shared object store (SeaweedFS): any node
//! of a region serves any request, an upload moves between them, and the
//! region keeps serving — and copying — when one of its nodes dies.
//! Two regions of two nodes: four voters, so one dead node leaves a quorum.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::registry::{header, Reg, OCI_MANIFEST};
use common::{owner_creds, run, sha256};
use reqwest::{Method, StatusCode};

async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `wharf replication list` as JSON rows, asked of node `via`.
fn replication_rows(c: &Cluster, via: usize) -> Vec<serde_json::Value> {
    let out = common::curl_owner(&c.nodes[via].url("/api/v1/replications"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The node (index) that runs region `region`'s mover, as node `via` sees it.
fn worker_of(c: &Cluster, via: usize, region: &str) -> Option<usize> {
    let rows = replication_rows(c, via);
    let workers: Vec<usize> = rows
        .iter()
        .filter(|r| r["region"] == region && r["worker"] == true)
        .filter_map(|r| r["node_id"].as_u64())
        .map(|id| id as usize - 1)
        .collect();
    (workers.len() == 1).then(|| workers[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_moves_between_the_nodes_of_a_region_and_every_node_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_nodes(dir.path(), 2, 2, "");
    let (a, b) = (Reg::new(&c.nodes[0].addr()), Reg::new(&c.nodes[1].addr()));
    let layer = common::random_bytes(9 << 20);
    let (first, rest) = layer.split_at(5 << 20);
    let d = sha256(&layer);

    // Started on one node of us-east...
    let r = a
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let r = a
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    // ...its status and the rest on the other, which finishes it.
    let r = b.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", first.len() - 1));
    let r = b
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // A manifest pushed through the first node names the blob the second
    // one took in.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = a.blob("team/app", config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": common::registry::OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": [{"mediaType": common::registry::OCI_LAYER, "digest": d, "size": layer.len()}],
    })
    .to_string();
    let r = a
        .put_manifest("team/app", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // Every node of both regions serves it byte-exact.
    for n in &c.nodes {
        let reg = Reg::new(&n.addr());
        let r = reg.get(&format!("/v2/team/app/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.bytes().await.unwrap() == layer,
            "byte-exact through {}",
            n.addr()
        );
    }
    // One store per region: the other region's mover copies it once.
    eventually(30, "copied into eu-west's store", || c.holds(2, &d)).await;
    assert!(c.holds(0, &d) && c.holds(1, &d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_keeps_serving_and_copying_when_its_working_node_dies() {
    if !common::have("skopeo") || !common::have("umoci") {
        eprintln!("SKIPPED: skopeo and umoci push the images");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_nodes(dir.path(), 2, 2, "");
    // One address for us-east, as a load balancer gives it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().to_string();
    wharf_launcher::balancer::Balancer::start(listener, vec![c.nodes[0].addr(), c.nodes[1].addr()]);

    eventually(30, "one worker in us-east", || {
        worker_of(&c, 2, "us-east").is_some()
    })
    .await;
    let worker = worker_of(&c, 2, "us-east").unwrap();
    let survivor = 1 - worker;

    let big = common::random_bytes(48 << 20);
    let layout = common::oci_layout(dir.path(), "v1", &[("big.bin", &big)]);
    let push = |tag: &str| {
        let mut cmd = common::skopeo();
        cmd.args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &owner_creds(),
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{front}/team/app:{tag}"));
        cmd
    };
    // kill -9 of the working node in the middle of a push through the
    // region's address.
    let mut pushing = push("v1").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.nodes[worker].kill9();
    let _ = pushing.wait();
    // Pushing again through the same address completes.
    run(&mut push("v1"));
    let out = dir.path().join("pulled");
    run(common::skopeo()
        .args([
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &owner_creds(),
        ])
        .arg(format!("docker://{front}/team/app:v1"))
        .arg(format!("oci:{}:v1", out.display())));
    assert!(common::assert_same_blobs(&layout, &out) > 0);

    // The region's work moves to the node left.
    eventually(40, "the survivor took the region's role", || {
        worker_of(&c, 2, "us-east") == Some(survivor)
    })
    .await;
    // And it copies: an image pushed in eu-west reaches us-east's store.
    let eu = Reg::new(&c.nodes[2].addr());
    let fresh = common::random_bytes(1 << 20);
    let d = eu.blob("team/other", &fresh).await;
    eventually(60, "copied into us-east by the survivor", || {
        c.holds(survivor, &d)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_outage_drill_fences_one_node_and_its_region_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_nodes(dir.path(), 2, 2, "");
    eventually(30, "one worker in us-east", || {
        worker_of(&c, 2, "us-east").is_some()
    })
    .await;
    let worker = worker_of(&c, 2, "us-east").unwrap();
    let endpoint = c.nodes[2].url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .envs(common::owner_env())
            .args(["drill", "node-outage", "--region", "us-east"])
            .args(["--endpoint", &endpoint])
            .args(["--fence-s", "5", "--baseline-s", "2", "--output", "json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success(),
        "drill failed ({}):\n{report:#}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["drill"], "node-outage");
    assert_eq!(report["region"], "us-east");
    // By default the node running the region's mover.
    assert_eq!(report["node_id"], worker as u64 + 1);
    assert_eq!(report["fence_verified"], true);
    let sites = report["regions"].as_array().unwrap();
    assert_eq!(sites.len(), 3, "every node left was probed: {report:#}");
    let survivor = format!("us-east-n{}", 2 - worker);
    assert!(
        sites.iter().any(|s| s["region"] == survivor.as_str()),
        "the region's other node was probed: {report:#}"
    );
    for s in sites {
        assert_eq!(s["pulls_failed"], 0, "{s}");
        assert!(s["pushes_ok"].as_u64().unwrap() > 0, "{s}");
    }
    assert_eq!(report["after_restore"]["push_ok"], true);

    // A region of one node has no node outage, only a region outage.
    let single = tempfile::tempdir().unwrap();
    let one = Cluster::start(single.path(), 3, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["drill", "node-outage", "--region", "us-east"])
        .args(["--endpoint", &one.nodes[1].url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("region-outage"),
        "{out:?}"
    );
}
