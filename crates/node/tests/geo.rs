//! Geo-replication, three regions as separate processes on real sockets:
//! the consistency promises of DESIGN.md as a user observes them.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::registry::{header, Reg, OCI_MANIFEST};
use common::{eventually, oci_layout, owner_creds, random_bytes, run, sha256, skopeo, wharf_json};
use reqwest::{Method, StatusCode};

fn regs(c: &Cluster) -> Vec<Reg> {
    c.nodes.iter().map(|n| Reg::new(&n.addr())).collect()
}

// Promise 4: a push acknowledged in one region is pullable, byte-exact, in
// every other region at once; the mover then copies every layer everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_in_one_region_is_pullable_in_every_other_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "");
    let big = random_bytes(4 << 20);
    let layout = oci_layout(dir.path(), "v1", &[("big.bin", &big), ("etc/motd", b"geo")]);
    common::skopeo_push(&layout, "v1", &c.nodes[0].addr(), "geo/app:v1");
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        let out = dir.path().join(format!("out-{i}"));
        run(skopeo()
            .args([
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &owner_creds(),
            ])
            .arg(format!("docker://{}/geo/app:v1", n.addr()))
            .arg(format!("oci:{}:v1", out.display())));
        assert!(common::assert_same_blobs(&layout, &out) > 0);
    }
    // Every blob ends up in every region's local store.
    let blobs: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let reg = Reg::new(&c.nodes[0].addr());
    let manifest: serde_json::Value = reg
        .req(Method::GET, "/v2/geo/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut wanted = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        wanted.push(l["digest"].as_str().unwrap().to_string());
    }
    assert!(wanted.iter().all(|d| blobs.contains(d)));
    eventually(30, "every layer local in every region", || {
        (0..3).all(|i| wanted.iter().all(|d| c.holds(i, d)))
    })
    .await;
}

// Promises 2 and 7 with linearizable reads: a tag moved or deleted in one
// region is seen moved or deleted in every region immediately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_moves_and_deletes_are_seen_in_every_region_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "reads = \"linearizable\"");
    let r = regs(&c);
    let a = r[0].image("t/app", &[b"a"]).await;
    let b = r[1].image("t/app", &[b"b"]).await;
    for round in 0..5 {
        let (writer, m) = if round % 2 == 0 {
            (&r[1], &a)
        } else {
            (&r[2], &b)
        };
        assert_eq!(
            writer
                .put_manifest("t/app", "live", OCI_MANIFEST, m)
                .await
                .status(),
            201
        );
        for reader in &r {
            let got = reader.get("/v2/t/app/manifests/live").await;
            assert_eq!(
                header(&got, "docker-content-digest"),
                sha256(m),
                "round {round}"
            );
        }
    }
    // Round 4 (the last) pointed "live" at `a`: delete that manifest.
    let d = sha256(&a);
    let del = r[2]
        .req(Method::DELETE, &format!("/v2/t/app/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    for reader in &r {
        assert_eq!(
            reader
                .get(&format!("/v2/t/app/manifests/{d}"))
                .await
                .status(),
            404
        );
        assert_eq!(reader.get("/v2/t/app/manifests/live").await.status(), 404);
    }
}

