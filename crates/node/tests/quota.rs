//! Storage quotas and usage metering against a real node: skopeo's push
//! past a registry's storage limit is refused with `DENIED` naming the
//! limit and the usage, and leaves nothing behind (no tag, no blob, no
//! bytes counted, also after the uploads' registration window); deleting
//! gives the space back. `show-usage` reports storage deduplicated and by
//! repository, GiB-days accruing today and operations by kind, and
//! /metrics the same per registry.

mod common;

use std::process::Command;
use std::time::Duration;

use common::registry::{Reg, OCI_MANIFEST};
use common::{oci_layout, random_bytes, run, skopeo, wharf_json, Node};
use serde_json::Value;

fn push(node: &Node, layout: &std::path::Path, tag: &str, dest: &str) -> std::process::Output {
    skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(common::owner_creds())
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{dest}", node.addr()))
        .output()
        .unwrap()
}

fn usage(node: &Node, extra: &[&str]) -> Value {
    let mut args = vec!["registry", "show-usage", "--name", "default"];
    args.extend_from_slice(extra);
    wharf_json(&node.url(""), &args)
}

/// `wharf ARGS` as the operator fails, saying `why`.
fn refused(node: &Node, args: &[&str], why: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", &node.url("")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was not refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{args:?}: {err}");
}

fn stored(node: &Node) -> u64 {
    usage(node, &[])["storage"]["bytes"].as_u64().unwrap()
}

