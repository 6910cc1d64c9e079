//! Online garbage collection against three real regions: what a run frees
//! is exactly the unshared layers of deleted images, in every region; a dry
//! run changes nothing; what stays pulls byte-exact everywhere; and GC
//! running without pause beside pushes that reuse, delete and re-push
//! layers never takes a blob from an image that is still tagged.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::cluster::Cluster;
use common::registry::{error_code, Reg, OCI_MANIFEST};
use common::{eventually, oci_layout, owner_creds, random_bytes, run, sha256, skopeo, wharf_json};
use reqwest::{Method, StatusCode};

/// A short grace and hold, no schedule: runs are the test's.
const GC: &str = "[gc]\ngrace_s = 1\nhold_s = 1\ninterval_s = 0\nsweep_interval_s = 1\n";

fn regs(c: &Cluster) -> Vec<Reg> {
    c.nodes.iter().map(|n| Reg::new(&n.addr())).collect()
}

fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    for l in v["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

async fn push(r: &Reg, repo: &str, tag: &str, layers: &[&[u8]]) -> Vec<u8> {
    let m = r.image(repo, layers).await;
    let resp = r.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    m
}

/// Every blob of `manifest` is served byte-exact by `r` (as `repo`).
async fn pulls_whole(r: &Reg, repo: &str, manifest: &[u8], want: &[(&String, &[u8])]) {
    for d in blobs_of(manifest) {
        let got = r.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(
            got.status(),
            200,
            "{d} in {repo} through {}",
            r.client.base()
        );
        let bytes = got.bytes().await.unwrap();
        assert_eq!(sha256(&bytes), d);
        if let Some((_, b)) = want.iter().find(|(w, _)| **w == d) {
            assert_eq!(&bytes[..], *b);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_frees_exactly_the_unshared_layers_of_deleted_images_in_every_region() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, GC);
    let r = regs(&c);
    let endpoint = c.nodes[0].url("");
    let (shared, only1, only2) = (
        random_bytes(300_000),
        random_bytes(200_000),
        random_bytes(100_000),
    );
    let v1 = push(&r[0], "gc/app", "v1", &[&shared, &only1]).await;
    let v2 = push(&r[0], "gc/app", "v2", &[&shared, &only2]).await;
    let other = push(&r[1], "gc/other", "v1", &[&shared]).await;
    // A real client's image too, pushed through another region.
    let layout = oci_layout(dir.path(), "v1", &[("etc/motd", b"collected")]);
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &owner_creds(),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/gc/skopeo:v1", c.nodes[2].addr()),
    ]));
    let sk_manifest = {
        let resp = r[2]
            .req(Method::GET, "/v2/gc/skopeo/manifests/v1")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap().to_vec()
    };
    let sk_blobs = blobs_of(&sk_manifest);
    let all: BTreeSet<String> = [&v1, &v2, &other, &sk_manifest]
        .iter()
        .flat_map(|m| blobs_of(m))
        .collect();
    eventually(60, "every region holds every blob", || {
        (0..3).all(|i| all.iter().all(|d| c.holds(i, d)))
    })
    .await;

    // Nothing is garbage while every image is tagged.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let dry = wharf_json(&endpoint, &["gc", "run", "--dry-run"]);
    assert_eq!(dry["blobs_freed"], 0, "{dry}");

    // Delete v1 (by digest) and the skopeo image.
    for (repo, m) in [("gc/app", &v1), ("gc/skopeo", &sk_manifest)] {
        let resp = r[0]
            .req(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{}", sha256(m)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let garbage: BTreeSet<String> = std::iter::once(sha256(&only1))
        .chain(sk_blobs.iter().cloned())
        .collect();
    let kept: BTreeSet<String> = all.difference(&garbage).cloned().collect();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    // A dry run says what would go, and changes nothing.
    let dry = wharf_json(&endpoint, &["gc", "run", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs_freed"], garbage.len() as u64, "{dry}");
    let garbage_bytes: u64 = 200_000
        + sk_blobs
            .iter()
            .map(|d| std::fs::metadata(blob_file(&c, 0, d)).unwrap().len())
            .sum::<u64>();
    assert_eq!(dry["bytes_freed"], garbage_bytes, "{dry}");
    for region in dry["regions"].as_array().unwrap() {
        assert_eq!(region["blobs"], garbage.len() as u64, "{dry}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert!(
        (0..3).all(|i| garbage.iter().all(|d| c.holds(i, d))),
        "a dry run deleted a file"
    );
    assert_eq!(
        r[1].get(&format!("/v2/gc/app/blobs/{}", sha256(&only1)))
            .await
            .status(),
        200,
        "a dry run unlinked a blob"
    );

    // The run frees exactly the garbage, in every region.
    let ran = wharf_json(&endpoint, &["gc", "run"]);
    assert_eq!(ran["blobs_freed"], garbage.len() as u64, "{ran}");
    assert_eq!(ran["bytes_freed"], garbage_bytes, "{ran}");
    assert_eq!(ran["regions"].as_array().unwrap().len(), 3, "{ran}");
    eventually(30, "every region deleted the garbage", || {
        (0..3).all(|i| garbage.iter().all(|d| !c.holds(i, d)))
    })
    .await;
    for i in 0..3 {
        for d in &kept {
            assert!(c.holds(i, d), "region {i} lost {d}, which is still in use");
        }
    }
    // What stays pulls byte-exact in every region.
    for reg in &r {
        pulls_whole(
            reg,
            "gc/app",
            &v2,
            &[(&sha256(&shared), &shared), (&sha256(&only2), &only2)],
        )
        .await;
        pulls_whole(reg, "gc/other", &other, &[(&sha256(&shared), &shared)]).await;
        // A freed blob is unknown: a client simply uploads it again.
        let gone = reg
            .get(&format!("/v2/gc/app/blobs/{}", sha256(&only1)))
            .await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(gone).await, "BLOB_UNKNOWN");
    }
    let status = wharf_json(&endpoint, &["gc", "status"]);
    eventually(30, "the sweeps are reported", || {
        let s = wharf_json(&endpoint, &["gc", "status"]);
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["sweeps_pending"] == 0 && r["files_deleted"] == garbage.len() as u64)
    })
    .await;
    assert_eq!(status["runs"][0]["id"], ran["id"], "{status}");
    // And pushing v1 again works: its layer is uploaded anew.
    push(&r[2], "gc/app", "v1", &[&shared, &only1]).await;
    pulls_whole(&r[0], "gc/app", &v1, &[(&sha256(&only1), &only1)]).await;
}

fn blob_file(c: &Cluster, i: usize, digest: &str) -> std::path::PathBuf {
    let hex = &digest[7..];
    c.nodes[i]
        .dir
        .join("data/blobs/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// A client that, like docker, skips uploading a blob the registry says
/// it has; a manifest refused for a blob collected in between is pushed
/// again with its blobs uploaded.
async fn push_reusing(r: &Reg, repo: &str, tag: &str, layers: &[&[u8]]) -> Vec<u8> {
    for attempt in 0..3 {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let mut described = Vec::new();
        for blob in std::iter::once(&config[..]).chain(layers.iter().copied()) {
            let d = sha256(blob);
            let head = r
                .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            if head.status() != 200 || attempt > 0 {
                r.blob(repo, blob).await;
            }
            described.push((d.parse().unwrap(), blob.len()));
        }
        let (cfg, layers_d) = described.split_first().unwrap();
        let m = wharf_client::image_manifest((&cfg.0, cfg.1), layers_d);
        let resp = r.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        if resp.status() == 201 {
            return m;
        }
        let code = error_code(resp).await;
        assert_eq!(
            code, "MANIFEST_BLOB_UNKNOWN",
            "only a collected blob may refuse a push"
        );
    }
    panic!("{repo}:{tag} refused three times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_running_without_pause_never_takes_a_blob_from_a_tagged_image() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, GC);
    let r = regs(&c);
    let endpoint = c.nodes[1].url("");
    // Collect continuously from another region while pushes run.
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (stop, endpoint) = (stop.clone(), endpoint.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                wharf_json(&endpoint, &["gc", "run"]);
                runs += 1;
            }
            runs
        })
    };
    let common_layer = random_bytes(50_000);
    let old: Vec<Vec<u8>> = (0..6).map(|_| random_bytes(20_000)).collect();
    let mut tagged: Vec<(String, String, Vec<u8>)> = Vec::new();
    for round in 0..12 {
        let region = round % 3;
        let repo = if round % 2 == 0 { "race/a" } else { "race/b" };
        let tag = format!("t{round}");
        // Layers reused from earlier (possibly deleted, possibly being
        // collected) images, plus the common one.
        let reused = &old[round % old.len()];
        // A layer of its own keeps each image's digest unique (deleting by
        // digest must delete this image only).
        let own = format!("round {round}").into_bytes();
        let m = push_reusing(&r[region], repo, &tag, &[&common_layer, reused, &own]).await;
        tagged.push((repo.to_string(), tag, m));
        // Delete an earlier image now and then: its layers become garbage
        // unless a later push names them again.
        if round % 3 == 2 {
            let (repo, tag, m) = tagged.remove(0);
            let resp = r[region]
                .req(
                    Method::DELETE,
                    &format!("/v2/{repo}/manifests/{}", sha256(&m)),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "{repo}:{tag}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs >= 3, "GC ran {runs} times only");
    // Once more, after the last pushes, and the sweeps settle.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    wharf_json(&endpoint, &["gc", "run"]);
    eventually(30, "every region finished sweeping", || {
        let s = wharf_json(&endpoint, &["gc", "status"]);
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["sweeps_pending"] == 0)
    })
    .await;
    let s = wharf_json(&endpoint, &["gc", "status"]);
    assert!(
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["files_deleted"].as_u64().unwrap() > 0),
        "the deleted images' own layers were collected in every region: {s}"
    );
    // Every image still tagged is whole in every region.
    for (repo, tag, m) in &tagged {
        for reg in &r {
            let got = reg
                .req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(got.status(), 200, "{repo}:{tag}");
            assert_eq!(got.bytes().await.unwrap().to_vec(), *m);
            pulls_whole(reg, repo, m, &[]).await;
        }
        for i in 0..3 {
            eventually(
                30,
                "every layer of a tagged image is stored everywhere",
                || blobs_of(m).iter().all(|d| c.holds(i, d)),
            )
            .await;
        }
    }
}