// Promise 1: losing the leader's region loses no acknowledged write; a new
// leader is elected, pushes continue, and the old leader catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_keeps_pushes_going_and_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, "");
    let r = regs(&c);
    let before = r[0].image("ha/app", &[b"before"]).await;
    assert_eq!(
        r[0].put_manifest("ha/app", "before", OCI_MANIFEST, &before)
            .await
            .status(),
        201
    );

    let leader = c.leader();
    c.nodes[leader].kill9();
    let survivor = (leader + 1) % 3;
    let start = Instant::now();
    let after = loop {
        // Uploads and the manifest both need the metadata quorum.
        let cfg = format!(r#"{{"after":{}}}"#, start.elapsed().as_millis());
        let d = sha256(cfg.as_bytes());
        let up = r[survivor]
            .req(
                Method::POST,
                &format!("/v2/ha/app/blobs/uploads/?digest={d}"),
            )
            .body(cfg.clone())
            .send()
            .await
            .unwrap();
        if up.status() == StatusCode::CREATED {
            let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": cfg.len()},
                "layers": []})
            .to_string()
            .into_bytes();
            if r[survivor]
                .put_manifest("ha/app", "after", OCI_MANIFEST, &m)
                .await
                .status()
                == 201
            {
                break m;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "writes resumed {:?} after killing the leader",
        start.elapsed()
    );
    for (i, reg) in r.iter().enumerate() {
        if i == leader {
            continue;
        }
        let got = reg.get("/v2/ha/app/manifests/before").await;
        assert_eq!(
            got.bytes().await.unwrap().to_vec(),
            before,
            "acknowledged write lost"
        );
    }
    c.nodes[leader].restart();
    let got = r[leader].get("/v2/ha/app/manifests/after").await;
    assert_eq!(got.status(), 200, "the restarted region did not catch up");
    assert_eq!(got.bytes().await.unwrap().to_vec(), after);
}

