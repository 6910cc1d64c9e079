//! Clients: each process is bound to one region and runs one operation at
//! a time against it — tag writes (a small image pushed and tagged: the
//! register value is the manifest digest), tag reads and tag deletes —
//! recording invocation and completion times and what it learned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use wharf_client::{image_manifest, ClientError, OciClient};
use wharf_oci::media::OCI_MANIFEST;
use wharf_oci::Digest;

use crate::cluster::{PASSWORD, USER};
use crate::history::{Operation, Outcome, RegisterOp};

pub const REPO: &str = "jepsen/app";
/// A request that takes longer has an unknown outcome.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a write whose outcome stays unknown (a 5xx, a timeout).
const WRITE_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// A push the registry acknowledged: what every region must serve later.
#[derive(Debug, Clone)]
pub struct Acked {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub config: Vec<u8>,
}

/// Blobs fetched after reads: the config of every manifest a read was
/// served, from the same region (on demand if it is not there yet).
#[derive(Debug, Default, Clone)]
pub struct BlobReads {
    /// Served, and the bytes match the digest.
    pub ok: u64,
    /// Not served: when (ns since the start), where, and why. Under a
    /// fault that is availability; with no fault in force it breaks
    /// "pullable everywhere once acknowledged".
    pub unavailable: Vec<(u64, String, String)>,
    /// Served bytes that do not match their digest: always a violation.
    pub corrupt: Vec<String>,
}

#[derive(Default)]
pub struct Record {
    pub history: Vec<Operation>,
    pub acked: Vec<Acked>,
    pub blob_reads: BlobReads,
}

pub struct Client {
    pub process: u64,
    /// The region this process talks to, as the owner.
    pub oci: OciClient,
    pub start: Instant,
    pub keys: usize,
    /// Pause between operations (a client's think time).
    pub pause: Duration,
    pub record: Arc<Mutex<Record>>,
}

fn sha(b: &[u8]) -> String {
    Digest::sha256_of(b).to_string()
}

/// A client of the region at `base`, as the owner, with the jepsen timeout.
pub fn oci_client(http: reqwest::Client, base: &str) -> OciClient {
    OciClient::new(http, base)
        .with_login(USER, PASSWORD)
        .with_timeout(TIMEOUT)
}

impl Client {
    fn ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push_record(&self, op: Operation, acked: Option<Acked>) {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        r.history.push(op);
        if let Some(a) = acked {
            r.acked.push(a);
        }
    }

    /// Run operations until `until`.
    pub async fn run(self, until: Instant, seq: &mut u64) {
        while Instant::now() < until {
            let key = format!("t{}", rand::thread_rng().gen_range(0..self.keys));
            let roll: u32 = rand::thread_rng().gen_range(0..100);
            if roll < 40 {
                self.write(&key, seq).await;
            } else if roll < 45 {
                self.delete(&key, seq).await;
            } else {
                self.read(&key).await;
            }
            *seq += 1;
            tokio::time::sleep(self.pause).await;
        }
    }

    pub async fn read(&self, key: &str) -> Option<Option<String>> {
        let t0 = self.ns();
        let r = self.oci.get_manifest(REPO, key).await;
        let mut served = None;
        let (outcome, value) = match r {
            Ok(body) => {
                let digest = sha(&body);
                served = Some(body);
                (Outcome::Ok, Some(Some(digest)))
            }
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => (Outcome::Ok, Some(None)),
            // 503 (no quorum), timeouts: the read told nothing.
            Err(_) => (Outcome::Unknown, None),
        };
        self.push_record(
            Operation {
                process: self.process,
                key: key.into(),
                op: RegisterOp::Read(value.clone().flatten()),
                outcome,
                invoked_ns: t0,
                completed_ns: self.ns(),
            },
            None,
        );
        if let Some(manifest) = served {
            self.check_config_blob(&manifest).await;
        }
        value
    }

    /// Fetch the config blob of a manifest that was served, and check its
    /// bytes against its digest (promises 4 and 5).
    async fn check_config_blob(&self, manifest: &[u8]) {
        let Some(digest) = serde_json::from_slice::<serde_json::Value>(manifest)
            .ok()
            .and_then(|m| m["config"]["digest"].as_str()?.parse::<Digest>().ok())
        else {
            let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
            r.blob_reads
                .corrupt
                .push("a served manifest is not JSON".into());
            return;
        };
        let got = self.oci.get_blob(REPO, &digest).await;
        let at = self.ns();
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Ok(_) => r.blob_reads.ok += 1,
            Err(e @ ClientError::Corrupt { .. }) => r
                .blob_reads
                .corrupt
                .push(format!("{}: {e}", self.oci.base())),
            Err(e) => {
                r.blob_reads
                    .unavailable
                    .push((at, self.oci.base().to_string(), e.to_string()))
            }
        }
    }

    async fn write(&self, key: &str, seq: &u64) {
        let t0 = self.ns();
        // A unique config blob makes every write's manifest unique.
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"jepsen\":\"p{}-{}\"}}",
            self.process, seq
        )
        .into_bytes();
        let config_digest = Digest::sha256_of(&config);
        let manifest = image_manifest((&config_digest, config.len()), &[]);
        let digest = sha(&manifest);
        let outcome = match self.oci.upload(REPO, config.clone()).await {
            Ok(_) => {
                let id = format!("p{}-{}-put", self.process, seq);
                with_retries(|| {
                    self.oci
                        .put_manifest(REPO, key, OCI_MANIFEST, manifest.clone(), Some(&id))
                })
                .await
            }
            // The blob did not make it: the tag was never proposed.
            Err(_) => Outcome::Failed,
        };
        let config_digest = config_digest.to_string();
        let acked = (outcome == Outcome::Ok).then(|| Acked {
            digest: digest.clone(),
            manifest,
            config_digest,
            config,
        });
        self.push_record(
            Operation {
                process: self.process,
                key: key.into(),
                op: RegisterOp::Write(digest),
                outcome,
                invoked_ns: t0,
                completed_ns: self.ns(),
            },
            acked,
        );
    }

    async fn delete(&self, key: &str, seq: &u64) {
        let t0 = self.ns();
        let id = format!("p{}-{}-delete", self.process, seq);
        // 404: the tag did not exist, nothing changed.
        let outcome = with_retries(|| self.oci.delete_manifest(REPO, key, Some(&id))).await;
        self.push_record(
            Operation {
                process: self.process,
                key: key.into(),
                op: RegisterOp::Delete,
                outcome,
                invoked_ns: t0,
                completed_ns: self.ns(),
            },
            None,
        );
    }
}

/// Send a write until its outcome is known, at most `WRITE_ATTEMPTS`
/// times, every attempt with the same idempotency key: the registry
/// applies it once, and a repeat is answered as the first attempt was
/// (including a refusal, which is then final for that key).
pub(crate) async fn with_retries<T, F, Fut>(attempt: F) -> Outcome
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut outcome = Outcome::Unknown;
    for n in 0..WRITE_ATTEMPTS {
        if n > 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        outcome = match attempt().await {
            Ok(_) => return Outcome::Ok,
            // A refusal: nothing changed, and nothing will under this key.
            Err(e) if e.status().is_some_and(|s| s.is_client_error()) => return Outcome::Failed,
            // Never connected: not applied by this attempt, but an
            // earlier one may still be in flight.
            Err(e) if n == 0 && e.never_sent() => Outcome::Failed,
            Err(_) => Outcome::Unknown,
        };
    }
    outcome
}
