//! Real clients against a real `wharf serve`: skopeo, podman, buildah,
//! oras, containerd's ctr, and the Docker CLI where a daemon runs.
//! Commands are those of ../shared/CLIENTS.md.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    containers_login, have, oci_layout, owner_creds, random_bytes, run, run_with_stdin, Node,
    OWNER, OWNER_PASSWORD,
};

fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    (dir, node)
}

fn need(cmd: &str) {
    assert!(
        have(cmd),
        "{cmd} is not installed: run `make deps` (the test suite needs every client)"
    );
}

/// The manifest a layout holds for `tag`, as raw bytes.
fn layout_manifest(layout: &Path, tag: &str) -> Vec<u8> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout");
    let digest = entry["digest"].as_str().unwrap();
    std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// skopeo logged in to the registry through an auth file (`skopeo login`).
fn skopeo(auth: &Path) -> Command {
    let mut c = common::skopeo();
    c.env("REGISTRY_AUTH_FILE", auth);
    c
}

#[test]
fn skopeo_copies_both_ways_inspects_lists_and_deletes() {
    need("skopeo");
    need("umoci");
    let (dir, n) = node();
    let big = random_bytes(5 << 20);
    let layout = oci_layout(
        dir.path(),
        "v1",
        &[("etc/hello", b"hello"), ("big.bin", &big)],
    );
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{}/test/base:v1", n.addr());
    // Without credentials the registry refuses the push.
    let anon = common::skopeo()
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            &src,
            &dst,
        ])
        .output()
        .unwrap();
    assert!(!anon.status.success(), "anonymous push accepted");
    // --dest-creds, then `skopeo login` for everything after.
    run(common::skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &owner_creds(),
        &src,
        &dst,
    ]));
    let auth = containers_login(dir.path(), &[n.addr()]);
    let skopeo = || skopeo(&auth);
    run(skopeo()
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false", &src])
        .arg(format!("docker://{}/test/base:v2s2", n.addr())));

    // The manifest is served byte-exact.
    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &dst]));
    assert_eq!(raw.as_bytes(), layout_manifest(&layout, "v1"));
    let tags = run(skopeo()
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/test/base", n.addr())));
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2s2"]));

    // Copy back out: every layer byte-exact.
    let out = dir.path().join("out");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", &dst])
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_manifest(&out, "v1"), layout_manifest(&layout, "v1"));
    assert!(common::assert_same_blobs(&layout, &out) > 0);

    run(skopeo().args(["delete", "--tls-verify=false", &dst]));
    let gone = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false", &dst])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "deleted image still pullable");
}

fn podman(root: &Path, tool: &str) -> Command {
    // Credentials live in this store's own auth file (podman refuses a
    // REGISTRY_AUTH_FILE that does not exist).
    let auth = root.join("auth.json");
    if !auth.exists() {
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(&auth, "{}").unwrap();
    }
    let mut c = Command::new(tool);
    c.env("REGISTRY_AUTH_FILE", auth);
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("runroot"))
        .args(["--storage-driver", "vfs"]);
    c
}

#[test]
fn buildah_builds_from_scratch_pushes_and_podman_pulls() {
    need("buildah");
    need("podman");
    let (dir, n) = node();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from buildah\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    run(podman(&store, "buildah")
        .args(["bud", "--isolation", "chroot", "-f"])
        .arg(ctx.join("Containerfile"))
        .args(["-t", "localhost/test/x:v1"])
        .arg(&ctx));
    let oci_ref = format!("{}/test/x:v1", n.addr());
    for tool in ["buildah", "podman"] {
        run_with_stdin(
            podman(&store, tool)
                .args([
                    "login",
                    "--tls-verify=false",
                    "-u",
                    OWNER,
                    "--password-stdin",
                ])
                .arg(n.addr()),
            OWNER_PASSWORD,
        );
    }
    run(podman(&store, "buildah")
        .args(["push", "--tls-verify=false", "localhost/test/x:v1"])
        .arg(format!("docker://{oci_ref}")));
    let docker_ref = format!("{}/test/x:v2s2", n.addr());
    run(podman(&store, "podman").args([
        "push",
        "--format",
        "v2s2",
        "--tls-verify=false",
        "localhost/test/x:v1",
        &docker_ref,
    ]));

    // A fresh podman store pulls both and finds the file in the image.
    let fresh = dir.path().join("fresh");
    for r in [&oci_ref, &docker_ref] {
        run(podman(&fresh, "podman").args([
            "pull",
            "--tls-verify=false",
            "--creds",
            &owner_creds(),
            r,
        ]));
    }
    let mount_out = run(podman(&fresh, "podman").args(["image", "mount", &oci_ref]));
    let hello = std::fs::read_to_string(Path::new(mount_out.trim()).join("hello.txt")).unwrap();
    assert_eq!(hello, "hello from buildah\n");
    run(podman(&fresh, "podman").args(["image", "unmount", &oci_ref]));
}