// A region that is down during a push receives every layer when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_down_during_a_push_gets_every_layer_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, "");
    let leader = c.leader();
    let down = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    c.nodes[down].kill9();
    let r = regs(&c);
    let layers: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(1 << 20)).collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let m = r[writer].image("late/app", &refs).await;
    assert_eq!(
        r[writer]
            .put_manifest("late/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );

    c.nodes[down].restart();
    eventually(30, "the returning region holds every layer", || {
        layers.iter().all(|l| c.holds(down, &sha256(l)))
    })
    .await;
    for l in &layers {
        let got = r[down]
            .get(&format!("/v2/late/app/blobs/{}", sha256(l)))
            .await;
        assert_eq!(got.bytes().await.unwrap().to_vec(), *l);
    }
}

// A region that fell behind the compacted log catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_region_installs_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // A low snapshot threshold, so that a few pushes compact the log.
    let mut c = Cluster::start(
        dir.path(),
        3,
        "reads = \"linearizable\"\n[raft]\nsnapshot_after_entries = 10\nlogs_kept_after_snapshot = 2\n",
    );
    let leader = c.leader();
    let lagging = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    c.nodes[lagging].kill9();
    let r = regs(&c);
    let m = r[writer].image("snap/app", &[b"x"]).await;
    for i in 0..40 {
        assert_eq!(
            r[writer]
                .put_manifest("snap/app", &format!("t{i}"), OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    c.nodes[lagging].restart();
    let got = r[lagging].get("/v2/snap/app/tags/list").await;
    let status = got.status();
    let text = got.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", c.nodes[lagging].log());
    let tags: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 40);
    assert!(
        c.nodes[lagging].log().contains("installed snapshot"),
        "expected catch-up by snapshot:\n{}",
        c.nodes[lagging].log()
    );
}

// Replications as a user sees them: list with health, role, lag and blobs
// to copy; add a region (it catches up and receives every blob); remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replications_are_listed_added_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "");
    let r = regs(&c);
    let m = r[0].image("rep/app", &[b"layer one", b"layer two"]).await;
    assert_eq!(
        r[0].put_manifest("rep/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let endpoint = c.nodes[1].url("");

    let rows = wharf_json(&endpoint, &["replication", "list"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["health"] == "ok"), "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r["role"] == "leader").count(), 1);
    eventually(30, "the mover drains every region", || {
        let rows = wharf_json(&endpoint, &["replication", "list"]);
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["blobs_to_copy"] == 0)
    })
    .await;
    let image = wharf_json(
        &endpoint,
        &[
            "repository",
            "show",
            "--image",
            "rep/app:v1",
            "--replication",
        ],
    );
    let blobs = image["layers"].as_array().unwrap();
    assert_eq!(blobs.len(), 3, "config and two layers");
    for b in blobs {
        assert_eq!(
            b["regions"],
            serde_json::json!(["ap-south", "eu-west", "us-east"])
        );
    }

    // A fourth region joins.
    let ndir = dir.path().join("node-4");
    let (http, grpc) = (common::free_port(), common::free_port());
    let args: Vec<String> = [
        "serve",
        "--join",
        "--node-id",
        "4",
        "--region",
        "us-west",
        "--cluster-key-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        dir.path().join("cluster.key").display().to_string(),
        "--data-dir".into(),
        ndir.join("data").display().to_string(),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
    ])
    .collect();
    // Not running yet: it cannot catch up, so it must not become a voter
    // (a voter that cannot vote would cost the group its fault tolerance).
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["replication", "--endpoint", &endpoint, "create"])
        .args([
            "--region",
            "us-west",
            "--node-id",
            "4",
            "--catch-up-timeout-s",
            "2",
        ])
        .args(["--grpc", &format!("127.0.0.1:{grpc}"), "--http"])
        .arg(format!("http://127.0.0.1:{http}"))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a dead node was promoted");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("did not catch up"), "{err}");
    let status = wharf_json(&endpoint, &["replication", "list"]);
    assert_eq!(
        status.as_array().unwrap().len(),
        4,
        "it stays, as a learner"
    );
    let s: serde_json::Value = serde_json::from_slice(
        &common::curl_owner(&format!("{endpoint}/api/v1/status"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!s["voters"].as_array().unwrap().contains(&4.into()), "{s}");
    // Started, the same create completes.
    let args = args.into_iter().map(Into::into).collect();
    let mut fourth = common::Node::launch(&ndir, http, grpc, args);
    wharf_json(
        &endpoint,
        &[
            "replication",
            "create",
            "--region",
            "us-west",
            "--node-id",
            "4",
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &fourth.url(""),
        ],
    );
    fourth.wait_ready();
    let rows = wharf_json(&endpoint, &["replication", "list"]);
    assert_eq!(rows.as_array().unwrap().len(), 4);
    let new = Reg::new(&fourth.addr());
    let got = new.get("/v2/rep/app/manifests/v1").await;
    assert_eq!(
        got.bytes().await.unwrap().to_vec(),
        m,
        "the new region serves existing images"
    );
    eventually(30, "the new region receives every blob", || {
        let rows = wharf_json(&endpoint, &["replication", "list"]);
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["blobs_to_copy"] == 0)
    })
    .await;

    run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args([
            "replication",
            "--endpoint",
            &endpoint,
            "delete",
            "--region",
            "us-west",
        ]));
    let rows = wharf_json(&endpoint, &["replication", "list"]);
    let regions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions.len(), 3, "{regions:?}");
    assert!(!regions.contains(&"us-west"));
    // A removed region holds nothing as far as the cluster knows: were it
    // to come back with an empty disk, the mover would fill it again.
    let image = wharf_json(
        &endpoint,
        &[
            "repository",
            "show",
            "--image",
            "rep/app:v1",
            "--replication",
        ],
    );
    for b in image["layers"].as_array().unwrap() {
        assert_eq!(
            b["regions"],
            serde_json::json!(["ap-south", "eu-west", "us-east"])
        );
    }
}

// On-demand fetch alone (background replication off): concurrent pulls of a
// blob the region lacks share one transfer, a Range request is served
// during it, every byte matches, and the copy is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_on_demand_pulls_share_one_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "[mover]\nconcurrency = 0\n");
    let r = regs(&c);
    let blob = random_bytes(8 << 20);
    let d = r[0].blob("od/app", &blob).await;
    assert!(!c.holds(2, &d));
    let path = format!("/v2/od/app/blobs/{d}");
    // A blob pushed without a manifest reaches the metadata in the
    // uploading node's next registration batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r[2].req(Method::HEAD, &path).send().await.unwrap().status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "blob never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let whole = || async { r[2].get(&path).await.bytes().await.unwrap().to_vec() };
    let ranged = async {
        let resp = r[2]
            .req(Method::GET, &path)
            .header("range", "bytes=5000000-5000099")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        resp.bytes().await.unwrap().to_vec()
    };
    let (a, b, c2, part) = tokio::join!(whole(), whole(), whole(), ranged);
    for got in [a, b, c2] {
        assert!(got == blob, "an on-demand pull returned other bytes");
    }
    assert_eq!(part, blob[5_000_000..5_000_100]);
    eventually(10, "the fetched copy is kept", || c.holds(2, &d)).await;
    let metrics = r[2].get("/metrics").await.text().await.unwrap();
    let moved: u64 = metrics
        .lines()
        .find(|l| l.starts_with("wharf_mover_bytes_moved_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(
        moved,
        blob.len() as u64,
        "one transfer, not one per request"
    );
    assert!(!c.holds(1, &d), "no background copy with concurrency = 0");
}

