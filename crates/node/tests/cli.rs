//! `wharf up` and the admin verbs, as a user runs them.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{Reg, OCI_MANIFEST};
use common::run;
use serde_json::Value;

/// A base port P with every port `wharf up` uses free.
fn base_port() -> u16 {
    loop {
        let p = common::free_port();
        if p > 60_000 {
            continue;
        }
        // Three regions: HTTP on P+1..3, peer gRPC on P+101..103.
        let free = [1, 2, 3, 101, 102, 103]
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", p + o)).is_ok());
        if free {
            return p;
        }
    }
}

fn wharf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
}

fn up(dir: &Path, base: u16) -> std::process::Child {
    up_with(dir, base, &[])
}

fn up_with(dir: &Path, base: u16, extra: &[&str]) -> std::process::Child {
    let cluster = dir.join("cluster.json");
    let _ = std::fs::remove_file(&cluster);
    let child = wharf()
        .args(["up", "--data-dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.exists() {
        assert!(Instant::now() < deadline, "cluster.json never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn interrupt(mut child: std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "wharf up exited with {status}");
}

/// The CLI logged in with the credentials file `wharf up` wrote.
fn wharf_as(creds: &Path) -> Command {
    let mut c = wharf();
    c.env("WHARF_CREDENTIALS", creds);
    c
}

fn admin(creds: &Path, endpoint: &str, args: &[&str]) -> String {
    run(wharf_as(creds)
        .args(["repository", "--endpoint", endpoint])
        .args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_a_cluster_that_admin_verbs_manage_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port();
    let child = up(dir.path(), base);

    let cluster: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json")).unwrap()).unwrap();
    let endpoint = cluster["regions"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", base + 1));
    // The bootstrap owner's credentials, readable by the user only.
    let creds_file = dir.path().join("cluster.json");
    assert_eq!(cluster["credentials"]["username"], "owner");
    let password = cluster["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(password.len() >= 32, "generated password too short");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "cluster.json holds a password");
    let boot = dir.path().join("node-1/data/bootstrap-credentials.json");
    let mode = std::fs::metadata(&boot).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "bootstrap-credentials.json holds a password"
    );
    let boot: Value = serde_json::from_slice(&std::fs::read(&boot).unwrap()).unwrap();
    assert_eq!(boot["password"].as_str(), Some(password.as_str()));
    let pid = cluster["regions"][0]["nodes"][0]["pid"].as_u64().unwrap();

    // Without credentials the CLI says how to give them.
    let out = wharf()
        .args(["repository", "--endpoint", &endpoint, "list"])
        .env_remove("WHARF_USERNAME")
        .env_remove("WHARF_CREDENTIALS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--credentials"),
        "{out:?}"
    );

    let reg = Reg::with_login(endpoint.trim_start_matches("http://"), "owner", &password);
    let m = reg.image("team/app", &[b"layer-a", b"layer-b"]).await;
    assert_eq!(
        reg.put_manifest("team/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    assert_eq!(
        reg.put_manifest("team/app", "v2", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let other = reg.image("team/app", &[b"layer-c"]).await;
    let other_digest = common::sha256(&other);
    assert_eq!(
        reg.put_manifest("team/app", &other_digest, OCI_MANIFEST, &other)
            .await
            .status(),
        201
    );

    let repos: Value =
        serde_json::from_str(&admin(&creds_file, &endpoint, &["list", "-o", "json"])).unwrap();
    assert_eq!(repos[0]["name"], "team/app");
    assert_eq!(repos[0]["tag_count"], 2);

    let table = admin(
        &creds_file,
        &endpoint,
        &["show-tags", "--repository", "team/app", "--detail"],
    );
    assert!(table.starts_with("TAG"), "{table}");
    assert!(table.contains(OCI_MANIFEST), "{table}");
    let tsv = admin(
        &creds_file,
        &endpoint,
        &[
            "show-tags",
            "--repository",
            "team/app",
            "-o",
            "tsv",
            "--orderby",
            "time_asc",
        ],
    );
    let tags: Vec<&str> = tsv.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(tags, ["v1", "v2"]);

    let image: Value = serde_json::from_str(&admin(
        &creds_file,
        &endpoint,
        &["show", "--image", "team/app:v1", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(image["digest"], common::sha256(&m));
    assert_eq!(image["layers"].as_array().unwrap().len(), 2);
    assert_eq!(image["image_size"], 7 + 7 + 37);

    let untagged: Value = serde_json::from_str(&admin(
        &creds_file,
        &endpoint,
        &[
            "show-manifests",
            "--repository",
            "team/app",
            "--untagged",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(untagged.as_array().unwrap().len(), 1);
    assert_eq!(untagged[0]["digest"], other_digest);

    // Without --yes, a "no" answer deletes nothing.
    let mut refuse = wharf_as(&creds_file)
        .args([
            "repository",
            "--endpoint",
            &endpoint,
            "delete",
            "--image",
            "team/app:v2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    refuse.stdin.take().unwrap().write_all(b"n\n").unwrap();
    assert!(refuse.wait().unwrap().success());
    assert_eq!(reg.get("/v2/team/app/manifests/v2").await.status(), 200);
    admin(
        &creds_file,
        &endpoint,
        &["delete", "--image", "team/app:v2", "--yes"],
    );
    assert_eq!(reg.get("/v2/team/app/manifests/v2").await.status(), 404);

    // Errors are one clear line and a non-zero exit.
    let out = wharf_as(&creds_file)
        .args([
            "repository",
            "--endpoint",
            &endpoint,
            "show",
            "--image",
            "team/app:nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MANIFEST_UNKNOWN"));

    interrupt(child);
    // The node child is gone too.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "node {pid} outlived wharf up"
    );

    // Same directory: same cluster, same data.
    let child = up(dir.path(), base);
    assert_eq!(reg.get("/v2/team/app/manifests/v1").await.status(), 200);
    admin(
        &creds_file,
        &endpoint,
        &["delete", "--repository", "team/app", "--yes"],
    );
    let repos: Value =
        serde_json::from_str(&admin(&creds_file, &endpoint, &["list", "-o", "json"])).unwrap();
    assert_eq!(repos, serde_json::json!([]));
    interrupt(child);
}

#[test]
fn serve_refuses_a_data_directory_in_use_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let _first = common::Node::start(dir.path());
    let out = wharf()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--http-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args([
            "--grpc-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another wharf process"));

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "regoin = \"typo\"\n").unwrap();
    let out = wharf()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

// `wharf up --tls`: HTTPS with a local CA, mutual TLS between regions.
// Real clients trust the CA and log in; an image pushed in one region is
// pulled byte-exact from another (Raft, forwarding and the blob transfer
// all cross the mTLS links); the peer port refuses a client without a
// certificate of the cluster, and clients that do not trust the CA fail.
#[test]
fn up_with_tls_serves_https_and_peers_use_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port();
    let child = up_with(dir.path(), base, &["--tls"]);
    let cluster: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json")).unwrap()).unwrap();
    let ca = cluster["ca_file"].as_str().unwrap().to_string();
    let password = cluster["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let creds = format!("owner:{password}");
    let host = |i: u16| format!("127.0.0.1:{}", base + i);
    assert_eq!(
        cluster["regions"][0]["endpoint"],
        format!("https://{}", host(1))
    );
    let cert_dir = dir.path().join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&ca, cert_dir.join("ca.crt")).unwrap();
    let cert_dir = cert_dir.display().to_string();

    let result = std::panic::catch_unwind(|| {
        let big = common::random_bytes(2 << 20);
        let layout = common::oci_layout(dir.path(), "v1", &[("big.bin", &big)]);
        run(common::skopeo()
            .args(["copy", "--dest-cert-dir", &cert_dir, "--dest-creds", &creds])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{}/secure/app:v1", host(1))));
        let out = dir.path().join("out");
        run(common::skopeo()
            .args(["copy", "--src-cert-dir", &cert_dir, "--src-creds", &creds])
            .arg(format!("docker://{}/secure/app:v1", host(3)))
            .arg(format!("oci:{}:v1", out.display())));
        let found = common::assert_same_blobs(&layout, &out) > 0;
        assert!(found, "layers copied from the third region");

        // Without the CA, clients refuse the registry's certificate.
        let untrusted = common::skopeo()
            .args(["inspect", "--raw", "--creds", &creds])
            .arg(format!("docker://{}/secure/app:v1", host(2)))
            .output()
            .unwrap();
        assert!(!untrusted.status.success());
        assert!(String::from_utf8_lossy(&untrusted.stderr).contains("certificate"));

        // The CLI with --cacert, through another region.
        let listed = run(wharf().args([
            "replication",
            "list",
            "-o",
            "json",
            "--cacert",
            &ca,
            "--credentials",
            &dir.path().join("cluster.json").display().to_string(),
            "--endpoint",
            &format!("https://{}", host(2)),
        ]));
        let rows: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 3);
        assert!(
            rows.as_array().unwrap().iter().all(|r| r["health"] == "ok"),
            "{rows}"
        );

        // The console's session cookie is marked Secure under TLS.
        let login = run(Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert", &ca])
            .args(["-H", "content-type: application/json", "--data"])
            .arg(format!(r#"{{"username":"owner","password":"{password}"}}"#))
            .arg(format!("https://{}/console/api/login", host(1))));
        let cookie = login
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no session cookie: {login}"));
        assert!(
            cookie.contains("; Secure") && cookie.contains("HttpOnly"),
            "{cookie}"
        );

        // The peer port: TLS with a client certificate of the cluster only.
        let peer = format!("https://wharf-peer:{}/", base + 101);
        let resolve = format!("wharf-peer:{}:127.0.0.1", base + 101);
        let no_cert = Command::new("curl")
            .args([
                "-s",
                "--http2",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                &peer,
            ])
            .output()
            .unwrap();
        assert!(
            !no_cert.status.success(),
            "peer port accepted a client without a certificate"
        );
        let tls_dir = dir.path().join("tls");
        let with_cert = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "--http2",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
            ])
            .arg("--cert")
            .arg(tls_dir.join("node-2.pem"))
            .arg("--key")
            .arg(tls_dir.join("node-2-key.pem"))
            .arg(&peer)
            .output()
            .unwrap();
        assert!(with_cert.status.success(), "{with_cert:?}");
        let plain = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge"])
            .arg(format!("http://127.0.0.1:{}/", base + 101))
            .output()
            .unwrap();
        assert!(!plain.status.success(), "peer port answered plain text");
    });
    interrupt(child);
    result.unwrap();
}
