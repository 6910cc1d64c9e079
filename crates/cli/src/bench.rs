//! `wharf bench replication`: replication latency of a live cluster, as an
//! operator measures their own deployment. From each region it pushes
//! probe images of the sizes asked, one at a time, and from the push's
//! acknowledgement times, in every other region, when the manifest is
//! served there and when every blob of the image is local there (the
//! region's own view of the replicated blob index). The result is a region
//! × region matrix with p50 and p99; the probe repository is removed
//! afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use wharf_client::OciClient;

use super::client::{Client, Connection};
use super::drill::{client_at, regions, RegionRow};
use super::output::{self, Format};
use crate::CliError;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format (json: every figure, for machines).
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Push probe images from every region (or --from) and report, for
    /// every other region, the time from the push's acknowledgement to the
    /// manifest being served there and to every blob being local there
    /// (p50, p99). Needs push and delete rights on --repository; says how
    /// much it uploads before it starts.
    Replication(ReplicationArgs),
}

#[derive(Args)]
struct ReplicationArgs {
    /// Push only from these regions (repeat, or comma-separate); default:
    /// every healthy region.
    #[arg(long, value_delimiter = ',')]
    from: Vec<String>,
    /// Sizes of the probe images' layer (`1MiB,100MiB`).
    #[arg(long, value_delimiter = ',', default_value = "1MiB")]
    size: Vec<String>,
    /// Probe images per region and size.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// The probe repository (removed at the end unless --keep).
    #[arg(long, default_value = "wharf-bench/replication")]
    repository: String,
    /// Give up on one probe reaching a region after this long.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Keep the probe repository.
    #[arg(long)]
    keep: bool,
}

/// How often a region is asked whether a probe arrived: the resolution
/// of the figures (and the load the measuring adds).
const POLL: Duration = Duration::from_millis(10);
/// The blob index is asked less often (a heavier query).
const POLL_BLOBS: Duration = Duration::from_millis(25);

/// One (from, to, size) cell of the matrix.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    from: String,
    to: String,
    size_bytes: u64,
    size: String,
    manifest_ms: Figures,
    blobs_local_ms: Figures,
    samples: usize,
    /// Probes that did not reach the region in time.
    timed_out: usize,
}