fn term(n: &common::Node) -> u64 {
    let out = run(&mut common::curl_owner(&n.url("/api/v1/status")));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["term"]
        .as_u64()
        .unwrap()
}

fn last_log_index(n: &common::Node) -> u64 {
    let out = run(&mut common::curl_owner(&n.url("/api/v1/status")));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["last_log_index"]
        .as_u64()
        .unwrap()
}

// Design note "one Raft round trip per push, not per layer": the blobs a
// push uploads are linked by the manifest's own proposal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_a_follower_costs_one_raft_entry() {
    let dir = tempfile::tempdir().unwrap();
    // Keep the other proposers out of the count, however slow the machine:
    // the background registrar (long grace) and the movers, whose
    // BlobsReplicated reports are entries too (background copies off).
    let c = Cluster::start(
        dir.path(),
        3,
        "[uploads]\nlink_grace_ms = 60000\n[mover]\nconcurrency = 0\n",
    );
    let r = regs(&c);
    let layers: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(64 << 10)).collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    // An election (a new term) adds entries of its own; count only a push
    // made within one term.
    let mut attempts = 0;
    let added = loop {
        attempts += 1;
        let leader = c.leader();
        let follower = (leader + 1) % 3;
        let term_before = term(&c.nodes[leader]);
        let before = last_log_index(&c.nodes[leader]);
        let m = r[follower].image("one/rt", &refs).await;
        let tag = format!("v{attempts}");
        let put = r[follower]
            .put_manifest("one/rt", &tag, OCI_MANIFEST, &m)
            .await;
        assert_eq!(put.status(), 201);
        let added = last_log_index(&c.nodes[leader]) - before;
        if term_before == term(&c.nodes[leader]) || attempts == 3 {
            break added;
        }
    };
    assert_eq!(added, 1, "config + 3 layers + manifest in one entry");
    // And the image is complete everywhere.
    for reg in &r {
        for l in &layers {
            assert_eq!(
                reg.get(&format!("/v2/one/rt/blobs/{}", sha256(l)))
                    .await
                    .status(),
                200
            );
        }
    }
}

// `[uploads] ack_regions = 2`: a push is acknowledged only once every blob
// it names is on disk in two regions, so losing the receiving region's
// disk cannot lose an acknowledged image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waits_for_copies_in_two_regions_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "[uploads]\nack_regions = 2\n");
    let r = regs(&c);
    let layer = random_bytes(300_000);
    let m = r[1].image("acked/app", &[&layer]).await;
    let resp = r[1].put_manifest("acked/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let d = sha256(&layer);
    let holders = (0..3).filter(|i| c.holds(*i, &d)).count();
    assert!(
        holders >= 2,
        "acknowledged with the layer in {holders} region(s)"
    );
}

// Nobody copies (background replication off everywhere): the push cannot
// reach two regions, so it is not acknowledged; the answer says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_short_of_copies_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        dir.path(),
        3,
        "[uploads]\nack_regions = 2\nack_timeout_ms = 1500\n[mover]\nconcurrency = 0\n",
    );
    let r = regs(&c);
    let m = r[0].image("short/app", &[b"only here"]).await;
    let started = Instant::now();
    let resp = r[0].put_manifest("short/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("UNAVAILABLE") && body.contains("ack_regions"),
        "{body}"
    );
}