#[test]
fn oras_pushes_and_pulls_artifacts_monolithic_and_chunked() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
    assert!(
        Path::new(python).exists(),
        "the oras venv is missing: run `make deps`"
    );
    let (dir, n) = node();
    let work = dir.path().join("oras");
    std::fs::create_dir_all(&work).unwrap();
    let payload = random_bytes(100_000);
    std::fs::write(work.join("a.bin"), &payload).unwrap();
    let script = format!(
        r#"
import oras.client, os
c = oras.client.OrasClient(hostname="{addr}", insecure=True)
c.login(username="{user}", password="{password}", hostname="{addr}", tls_verify=False)
r = c.push(target="{addr}/test/artifact:v1", files=["a.bin:application/octet-stream"])
assert r.status_code == 201, r
r = c.push(target="{addr}/test/artifact:chunked", files=["a.bin"], do_chunked=True, chunk_size=7000)
assert r.status_code == 201, r
for tag in ["v1", "chunked"]:
    out = "out-" + tag
    os.makedirs(out, exist_ok=True)
    c.pull(target="{addr}/test/artifact:" + tag, outdir=out)
print(sorted(c.get_tags("{addr}/test/artifact")))
c.delete_tags("{addr}/test/artifact", ["v1"])
print(sorted(c.get_tags("{addr}/test/artifact")))
"#,
        addr = n.addr(),
        user = OWNER,
        password = OWNER_PASSWORD,
    );
    let out = run(Command::new(python)
        .arg("-c")
        .arg(script)
        .current_dir(&work));
    assert_eq!(out, "['chunked', 'v1']\n['chunked']\n");
    for tag in ["v1", "chunked"] {
        assert_eq!(
            std::fs::read(work.join(format!("out-{tag}/a.bin"))).unwrap(),
            payload
        );
    }
}

#[test]
fn containerd_pulls_and_pushes_like_a_kubernetes_node() {
    need("containerd");
    need("ctr");
    need("skopeo");
    let (dir, n) = node();
    let layout = oci_layout(dir.path(), "v1", &[("k8s", b"node")]);
    let image = format!("{}/test/base:v1", n.addr());
    let auth = containers_login(dir.path(), &[n.addr()]);
    let skopeo = || skopeo(&auth);
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));

    let t = dir.path().join("ctd");
    std::fs::create_dir_all(&t).unwrap();
    let sock = t.join("sock");
    std::fs::write(
        t.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
            t.display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(t.join("config.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(t.join("log")).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ctr = |args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&sock).args(args);
        c
    };
    let pushed = format!("{}/test/base:ctr", n.addr());
    let result = std::panic::catch_unwind(|| {
        let user = owner_creds();
        run(&mut ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--user",
            &user,
            &image,
        ]));
        run(&mut ctr(&["images", "tag", &image, &pushed]));
        run(&mut ctr(&[
            "images",
            "push",
            "--plain-http",
            "--user",
            &user,
            &pushed,
        ]));
    });
    daemon.kill().ok();
    daemon.wait().ok();
    result.unwrap();
    let a = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}")));
    let b = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{pushed}")));
    assert_eq!(a, b, "ctr pushed back the same manifest");
}

#[test]
fn docker_cli_pushes_and_pulls_when_a_daemon_runs() {
    let daemon = Command::new("docker").arg("info").output();
    if !matches!(&daemon, Ok(o) if o.status.success()) {
        eprintln!(
            "SKIPPED docker_cli_pushes_and_pulls_when_a_daemon_runs: no Docker daemon is reachable"
        );
        return;
    }
    let (dir, n) = node();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let marker = format!("{:x}", rand::random::<u64>());
    std::fs::write(rootfs.join("marker"), &marker).unwrap();
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let image = format!("{}/test/docker:{marker}", n.addr());
    // Credentials go to a config directory of this test's own.
    let config = dir.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &config);
        c
    };
    run(docker().arg("import").arg(&tar).arg(&image));
    let result = std::panic::catch_unwind(|| {
        let denied = docker().args(["push", &image]).output().unwrap();
        assert!(
            !denied.status.success(),
            "push without docker login accepted"
        );
        run_with_stdin(
            docker().args(["login", "-u", OWNER, "--password-stdin", &n.addr()]),
            OWNER_PASSWORD,
        );
        run(docker().args(["push", &image]));
        run(docker().args(["rmi", &image]));
        run(docker().args(["pull", &image]));
        // The pulled image holds the file that was pushed.
        assert_eq!(
            common::file_in_docker_image(&docker, &image, "/marker", dir.path()),
            marker
        );
    });
    docker().args(["rmi", "-f", &image]).output().ok();
    result.unwrap();
}
