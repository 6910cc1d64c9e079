//! `wharf drill`: an operator rehearses the loss of a region against a
//! running cluster of real processes, and the fence it uses behaves like
//! a region gone dark (no clients served, no votes cast), across restarts.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::registry::{Reg, OCI_MANIFEST};
use serde_json::Value;

fn wharf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.envs(common::owner_env());
    c
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// GET as the owner: (status, body); status 0 when nothing answers.
async fn get(url: &str) -> (u16, Value) {
    let sent = reqwest::Client::new()
        .get(url)
        .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
        .send()
        .await;
    let Ok(r) = sent else {
        return (0, Value::Null);
    };
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_rehearses_the_loss_of_the_leader_region_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, "");
    let leader = cluster.leader();
    let region = common::cluster::REGIONS[leader];
    let other = (leader + 1) % 3;
    let target = &cluster.nodes[leader];

    let child = wharf()
        .args(["drill", "region-outage", "--region", region])
        .args(["--endpoint", &cluster.nodes[other].url("")])
        .args(["--fence-s", "6", "--baseline-s", "2", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Watch the region from outside while the drill holds it out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, fence) = get(&target.url("/api/v1/fence")).await;
        if fence["fenced"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the drill never fenced {region}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = get(&target.url("/v2/")).await;
    assert_eq!(status, 503, "a fenced region serves no client");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let (status, _) = get(&target.url("/readyz")).await;
    assert_eq!(
        status, 503,
        "a load balancer sees the fenced region as down"
    );
    let (_, st) = get(&target.url("/api/v1/status")).await;
    assert_eq!(st["fenced"], true);
    // Meanwhile the others elect a leader among themselves and take writes.
    let reg = Reg::new(&cluster.nodes[other].addr());
    let during = reg
        .image(
            "during/outage",
            &[b"written while the leader region was out"],
        )
        .await;
    let r = reg
        .put_manifest("during/outage", "v1", OCI_MANIFEST, &during)
        .await;
    assert_eq!(r.status(), 201, "the other regions stopped taking writes");

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "drill failed ({}):\n{}\n{}",
        out.status,
        serde_json::to_string_pretty(&report).unwrap(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["passed"], true);
    assert_eq!(report["region"], region);
    assert_eq!(report["was_leader"], true);
    assert_eq!(report["fence_verified"], true);
    let resumed = report["writes_resumed_ms"]
        .as_u64()
        .expect("writes resumed");
    assert!(resumed <= 3000, "writes resumed after {resumed} ms");
    let regions = report["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2, "both other regions were probed");
    for r in regions {
        assert_ne!(r["region"], region);
        assert!(r["pushes_ok"].as_u64().unwrap() > 0, "{r}");
        assert!(r["pulls_ok"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["pulls_failed"], 0, "{r}");
    }
    assert!(report["catch_up_ms"].is_u64(), "{report}");
    let after = &report["after_restore"];
    assert!(after["pulls_ok"].as_u64().unwrap() > 0, "{after}");
    assert_eq!(after["pulls_failed"], 0);
    assert_eq!(after["push_ok"], true);

    // The region is back: it serves clients and what was pushed meanwhile,
    // and the probe repository is gone.
    let (status, _) = get(&target.url("/api/v1/fence")).await;
    assert_eq!(status, 200);
    let back = Reg::new(&target.addr());
    let r = back.get("/v2/during/outage/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), during);
    let (_, repos) = get(&target.url("/api/v1/repositories")).await;
    assert!(
        !repos.to_string().contains("wharf-drill/probe"),
        "probe repository left behind: {repos}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_stops_votes_survives_a_restart_and_drills_refuse_or_fail_honestly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, "");
    let leader = cluster.leader();
    let f = (leader + 1) % 3; // a follower to fence
    let region = common::cluster::REGIONS[f];
    let other = cluster.nodes[leader].url("");
    let client = reqwest::Client::new();
    let fence = |url: String| {
        client
            .put(url)
            .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
            .json(&serde_json::json!({"seconds": 120}))
            .send()
    };

    // Bad input is refused with a reason.
    let r = client
        .put(cluster.nodes[f].url("/api/v1/fence"))
        .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
        .json(&serde_json::json!({"seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Only an owner may fence.
    let r = client
        .put(cluster.nodes[f].url("/api/v1/fence"))
        .json(&serde_json::json!({"seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = fence(cluster.nodes[f].url("/api/v1/fence")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, before) = get(&cluster.nodes[f].url("/api/v1/status")).await;
    // Several election timeouts (0.5-1 s here) without hearing a leader:
    // a fenced node does not campaign, so its term stays where it was.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, after) = get(&cluster.nodes[f].url("/api/v1/status")).await;
    assert_eq!(before["term"], after["term"], "a fenced node campaigned");
    assert_eq!(after["fenced"], true);

    // The fence is on disk: a crash and restart keeps the region out.
    cluster.nodes[f].kill9();
    cluster.nodes[f].relaunch();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = get(&cluster.nodes[f].url("/api/v1/status")).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "restarted node never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get(&cluster.nodes[f].url("/v2/")).await;
    assert_eq!(status, 503, "the restarted node came back unfenced");

    // The others keep taking writes; the fenced region learns of them
    // only once it is back.
    let reg = Reg::new(&cluster.nodes[leader].addr());
    let pushed = reg
        .image("while/fenced", &[b"pushed while a follower was fenced"])
        .await;
    let r = reg
        .put_manifest("while/fenced", "v1", OCI_MANIFEST, &pushed)
        .await;
    assert_eq!(r.status(), 201);

    // A drill now would fence a second region of three: refused, exit 2.
    let third = 3 - leader - f;
    let out = wharf()
        .args(["drill", "region-outage", "--region"])
        .arg(common::cluster::REGIONS[third])
        .args(["--endpoint", &other])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not every region is healthy"), "{err}");

    let out = wharf()
        .args(["drill", "lift", "--region", region, "--endpoint", &other])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    cluster.nodes[f].wait_ready();
    let back = Reg::new(&cluster.nodes[f].addr());
    let r = back.get("/v2/while/fenced/manifests/v1").await;
    assert_eq!(r.status(), 200, "the lifted region missed a write");
    assert_eq!(r.bytes().await.unwrap(), pushed);

    // A drill whose objective cannot be met exits 1 and says which.
    let out = wharf()
        .args(["drill", "region-outage", "--region", region])
        .args(["--endpoint", &other, "--fence-s", "2", "--baseline-s", "1"])
        .args(["--catch-up-timeout-s", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[NOT MET] region caught up after the restore"),
        "{text}"
    );
    assert!(text.contains("FAILED"), "{text}");
    // And it lifted its fence on the way out.
    let (_, f_state) = get(&cluster.nodes[f].url("/api/v1/fence")).await;
    assert_eq!(f_state["fenced"], false);
}
