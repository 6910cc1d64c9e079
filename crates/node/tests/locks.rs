//! Locks against three real regions: set through one region with `wharf
//! repository update`, they refuse writes proposed through another on the
//! very next request (decided when the command is applied), refuse pulls,
//! and hide tags and repositories from listings; shown by `show` and
//! `show-tags --detail`.

mod common;

use common::cluster::Cluster;
use common::registry::{error_code, Reg, OCI_MANIFEST};
use common::{oci_layout, owner_creds, random_bytes, sha256, skopeo, wharf_json};
use reqwest::{Method, StatusCode};

fn update(endpoint: &str, target: &[&str], flags: &[&str]) -> serde_json::Value {
    let mut args = vec!["repository", "update"];
    args.extend_from_slice(target);
    args.extend_from_slice(flags);
    wharf_json(endpoint, &args)
}

/// A refusal naming the lock: 403 DENIED whose message says which.
async fn assert_locked(resp: reqwest::Response, names: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(names), "{message:?} should name {names:?}");
}

async fn delete(r: &Reg, repo: &str, reference: &str) -> reqwest::Response {
    r.req(Method::DELETE, &format!("/v2/{repo}/manifests/{reference}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_set_in_one_region_bind_every_region_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "");
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let endpoint = c.nodes[0].url("");
    let repo = "lock/app";
    let v1 = r[0].image(repo, &[&random_bytes(50_000)]).await;
    assert_eq!(
        r[0].put_manifest(repo, "v1", OCI_MANIFEST, &v1)
            .await
            .status(),
        201
    );
    let v2 = r[0].image(repo, &[&random_bytes(40_000)]).await;
    assert_eq!(
        r[0].put_manifest(repo, "v2", OCI_MANIFEST, &v2)
            .await
            .status(),
        201
    );
    // Uploaded before the lock, pushed after it.
    let v3 = r[2].image(repo, &[&random_bytes(30_000)]).await;

    // A repository write lock through region 1; the next push through
    // region 3 is refused, however far region 3's own state lags.
    let now = update(
        &endpoint,
        &["--repository", repo],
        &["--write-enabled", "false"],
    );
    assert_eq!(now[0]["attributes"]["write_enabled"], false, "{now}");
    let refused = r[2].put_manifest(repo, "v3", OCI_MANIFEST, &v3).await;
    assert_locked(refused, "repository lock/app has write-enabled false").await;
    assert_locked(delete(&r[1], repo, "v1").await, "write-enabled false").await;
    let shown = wharf_json(&endpoint, &["repository", "show", "--repository", repo]);
    assert_eq!(shown[0]["attributes"]["write_enabled"], false, "{shown}");
    assert_eq!(shown[0]["attributes"]["delete_enabled"], true, "{shown}");
    // A real client is refused too, with the lock in its error.
    let layout = oci_layout(dir.path(), "v9", &[("etc/motd", b"locked out")]);
    let out = skopeo()
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &owner_creds(),
            &format!("oci:{}:v9", layout.display()),
            &format!("docker://{}/{repo}:v9", c.nodes[2].addr()),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "skopeo pushed into a locked repository"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("write-enabled false"), "{stderr}");
    assert_eq!(
        r[1].get(&format!("/v2/{repo}/manifests/v9")).await.status(),
        404,
        "nothing of the refused push became visible"
    );

    // Unlocked: the push goes through. A tag lock then guards that tag
    // (and its manifest) only.
    update(
        &endpoint,
        &["--repository", repo],
        &["--write-enabled", "true"],
    );
    assert_eq!(
        r[2].put_manifest(repo, "v3", OCI_MANIFEST, &v3)
            .await
            .status(),
        201
    );
    update(
        &endpoint,
        &["--image", "lock/app:v1"],
        &["--write-enabled", "false"],
    );
    let moved = r[2].put_manifest(repo, "v1", OCI_MANIFEST, &v3).await;
    assert_locked(moved, "tag lock/app:v1 has write-enabled false").await;
    assert_locked(delete(&r[1], repo, &sha256(&v1)).await, "tag lock/app:v1").await;
    assert_eq!(
        delete(&r[1], repo, "v3").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        r[1].put_manifest(repo, "v3", OCI_MANIFEST, &v3)
            .await
            .status(),
        201
    );
    let tags = wharf_json(
        &endpoint,
        &["repository", "show-tags", "--repository", repo, "--detail"],
    );
    let v1_row = tags
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "v1")
        .unwrap();
    assert_eq!(v1_row["attributes"]["write_enabled"], false, "{tags}");

    // A delete lock on a manifest: deletes are refused, pushes are not.
    let digest2 = sha256(&v2);
    update(
        &endpoint,
        &["--image", &format!("{repo}@{digest2}")],
        &["--delete-enabled", "false"],
    );
    assert_locked(delete(&r[2], repo, &digest2).await, "delete-enabled false").await;
    assert_eq!(
        r[2].put_manifest(repo, "v2b", OCI_MANIFEST, &v2)
            .await
            .status(),
        201
    );

    // A read lock refuses pulls by tag (at once through the region that
    // took it, and in every region once applied there).
    update(
        &endpoint,
        &["--image", "lock/app:v3"],
        &["--read-enabled", "false"],
    );
    assert_locked(
        r[0].get(&format!("/v2/{repo}/manifests/v3")).await,
        "read-enabled false",
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while r[2].get(&format!("/v2/{repo}/manifests/v3")).await.status() != StatusCode::FORBIDDEN {
        assert!(
            std::time::Instant::now() < deadline,
            "region 3 still serves the read-locked tag"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        r[0].get(&format!("/v2/{repo}/manifests/{}", sha256(&v3)))
            .await
            .status(),
        200,
        "the manifest itself is not read-locked"
    );
    // The repository's read lock covers its blobs too.
    update(
        &endpoint,
        &["--repository", repo],
        &["--read-enabled", "false"],
    );
    let layer = serde_json::from_slice::<serde_json::Value>(&v2).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_locked(
        r[0].get(&format!("/v2/{repo}/blobs/{layer}")).await,
        "repository lock/app has read-enabled false",
    )
    .await;
    update(
        &endpoint,
        &["--repository", repo],
        &["--read-enabled", "true"],
    );

    // A list lock hides the tag from tags/list, and the repository's from
    // the catalog; the tag still pulls.
    update(
        &endpoint,
        &["--image", "lock/app:v2b"],
        &["--list-enabled", "false"],
    );
    let listed: serde_json::Value = r[0]
        .get(&format!("/v2/{repo}/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(names, ["v1", "v2", "v3"], "{listed}");
    assert_eq!(
        r[0].get(&format!("/v2/{repo}/manifests/v2b"))
            .await
            .status(),
        200
    );
    update(
        &endpoint,
        &["--repository", repo],
        &["--list-enabled", "false"],
    );
    let catalog: serde_json::Value = r[0].get("/v2/_catalog").await.json().await.unwrap();
    assert!(
        !catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == repo),
        "{catalog}"
    );
    // Nothing to change is a clear error, not a silent no-op.
    let resp = r[0]
        .req(Method::PATCH, "/api/v1/repositories")
        .json(&serde_json::json!({ "repository": repo }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "UNSUPPORTED");
}
