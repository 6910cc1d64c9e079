//! Test harness: real `wharf serve` processes on real sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod registry;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wharf_launcher::Process;

/// The object store the suites run against, when `WHARF_TEST_S3` names
/// one (`make test` runs the spec, client and geo suites a second time
/// so); None: every node keeps blobs on its disk.
pub fn object_store() -> Option<wharf_launcher::s3::ObjectStore> {
    wharf_launcher::s3::from_env()
}

/// A test that inspects or damages blob files on a node's disk means
/// nothing on an object store: it runs in the filesystem pass only.
pub fn filesystem_only(why: &str) -> bool {
    if object_store().is_some() {
        eprintln!("runs in the filesystem pass only: {why}");
        return true;
    }
    false
}

/// The registry owner every test node is bootstrapped with.
pub const OWNER: &str = "owner";
pub const OWNER_PASSWORD: &str = "test owner password";

/// Environment that logs the `wharf` CLI in as the owner.
pub fn owner_env() -> [(&'static str, &'static str); 2] {
    [
        ("WHARF_USERNAME", OWNER),
        ("WHARF_PASSWORD", OWNER_PASSWORD),
    ]
}

/// An `Authorization` header line (with CRLF) for raw HTTP requests.
pub fn owner_auth_line() -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{OWNER}:{OWNER_PASSWORD}"));
    format!("Authorization: Basic {b}\r\n")
}

/// `curl -sf` as the owner.
pub fn curl_owner(url: &str) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sf", "-u", &format!("{OWNER}:{OWNER_PASSWORD}"), url]);
    c
}

/// skopeo, with its blob-info cache kept out of the way of other runs.
pub fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

/// `user:password` of the owner, for --creds style flags.
pub fn owner_creds() -> String {
    format!("{OWNER}:{OWNER_PASSWORD}")
}

/// Log the containers tools (skopeo, podman, buildah) in to `addrs` as
/// the owner, in an auth file of their own; pass it as REGISTRY_AUTH_FILE.
pub fn containers_login(dir: &Path, addrs: &[String]) -> PathBuf {
    let file = dir.join("containers-auth.json");
    for a in addrs {
        run(skopeo().args([
            "login",
            "--tls-verify=false",
            "--authfile",
            &file.display().to_string(),
            "-u",
            OWNER,
            "-p",
            OWNER_PASSWORD,
            a,
        ]));
    }
    file
}

pub fn free_port() -> u16 {
    wharf_launcher::free_port().unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One `wharf` process (a launcher `Process`) with its ports and directory.
pub struct Node {
    pub dir: PathBuf,
    pub http_port: u16,
    pub grpc_port: u16,
    process: Process,
}

impl From<wharf_launcher::Member> for Node {
    fn from(m: wharf_launcher::Member) -> Node {
        Node {
            dir: m.dir,
            http_port: m.http,
            grpc_port: m.grpc,
            process: m.process,
        }
    }
}

impl Node {
    /// Start a single-region node with its data under `dir`.
    pub fn start(dir: &Path) -> Node {
        Node::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Node {
        let (http_port, grpc_port) = (free_port(), free_port());
        let mut args: Vec<OsString> =
            vec!["serve".into(), "--data-dir".into(), dir.join("data").into()];
        args.extend([
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}").into(),
        ]);
        args.extend([
            "--grpc-listen".into(),
            format!("127.0.0.1:{grpc_port}").into(),
        ]);
        args.extend(extra.iter().map(OsString::from));
        if let Some(store) = object_store() {
            with_bucket(dir, &store, &mut args);
        }
        let mut n = Node::launch(dir, http_port, grpc_port, args);
        n.wait_ready();
        n
    }

    /// Spawn `wharf <args>` without waiting for it to be ready.
    pub fn launch(dir: &Path, http_port: u16, grpc_port: u16, args: Vec<OsString>) -> Node {
        let process = Process::new(
            Path::new(env!("CARGO_BIN_EXE_wharf")),
            args,
            dir.join(wharf_launcher::LOG_FILE),
        )
        .env("WHARF_BOOTSTRAP_PASSWORD", OWNER_PASSWORD);
        let mut n = Node {
            dir: dir.to_path_buf(),
            http_port,
            grpc_port,
            process,
        };
        n.process.spawn().expect("spawn wharf serve");
        n
    }

    pub fn running(&self) -> bool {
        self.process.running()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("running")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.process.exited() {
                panic!("wharf exited with {status}:\n{}", self.log());
            }
            // Ready (a leader, and the identities have arrived), then the
            // owner can log in; logins are not tried before, since failed
            // ones count against the login limiter.
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &self.url("/readyz")])
                .status()
                .is_ok_and(|s| s.success())
                && curl_owner(&self.url("/v2/"))
                    .args(["-o", "/dev/null"])
                    .status()
                    .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "node not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        assert!(self.running(), "running");
        self.process
            .terminate(Duration::from_secs(60))
            .expect("exited within a minute of SIGTERM")
    }

    pub fn restart(&mut self) {
        assert!(!self.running(), "stop or kill first");
        self.process.spawn().expect("spawn wharf serve");
        self.wait_ready();
    }

    /// Restart without waiting (a node that cannot reach a quorum yet).
    pub fn relaunch(&mut self) {
        assert!(!self.running(), "stop or kill first");
        self.process.spawn().expect("spawn wharf serve");
    }
}

