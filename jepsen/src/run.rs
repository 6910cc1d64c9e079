//! One run: start a cluster, drive clients in every region while the
//! nemesis injects faults, heal, then check every promise and write the
//! history, the nemesis timeline and the verdict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::client::{Client, Record, REPO};
use crate::cluster::{Cluster, PASSWORD, USER};
use crate::history::Outcome;
use crate::linearizable;
use crate::nemesis::{Fault, Nemesis};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub wharf: PathBuf,
    pub regions: usize,
    pub duration: Duration,
    pub clients_per_region: usize,
    pub keys: usize,
    /// Operations per second per client, at most (0: no limit).
    pub rate: u32,
    pub faults: Vec<Fault>,
    pub fault_for: Duration,
    pub quiet_for: Duration,
    /// Where the cluster's data and the results go.
    pub out: PathBuf,
    /// Run the GC race beside the register clients (see `gc`).
    pub gc: bool,
    /// How the nodes answer tag reads: `linearizable` (checked as
    /// linearizable registers) or the default `local` (checked by
    /// `local`: misses never stale, monotonic reads, bounded staleness
    /// while healthy).
    pub reads: wharf_config::ReadConsistency,
    /// Nodes in each region (several need `object_store`).
    pub nodes_per_region: usize,
    /// Keep every region's blobs on this object store.
    pub object_store: Option<wharf_launcher::s3::ObjectStore>,
}

/// With `reads = "local"`, while no fault is in force a read may trail an
/// acknowledged write by at most this much (one replication delay on these
/// links is milliseconds; this leaves room for a loaded 2-core machine).
pub const LOCAL_STALENESS_BOUND_MS: u64 = 1_000;

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub valid: bool,
    /// Why not, one line per broken promise.
    pub reasons: Vec<String>,
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub unknown_outcomes: usize,
    pub failed: usize,
    pub faults_injected: usize,
    pub checks: BTreeMap<String, String>,
}

