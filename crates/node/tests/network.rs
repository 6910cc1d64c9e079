//! Network rules against a real node: with default action Deny, a client
//! on 127.0.0.2 is refused (403 DENIED, saying so) and one on 127.0.0.1
//! admitted; `X-Forwarded-For` counts only from a trusted proxy; the
//! management API stays reachable; rules are premium's (basic refuses
//! them, a downgrade names them); a bad CIDR is refused with the reason.

mod common;

use std::net::IpAddr;
use std::process::Command;

use common::{run, Node, OWNER, OWNER_PASSWORD};
use serde_json::Value;

fn wharf(node: &Node, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", &node.url(""), "-o", "json"])
        .output()
        .unwrap()
}

fn ok(node: &Node, args: &[&str]) -> Value {
    let out = wharf(node, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused(node: &Node, args: &[&str]) -> String {
    let out = wharf(node, args);
    assert!(!out.status.success(), "{args:?} was not refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// GET `path` from source address `from`, optionally with X-Forwarded-For.
async fn get(node: &Node, from: &str, path: &str, xff: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut req = client
        .get(node.url(path))
        .basic_auth(OWNER, Some(OWNER_PASSWORD));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_admits_only_the_rules_and_forwarded_for_only_from_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "trusted_proxies = [\"127.0.0.3\"]\n").unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);

    let err = refused(
        &node,
        &[
            "network-rule",
            "add",
            "--registry",
            "default",
            "--ip-address",
            "10.0.0.300",
        ],
    );
    assert!(err.contains("is not an IP address or CIDR range"), "{err}");
    let set = ok(
        &node,
        &[
            "network-rule",
            "add",
            "--registry",
            "default",
            "--ip-address",
            "127.0.0.1",
        ],
    );
    assert_eq!(set["ipRules"], serde_json::json!(["127.0.0.1/32"]));
    // Allow by default: the rules change nothing yet.
    assert_eq!(get(&node, "127.0.0.2", "/v2/", None).await.0, 200);
    ok(
        &node,
        &[
            "registry",
            "update",
            "--name",
            "default",
            "--default-action",
            "Deny",
        ],
    );
    assert_eq!(
        ok(&node, &["network-rule", "list", "--registry", "default"])["defaultAction"],
        "Deny"
    );

    assert_eq!(get(&node, "127.0.0.1", "/v2/", None).await.0, 200);
    let (status, body) = get(&node, "127.0.0.2", "/v2/", None).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("DENIED") && body.contains("client 127.0.0.2 is not allowed"),
        "{body}"
    );
    assert_eq!(
        get(&node, "127.0.0.2", "/auth/token?service=wharf", None)
            .await
            .0,
        403
    );
    // A forged header from an untrusted client changes nothing...
    assert_eq!(
        get(&node, "127.0.0.2", "/v2/", Some("127.0.0.1")).await.0,
        403
    );
    // ...from the trusted proxy it names the client.
    assert_eq!(
        get(&node, "127.0.0.3", "/v2/", Some("127.0.0.1")).await.0,
        200
    );
    assert_eq!(
        get(&node, "127.0.0.3", "/v2/", Some("127.0.0.2")).await.0,
        403
    );
    assert_eq!(get(&node, "127.0.0.3", "/v2/", None).await.0, 403);
    // The management API stays reachable (an operator cannot lock
    // themselves out).
    assert_eq!(get(&node, "127.0.0.2", "/api/v1/status", None).await.0, 200);

    // Premium's: a downgrade names the rules; basic takes none.
    let err = refused(
        &node,
        &[
            "registry", "update", "--name", "default", "--sku", "standard",
        ],
    );
    assert!(err.contains("IP rules: 1, standard includes 0"), "{err}");
    run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .env("WHARF_NEW_PASSWORD", "basic owner password")
        .args(["registry", "create", "--name", "basicreg", "--sku", "basic"])
        .args(["--endpoint", &node.url("")]));
    let err = refused(
        &node,
        &[
            "network-rule",
            "add",
            "--registry",
            "basicreg",
            "--ip-address",
            "10.0.0.0/8",
        ],
    );
    assert!(err.contains("the basic tier includes 0 IP rules"), "{err}");
    let err = refused(
        &node,
        &[
            "registry",
            "update",
            "--name",
            "basicreg",
            "--default-action",
            "Deny",
        ],
    );
    assert!(err.contains("the basic tier has no network rules"), "{err}");

    // Removing the rule with Deny on leaves only the management API.
    ok(
        &node,
        &[
            "network-rule",
            "remove",
            "--registry",
            "default",
            "--ip-address",
            "127.0.0.1/32",
        ],
    );
    assert_eq!(get(&node, "127.0.0.1", "/v2/", None).await.0, 403);
    ok(
        &node,
        &[
            "registry",
            "update",
            "--name",
            "default",
            "--default-action",
            "Allow",
        ],
    );
    assert_eq!(get(&node, "127.0.0.2", "/v2/", None).await.0, 200);
}
