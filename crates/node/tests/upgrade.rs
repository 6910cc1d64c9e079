//! Upgrade in place: a data directory written by release 0.1 (bincode
//! records, one registry; `fixtures/release-0.1`, made by
//! `fixtures/make_release_0_1.py`) starts under this binary, is migrated
//! into the default registry, and loses nothing: every image, tag, user,
//! role, scope map, token, password, the admin account and anonymous pull
//! still work, through real clients; a region that joins afterwards is
//! filled from the migrated log and snapshot.

mod common;

use common::registry::{error_code, Reg, OCI_MANIFEST};
use common::{run, skopeo, Node};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;

fn fixture() -> (Value, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1");
    let expected = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap());
    (expected.unwrap(), dir.join("node.tar.gz"))
}

/// The release 0.1 data directory unpacked as `dir/data`.
fn unpack(dir: &Path) {
    let (_, tarball) = fixture();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    run(std::process::Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&data));
}

async fn bearer(node: &Node, user: &str, password: &str, scope: &str) -> String {
    let r = reqwest::Client::new()
        .get(node.url("/auth/token"))
        .query(&[("service", "wharf"), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token for {user}");
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Everything the 0.1 node held, checked through `node`.
async fn assert_release_0_1_data(node: &Node, expected: &Value) {
    let image = &expected["image"];
    let repo = image["repo"].as_str().unwrap();
    let owner = Reg::new(&node.addr());
    for tag in ["v1", "stable"] {
        let r = owner.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{tag}");
        assert_eq!(
            r.bytes().await.unwrap(),
            image["manifest"].as_str().unwrap()
        );
    }
    let r = owner.get(&format!("/v2/{repo}/manifests/multi")).await;
    assert_eq!(r.bytes().await.unwrap(), image["index"].as_str().unwrap());
    let tags: Value = owner
        .get(&format!("/v2/{repo}/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    for tag in image["tags"].as_array().unwrap() {
        assert!(tags["tags"].as_array().unwrap().contains(tag), "{tags}");
    }
    let layer = image["blobs"][1]["digest"].as_str().unwrap();
    let r = owner.get(&format!("/v2/{repo}/blobs/{layer}")).await;
    assert_eq!(r.bytes().await.unwrap(), image["layer"].as_str().unwrap());
    let other = &expected["other"];
    let r = owner
        .get(&format!(
            "/v2/{}/manifests/{}",
            other["repo"].as_str().unwrap(),
            other["digest"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the untagged manifest");

    // alice keeps her password and her reader role on fixture/*.
    let alice_pw = expected["alice_password"].as_str().unwrap();
    let alice = Reg::with_login(&node.addr(), "alice", alice_pw);
    let r = alice.get(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = alice
        .put_manifest(
            repo,
            "pushed-by-a-reader",
            OCI_MANIFEST,
            image["manifest"].as_str().unwrap().as_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    // The signing key survived: the token flow works, and the token too.
    let token = bearer(node, "alice", alice_pw, &format!("repository:{repo}:pull")).await;
    let r = reqwest::Client::new()
        .get(node.url(&format!("/v2/{repo}/manifests/v1")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The repository-scoped token, both passwords, and its scope map.
    let t = &expected["token"];
    for pw in ["password1", "password2"] {
        let ci = Reg::with_login(&node.addr(), "ci", t[pw].as_str().unwrap());
        assert_eq!(
            ci.get(&format!("/v2/{repo}/manifests/v1")).await.status(),
            StatusCode::OK,
            "token ci, {pw}"
        );
    }
    let ci = Reg::with_login(&node.addr(), "ci", t["password1"].as_str().unwrap());
    let r = ci
        .get(&format!(
            "/v2/{}/manifests/{}",
            other["repo"].as_str().unwrap(),
            other["digest"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "outside its scope map");

    // The admin account, still enabled, with both passwords.
    for pw in expected["admin"]["passwords"].as_array().unwrap() {
        let admin = Reg::with_login(&node.addr(), "admin", pw.as_str().unwrap());
        assert_eq!(admin.get("/v2/").await.status(), StatusCode::OK);
    }
    // Anonymous pull, still on.
    let anon = Reg::anonymous(&node.addr());
    assert_eq!(
        anon.get(&format!("/v2/{repo}/manifests/v1")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_0_1_data_directory_upgrades_in_place_and_loses_nothing() {
    let (expected, _) = fixture();
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    let mut node = Node::start(dir.path());
    assert!(
        node.log().contains("migrated release 0.1 metadata"),
        "{}",
        node.log()
    );
    assert_release_0_1_data(&node, &expected).await;

    // Garbage collection reads the links the previous releases wrote
    // (without GC's link time) and keeps everything an image uses.
    let gc = common::wharf_json(&node.url(""), &["gc", "run"]);
    assert!(gc["id"].as_str().is_some(), "{gc}");
    assert_release_0_1_data(&node, &expected).await;

    // A real client pulls the old image byte-exact (after that GC run).
    let repo = expected["image"]["repo"].as_str().unwrap();
    let out = dir.path().join("pulled");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("alice:{}", expected["alice_password"].as_str().unwrap()),
        &format!("docker://{}/{repo}:v1", node.addr()),
        // dir: keeps layers as they are (oci: would compress them).
        &format!("dir:{}", out.display()),
    ]));
    let layer = expected["image"]["blobs"][1]["digest"].as_str().unwrap();
    let hex = layer.strip_prefix("sha256:").unwrap();
    let pulled = std::fs::read(out.join(hex)).unwrap_or_else(|e| {
        let listing = run(std::process::Command::new("find").arg(&out));
        panic!("{e}: {listing}")
    });
    assert_eq!(
        pulled,
        expected["image"]["layer"].as_str().unwrap().as_bytes()
    );

    // New writes work on the migrated state.
    let owner = Reg::new(&node.addr());
    let manifest = owner.image(repo, &[b"after the upgrade"]).await;
    let r = owner
        .put_manifest(repo, "v2", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Restarted, the store is opened as it is (migrated once), with all of it.
    // SIGTERM: background tasks are told to stop and finish before exit.
    assert!(node.stop().success());
    assert!(
        node.log().contains("background tasks stopped"),
        "{}",
        node.log()
    );
    node.restart();
    assert_eq!(
        node.log().matches("migrated release 0.1 metadata").count(),
        1,
        "migrated once"
    );
    assert_release_0_1_data(&node, &expected).await;
    let r = owner.get(&format!("/v2/{repo}/manifests/v2")).await;
    assert_eq!(r.bytes().await.unwrap(), manifest);

    // A region that joins now is filled from the migrated log and snapshot.
    let ndir = dir.path().join("node-2");
    let (http, grpc) = (common::free_port(), common::free_port());
    std::fs::create_dir_all(&ndir).unwrap();
    // The membership the fixture holds names node 1 at the address it had
    // when the fixture was made: route to where it runs now.
    let config = ndir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[[peer_routes]]\nnode = 1\nvia = \"127.0.0.1:{}\"\n",
            node.grpc_port
        ),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
        "--join".into(),
        "--node-id".into(),
        "2".into(),
        "--region".into(),
        "eu-west".into(),
        "--cluster-key-file".into(),
        dir.path().join("data/cluster.key").display().to_string(),
        "--data-dir".into(),
        ndir.join("data").display().to_string(),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
    ];
    let args = args.into_iter().map(Into::into).collect();
    let mut second = Node::launch(&ndir, http, grpc, args);
    run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["replication", "--endpoint", &node.url(""), "create"])
        .args(["--region", "eu-west", "--node-id", "2"])
        .args([
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &second.url(""),
        ]));
    second.wait_ready();
    assert_release_0_1_data(&second, &expected).await;
    // The fixture's log was compacted behind its snapshot: the new region
    // could only be filled from the snapshot rebuilt at the upgrade.
    assert!(
        second.log().contains("installed snapshot"),
        "{}",
        second.log()
    );
}