/// What one (from, to, size) cell gathered, in ms.
#[derive(Default)]
struct Samples {
    manifest: Vec<f64>,
    local: Vec<f64>,
    timed_out: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Figures {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

/// Nearest-rank percentiles of `samples` (ms).
fn figures(samples: &[f64]) -> Figures {
    if samples.is_empty() {
        return Figures::default();
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Figures {
        p50: Some(rank(0.50)),
        p99: Some(rank(0.99)),
        max: s.last().copied(),
    }
}

fn parse_size(s: &str) -> Result<u64, CliError> {
    match wharf_api::parse_size(s) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(CliError::Config(format!(
            "--size {s:?}: a size such as 1MiB or 100MiB"
        ))),
    }
}

/// Progress goes to stderr, so that `-o json` stays parseable.
fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    match args.verb {
        Verb::Replication(r) => replication(&args.conn, &r, args.output).await,
    }
}

async fn replication(
    conn: &Connection,
    args: &ReplicationArgs,
    format: Format,
) -> Result<(), CliError> {
    wharf_oci::validate_repository(&args.repository)
        .map_err(|e| CliError::Config(format!("--repository: {e}")))?;
    if args.count == 0 {
        return Err(CliError::Config("--count must be at least 1".into()));
    }
    let sizes = args
        .size
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<Vec<_>, _>>()?;
    let entry = Client::new(conn)?;
    let rows: Vec<RegionRow> = regions(&entry)
        .await?
        .into_iter()
        .filter(|r| r.health == "ok")
        .collect();
    if rows.len() < 2 {
        return Err(CliError::Api(format!(
            "replication needs at least two healthy regions; this cluster has {}",
            rows.len()
        )));
    }
    for f in &args.from {
        if !rows.iter().any(|r| &r.region == f) {
            let names: Vec<&str> = rows.iter().map(|r| r.region.as_str()).collect();
            return Err(CliError::Config(format!(
                "--from {f}: not a healthy region; they are {}",
                names.join(", ")
            )));
        }
    }
    let sources: Vec<&RegionRow> = rows
        .iter()
        .filter(|r| args.from.is_empty() || args.from.contains(&r.region))
        .collect();
    let http = crate::http_client(conn.cacert.as_deref())?;
    let login = conn.login()?;
    let oci = |base: &str| {
        let c = OciClient::new(http.clone(), base.trim_end_matches('/'))
            .with_timeout(Duration::from_secs(args.timeout_s.max(10)));
        match &login {
            Some((u, p)) => c.with_login(u, p),
            None => c,
        }
    };
    check_push_rights(&oci(&sources[0].endpoint), &args.repository).await?;

    let probes = sources.len() * sizes.len() * args.count;
    let upload: u64 = sizes.iter().sum::<u64>() * (sources.len() * args.count) as u64;
    progress(
        &format!(
            "pushing {probes} probe images ({} from each of {} regions, layers of {}) into {}: {} uploaded, each copied into {} other regions",
            sizes.len() * args.count,
            sources.len(),
            sizes
                .iter()
                .map(|s| output::size(*s))
                .collect::<Vec<_>>()
                .join(", "),
            args.repository,
            output::size(upload),
            rows.len() - 1,
        ),
    );

    let mut samples: BTreeMap<(String, String, u64), Samples> = BTreeMap::new();
    let timeout = Duration::from_secs(args.timeout_s);
    let mut n = 0;
    let mut suffix = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut suffix);
    let run_id = hex::encode(suffix);
    for source in &sources {
        for &size in &sizes {
            for i in 0..args.count {
                n += 1;
                let tag = format!("{}-{size}-{i}-{run_id}", source.region);
                let mut layer = vec![0u8; size as usize];
                rand::thread_rng().fill_bytes(&mut layer);
                let config = serde_json::to_vec(&json!({
                    "architecture": "amd64", "os": "linux",
                    "config": {"Labels": {"wharf.bench.probe": tag}},
                    "rootfs": {"type": "layers", "diff_ids": []},
                }))
                .map_err(|e| CliError::Api(e.to_string()))?;
                let pushed = oci(&source.endpoint)
                    .push_image(&args.repository, &tag, config, vec![layer])
                    .await
                    .map_err(|e| {
                        CliError::Api(format!("pushing a probe through {}: {e}", source.region))
                    })?;
                let acked = Instant::now();
                let blobs: Vec<String> = pushed.blobs.iter().map(|d| d.to_string()).collect();
                let waits = rows
                    .iter()
                    .filter(|r| r.region != source.region)
                    .map(|target| {
                        let (oci, mgmt) =
                            (oci(&target.endpoint), client_at(conn, &target.endpoint));
                        let (repo, tag, blobs) =
                            (args.repository.clone(), tag.clone(), blobs.clone());
                        let region = target.region.clone();
                        async move {
                            let mgmt = mgmt.ok()?;
                            let arrived = tokio::time::timeout(
                                timeout,
                                arrival(&oci, &mgmt, &repo, &tag, &blobs, &region, acked),
                            )
                            .await
                            .ok();
                            Some((region, arrived))
                        }
                    });
                let mut line = Vec::new();
                for (region, arrived) in
                    futures::future::join_all(waits).await.into_iter().flatten()
                {
                    let cell = samples
                        .entry((source.region.clone(), region.clone(), size))
                        .or_default();
                    match arrived {
                        Some((manifest, local)) => {
                            cell.manifest.push(ms(manifest));
                            cell.local.push(ms(local));
                            line.push(format!(
                                "{region} served it after {:.0} ms, held it after {:.0} ms",
                                ms(manifest),
                                ms(local)
                            ));
                        }
                        None => {
                            cell.timed_out += 1;
                            line.push(format!("{region} timed out"));
                        }
                    }
                }
                progress(&format!(
                    "probe {n}/{probes} from {} ({}): {}",
                    source.region,
                    output::size(size),
                    line.join("; ")
                ));
            }
        }
    }

    if !args.keep {
        let removed: Result<wharf_api::Removed, _> = entry
            .delete("/repositories", &[("repository", args.repository.clone())])
            .await;
        if let Err(e) = removed {
            eprintln!(
                "bench: could not remove {} ({e}); remove it with `wharf repository delete --repository {} --yes`",
                args.repository, args.repository
            );
        }
    }

