//! Retention and soft delete against three real regions, through the CLI:
//! with days 0 an untagged image disappears in every region at the next GC
//! run while a delete-locked one and an index's child stay; a deleted image
//! waits in the recycle bin (GC keeps its blobs), is listed, and restored
//! through another region pulls byte-exact; a keep policy lets go of the
//! tags beyond the newest N (never a locked one), and pulls are recorded.

mod common;

use common::cluster::Cluster;
use common::registry::{layers_of, Reg, OCI_INDEX, OCI_MANIFEST};
use common::{eventually, random_bytes, run, sha256, wharf_json};
use reqwest::{Method, StatusCode};

const GC: &str =
    "[gc]\ngrace_s = 1\nhold_s = 1\ninterval_s = 0\nsweep_interval_s = 1\npulls_flush_s = 1\n";

async fn status(r: &Reg, path: &str) -> StatusCode {
    r.get(path).await.status()
}

/// Poll `path` through `r` until it answers `want`.
async fn until(r: &Reg, path: &str, want: StatusCode) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status(r, path).await != want {
        assert!(std::time::Instant::now() < deadline, "{path} never {want}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn wharf(endpoint: &str, args: &[&str]) -> String {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", endpoint]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_with_days_0_empties_untagged_images_everywhere_but_keeps_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, GC);
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let endpoint = c.nodes[0].url("");
    let repo = "ret/app";
    // An image that loses its tag, one pushed by digest only, an index
    // (tagged) whose child was pushed by digest, a delete-locked one.
    let untagged = r[0].image(repo, &[&random_bytes(70_000)]).await;
    assert_eq!(
        r[0].put_manifest(repo, "old", OCI_MANIFEST, &untagged)
            .await
            .status(),
        201
    );
    let bare = r[1].image(repo, &[&random_bytes(60_000)]).await;
    assert_eq!(
        r[1].put_manifest(repo, &sha256(&bare), OCI_MANIFEST, &bare)
            .await
            .status(),
        201
    );
    let child = r[0].image(repo, &[&random_bytes(50_000)]).await;
    assert_eq!(
        r[0].put_manifest(repo, &sha256(&child), OCI_MANIFEST, &child)
            .await
            .status(),
        201
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sha256(&child),
            "size": child.len(),
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    }))
    .unwrap();
    assert_eq!(
        r[0].put_manifest(repo, "multi", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    let locked = r[2].image(repo, &[&random_bytes(40_000)]).await;
    let locked_digest = sha256(&locked);
    assert_eq!(
        r[2].put_manifest(repo, &locked_digest, OCI_MANIFEST, &locked)
            .await
            .status(),
        201
    );
    wharf_json(
        &endpoint,
        &[
            "repository",
            "update",
            "--image",
            &format!("{repo}@{locked_digest}"),
            "--delete-enabled",
            "false",
        ],
    );
    let untag = r[0]
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(untag.status(), StatusCode::ACCEPTED);

    // Off by default: nothing expires.
    let dry = wharf_json(&endpoint, &["gc", "run", "--dry-run"]);
    assert_eq!(dry["manifests_expired"], 0, "{dry}");
    let shown = wharf_json(
        &endpoint,
        &[
            "config",
            "retention",
            "update",
            "--status",
            "enabled",
            "--days",
            "0",
        ],
    );
    assert_eq!(shown[0]["status"], "enabled", "{shown}");
    assert_eq!(shown[0]["days"], 0, "{shown}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args([
            "config",
            "retention",
            "update",
            "--days",
            "400",
            "--endpoint",
            &endpoint,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("0 to 365"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The dry run names exactly the two untagged images; nothing changes.
    let dry = wharf_json(&endpoint, &["gc", "run", "--dry-run"]);
    let mut named: Vec<String> = dry["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    named.sort();
    let mut want = vec![
        format!("default/{repo}@{}", sha256(&untagged)),
        format!("default/{repo}@{}", sha256(&bare)),
    ];
    want.sort();
    assert_eq!(named, want, "{dry}");
    let by_digest = |m: &[u8]| format!("/v2/{repo}/manifests/{}", sha256(m));
    assert_eq!(status(&r[0], &by_digest(&untagged)).await, 200);

    // The run deletes them in every region, and frees their layers (once
    // their links are older than gc.grace_s).
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let done = wharf_json(&endpoint, &["gc", "run"]);
    assert_eq!(done["manifests_expired"], 2, "{done}");
    for reg in &r {
        until(reg, &by_digest(&untagged), StatusCode::NOT_FOUND).await;
        until(reg, &by_digest(&bare), StatusCode::NOT_FOUND).await;
        for kept in [&child, &index, &locked] {
            assert_eq!(status(reg, &by_digest(kept)).await, 200);
        }
    }
    let freed: Vec<String> = layers_of(&untagged)
        .into_iter()
        .chain(layers_of(&bare))
        .collect();
    eventually(
        30,
        "every region deleted the expired images' layers",
        || (0..3).all(|i| freed.iter().all(|d| !c.holds(i, d))),
    )
    .await;
    let kept: Vec<String> = layers_of(&child)
        .into_iter()
        .chain(layers_of(&locked))
        .collect();
    eventually(30, "every region holds the kept images' layers", || {
        (0..3).all(|i| kept.iter().all(|d| c.holds(i, d)))
    })
    .await;
    for d in &kept {
        assert_eq!(status(&r[1], &format!("/v2/{repo}/blobs/{d}")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_image_is_restored_through_another_region_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, GC);
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let (e1, e3) = (c.nodes[0].url(""), c.nodes[2].url(""));
    let repo = "soft/app";
    let layer = random_bytes(80_000);
    let m = r[0].image(repo, &[&layer]).await;
    let digest = sha256(&m);
    assert_eq!(
        r[0].put_manifest(repo, "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    assert_eq!(
        r[0].put_manifest(repo, "stable", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let shown = wharf_json(
        &e1,
        &[
            "config",
            "soft-delete",
            "update",
            "--status",
            "enabled",
            "--days",
            "1",
        ],
    );
    assert_eq!(shown[0]["status"], "enabled", "{shown}");

    let del = r[0]
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    for reg in &r {
        until(
            reg,
            &format!("/v2/{repo}/manifests/v1"),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    let bin = wharf_json(&e1, &["manifest", "list-deleted", "--repository", repo]);
    assert_eq!(bin[0]["digest"], digest, "{bin}");
    assert_eq!(bin[0]["manifest_deleted"], true, "{bin}");
    let mut tags: Vec<&str> = bin[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["stable", "v1"]);
    let repos = wharf_json(&e1, &["repository", "list-deleted"]);
    assert_eq!(repos[0]["name"], repo, "{repos}");

    // GC keeps the blobs of what the bin may restore.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let gc = wharf_json(&e1, &["gc", "run"]);
    assert_eq!(gc["blobs_freed"], 0, "{gc}");

    // Restored through region 3: tag and manifest, in every region.
    let out = wharf(
        &e3,
        &["manifest", "restore", "--image", &format!("{repo}:v1")],
    );
    assert!(out.contains("Restored"), "{out}");
    for reg in &r {
        until(reg, &format!("/v2/{repo}/manifests/v1"), StatusCode::OK).await;
    }
    let got = r[1]
        .req(Method::GET, &format!("/v2/{repo}/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &m[..], "the manifest comes back byte-exact");
    let blob = r[1]
        .get(&format!("/v2/{repo}/blobs/{}", layers_of(&m)[0]))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&blob[..], &layer[..]);
    // The other tag is still in the bin until its own restore.
    assert_eq!(
        status(&r[0], &format!("/v2/{repo}/manifests/stable")).await,
        404
    );
    wharf(
        &e3,
        &[
            "manifest",
            "restore",
            "--image",
            &format!("{repo}@{digest}"),
        ],
    );
    until(
        &r[0],
        &format!("/v2/{repo}/manifests/stable"),
        StatusCode::OK,
    )
    .await;
    let bin = wharf_json(&e1, &["manifest", "list-deleted", "--repository", repo]);
    assert_eq!(bin, serde_json::json!([]), "{bin}");
    // Nothing left to restore is a clear error.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args([
            "manifest",
            "restore",
            "--image",
            &format!("{repo}:v1"),
            "--endpoint",
            &e1,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing deleted to restore"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_policy_lets_go_of_old_tags_and_pulls_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, GC);
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let endpoint = c.nodes[0].url("");
    let m = r[0].image("keep/app", &[&random_bytes(30_000)]).await;
    for t in ["t1", "t2", "t3", "t4"] {
        assert_eq!(
            r[0].put_manifest("keep/app", t, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
        // Push times are milliseconds: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        r[0].put_manifest(
            "other",
            "t1",
            OCI_MANIFEST,
            &r[0].image("other", &[b"x"]).await
        )
        .await
        .status(),
        201
    );
    wharf_json(
        &endpoint,
        &[
            "repository",
            "update",
            "--image",
            "keep/app:t1",
            "--delete-enabled",
            "false",
        ],
    );
    wharf_json(
        &endpoint,
        &[
            "config",
            "retention",
            "update",
            "--status",
            "enabled",
            "--days",
            "30",
        ],
    );
    let rules = wharf_json(
        &endpoint,
        &[
            "config",
            "retention",
            "keep",
            "add",
            "--repository",
            "keep/*",
            "--keep-last",
            "2",
        ],
    );
    assert_eq!(rules[0]["pattern"], "keep/*", "{rules}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args([
            "config",
            "retention",
            "keep",
            "add",
            "--repository",
            "x",
            "--endpoint",
            &endpoint,
        ])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "a keep policy with no condition is refused"
    );

    let dry = wharf_json(&endpoint, &["gc", "run", "--dry-run"]);
    assert_eq!(
        dry["expired"],
        serde_json::json!(["default/keep/app:t2"]),
        "{dry}"
    );
    let done = wharf_json(&endpoint, &["gc", "run"]);
    assert_eq!(done["tags_expired"], 1, "{done}");
    // Listed through each region (an admin listing is not a pull).
    for (i, reg) in r.iter().enumerate() {
        until(reg, "/v2/keep/app/manifests/t2", StatusCode::NOT_FOUND).await;
        let tags = wharf_json(
            &c.nodes[i].url(""),
            &["repository", "show-tags", "--repository", "keep/app"],
        );
        let names: Vec<&str> = tags
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["t1", "t3", "t4"], "{tags}");
    }
    let other = wharf_json(
        &endpoint,
        &["repository", "show-tags", "--repository", "other"],
    );
    assert_eq!(
        other[0]["name"], "t1",
        "a repository no policy matches keeps its tags"
    );

    // A pull through region 2 reaches the tag's record within a flush.
    assert_eq!(status(&r[1], "/v2/keep/app/manifests/t3").await, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let tags = wharf_json(
            &endpoint,
            &["repository", "show-tags", "--repository", "keep/app"],
        );
        let t3 = tags
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "t3")
            .cloned()
            .unwrap();
        if t3["pulled_ms"].as_u64().is_some() {
            assert!(tags
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "t4")
                .unwrap()["pulled_ms"]
                .is_null());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pull was never recorded: {tags}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let removed = wharf_json(
        &endpoint,
        &[
            "config",
            "retention",
            "keep",
            "remove",
            "--repository",
            "keep/*",
        ],
    );
    assert_eq!(removed, serde_json::json!([]), "{removed}");
}
