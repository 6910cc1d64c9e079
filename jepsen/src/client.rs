//! Clients: each process is bound to one region and runs one operation at
//! a time against it — tag writes (a small image pushed and tagged: the
//! register value is the manifest digest), tag reads and tag deletes —
//! recording invocation and completion times and what it learned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest as _, Sha256};

use crate::cluster::{PASSWORD, USER};
use crate::history::{Operation, Outcome, RegisterOp};

pub const REPO: &str = "jepsen/app";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A request that takes longer has an unknown outcome.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Writes name themselves so that retries apply once (Wharf's request ids).
const IDEMPOTENCY_KEY: &str = "idempotency-key";
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
    pub base: String,
    pub http: reqwest::Client,
    pub start: Instant,
    pub keys: usize,
    /// Pause between operations (a client's think time).
    pub pause: Duration,
    pub record: Arc<Mutex<Record>>,
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The outcome of a request the client could not complete: definitely
/// not applied when the connection was never made, unknown otherwise.
fn unsure(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
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
        let r = self
            .http
            .get(format!("{}/v2/{REPO}/manifests/{key}", self.base))
            .header("accept", MANIFEST)
            .basic_auth(USER, Some(PASSWORD))
            .timeout(TIMEOUT)
            .send()
            .await;
        let mut served = None;
        let (outcome, value) = match r {
            Ok(resp) if resp.status() == 200 => {
                let body = resp.bytes().await.unwrap_or_default();
                let digest = sha(&body);
                served = Some(body);
                (Outcome::Ok, Some(Some(digest)))
            }
            Ok(resp) if resp.status() == 404 => (Outcome::Ok, Some(None)),
            // 503 (no quorum), timeouts: the read told nothing.
            _ => (Outcome::Unknown, None),
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
            .and_then(|m| m["config"]["digest"].as_str().map(str::to_string))
        else {
            let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
            r.blob_reads
                .corrupt
                .push("a served manifest is not JSON".into());
            return;
        };
        let got = self
            .http
            .get(format!("{}/v2/{REPO}/blobs/{digest}", self.base))
            .basic_auth(USER, Some(PASSWORD))
            .timeout(TIMEOUT)
            .send()
            .await;
        let at = self.ns();
        let bytes = match got {
            Ok(resp) if resp.status() == 200 => resp
                .bytes()
                .await
                .map_err(|e| format!("reading {digest}: {e}")),
            Ok(resp) => Err(format!("{digest}: HTTP {}", resp.status().as_u16())),
            Err(e) => Err(format!("{digest}: {e}")),
        };
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        match bytes {
            Ok(b) if sha(&b) == digest => r.blob_reads.ok += 1,
            Ok(b) => r.blob_reads.corrupt.push(format!(
                "{} served {} bytes for {digest} that hash to {}",
                self.base,
                b.len(),
                sha(&b)
            )),
            Err(e) => r.blob_reads.unavailable.push((at, self.base.clone(), e)),
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
        let config_digest = sha(&config);
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[]}}",
            config.len()
        )
        .into_bytes();
        let digest = sha(&manifest);
        let blob = self
            .http
            .post(format!(
                "{}/v2/{REPO}/blobs/uploads/?digest={config_digest}",
                self.base
            ))
            .basic_auth(USER, Some(PASSWORD))
            .timeout(TIMEOUT)
            .body(config.clone())
            .send()
            .await;
        let outcome = match blob {
            Ok(r) if r.status() == 201 => {
                let id = format!("p{}-{}-put", self.process, seq);
                self.with_retries(201, || {
                    self.http
                        .put(format!("{}/v2/{REPO}/manifests/{key}", self.base))
                        .header("content-type", MANIFEST)
                        .header(IDEMPOTENCY_KEY, &id)
                        .basic_auth(USER, Some(PASSWORD))
                        .timeout(TIMEOUT)
                        .body(manifest.clone())
                })
                .await
            }
            // The blob did not make it: the tag was never proposed.
            _ => Outcome::Failed,
        };
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

    /// Send a write until its outcome is known, at most `WRITE_ATTEMPTS`
    /// times, every attempt with the same idempotency key: the registry
    /// applies it once, and a repeat is answered as the first attempt was
    /// (including a refusal, which is then final for that key).
    async fn with_retries(
        &self,
        ok_status: u16,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Outcome {
        let mut outcome = Outcome::Unknown;
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            outcome = match request().send().await {
                Ok(r) if r.status() == ok_status => return Outcome::Ok,
                // A refusal: nothing changed, and nothing will under this key.
                Ok(r) if r.status().is_client_error() => return Outcome::Failed,
                Ok(_) => Outcome::Unknown,
                // Never connected: not applied by this attempt, but an
                // earlier one may still be in flight.
                Err(e) if attempt == 0 => unsure(&e),
                Err(_) => Outcome::Unknown,
            };
            if outcome == Outcome::Failed {
                return outcome;
            }
        }
        outcome
    }

    async fn delete(&self, key: &str, seq: &u64) {
        let t0 = self.ns();
        let id = format!("p{}-{}-delete", self.process, seq);
        // 404: the tag did not exist, nothing changed.
        let outcome = self
            .with_retries(202, || {
                self.http
                    .delete(format!("{}/v2/{REPO}/manifests/{key}", self.base))
                    .header(IDEMPOTENCY_KEY, &id)
                    .basic_auth(USER, Some(PASSWORD))
                    .timeout(TIMEOUT)
            })
            .await;
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