    let cells: Vec<Cell> = samples
        .into_iter()
        .map(|((from, to, size), s)| Cell {
            from,
            to,
            size_bytes: size,
            size: output::size(size),
            manifest_ms: figures(&s.manifest),
            blobs_local_ms: figures(&s.local),
            samples: s.manifest.len(),
            timed_out: s.timed_out,
        })
        .collect();
    let timed_out: usize = cells.iter().map(|c| c.timed_out).sum();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "repository": args.repository,
                "count": args.count,
                "results": cells,
            }))
            .unwrap_or_default()
        ),
        _ => {
            let cell = |f: Option<f64>| f.map_or("-".to_string(), |v| format!("{v:.0}"));
            let rows: Vec<serde_json::Value> = cells
                .iter()
                .map(|c| {
                    json!({
                        "from": c.from, "to": c.to, "size": c.size,
                        "m50": cell(c.manifest_ms.p50), "m99": cell(c.manifest_ms.p99),
                        "b50": cell(c.blobs_local_ms.p50), "b99": cell(c.blobs_local_ms.p99),
                        "n": c.samples, "lost": c.timed_out,
                    })
                })
                .collect();
            output::print(
                format,
                &rows,
                &[
                    ("FROM", "from"),
                    ("TO", "to"),
                    ("SIZE", "size"),
                    ("MANIFEST P50 MS", "m50"),
                    ("MANIFEST P99 MS", "m99"),
                    ("BLOBS LOCAL P50 MS", "b50"),
                    ("BLOBS LOCAL P99 MS", "b99"),
                    ("SAMPLES", "n"),
                    ("TIMED OUT", "lost"),
                ],
            );
        }
    }
    if timed_out > 0 {
        return Err(CliError::Api(format!(
            "{timed_out} probe arrivals did not happen within {} s",
            args.timeout_s
        )));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Refuse at once (not after the first probe) if these credentials may
/// not push to `repo`: open an upload session and cancel it.
async fn check_push_rights(oci: &OciClient, repo: &str) -> Result<(), CliError> {
    let r = oci
        .request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| CliError::Api(e.to_string()))?;
    match r.status().as_u16() {
        202 => {
            if let Some(loc) = r.headers().get("location").and_then(|l| l.to_str().ok()) {
                let path = loc.strip_prefix(oci.base()).unwrap_or(loc).to_string();
                let _ = oci.request(reqwest::Method::DELETE, &path).send().await;
            }
            Ok(())
        }
        401 | 403 => Err(CliError::Api(format!(
            "these credentials may not push to {repo}: the benchmark pushes probe images there (and deletes it after)"
        ))),
        s => Err(CliError::Api(format!(
            "checking push rights on {repo}: HTTP {s}"
        ))),
    }
}

/// After `acked`: when the region served the manifest, and when its blob
/// index had every blob in it.
async fn arrival(
    oci: &OciClient,
    mgmt: &Client,
    repo: &str,
    tag: &str,
    blobs: &[String],
    region: &str,
    acked: Instant,
) -> (Duration, Duration) {
    loop {
        if oci.get_manifest(repo, tag).await.is_ok() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let manifest = acked.elapsed();
    let image = format!("{repo}:{tag}");
    loop {
        let detail: Result<wharf_api::ImageDetail, _> = mgmt
            .get(
                "/images",
                &[("image", image.clone()), ("replication", "true".into())],
            )
            .await;
        if let Ok(d) = detail {
            let held = |digest: &String| {
                d.layers.iter().any(|l| {
                    &l.digest == digest
                        && l.regions
                            .as_ref()
                            .is_some_and(|rs| rs.iter().any(|r| r == region))
                })
            };
            if blobs.iter().all(held) {
                return (manifest, acked.elapsed());
            }
        }
        tokio::time::sleep(POLL_BLOBS).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let f = figures(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((f.p50, f.p99, f.max), (Some(3.0), Some(5.0), Some(5.0)));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let f = figures(&hundred);
        assert_eq!((f.p50, f.p99), (Some(50.0), Some(99.0)));
        assert_eq!(figures(&[]).p50, None);
    }

    #[test]
    fn sizes_take_units_and_refuse_nonsense() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100 MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