/// Point a single node's arguments at a bucket of its own: its `--config`
/// (or none) with `[storage]` laid over it.
fn with_bucket(dir: &Path, store: &wharf_launcher::s3::ObjectStore, args: &mut Vec<OsString>) {
    let at = args.iter().position(|a| a == "--config" || a == "-c");
    let base = match at {
        Some(i) => wharf_config::ServeConfig::load(Path::new(&args[i + 1])).unwrap(),
        None => wharf_config::ServeConfig::default(),
    };
    // A test that chose its own object store keeps it.
    if base.storage.backend == wharf_config::StorageBackend::S3 {
        return;
    }
    let bucket = wharf_launcher::s3::SHARED_BUCKET;
    store.create_bucket(bucket).unwrap();
    let prefix = format!("node-{:08x}/", rand::random::<u32>());
    std::fs::create_dir_all(dir).unwrap();
    let credentials = store.credentials_file(dir).unwrap();
    let storage = format!(
        "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\n\
         prefix = \"{prefix}\"\ncredentials_file = \"{}\"\n",
        store.endpoint,
        credentials.display()
    );
    let merged = dir.join("with-bucket.toml");
    std::fs::write(&merged, base.overlay(&storage).unwrap().to_toml()).unwrap();
    match at {
        Some(i) => args[i + 1] = merged.into(),
        None => args.extend(["--config".into(), merged.into()]),
    }
}

/// Is a command on PATH?
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Run a command, panic with its output unless it succeeds; return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// Run a command with `input` on its stdin (passwords for `login
/// --password-stdin`); panic with its output unless it succeeds.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI layout at `dir/layout` with image `name` holding `files`
/// (path, contents) in one layer, built with umoci.
pub fn oci_layout(dir: &Path, tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let layout = dir.join("layout");
    if !layout.exists() {
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(format!("{}:base", layout.display())));
    }
    let bundle = dir.join(format!("bundle-{tag}"));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:base", layout.display()))
        .arg(&bundle));
    for (path, contents) in files {
        let p = bundle.join("rootfs").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
    run(Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    layout
}

/// Every blob of layout `src` that layout `dst` also holds must be
/// byte-identical; returns how many were compared.
pub fn assert_same_blobs(src: &Path, dst: &Path) -> usize {
    let mut compared = 0;
    for entry in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let e = entry.unwrap();
        let copied = dst.join("blobs/sha256").join(e.file_name());
        if copied.exists() {
            assert_eq!(
                std::fs::read(e.path()).unwrap(),
                std::fs::read(&copied).unwrap(),
                "blob {:?} differs",
                e.file_name()
            );
            compared += 1;
        }
    }
    compared
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Poll `check` until it holds or `secs` pass (a condition with a bound,
/// never a fixed sleep and a hope).
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A user `name` with `password` and, unless `role` is empty, `role` on
/// `scope`, made by the owner with the CLI.
pub fn create_user(n: &Node, name: &str, password: &str, role: &str, scope: &str) {
    run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .env("WHARF_NEW_PASSWORD", password)
        .args(["user", "create", name, "--endpoint", &n.url("")]));
    if !role.is_empty() {
        wharf_json(
            &n.url(""),
            &[
                "role",
                "assign",
                "--principal",
                name,
                "--role",
                role,
                "--scope",
                scope,
            ],
        );
    }
}

/// Push `tag` of the OCI layout at `layout` to `addr` as `image`, with
/// skopeo, as the owner.
pub fn skopeo_push(layout: &Path, tag: &str, addr: &str, image: &str) {
    run(skopeo()
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &owner_creds(),
        ])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{addr}/{image}")));
}

/// `wharf ARGS --endpoint E -o json` as the owner; its parsed answer.
pub fn wharf_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = run(Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .args(args)
        .args(["--endpoint", endpoint, "-o", "json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The contents of `path` in `image` (pulled already), read by creating a
/// container of it with `docker` (a command with the test's config) and
/// copying the file out to `scratch`.
pub fn file_in_docker_image(
    docker: &dyn Fn() -> Command,
    image: &str,
    path: &str,
    scratch: &Path,
) -> String {
    let id = run(docker().args(["create", image, "/none"]));
    let copied = scratch.join("copied-from-image");
    let status = docker()
        .args(["cp", &format!("{}:{path}", id.trim())])
        .arg(&copied)
        .status();
    docker().args(["rm", id.trim()]).output().ok();
    assert!(
        status.unwrap().success(),
        "docker cp of {path} from {image}"
    );
    std::fs::read_to_string(&copied).unwrap()
}