/// The digest of the (one) layer of `tag` in `layout`.
fn layer_of(layout: &std::path::Path, tag: &str) -> String {
    let raw = run(skopeo()
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:{tag}", layout.display())));
    let m: Value = serde_json::from_str(&raw).unwrap();
    let layers = m["layers"].as_array().unwrap();
    layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_the_storage_limit_is_refused_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let set = wharf_json(
        &node.url(""),
        &[
            "registry",
            "update",
            "--name",
            "default",
            "--storage-limit",
            "3MiB",
        ],
    );
    assert_eq!(set["storage_limit"], 3u64 << 20);

    // Random bytes: the layers do not compress, 2 MiB each.
    let layout = oci_layout(dir.path(), "one", &[("one", &random_bytes(2 << 20))]);
    oci_layout(dir.path(), "two", &[("two", &random_bytes(2 << 20))]);
    let first = push(&node, &layout, "one", "first:v1");
    assert!(first.status.success(), "{first:?}");
    let after_first = stored(&node);
    assert!(after_first > 2 << 20, "{after_first}");

    let second = push(&node, &layout, "two", "second:v1");
    assert!(
        !second.status.success(),
        "a push past the limit went through"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("denied") && err.contains("storage quota exceeded"),
        "{err}"
    );
    assert!(err.contains("of its 3.0 MiB limit"), "{err}");

    // Nothing of it is visible, and stays so after the window in which
    // an upload whose manifest never came is registered on its own.
    let reg = Reg::new(&node.addr());
    let layer = layer_of(&layout, "two");
    for _ in 0..2 {
        assert_eq!(
            reg.get("/v2/second/tags/list").await.status(),
            404,
            "the refused repository exists"
        );
        let head = reg
            .req(reqwest::Method::HEAD, &format!("/v2/second/blobs/{layer}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404, "the refused push's layer is served");
        assert_eq!(stored(&node), after_first, "the refused push's bytes count");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // Deleting gives the space back, and the push then fits.
    run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["repository", "delete", "--repository", "first", "--yes"])
        .args(["--endpoint", &node.url("")]));
    assert_eq!(stored(&node), 0);
    let again = push(&node, &layout, "two", "second:v1");
    assert!(again.status.success(), "{again:?}");
    assert!(stored(&node) > 2 << 20);

    // Back to the tier's limit (40 TiB by default).
    let back = wharf_json(
        &node.url(""),
        &[
            "registry",
            "update",
            "--name",
            "default",
            "--storage-limit",
            "tier",
        ],
    );
    assert!(back.get("storage_limit").is_none(), "{back}");
    assert_eq!(
        usage(&node, &[])["storage"]["limit_bytes"],
        40u64 << 40,
        "the tier's limit"
    );
    refused(
        &node,
        &[
            "registry",
            "update",
            "--name",
            "default",
            "--storage-limit",
            "lots",
        ],
        "a size such as 20GiB",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_usage_meters_storage_by_repository_gib_days_and_operations() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[gc]\npulls_flush_s = 1\n").unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);
    let reg = Reg::new(&node.addr());
    let shared = random_bytes(100_000);
    let (own_a, own_b) = (random_bytes(30_000), random_bytes(20_000));
    let mut sizes = std::collections::BTreeMap::new();
    for (repo, own) in [("alpha", &own_a), ("beta", &own_b)] {
        let m = reg.image(repo, &[&shared, own]).await;
        assert_eq!(
            reg.put_manifest(repo, "v1", OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
        let v: Value = serde_json::from_slice(&m).unwrap();
        let blobs: Vec<(String, u64)> = std::iter::once(&v["config"])
            .chain(v["layers"].as_array().unwrap())
            .map(|d| {
                (
                    d["digest"].as_str().unwrap().to_string(),
                    d["size"].as_u64().unwrap(),
                )
            })
            .collect();
        sizes.insert(repo, blobs);
    }
    let logical = |repo: &str| sizes[repo].iter().map(|(_, s)| s).sum::<u64>();
    let mut distinct: std::collections::BTreeMap<&str, u64> = Default::default();
    for (d, s) in sizes.values().flatten() {
        distinct.insert(d, *s);
    }
    let dedup: u64 = distinct.values().sum();
    for _ in 0..5 {
        assert_eq!(reg.get("/v2/alpha/manifests/v1").await.status(), 200);
    }

    let u = usage(&node, &["--repositories"]);
    assert_eq!(u["storage"]["bytes"], dedup, "{u}");
    assert_eq!(
        u["storage"]["logical_bytes"],
        logical("alpha") + logical("beta")
    );
    assert_eq!(u["value"][0]["currentValue"], dedup);
    let repos = u["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 2, "{u}");
    assert_eq!(repos[0]["name"], "alpha");
    assert_eq!(repos[0]["logical_bytes"], logical("alpha"));
    // What only one repository links (the shared layer, and a config
    // the two images may share, is neither's).
    let unique = |repo: &str, other: &str| -> u64 {
        sizes[repo]
            .iter()
            .filter(|(d, _)| !sizes[other].iter().any(|(o, _)| o == d))
            .map(|(_, s)| s)
            .sum()
    };
    assert!(unique("alpha", "beta") >= own_a.len() as u64);
    assert_eq!(repos[0]["unique_bytes"], unique("alpha", "beta"));
    assert_eq!(repos[1]["unique_bytes"], unique("beta", "alpha"));

    // Today accrues GiB-days from the first push on.
    let m = &u["metering"];
    let today = &humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..10];
    assert_eq!(m["period"], &today[..7]);
    let days = m["days"].as_array().unwrap();
    let day = days.iter().find(|d| d["date"] == today).expect("today");
    assert!(day["byte_seconds"].as_u64().unwrap() > 0, "{m}");

    // Operations reach the replicated state within a flush or two.
    let mut ops = Value::Null;
    for _ in 0..50 {
        ops = usage(&node, &[])["metering"]["operations"].clone();
        if ops["read"].as_u64().unwrap_or(0) >= 5 && ops["write"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ops["read"].as_u64().unwrap_or(0) >= 5, "{ops}");
    assert!(ops["write"].as_u64().unwrap_or(0) >= 2, "{ops}");

    // A period with nothing in it, and one that is not a month.
    let past = usage(&node, &["--period", "2001-02"]);
    assert_eq!(past["metering"]["gib_days"], 0.0);
    assert!(past["metering"]["days"].as_array().unwrap().is_empty());
    refused(
        &node,
        &[
            "registry",
            "show-usage",
            "--name",
            "default",
            "--period",
            "2026-13",
        ],
        "YYYY-MM",
    );

    // /metrics: the same figures per registry.
    let metrics = reg.get("/metrics").await.text().await.unwrap();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        metric("wharf_registry_storage_bytes{registry=\"default\"}"),
        dedup
    );
    assert_eq!(
        metric("wharf_registry_logical_bytes{registry=\"default\"}"),
        logical("alpha") + logical("beta")
    );
    assert!(metric("wharf_registry_operations_total{registry=\"default\",kind=\"read\"}") >= 5);
    assert!(metrics.contains("wharf_registry_gib_days{registry=\"default\",period=\""));
}
