//! Several registries in one cluster: each has its own login server
//! (`N.<registry_domain>`), repositories and identities. Real clients
//! (skopeo) push to and pull from two of them; the same repository name
//! holds different images in each; neither's owner nor tokens open the
//! other; the operator (an owner of the default registry) manages them.

mod common;

use std::process::Command;

use common::registry::error_code;
use common::{oci_layout, run, skopeo, Node, OWNER, OWNER_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

const DOMAIN: &str = "wharf.test";
const ONE_PW: &str = "team one's owner password";
const TWO_PW: &str = "team two's owner password";

/// Login servers on loopback: `/etc/hosts` names for them (added once,
/// never removed: other runs may use them).
fn hosts(names: &[&str]) {
    let current = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !current.split_whitespace().any(|w| w == **n))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut line = String::from("\n127.0.0.1");
    for n in missing {
        line.push(' ');
        line.push_str(n);
    }
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .expect("the test adds login-server names to /etc/hosts (run as root)");
}

fn wharf(node: &Node, args: &[&str]) -> Value {
    let out = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(args)
        .args(["--endpoint", &node.url(""), "-o", "json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// An HTTP client that reaches `host` (a login server) on the node's port.
fn client_for(node: &Node) -> reqwest::Client {
    let addr: std::net::SocketAddr = node.addr().parse().unwrap();
    reqwest::Client::builder()
        .resolve("teamone.wharf.test", addr)
        .resolve("teamtwo.wharf.test", addr)
        .resolve("nosuchreg.wharf.test", addr)
        .build()
        .unwrap()
}

async fn status(r: reqwest::RequestBuilder) -> StatusCode {
    r.send().await.unwrap().status()
}

fn login_server(node: &Node, registry: &str) -> String {
    format!("{registry}.{DOMAIN}:{}", node.http_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_hold_their_own_images_and_identities() {
    hosts(&["teamone.wharf.test", "teamtwo.wharf.test"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("registry_domain = \"{DOMAIN}\"\n")).unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);

    // The operator creates two registries, each with its first owner.
    for (name, pw) in [("TeamOne", ONE_PW), ("teamtwo", TWO_PW)] {
        let created = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
            .envs(common::owner_env())
            .env("WHARF_NEW_PASSWORD", pw)
            .args(["registry", "create", "--name", name, "--sku", "premium"])
            .args(["--endpoint", &node.url(""), "-o", "json"]));
        let v: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(v["name"], name.to_lowercase());
        assert_eq!(
            v["login_server"],
            format!("{}.{DOMAIN}", name.to_lowercase())
        );
        assert!(
            v.get("owner_password").is_none(),
            "a chosen password is not echoed"
        );
    }
    let taken = wharf(&node, &["registry", "check-name", "--name", "TEAMONE"]);
    assert_eq!(taken["nameAvailable"], false);
    assert_eq!(taken["reason"], "AlreadyExists");
    let invalid = wharf(&node, &["registry", "check-name", "--name", "no-dashes"]);
    assert_eq!(invalid["reason"], "Invalid");
    let free = wharf(&node, &["registry", "check-name", "--name", "teamthree"]);
    assert_eq!(free["nameAvailable"], true);
    let list = wharf(&node, &["registry", "list"]);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, ["default", "teamone", "teamtwo"]);

    // The same repository name, a different image in each registry.
    let one = login_server(&node, "teamone");
    let two = login_server(&node, "teamtwo");
    let layout_one = oci_layout(&dir.path().join("one"), "v1", &[("who", b"team one")]);
    let layout_two = oci_layout(&dir.path().join("two"), "v1", &[("who", b"team two")]);
    for (layout, server, creds) in [
        (&layout_one, &one, format!("owner:{ONE_PW}")),
        (&layout_two, &two, format!("owner:{TWO_PW}")),
    ] {
        run(skopeo().args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{server}/app:v1"),
        ]));
    }
    let inspect = |server: &str, creds: &str| {
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", creds])
            .arg(format!("docker://{server}/app:v1"))
            .output()
            .unwrap()
    };
    let raw_one = inspect(&one, &format!("owner:{ONE_PW}"));
    let raw_two = inspect(&two, &format!("owner:{TWO_PW}"));
    assert!(raw_one.status.success() && raw_two.status.success());
    assert_ne!(raw_one.stdout, raw_two.stdout, "two images under one name");
    // Pulled back byte-exact.
    let out = dir.path().join("pulled-one");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("owner:{ONE_PW}"),
        &format!("docker://{one}/app:v1"),
        &format!("oci:{}:v1", out.display()),
    ]));
    assert!(common::assert_same_blobs(&layout_one, &out) >= 2);

    // The owner of one is refused by the other (same user name!), and by
    // the default registry; the default registry does not see `app`.
    let cross = inspect(&two, &format!("owner:{ONE_PW}"));
    assert!(!cross.status.success(), "teamone's owner opened teamtwo");
    let http = client_for(&node);
    let r = http
        .get(format!("http://{}/v2/app/manifests/v1", node.addr()))
        .basic_auth(OWNER, Some(OWNER_PASSWORD))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the default registry has no app"
    );

    // A token of one is refused by the other.
    let token: Value = http
        .get(format!("http://{one}/auth/token"))
        .query(&[("service", "wharf"), ("scope", "repository:app:pull")])
        .basic_auth("owner", Some(ONE_PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let with_token = |server: &str| {
        http.get(format!("http://{server}/v2/app/tags/list"))
            .bearer_auth(token)
    };
    assert_eq!(status(with_token(&one)).await, StatusCode::OK);
    assert_eq!(status(with_token(&two)).await, StatusCode::UNAUTHORIZED);

    // A console session is the registry's too: it reads teamone's
    // repositories and opens nothing in teamtwo.
    let login = http
        .post(format!("http://{one}/console/api/login"))
        .json(&serde_json::json!({"username": "owner", "password": ONE_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let session: Value = login.json().await.unwrap();
    assert_eq!(session["registry"], "teamone");
    let repos = |server: &str| {
        http.get(format!("http://{server}/api/v1/repositories"))
            .header("cookie", &cookie)
    };
    let listed: Value = repos(&one).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["name"], "app");
    assert_eq!(status(repos(&two)).await, StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("http://{two}/console/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        r.url().path().ends_with("/console/login"),
        "teamtwo's console asks for its own login: {}",
        r.url()
    );

    // A registry's owner manages it alone: no registry verbs for them.
    let r = http
        .get(format!("http://{one}/api/v1/registries"))
        .basic_auth("owner", Some(ONE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A host naming no registry of the cluster.
    let r = http
        .get(format!("http://nosuchreg.{DOMAIN}:{}/v2/", node.http_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    // The operator turns one registry's admin account on: it opens that
    // registry only.
    wharf(
        &node,
        &[
            "registry",
            "update",
            "--name",
            "teamone",
            "--admin-enabled",
            "true",
        ],
    );
    let shown = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "credential",
            "show",
            "-o",
            "json",
            "-u",
            "owner",
            "-p",
            ONE_PW,
        ])
        .args(["--endpoint", &format!("http://{one}")]));
    let admin: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(admin["enabled"], true, "{admin}");
    let admin_pw = admin["passwords"][0].as_str().unwrap().to_string();
    let as_admin = |server: &str| {
        http.get(format!("http://{server}/v2/"))
            .basic_auth("admin", Some(admin_pw.clone()))
    };
    assert_eq!(status(as_admin(&one)).await, StatusCode::OK);
    assert_eq!(status(as_admin(&two)).await, StatusCode::UNAUTHORIZED);

    // A blob uploaded alone is listed in its registry's catalog at once
    // (before its link reaches the metadata), and in no other; an upload
    // session of one registry cannot be continued through another.
    let blob = b"a blob pushed alone";
    let d = common::sha256(blob);
    let r = http
        .post(format!("http://{one}/v2/solo/blobs/uploads/?digest={d}"))
        .basic_auth("owner", Some(ONE_PW))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let catalog = |server: String, user: &'static str, pw: &'static str| {
        let http = http.clone();
        async move {
            let v: Value = http
                .get(format!("http://{server}/v2/_catalog"))
                .basic_auth(user, Some(pw))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["repositories"].as_array().unwrap().clone()
        }
    };
    let listed = catalog(one.clone(), "owner", ONE_PW).await;
    assert!(listed.contains(&Value::from("solo")), "{listed:?}");
    let default_listed = catalog(node.addr(), OWNER, OWNER_PASSWORD).await;
    assert!(
        !default_listed
            .iter()
            .any(|r| r.as_str().unwrap().contains("solo")),
        "{default_listed:?}"
    );
    let started = http
        .post(format!("http://{one}/v2/chunked/blobs/uploads/"))
        .basic_auth("owner", Some(ONE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .patch(format!("http://{two}{location}"))
        .basic_auth("owner", Some(TWO_PW))
        .body("stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Deleted: its login server is gone, the other stays.
    wharf(&node, &["registry", "delete", "--name", "teamtwo", "--yes"]);
    let r = http
        .get(format!("http://{two}/v2/"))
        .basic_auth("owner", Some(TWO_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(inspect(&one, &format!("owner:{ONE_PW}")).status.success());
}

// `wharf login --name N` (as `acr login`): afterwards a plain docker push
// and a podman pull to N's login server need no other credential step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_login_lets_docker_and_podman_use_a_registry_with_no_other_step() {
    hosts(&["loginone.wharf.test"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("registry_domain = \"{DOMAIN}\"\n")).unwrap();
    let node = Node::start_with(dir.path(), &["--config", &config.display().to_string()]);
    run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .env("WHARF_NEW_PASSWORD", ONE_PW)
        .args(["registry", "create", "--name", "loginone"])
        .args(["--endpoint", &node.url("")]));
    let docker_dir = dir.path().join("docker");
    let authfile = dir.path().join("containers-auth.json");
    let said = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["login", "--name", "loginone", "--registry-domain", DOMAIN])
        .args(["--endpoint", &node.url(""), "-u", "owner", "-p", ONE_PW])
        .arg("--docker-config")
        .arg(docker_dir.join("config.json"))
        .arg("--authfile")
        .arg(&authfile));
    let server = login_server(&node, "loginone");
    assert!(said.contains("Login Succeeded"), "{said}");
    // The password is not what was stored: a refresh token is.
    let stored = std::fs::read_to_string(&authfile).unwrap();
    assert!(!stored.contains(ONE_PW));
    assert!(stored.contains("identitytoken"), "{stored}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&authfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "owner-only");

    // skopeo pushes and podman pulls with nothing but the auth file.
    let layout = oci_layout(&dir.path().join("img"), "v1", &[("who", b"login")]);
    run(skopeo()
        .env("REGISTRY_AUTH_FILE", &authfile)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{server}/app:v1")));
    let root = dir.path().join("podman");
    run(Command::new("podman")
        .env("REGISTRY_AUTH_FILE", &authfile)
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["pull", "--tls-verify=false", &format!("{server}/app:v1")]));

    // docker, when a daemon runs: import, push, remove, pull.
    let daemon = Command::new("docker").arg("info").output();
    if !matches!(&daemon, Ok(o) if o.status.success()) {
        eprintln!("SKIPPED the docker half: no Docker daemon is reachable");
        return;
    }
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("marker"), "pushed after wharf login").unwrap();
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let image = format!("{server}/docker:v1");
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &docker_dir);
        c
    };
    run(docker().arg("import").arg(&tar).arg(&image));
    let pushed = docker().args(["push", &image]).output().unwrap();
    run(docker().args(["rmi", &image]));
    assert!(
        pushed.status.success(),
        "docker push after wharf login: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    run(docker().args(["pull", &image]));
    docker().args(["rmi", "-f", &image]).output().ok();
}

// A registry replicated to two of three regions holds its blobs there
// only; its clients in the third region are served (proxied) by a replica
// region and pull byte-exact; the default registry stays everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_lives_in_its_replica_regions_only() {
    use common::cluster::{Cluster, REGIONS};
    use common::registry::{Reg, OCI_MANIFEST};
    hosts(&["geoone.wharf.test"]);
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, &format!("registry_domain = \"{DOMAIN}\""));
    let endpoint = cluster.nodes[0].url("");
    run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .env("WHARF_NEW_PASSWORD", ONE_PW)
        // Replica regions beyond the first are premium's.
        .args(["registry", "create", "--name", "geoone", "--sku", "premium"])
        .args(["--endpoint", &endpoint]));
    for region in [REGIONS[0], REGIONS[1]] {
        run(Command::new(env!("CARGO_BIN_EXE_wharf"))
            .envs(common::owner_env())
            .args([
                "replication",
                "create",
                "--registry",
                "geoone",
                "--location",
                region,
            ])
            .args(["--endpoint", &endpoint]));
    }
    let listed = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(common::owner_env())
        .args(["replication", "list", "--registry", "geoone", "-o", "json"])
        .args(["--endpoint", &endpoint]));
    let rows: Value = serde_json::from_str(&listed).unwrap();
    let locations: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["location"].clone())
        .collect();
    let mut expected = vec![REGIONS[0], REGIONS[1]];
    expected.sort();
    assert_eq!(locations, expected);
    // Pushed through the region outside the set (ap-south).
    let outside = &cluster.nodes[2];
    let layer = common::random_bytes(300_000);
    let geo = Reg::with_login(
        &format!("geoone.{DOMAIN}:{}", outside.http_port),
        "owner",
        ONE_PW,
    );
    let manifest = geo.image("app", &[&layer]).await;
    let r = geo.put_manifest("app", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let layer_digest = common::sha256(&layer);
    // A default-registry image pushed at the same time goes everywhere.
    let default = Reg::new(&outside.addr());
    let other = common::random_bytes(1000);
    let m = default.image("everywhere", &[&other]).await;
    assert_eq!(
        default
            .put_manifest("everywhere", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
    let other_digest = common::sha256(&other);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(cluster.holds(0, &layer_digest)
        && cluster.holds(1, &layer_digest)
        && (0..3).all(|i| cluster.holds(i, &other_digest)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the mover did not copy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Pulled through every region, byte-exact, also where it is not stored.
    for n in &cluster.nodes {
        let reg = Reg::with_login(&format!("geoone.{DOMAIN}:{}", n.http_port), "owner", ONE_PW);
        let got = reg.get(&format!("/v2/app/blobs/{layer_digest}")).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().to_vec(), layer);
    }
    // Give the mover a few more scans: it must not copy it into ap-south.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        !cluster.holds(2, &layer_digest),
        "a blob of geoone was stored outside its replica regions"
    );
}
