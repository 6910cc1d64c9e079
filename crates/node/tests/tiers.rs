//! Service tiers against a real node, through the CLI: on Basic the third
//! webhook, the 101st token and anonymous pull are refused with the reason;
//! `show-usage` reports each figure against its limit; a downgrade is
//! refused while the registry holds more than the lower tier includes,
//! naming each excess, and goes through once it does not; an upgrade takes
//! effect at once.

mod common;

use std::process::Command;

use common::{run, Node};
use serde_json::Value;

const BASIC_PW: &str = "basic owner password";

/// `wharf ARGS --registry teamreg` as teamreg's owner; (success, stdout, stderr).
fn as_team(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .env("WHARF_USERNAME", "owner")
        .env("WHARF_PASSWORD", BASIC_PW)
        .args(args)
        .args([
            "--registry",
            "teamreg",
            "--endpoint",
            &node.url(""),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(node: &Node, args: &[&str]) -> String {
    let (success, out, err) = as_team(node, args);
    assert!(success, "{args:?}: {err}");
    out
}

fn refused(node: &Node, args: &[&str]) -> String {
    let (success, _, err) = as_team(node, args);
    assert!(!success, "{args:?} was not refused");
    err
}

/// As the cluster operator (the default registry's owner).
fn operator(node: &Node, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.envs(common::owner_env())
        .args(args)
        .args(["--endpoint", &node.url(""), "-o", "json"]);
    c
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn usage(node: &Node) -> Vec<(String, u64, u64)> {
    let out = run(&mut operator(
        node,
        &["registry", "show-usage", "--name", "teamreg"],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let unit = if i["name"] == "Size" {
                "Bytes"
            } else {
                "Count"
            };
            assert_eq!(i["unit"], unit);
            (
                i["name"].as_str().unwrap().to_string(),
                i["currentValue"].as_u64().unwrap(),
                i["limit"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn basic_refuses_what_it_does_not_include_and_a_downgrade_names_each_excess() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    run(operator(
        &node,
        &["registry", "create", "--name", "teamreg", "--sku", "basic"],
    )
    .env("WHARF_NEW_PASSWORD", BASIC_PW));

    let hook = |name: &str| {
        vec![
            "webhook",
            "create",
            "--name",
            name,
            "--uri",
            "http://127.0.0.1:9/x",
            "--actions",
            "push",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    ok(&node, &args(&hook("hookone")));
    ok(&node, &args(&hook("hooktwo")));
    let err = refused(&node, &args(&hook("hookthree")));
    assert!(
        err.contains("DENIED")
            && err.contains("the basic tier includes 2 webhooks and registry teamreg has 2"),
        "{err}"
    );

    ok(
        &node,
        &[
            "scope-map",
            "create",
            "pull",
            "--repository",
            "*=content/read",
        ],
    );
    for i in 0..100 {
        ok(
            &node,
            &[
                "token",
                "create",
                &format!("tok{i:03}"),
                "--scope-map",
                "pull",
            ],
        );
    }
    let err = refused(&node, &["token", "create", "tok100", "--scope-map", "pull"]);
    assert!(
        err.contains("includes 100 tokens and registry teamreg has 100"),
        "{err}"
    );
    let err = refused(&node, &["access", "set", "--anonymous-pull"]);
    assert!(
        err.contains("anonymous pull is not included in the basic tier"),
        "{err}"
    );

    assert_eq!(
        usage(&node),
        [
            ("Size".to_string(), 0, 10 << 30),
            ("Webhooks".to_string(), 2, 2),
            ("ScopeMaps".to_string(), 1, 100),
            ("Tokens".to_string(), 100, 100),
            ("Replications".to_string(), 0, 0),
            ("IPRules".to_string(), 0, 0)
        ]
    );

    // An upgrade takes effect at once; then the registry outgrows basic.
    run(&mut operator(
        &node,
        &[
            "registry", "update", "--name", "teamreg", "--sku", "standard",
        ],
    ));
    ok(&node, &args(&hook("hookthree")));
    ok(&node, &["token", "create", "tok100", "--scope-map", "pull"]);
    ok(&node, &["access", "set", "--anonymous-pull"]);
    assert_eq!(usage(&node)[1], ("Webhooks".to_string(), 3, 10));

    let out = operator(
        &node,
        &["registry", "update", "--name", "teamreg", "--sku", "basic"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for excess in [
        "registry teamreg cannot move to basic",
        "webhooks: 3, basic includes 2",
        "tokens: 101, basic includes 100",
        "anonymous pull is on, basic does not include it",
    ] {
        assert!(err.contains(excess), "{excess:?} not in {err}");
    }
    let shown: Value = serde_json::from_str(&run(&mut operator(
        &node,
        &["registry", "show", "--name", "teamreg"],
    )))
    .unwrap();
    assert_eq!(
        shown["sku"], "standard",
        "a refused downgrade changes nothing"
    );

    // Back within basic's limits, the downgrade goes through.
    ok(&node, &["webhook", "delete", "--name", "hookthree"]);
    ok(&node, &["token", "delete", "tok100"]);
    ok(&node, &["access", "set", "--anonymous-pull=false"]);
    run(&mut operator(
        &node,
        &["registry", "update", "--name", "teamreg", "--sku", "basic"],
    ));
    assert_eq!(usage(&node)[3], ("Tokens".to_string(), 100, 100));
}

/// `show-usage` Size is the bytes pushed, each blob once, whichever
/// regions the pushes went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_usage_size_is_the_bytes_pushed_across_regions() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::cluster::Cluster::start(dir.path(), 3, "");
    let shared = common::random_bytes(30_000);
    let mut distinct = std::collections::BTreeMap::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let r = common::registry::Reg::new(&n.addr());
        let own = common::random_bytes(10_000 + i * 1000);
        let m = r.image(&format!("app{i}"), &[&shared, &own]).await;
        let resp = r
            .put_manifest(&format!("app{i}"), "v1", common::registry::OCI_MANIFEST, &m)
            .await;
        assert_eq!(resp.status(), 201);
        let v: Value = serde_json::from_slice(&m).unwrap();
        for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
            distinct.insert(
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            );
        }
    }
    let want: u64 = distinct.values().sum();
    // Asked of another region than the last push's.
    let out = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["registry", "show-usage", "--name", "default", "-o", "json"])
        .args(["--endpoint", &c.nodes[0].url("")]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["value"][0]["name"], "Size");
    assert_eq!(v["value"][0]["currentValue"], want, "{out}");
    assert_eq!(v["value"][0]["limit"], 500u64 << 30);
}

/// Geo-replication is premium's: a basic registry keeps one home region.
#[test]
fn a_second_replica_region_is_refused_on_basic_and_taken_on_premium() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::cluster::Cluster::start(dir.path(), 2, "");
    let node = &c.nodes[0];
    run(operator(
        node,
        &["registry", "create", "--name", "georeg", "--sku", "basic"],
    )
    .env("WHARF_NEW_PASSWORD", BASIC_PW));
    let replica = |region: &str| {
        operator(
            node,
            &[
                "replication",
                "create",
                "--registry",
                "georeg",
                "--location",
                region,
            ],
        )
        .output()
        .unwrap()
    };
    let regions = common::cluster::REGIONS;
    assert!(replica(regions[0]).status.success(), "the home region");
    let second = replica(regions[1]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("the basic tier includes 0 replications") && err.contains("premium's"),
        "{err}"
    );
    run(&mut operator(
        node,
        &["registry", "update", "--name", "georeg", "--sku", "premium"],
    ));
    assert!(replica(regions[1]).status.success());
    let out = operator(
        node,
        &["registry", "update", "--name", "georeg", "--sku", "basic"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replications: 1, basic includes 0"));
}