/// After a fault heals, how long the cluster may take to serve again (a
/// restarted node recovering, an election) before unavailability counts.
const FAULT_GRACE_MS: u64 = 5_000;
/// After draining, how long a corrupted copy may take to be found by the
/// scrub (a pass every 2 s) and copied back by the mover.
const SETTLE: Duration = Duration::from_secs(120);

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Wait until the mover has copied every blob into every region, as long
/// as it makes progress: a region wiped near the end copies everything
/// again, which takes minutes on a long run; `stall` without progress is
/// a failure.
async fn drained(cluster: &Cluster, stall: Duration) -> Result<(), String> {
    let http = reqwest::Client::new();
    let mut deadline = Instant::now() + stall;
    let mut fewest = u64::MAX;
    loop {
        let mut left = None;
        // Why the answer was not a count, for the log of a failed drain.
        let mut trouble = String::new();
        match http
            .get(cluster.nodes[0].url("/api/v1/replications"))
            .basic_auth(USER, Some(PASSWORD))
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(rows) if status.is_success() => {
                        left = rows.as_array().map(|rs| {
                            rs.iter()
                                .map(|r| r["blobs_to_copy"].as_u64().unwrap_or(u64::MAX))
                                .sum::<u64>()
                        });
                    }
                    _ => trouble = format!(": HTTP {status}: {:.300}", body),
                }
            }
            Err(e) => trouble = format!(": {e}"),
        }
        if left == Some(0) {
            return Ok(());
        }
        if let Some(n) = left.filter(|n| *n < fewest) {
            fewest = n;
            deadline = Instant::now() + stall;
        }
        eprintln!("[run] blobs still to copy, all regions: {left:?}{trouble}");
        if Instant::now() > deadline {
            return Err(format!(
                "the mover made no progress for {stall:?} ({left:?} blobs left{trouble})"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn run(cfg: &RunConfig) -> std::io::Result<Verdict> {
    std::fs::create_dir_all(&cfg.out)?;
    let mut cluster = Cluster::start(
        &cfg.wharf,
        &cfg.out.join("cluster"),
        cfg.regions,
        cfg.nodes_per_region.max(1),
        cfg.object_store.clone(),
        cfg.reads,
    )
    .await?;
    let nodes = cluster.nodes.len();
    let start = Instant::now();
    let until = start + cfg.duration;
    let record = Arc::new(Mutex::new(Record::default()));
    let http = reqwest::Client::new();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let client = |process: u64, region: usize| Client {
        process,
        oci: crate::client::oci_client(http.clone(), &bases[region]),
        start,
        keys: cfg.keys,
        // 0: as fast as the cluster answers.
        pause: Duration::from_millis(match cfg.rate {
            0 => 0,
            r => 1000 / u64::from(r),
        }),
        record: record.clone(),
    };
    let mut tasks = Vec::new();
    // Clients on every node (a region's nodes each get their own).
    for r in 0..nodes {
        for c in 0..cfg.clients_per_region {
            let cl = client((r * 100 + c) as u64, r);
            tasks.push(tokio::spawn(async move {
                let mut seq = 0;
                cl.run(until, &mut seq).await;
            }));
        }
    }
    let gc_record = Arc::new(Mutex::new(crate::gc::GcRecord::default()));
    if cfg.gc {
        let pool = crate::gc::pool();
        for (r, base) in bases.iter().enumerate() {
            let oci = crate::client::oci_client(http.clone(), base);
            tasks.push(tokio::spawn(crate::gc::client(
                (500 + r) as u64,
                oci,
                pool.clone(),
                gc_record.clone(),
                Duration::from_millis(100),
                until,
            )));
        }
        tasks.push(tokio::spawn(crate::gc::collector(
            http.clone(),
            bases.clone(),
            gc_record.clone(),
            until,
        )));
    }
    let mut nemesis = Nemesis::new(cfg.faults.clone(), cfg.fault_for, cfg.quiet_for, start);
    let healed = nemesis.run(&mut cluster, until).await;
    eprintln!("[run] faults over; waiting for clients to finish");
    for t in tasks {
        let _ = t.await;
    }
    let mut reasons = Vec::new();
    let mut checks = BTreeMap::new();
    if let Err(e) = healed {
        reasons.push(format!(
            "the cluster did not recover after the faults healed: {e}"
        ));
    }

    eprintln!("[run] final reads in every region");
    // Final reads of every key in every region, part of the history.
    for r in 0..nodes {
        let cl = client(9000 + r as u64, r);
        for k in 0..cfg.keys {
            cl.read(&format!("t{k}")).await;
        }
    }

    // Durability: every acknowledged push, byte-exact, in every region.
    eprintln!("[run] waiting for the mover to drain");
    let drain = drained(&cluster, Duration::from_secs(60)).await;
    eprintln!("[run] checking durability, convergence, linearizability");
    let acked = record
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .acked
        .clone();
    let mut missing = Vec::new();
    let settle_until = Instant::now() + SETTLE;
    for a in &acked {
        for (i, n) in cluster.nodes.iter().enumerate() {
            // A node wiped near the end may still be restoring from a
            // snapshot and answer 503 (or not at all): that is
            // unavailability, allowed the settle. Any other answer is
            // judged at once: a 404 or wrong bytes is a lost write.
            let answer = loop {
                let m = http
                    .get(n.url(&format!("/v2/{REPO}/manifests/{}", a.digest)))
                    .header("accept", "application/vnd.oci.image.manifest.v1+json")
                    .basic_auth(USER, Some(PASSWORD))
                    .send()
                    .await;
                let answer = match m {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) if b[..] == a.manifest[..] && sha(&b) == a.digest => Ok(()),
                        Ok(_) => Err((false, "different bytes".to_string())),
                        Err(e) => Err((true, format!("body cut off: {e}"))),
                    },
                    Ok(r) => Err((r.status().is_server_error(), format!("{}", r.status()))),
                    Err(e) => Err((true, format!("no answer: {e}"))),
                };
                match answer {
                    Err((true, _)) if Instant::now() < settle_until => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    other => break other,
                }
            };
            if let Err((_, why)) = answer {
                missing.push(format!("manifest {} in {} ({why})", a.digest, n.region));
            }
            // A copy the corrupt nemesis flipped may still be on its way
            // back (scrub, then the mover): allowed a bounded settle.
            let good = || {
                cluster
                    .stored_copy(i, &a.config_digest)
                    .is_some_and(|b| b == a.config && sha(&b) == a.config_digest)
            };
            while !good() && Instant::now() < settle_until {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if !good() {
                missing.push(format!("blob {} in {}'s store", a.config_digest, n.region));
            }
        }
    }
    checks.insert(
        "durability".into(),
        format!(
            "{} acknowledged pushes checked through {} nodes in {} regions: {}",
            acked.len(),
            nodes,
            cfg.regions,
            if missing.is_empty() {
                "all present, byte-exact".to_string()
            } else {
                format!("{} missing", missing.len())
            }
        ),
    );
    if let Err(e) = &drain {
        reasons.push(e.clone());
    }
    for m in missing.iter().take(20) {
        reasons.push(format!("acknowledged but missing: {m}"));
    }

    let flipped = nemesis
        .timeline
        .iter()
        .filter(|e| e.action.starts_with("flip one byte"))
        .count();
    if flipped > 0 {
        let found = http
            .get(cluster.nodes[0].url("/api/v1/scrub"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await;
        let found = match found {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        let (corrupt, passes) = found
            .as_ref()
            .and_then(|v| v["regions"].as_array())
            .map(|rs| {
                rs.iter().fold((0, 0), |(c, p), r| {
                    (
                        c + r["corrupt_found"].as_u64().unwrap_or(0),
                        p + r["passes"].as_u64().unwrap_or(0),
                    )
                })
            })
            .unwrap_or_default();
        // A flipped copy may also be gone before it is found (freed by
        // GC, a wiped disk): the stores' checks above are the verdict.
        checks.insert(
            "scrub".into(),
            format!(
                "{flipped} stored bytes flipped; the regions found {corrupt} corrupt copies \
                 (quarantined, copied back) in {passes} scrub passes"
            ),
        );
    }
    if cfg.gc {
        eprintln!("[run] checking the images GC raced against");
        let (summary, gc_reasons) = crate::gc::check(&cluster, &gc_record, SETTLE).await;
        checks.insert("gc".into(), summary);
        reasons.extend(gc_reasons);
    }

    // Every byte served matches its digest (blobs fetched after reads,
    // many of them on demand from another region).
    let blob_reads = record
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .blob_reads
        .clone();
    let not_served = blob_reads.unavailable.len() as u64;
    // Not served with no fault in force (nor just healed): a broken
    // "pullable everywhere once acknowledged".
    let unexcused: Vec<&(u64, String, String)> = blob_reads
        .unavailable
        .iter()
        .filter(|(at_ns, _, _)| !nemesis.faulty_at(at_ns / 1_000_000, FAULT_GRACE_MS))
        .collect();
    checks.insert(
        "bytes served".into(),
        format!(
            "{} config blobs fetched after reads: {} byte-exact, {} not served ({} of them \
             with no fault in force), {} corrupt",
            blob_reads.ok + not_served + blob_reads.corrupt.len() as u64,
            blob_reads.ok,
            not_served,
            unexcused.len(),
            blob_reads.corrupt.len()
        ),
    );
    for c in blob_reads.corrupt.iter().take(20) {
        reasons.push(format!("bytes served do not match their digest: {c}"));
    }
    for (at, base, e) in unexcused.iter().take(20) {
        reasons.push(format!(
            "not pullable with no fault in force, at {:.1} s from {base}: {e}",
            *at as f64 / 1e9
        ));
    }

    // Convergence: every region lists the same tags with the same targets.
    let mut views = Vec::new();
    for n in &cluster.nodes {
        let mut view = BTreeMap::new();
        for k in 0..cfg.keys {
            let key = format!("t{k}");
            let r = http
                .head(n.url(&format!("/v2/{REPO}/manifests/{key}")))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await;
            let v = match r {
                Ok(r) if r.status() == 200 => r
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string(),
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => format!("error {e}"),
            };
            view.insert(key, v);
        }
        views.push((n.region.clone(), view));
    }
    let converged = views.windows(2).all(|w| w[0].1 == w[1].1);
    checks.insert(
        "convergence".into(),
        if converged {
            "every region answers the same tags".into()
        } else {
            format!("regions disagree: {views:?}")
        },
    );
    if !converged {
        reasons.push(format!("regions disagree after healing: {views:?}"));
    }

    // Linearizability of every tag. The history is written first, so it
    // survives a checker that runs long.
    let history = record
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .history
        .clone();
    write_history(&cfg.out, &history)?;
    if cfg.reads == wharf_config::ReadConsistency::Linearizable {
        let report = linearizable::check(&history);
        checks.insert(
            "linearizability".into(),
            format!(
                "{} operations on {} tags: {}",
                report.operations,
                report.keys,
                if report.valid() {
                    "linearizable".to_string()
                } else {
                    format!("{} tags not linearizable", report.violations.len())
                }
            ),
        );
        for v in &report.violations {
            reasons.push(v.explanation.clone());
        }
    } else {
        let report = crate::local::check(
            &history,
            |ms| nemesis.faulty_at(ms, FAULT_GRACE_MS),
            LOCAL_STALENESS_BOUND_MS,
        );
        checks.insert(
            "local reads".into(),
            format!(
                "{} operations on {} tags: {} (misses never stale, monotonic reads, staleness within {LOCAL_STALENESS_BOUND_MS} ms outside faults; {} reads under faults not held to the bound)",
                report.operations,
                report.keys,
                if report.valid() {
                    "as promised".to_string()
                } else {
                    format!("{} violations", report.violations.len())
                },
                report.excused
            ),
        );
        for v in report.violations.iter().take(50) {
            reasons.push(v.clone());
        }
    }

    // Healing a partition elects nobody (pre-vote): the term after the
    // quiet time is the one the majority side had when the links came
    // back.
    let elected: Vec<_> = nemesis.heals.iter().filter(|h| h.elected()).collect();
    checks.insert(
        "heals".into(),
        format!(
            "{} partitions healed (isolate, split, silence; {} during an unsettled election, not judged): {}",
            nemesis.heals.len(),
            nemesis.heals.iter().filter(|h| h.term_before.is_none()).count(),
            if elected.is_empty() {
                "none raised the term".to_string()
            } else {
                format!("{} raised the term", elected.len())
            }
        ),
    );
    for h in elected {
        reasons.push(format!(
            "healing {} at {} ms caused an election: term {:?} on the majority side, {:?} after",
            h.fault, h.at_ms, h.term_before, h.term_after
        ));
    }

    let count = |o: Outcome| history.iter().filter(|h| h.outcome == o).count();
    let verdict = Verdict {
        valid: reasons.is_empty(),
        reasons,
        operations: history.len(),
        acknowledged_writes: acked.len(),
        unknown_outcomes: count(Outcome::Unknown),
        failed: count(Outcome::Failed),
        faults_injected: nemesis.injected,
        checks,
    };
    write_results(&cfg.out, cfg, &history, &nemesis, &verdict)?;
    Ok(verdict)
}

fn write_results(
    out: &Path,
    cfg: &RunConfig,
    history: &[crate::history::Operation],
    nemesis: &Nemesis,
    verdict: &Verdict,
) -> std::io::Result<()> {
    write_history(out, history)?;
    std::fs::write(
        out.join("nemesis.json"),
        serde_json::to_vec_pretty(&nemesis.timeline).unwrap_or_default(),
    )?;
    std::fs::write(
        out.join("verdict.json"),
        serde_json::to_vec_pretty(verdict).unwrap_or_default(),
    )?;
    let mut md = format!(
        "# Jepsen-style run: {}\n\n- regions: {} of {} node(s), clients per node: {}, tags: {}, duration: {:?}\n- faults: {:?} ({:?} each, {:?} quiet between)\n- operations: {}, acknowledged writes: {}, unknown outcomes: {}, failed: {}, faults injected: {}\n\n## Checks\n\n",
        if verdict.valid { "VALID" } else { "INVALID" },
        cfg.regions,
        cfg.nodes_per_region.max(1),
        cfg.clients_per_region,
        cfg.keys,
        cfg.duration,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        cfg.fault_for,
        cfg.quiet_for,
        verdict.operations,
        verdict.acknowledged_writes,
        verdict.unknown_outcomes,
        verdict.failed,
        verdict.faults_injected,
    );
    for (k, v) in &verdict.checks {
        md.push_str(&format!("- **{k}**: {v}\n"));
    }
    if !verdict.reasons.is_empty() {
        md.push_str("\n## Why it failed\n\n");
        for r in &verdict.reasons {
            md.push_str(&format!("- {r}\n"));
        }
    }
    md.push_str("\n## Nemesis timeline\n\n");
    for e in &nemesis.timeline {
        md.push_str(&format!(
            "- {:>8.1} s  {}\n",
            e.at_ms as f64 / 1000.0,
            e.action
        ));
    }
    std::fs::write(out.join("verdict.md"), md)
}

fn write_history(out: &Path, history: &[crate::history::Operation]) -> std::io::Result<()> {
    let mut h = String::new();
    for op in history {
        h.push_str(&serde_json::to_string(op).unwrap_or_default());
        h.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), h)
}
