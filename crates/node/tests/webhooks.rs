//! Webhooks against real `wharf serve` processes and real HTTP receivers:
//! one event per push with every field right, filters, a disabled webhook,
//! ping, signatures, CloudEvents, retries logged attempt by attempt, dead
//! letters re-sent, a hanging receiver that delays nobody else, one push
//! event and one `replicated` event per region across three regions, and
//! at-least-once delivery through a kill -9 of the leader.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::cluster::{Cluster, REGIONS};
use common::registry::{Reg, OCI_MANIFEST};
use common::{eventually, random_bytes, run, wharf_json};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::Value;

/// Fast retries, so a test sees several attempts in seconds.
const FAST: &str =
    "[webhooks]\nbackoff_base_ms = 100\nbackoff_max_s = 1\nmax_attempts = 6\ntimeout_s = 2\n";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests seen per path (answered or not).
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Receiver {
    /// `/ok/*` answers 200; `/flaky/*` 500 three times, then 200;
    /// `/hang/*` never answers.
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/:mode/:name", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    fn calls(&self, path: &str) -> u32 {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path((mode, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let path = format!("/{mode}/{name}");
    let n = {
        let mut calls = r.calls.lock().unwrap();
        let n = calls.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    match mode.as_str() {
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, "late")
        }
        "flaky" if n <= 3 => (StatusCode::INTERNAL_SERVER_ERROR, "try again"),
        _ => {
            r.got.lock().unwrap().push(Received {
                path,
                headers,
                body: body.to_vec(),
            });
            (StatusCode::OK, "thanks")
        }
    }
}

fn wharf(endpoint: &str, args: &[&str]) -> String {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", endpoint]))
}

/// `wharf ARGS` expected to fail; its stderr.
fn wharf_fails(endpoint: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", endpoint])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create(endpoint: &str, name: &str, uri: &str, extra: &[&str]) {
    let mut args = vec!["webhook", "create", "--name", name, "--uri", uri];
    args.extend_from_slice(extra);
    wharf(endpoint, &args);
}

async fn push(r: &Reg, repo: &str, tag: &str) -> Vec<u8> {
    let m = r.image(repo, &[&random_bytes(2_000)]).await;
    let resp = r
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .header("user-agent", "webhook-test/1.0")
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "push {repo}:{tag}");
    m
}

