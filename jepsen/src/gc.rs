//! The garbage-collection race (`--gc`): while the register clients run,
//! one more client per region pushes images into a few repositories that
//! share layers (skipping, as docker does, a layer the registry says it
//! has), deletes manifests by digest, deletes tags, and mounts shared
//! layers across repositories; a collector runs `gc/runs` back to back on
//! any node, with a grace of seconds. The checker: every image a tag names
//! at the end has every blob, byte-exact, in every region's store and
//! served by every region; nothing acknowledged that is still tagged
//! misses a byte.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use wharf_client::{image_manifest, OciClient};
use wharf_oci::media::OCI_MANIFEST;
use wharf_oci::Digest;

use crate::client::with_retries;
use crate::cluster::{Cluster, PASSWORD, USER};
use crate::history::Outcome;

/// Repositories the GC clients push into.
pub const REPOS: [&str; 3] = ["jepsen/gc-a", "jepsen/gc-b", "jepsen/gc-c"];
/// Tags per repository.
const TAGS: usize = 3;
/// Layers every image draws one of (old layers pushed again and again).
const POOL: usize = 6;
const POOL_LAYER_BYTES: usize = 24 << 10;

/// An image a GC client tried to push (acknowledged or not: a tag may
/// name one whose outcome the client never learned).
#[derive(Debug, Clone)]
pub struct GcImage {
    pub manifest: Vec<u8>,
    /// Every blob it names, with its bytes.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

#[derive(Debug, Default)]
pub struct GcRecord {
    /// By manifest digest.
    pub images: BTreeMap<String, GcImage>,
    /// Pushed and acknowledged, (repo, digest), for deletes to pick from.
    pub acked: Vec<(String, String)>,
    pub pushes: u64,
    pub pushes_failed: u64,
    pub manifest_deletes: u64,
    pub tag_deletes: u64,
    pub mounts: u64,
    pub runs: u64,
    pub runs_failed: u64,
    pub blobs_freed: u64,
}

/// The shared layers, the same for every client of a run.
pub fn pool() -> Arc<Vec<Vec<u8>>> {
    let mut rng = rand::thread_rng();
    Arc::new(
        (0..POOL)
            .map(|_| (0..POOL_LAYER_BYTES).map(|_| rng.gen()).collect())
            .collect(),
    )
}

fn lock(r: &Mutex<GcRecord>) -> std::sync::MutexGuard<'_, GcRecord> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// One GC client, bound to its region's `oci`, until `until`.
pub async fn client(
    process: u64,
    oci: OciClient,
    pool: Arc<Vec<Vec<u8>>>,
    record: Arc<Mutex<GcRecord>>,
    pause: Duration,
    until: Instant,
) {
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let roll: u32 = rand::thread_rng().gen_range(0..100);
        let repo = REPOS[rand::thread_rng().gen_range(0..REPOS.len())];
        if roll < 60 {
            push(process, seq, &oci, repo, &pool, &record).await;
        } else if roll < 80 {
            let victim = {
                let r = lock(&record);
                (!r.acked.is_empty())
                    .then(|| r.acked[rand::thread_rng().gen_range(0..r.acked.len())].clone())
            };
            if let Some((repo, digest)) = victim {
                let id = format!("gc{process}-{seq}-delete");
                if with_retries(|| oci.delete_manifest(&repo, &digest, Some(&id))).await
                    == Outcome::Ok
                {
                    lock(&record).manifest_deletes += 1;
                }
            }
        } else if roll < 90 {
            let tag = format!("g{}", rand::thread_rng().gen_range(0..TAGS));
            let id = format!("gc{process}-{seq}-untag");
            if with_retries(|| oci.delete_manifest(repo, &tag, Some(&id))).await == Outcome::Ok {
                lock(&record).tag_deletes += 1;
            }
        } else {
            // Mount a shared layer from where it may be linked into another
            // repository (the spec's fallback to an upload is not taken).
            let from = REPOS[rand::thread_rng().gen_range(0..REPOS.len())];
            let layer = &pool[rand::thread_rng().gen_range(0..pool.len())];
            let d = Digest::sha256_of(layer);
            let r = oci
                .request(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
                )
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                lock(&record).mounts += 1;
            }
        }
        tokio::time::sleep(pause).await;
    }
}

