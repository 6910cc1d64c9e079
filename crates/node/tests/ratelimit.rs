//! Rate limits against a real node: a flood of reads by one identity past
//! its limit gets 429 `TOOMANYREQUESTS` with a `Retry-After` that counts
//! down, then goes through again; meanwhile skopeo, as another identity,
//! pulls under the limit (and docker, where a daemon runs); /metrics
//! counts the refusals.

mod common;

use std::time::{Duration, Instant};

use common::registry::{Reg, OCI_MANIFEST};
use common::{random_bytes, run, Node};

/// A thousandth of the cloud registry's figures: on the (premium) default
/// registry, reads 20 a minute per identity (one every 3 s) and 40 per
/// registry, writes 4 per identity.
const CONFIG: &str = "[rate_limits]\nscale = 0.002\n";

/// A token `name` that may pull every repository (through a scope map
/// `pull`, created with it); its password.
fn pull_token(node: &Node, name: &str) -> String {
    let wharf = |args: &[&str]| {
        run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .envs(common::owner_env())
            .args(args)
            .args(["--endpoint", &node.url(""), "-o", "json"]))
    };
    wharf(&[
        "scope-map",
        "create",
        "pull",
        "--repository",
        "*=content/read",
    ]);
    let token: serde_json::Value =
        serde_json::from_str(&wharf(&["token", "create", name, "--scope-map", "pull"])).unwrap();
    token["password1"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_limit_waits_its_turn_while_others_pull() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);
    let owner = Reg::new(&node.addr());
    // Three writes: within the owner's four a minute.
    let m = owner.image("app", &[&random_bytes(5_000)]).await;
    assert_eq!(
        owner
            .put_manifest("app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    // A second identity, to pull with skopeo.
    let puller_pw = pull_token(&node, "puller");

    // The owner floods reads: 20 go through, then 429.
    let mut ok = 0;
    let first = loop {
        let r = owner.get("/v2/app/manifests/v1").await;
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200);
        ok += 1;
        assert!(ok <= 20, "more than the limit went through");
    };
    assert!(ok >= 18, "only {ok} reads before the limit");
    let retry = |r: &reqwest::Response| -> u64 {
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let wait = retry(&first);
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("for owner"),
        "{body}"
    );

    // Meanwhile skopeo, as another identity, pulls under the limit.
    let out = dir.path().join("pulled");
    run(common::skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("puller:{puller_pw}"),
        &format!("docker://{}/app:v1", node.addr()),
        &format!("dir:{}", out.display()),
    ]));
    assert!(out.join("manifest.json").exists());

    // The owner's wait counts down, then its reads go through again.
    let started = Instant::now();
    let mut waits = vec![wait];
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = owner.get("/v2/app/manifests/v1").await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        waits.push(retry(&r));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never admitted again: {waits:?}"
        );
    }
    assert!(
        waits.windows(2).all(|w| w[1] <= w[0]),
        "Retry-After does not count down: {waits:?}"
    );
    let metrics = owner.get("/metrics").await.text().await.unwrap();
    let throttled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_rate_limited_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(throttled >= waits.len() as u64, "{throttled} < {waits:?}");
}

/// docker pulls under the limit, as an identity of its own, while the
/// owner is throttled (skipped where no Docker daemon runs).
#[test]
fn docker_pulls_under_the_limit_while_another_client_is_throttled() {
    let daemon = std::process::Command::new("docker").arg("info").output();
    if !matches!(&daemon, Ok(o) if o.status.success()) {
        eprintln!("SKIPPED docker_pulls_under_the_limit_while_another_client_is_throttled: no Docker daemon is reachable");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    // A hundredth: reads 100 a minute per identity, 200 per registry;
    // writes 20 per identity (a skopeo push takes about six).
    std::fs::write(&config, "[rate_limits]\nscale = 0.01\n").unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);
    let marker = format!("{:x}", rand::random::<u64>());
    let layout = common::oci_layout(dir.path(), "v1", &[("marker", marker.as_bytes())]);
    run(common::skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(common::owner_creds())
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/app:v1", node.addr())));
    let password = pull_token(&node, "dockerpuller");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let owner = Reg::new(&node.addr());
    let throttled = || {
        rt.block_on(async {
            for _ in 0..150 {
                if owner.get("/v2/app/manifests/v1").await.status() == 429 {
                    return true;
                }
            }
            false
        })
    };
    assert!(throttled(), "the owner's flood was never throttled");

    let docker_config = dir.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let docker = || {
        let mut c = std::process::Command::new("docker");
        c.env("DOCKER_CONFIG", &docker_config);
        c
    };
    let image = format!("{}/app:v1", node.addr());
    let pulled = std::panic::catch_unwind(|| {
        common::run_with_stdin(
            docker().args([
                "login",
                "-u",
                "dockerpuller",
                "--password-stdin",
                &node.addr(),
            ]),
            &password,
        );
        run(docker().args(["pull", &image]));
        assert_eq!(
            common::file_in_docker_image(&docker, &image, "/marker", dir.path()),
            marker
        );
    });
    docker().args(["rmi", "-f", &image]).output().ok();
    pulled.unwrap();
}