fn events(endpoint: &str, name: &str) -> Vec<Value> {
    wharf_json(endpoint, &["webhook", "list-events", "--name", name])
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_one_event_with_every_field_right_and_filters_select() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 1, FAST);
    let ep = c.nodes[0].url("");
    let (rx, base) = Receiver::start().await;

    // Bad input is refused at create, with the reason.
    for (args, why) in [
        (
            vec!["--uri", "ftp://x/", "--actions", "push"],
            "http:// or https://",
        ),
        (
            vec!["--uri", &format!("{base}/ok/a"), "--actions", "pull"],
            "unknown action \"pull\"",
        ),
        (
            vec![
                "--uri",
                &format!("{base}/ok/a"),
                "--actions",
                "push",
                "--scope",
                "App:v1",
            ],
            "invalid scope",
        ),
        (
            vec![
                "--uri",
                &format!("{base}/ok/a"),
                "--actions",
                "push",
                "--headers",
                "NoEquals",
            ],
            "not K=V",
        ),
    ] {
        let mut a = vec!["webhook", "create", "--name", "badhook"];
        a.extend(args.iter().copied());
        let err = wharf_fails(&ep, &a);
        assert!(err.contains(why), "{a:?}: {err}");
    }

    create(
        &ep,
        "everything",
        &format!("{base}/ok/everything"),
        &["--actions", "push,delete"],
    );
    create(
        &ep,
        "scoped",
        &format!("{base}/ok/scoped"),
        &["--actions", "push", "--scope", "app:v1"],
    );
    create(
        &ep,
        "deletes",
        &format!("{base}/ok/deletes"),
        &["--actions", "delete"],
    );
    create(
        &ep,
        "dormant",
        &format!("{base}/ok/dormant"),
        &["--actions", "push", "--status", "disabled"],
    );
    create(
        &ep,
        "signed",
        &format!("{base}/ok/signed"),
        &[
            "--actions",
            "push",
            "--secret",
            "s3cr3t",
            "--format",
            "cloudevents",
            "--headers",
            "X-Team=infra",
        ],
    );
    // A receiver that never answers: it must delay nobody else.
    create(
        &ep,
        "stuck",
        &format!("{base}/hang/stuck"),
        &["--actions", "push"],
    );
    let created = wharf_json(&ep, &["webhook", "show", "--name", "signed"]);
    assert_eq!(created[0]["signed"], true);
    assert!(created[0].get("secret").is_none());
    let cfg = wharf_json(&ep, &["webhook", "get-config", "--name", "signed"]);
    assert_eq!(
        cfg["custom_headers"][0],
        serde_json::json!(["X-Team", "infra"])
    );

    let r = Reg::new(&c.nodes[0].addr());
    let manifest = push(&r, "app", "v1").await;
    eventually(10, "the push event at every matching webhook", || {
        rx.at("/ok/everything").len() == 1
            && rx.at("/ok/scoped").len() == 1
            && rx.at("/ok/signed").len() == 1
    })
    .await;
    let e = rx.at("/ok/everything")[0].json();
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "app");
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(e["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(e["target"]["digest"], common::sha256(&manifest));
    assert_eq!(e["target"]["size"], manifest.len());
    assert_eq!(e["target"]["length"], manifest.len());
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(e["request"]["useragent"], "webhook-test/1.0");
    assert_eq!(e["request"]["host"], c.nodes[0].addr());
    assert!(!e["request"]["id"].as_str().unwrap().is_empty());
    assert_eq!(e["id"].as_str().unwrap().len(), 36);
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    // The same event (one id) at every webhook it matched.
    let signed = &rx.at("/ok/signed")[0];
    let ce = signed.json();
    assert_eq!(ce["id"], e["id"]);
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "wharf.image.pushed");
    assert_eq!(ce["data"]["target"]["digest"], e["target"]["digest"]);
    assert_eq!(
        signed.headers["content-type"],
        "application/cloudevents+json"
    );
    assert_eq!(signed.headers["x-team"], "infra");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t").unwrap();
    mac.update(&signed.body);
    let want = format!("sha256={}", hex(&mac.finalize().into_bytes()));
    assert_eq!(signed.headers["x-wharf-signature-256"], want.as_str());
    assert_eq!(
        rx.at("/ok/everything")[0].headers["x-wharf-event-id"],
        e["id"].as_str().unwrap()
    );

    // Another tag: outside the scoped webhook's scope.
    push(&r, "app", "v2").await;
    eventually(10, "the second push", || rx.at("/ok/everything").len() == 2).await;
    // A delete by tag reaches the delete subscribers, not the push-only.
    wharf(&ep, &["repository", "delete", "--image", "app:v2", "--yes"]);
    eventually(10, "the delete event", || {
        rx.at("/ok/deletes").len() == 1 && rx.at("/ok/everything").len() == 3
    })
    .await;
    let d = rx.at("/ok/deletes")[0].json();
    assert_eq!(
        (d["action"].as_str(), d["target"]["tag"].as_str()),
        (Some("delete"), Some("v2"))
    );
    // Ping delivers.
    wharf(&ep, &["webhook", "ping", "--name", "deletes"]);
    eventually(10, "the ping", || rx.at("/ok/deletes").len() == 2).await;
    assert_eq!(rx.at("/ok/deletes")[1].json()["action"], "ping");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.at("/ok/scoped").len(), 1, "scope app:v1 selects v1 only");
    assert!(
        rx.at("/ok/dormant").is_empty(),
        "a disabled webhook receives nothing"
    );
    assert_eq!(
        rx.calls("/hang/stuck"),
        1,
        "the stuck webhook waits on its first event, in order"
    );
    // Its log says what happened to each event.
    let log = events(&ep, "everything");
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|e| e["state"] == "delivered"));
    assert_eq!(log[0]["attempts"][0]["status"], 200);
    assert_eq!(log[0]["attempts"][0]["response_body"], "thanks");
    let listed = wharf_json(&ep, &["webhook", "list"]);
    let stuck = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "stuck")
        .unwrap();
    assert_eq!(stuck["pending"], 2);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_logged_attempt_by_attempt_dead_lettered_and_re_sent() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 1, FAST);
    let ep = c.nodes[0].url("");
    let (rx, base) = Receiver::start().await;
    create(
        &ep,
        "flaky",
        &format!("{base}/flaky/one"),
        &["--actions", "push"],
    );
    // Nothing listens there: every attempt is refused.
    let closed = common::free_port();
    create(
        &ep,
        "nowhere",
        &format!("http://127.0.0.1:{closed}/x"),
        &["--actions", "push"],
    );
    // A name that does not resolve is a failed attempt like any other.
    create(
        &ep,
        "nodns",
        "http://wharf-no-such-host.invalid/x",
        &["--actions", "push"],
    );
    let r = Reg::new(&c.nodes[0].addr());
    push(&r, "app", "v1").await;
    let mut unresolved = Vec::new();
    eventually(20, "an attempt at a host that does not resolve", || {
        unresolved = events(&ep, "nodns");
        unresolved[0]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let first = &unresolved[0]["attempts"][0];
    assert!(first["status"].is_null() && !first["error"].as_str().unwrap().is_empty());
    eventually(20, "the event on the fourth attempt", || {
        rx.at("/flaky/one").len() == 1
    })
    .await;
    assert_eq!(rx.calls("/flaky/one"), 4);
    let log = events(&ep, "flaky");
    assert_eq!(log[0]["state"], "delivered");
    let statuses: Vec<u64> = log[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    assert_eq!(log[0]["attempts"][0]["response_body"], "try again");
    let table = wharf(&ep, &["webhook", "list-events", "--name", "flaky"]);
    assert_eq!(table.matches("delivered").count(), 4, "{table}");

    // Six refused attempts (max_attempts), then dead; re-sent on demand.
    let mut dead = Vec::new();
    eventually(30, "the unreachable webhook's event dead-lettered", || {
        dead = events(&ep, "nowhere");
        dead[0]["state"] == "dead"
    })
    .await;
    let attempts = dead[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 6);
    assert!(attempts.iter().all(|a| a["status"].is_null()));
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{}",
        attempts[0]["error"]
    );
    let id = dead[0]["id"].as_str().unwrap().to_string();
    wharf(
        &ep,
        &[
            "webhook",
            "update",
            "--name",
            "nowhere",
            "--uri",
            &format!("{base}/ok/later"),
        ],
    );
    wharf(
        &ep,
        &["webhook", "redeliver", "--name", "nowhere", "--event", &id],
    );
    eventually(10, "the re-sent event", || rx.at("/ok/later").len() == 1).await;
    assert_eq!(rx.at("/ok/later")[0].json()["id"], id.as_str());
    let again = events(&ep, "nowhere");
    assert_eq!(again[0]["state"], "delivered");
    assert_eq!(again[0]["attempts"].as_array().unwrap().len(), 7);
    // The operator sees it on /metrics: failed attempts and dead letters.
    let metrics = run(&mut common::curl_owner(&c.nodes[0].url("/metrics")));
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    // flaky 3, nowhere 6, nodns at least 1.
    assert!(value("wharf_webhook_failed_attempts_total") >= 10);
    assert!(value("wharf_webhook_dead_total") >= 1);
    assert!(value("wharf_webhook_deliveries_total") >= 2);
    let err = wharf_fails(
        &ep,
        &[
            "webhook",
            "redeliver",
            "--name",
            "nowhere",
            "--event",
            "nope",
        ],
    );
    assert!(err.contains("not in the delivery log"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_give_one_push_event_and_one_replicated_event_per_region() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, FAST);
    let ep = c.nodes[1].url("");
    let (rx, base) = Receiver::start().await;
    create(
        &ep,
        "geohook",
        &format!("{base}/ok/geo"),
        &["--actions", "push,replicated"],
    );
    let r = Reg::new(&c.nodes[2].addr());
    let m = push(&r, "geo/app", "v1").await;
    let digest = common::sha256(&m);
    eventually(60, "a replicated event from every region", || {
        rx.at("/ok/geo")
            .iter()
            .filter(|e| e.json()["action"] == "replicated")
            .count()
            == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got: Vec<Value> = rx.at("/ok/geo").iter().map(Received::json).collect();
    let pushes: Vec<&Value> = got.iter().filter(|e| e["action"] == "push").collect();
    assert_eq!(
        pushes.len(),
        1,
        "one push event, not one per region: {got:?}"
    );
    let regions: BTreeSet<&str> = got
        .iter()
        .filter(|e| e["action"] == "replicated")
        .map(|e| {
            assert_eq!(e["target"]["digest"], digest.as_str());
            assert_eq!(e["target"]["tag"], "v1");
            e["region"].as_str().unwrap()
        })
        .collect();
    assert_eq!(regions, REGIONS.iter().copied().collect());
    assert_eq!(got.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_leader_during_a_burst_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, FAST);
    let leader = c.leader();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let ep = c.nodes[survivors[0]].url("");
    let (rx, base) = Receiver::start().await;
    create(
        &ep,
        "bursthook",
        &format!("{base}/ok/burst"),
        &["--actions", "push"],
    );
    let regs: Vec<Arc<Reg>> = c
        .nodes
        .iter()
        .map(|n| Arc::new(Reg::new(&n.addr())))
        .collect();
    // One image, pushed under 200 tags through every region.
    let m = regs[0].image("burst/app", &[&random_bytes(1_000)]).await;
    let pushed = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (regs, m, pushed) = (regs.clone(), m.clone(), pushed.clone());
        let survivors = survivors.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50usize {
                let tag = format!("t{w}-{i}");
                // Through every region before the kill, survivors after.
                let via = if i < 20 {
                    (w + i) % 3
                } else {
                    survivors[(w + i) % 2]
                };
                for attempt in 0..20 {
                    let target = if attempt == 0 {
                        via
                    } else {
                        survivors[attempt % 2]
                    };
                    let ok = regs[target]
                        .req(Method::PUT, &format!("/v2/burst/app/manifests/{tag}"))
                        .header("content-type", OCI_MANIFEST)
                        // A retry after the kill is the same write: it
                        // applies once, so it is one action, one event.
                        .header("idempotency-key", &tag)
                        .body(m.clone())
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 201);
                    if ok {
                        pushed.lock().unwrap().insert(tag.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    eventually(60, "a quarter of the burst delivered", || {
        rx.at("/ok/burst").len() >= 50
    })
    .await;
    c.nodes[leader].kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(
        pushed.len(),
        200,
        "every push succeeded (through a survivor)"
    );
    eventually(60, "every pushed tag's event delivered", || {
        let tags: BTreeSet<String> = rx
            .at("/ok/burst")
            .iter()
            .map(|e| e.json()["target"]["tag"].as_str().unwrap().to_string())
            .collect();
        pushed.is_subset(&tags)
    })
    .await;
    let got: Vec<Value> = rx.at("/ok/burst").iter().map(Received::json).collect();
    // One id per tag (every push is one action), however often delivered.
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &got {
        ids.entry(e["target"]["tag"].as_str().unwrap().into())
            .or_default()
            .insert(e["id"].as_str().unwrap().into());
    }
    assert!(ids.values().all(|s| s.len() == 1), "a push had two ids");
    let distinct: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 200);
    // Repeats are only deliveries in flight at the kill: at most one page
    // of sends whose attempts were not yet recorded.
    let repeats = got.len() - distinct.len();
    assert!(repeats <= 64, "{repeats} repeated deliveries");
    println!(
        "delivered {} events for 200 pushes ({repeats} repeats after the kill)",
        got.len()
    );
}