async fn push(
    process: u64,
    seq: u64,
    oci: &OciClient,
    repo: &str,
    pool: &[Vec<u8>],
    record: &Mutex<GcRecord>,
) {
    let shared = pool[rand::thread_rng().gen_range(0..pool.len())].clone();
    let own = format!("gc layer of p{process}-{seq}").into_bytes();
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"gc\":\"p{process}-{seq}\"}}")
            .into_bytes();
    let (cd, sd, od) = (
        Digest::sha256_of(&config),
        Digest::sha256_of(&shared),
        Digest::sha256_of(&own),
    );
    let manifest = image_manifest(
        (&cd, config.len()),
        &[(sd.clone(), shared.len()), (od.clone(), own.len())],
    );
    let digest = Digest::sha256_of(&manifest).to_string();
    lock(record).images.insert(
        digest.clone(),
        GcImage {
            manifest: manifest.clone(),
            blobs: vec![
                (cd, config.clone()),
                (sd.clone(), shared.clone()),
                (od, own.clone()),
            ],
        },
    );
    // Docker-like: a layer the registry says it has is not sent again,
    // which is the race GC must survive (HEAD 200, then swept).
    let have = oci
        .request(Method::HEAD, &format!("/v2/{repo}/blobs/{sd}"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK);
    let mut uploads = vec![config, own];
    if !have {
        uploads.push(shared);
    }
    for bytes in uploads {
        if oci.upload(repo, bytes).await.is_err() {
            lock(record).pushes_failed += 1;
            return;
        }
    }
    let tag = format!("g{}", rand::thread_rng().gen_range(0..TAGS));
    let id = format!("gc{process}-{seq}-put");
    let outcome =
        with_retries(|| oci.put_manifest(repo, &tag, OCI_MANIFEST, manifest.clone(), Some(&id)))
            .await;
    let mut r = lock(record);
    if outcome == Outcome::Ok {
        r.pushes += 1;
        r.acked.push((repo.to_string(), digest));
    } else {
        // A refusal (a layer swept after the HEAD) or an unknown outcome.
        r.pushes_failed += 1;
    }
}

/// Collect garbage back to back through any node until `until`.
pub async fn collector(
    http: reqwest::Client,
    bases: Vec<String>,
    record: Arc<Mutex<GcRecord>>,
    until: Instant,
) {
    while Instant::now() < until {
        let base = &bases[rand::thread_rng().gen_range(0..bases.len())];
        let r = http
            .post(format!("{base}/api/v1/gc/runs"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&serde_json::json!({}))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let freed = match r {
            Ok(r) if r.status().is_success() => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["blobs_freed"].as_u64()),
            _ => None,
        };
        {
            let mut rec = lock(&record);
            match freed {
                Some(n) => {
                    rec.runs += 1;
                    rec.blobs_freed += n;
                }
                None => rec.runs_failed += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After healing and draining: every image a tag names has every blob,
/// byte-exact, in every region's store (allowing `settle` for a copy the
/// scrub or the mover is still replacing) and served by every region.
/// Returns the summary line and the violations.
pub async fn check(
    cluster: &Cluster,
    record: &Mutex<GcRecord>,
    settle: Duration,
) -> (String, Vec<String>) {
    let http = reqwest::Client::new();
    let images = lock(record).images.clone();
    let mut tagged: Vec<(String, String, GcImage)> = Vec::new();
    let mut reasons = Vec::new();
    let base = cluster.nodes[0].url("");
    let oci = crate::client::oci_client(http.clone(), &base);
    for repo in REPOS {
        for k in 0..TAGS {
            let tag = format!("g{k}");
            match oci.get_manifest(repo, &tag).await {
                Ok(body) => {
                    let d = Digest::sha256_of(&body).to_string();
                    match images.get(&d) {
                        Some(img) if img.manifest[..] == body[..] => {
                            tagged.push((repo.to_string(), d, img.clone()))
                        }
                        _ => reasons.push(format!("{repo}:{tag} names {d}, which nobody pushed")),
                    }
                }
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
                Err(e) => reasons.push(format!("{repo}:{tag} unreadable after healing: {e}")),
            }
        }
    }
    let deadline = Instant::now() + settle;
    let mut missing = Vec::new();
    for (repo, digest, img) in &tagged {
        for (i, n) in cluster.nodes.iter().enumerate() {
            for (d, bytes) in &img.blobs {
                let good = || {
                    cluster
                        .stored_copy(i, d.as_str())
                        .is_some_and(|b| b == *bytes)
                };
                while !good() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if !good() {
                    missing.push(format!("{d} of {repo}@{digest} in {}'s store", n.region));
                }
                let served = crate::client::oci_client(http.clone(), &n.url(""))
                    .get_blob(repo, d)
                    .await;
                if let Err(e) = served {
                    missing.push(format!(
                        "{d} of {repo}@{digest} not served by {}: {e}",
                        n.region
                    ));
                }
            }
        }
    }
    for m in missing.iter().take(20) {
        reasons.push(format!("a tagged image misses a blob: {m}"));
    }
    let r = lock(record);
    let summary = format!(
        "{} pushes acknowledged ({} refused or unknown), {} manifest deletes, {} tag deletes, \
         {} mounts; {} GC runs ({} failed under faults) freed {} blobs; {} images tagged at the \
         end, {} blob copies checked in {} regions: {}",
        r.pushes,
        r.pushes_failed,
        r.manifest_deletes,
        r.tag_deletes,
        r.mounts,
        r.runs,
        r.runs_failed,
        r.blobs_freed,
        tagged.len(),
        tagged.iter().map(|t| t.2.blobs.len()).sum::<usize>() * cluster.nodes.len(),
        cluster.nodes.len(),
        if missing.is_empty() {
            "all present, byte-exact".to_string()
        } else {
            format!("{} missing", missing.len())
        }
    );
    (summary, reasons)
}
