//! `wharf drill region-outage`: rehearse the loss of a region against a
//! running cluster. The region is fenced (it stops serving and voting, as
//! if it went dark), probes keep pushing and pulling through the other
//! regions, the region is restored, and the report says how long writes
//! stopped, what failed, and how long the region took to catch up.

mod probe;
mod report;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wharf_api::{FenceRequest, FenceState};

use super::client::{Client, Connection};
use super::output::Format;
use crate::CliError as NodeError;
use probe::{Probe, Site};
use report::{AfterRestore, Limits, Report};

/// Exit status when the drill ran and missed an objective.
const EXIT_NOT_MET: i32 = 1;
/// Exit status when the drill could not run (or was interrupted).
const EXIT_NOT_RUN: i32 = 2;
/// A fence outlives the planned outage by this much, then lifts itself:
/// a drill killed half-way must not leave a region out for long.
const FENCE_MARGIN_S: u64 = 60;
/// Probes run this long before the fence, to compare against.
const LEAD_IN: Duration = Duration::from_secs(1);
/// How long to wait for the baseline's blobs to reach every region.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// Images pulled back from the restored region, at most.
const VERIFY_MAX: usize = 100;
/// Failed operations listed in the report, at most.
const FAILURES_LISTED: usize = 20;

#[derive(Args)]
pub struct DrillArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format (json: the whole report, for machines).
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Fence a region (it stops serving clients and voting), keep pushing
    /// and pulling through the others, restore it, and report. Exits 0
    /// when every objective is met, 1 when one is not, 2 when the drill
    /// could not run. Needs an owner's credentials.
    RegionOutage(OutageArgs),
    /// Lift a region's fence now (a fence also lifts itself when it
    /// expires: the planned outage plus a minute).
    Lift {
        /// The fenced region.
        #[arg(long)]
        region: String,
    },
}

#[derive(Args)]
struct OutageArgs {
    /// The region to take out.
    #[arg(long)]
    region: String,
    /// How long the region stays out.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    fence_s: u64,
    /// Probing of every region before the fence, as a reference.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    baseline_s: u64,
    /// Pushes per second and pulls per second, in each probed region.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// The repository the probes push to (deleted afterwards unless --keep).
    #[arg(long, default_value = "wharf-drill/probe")]
    repository: String,
    /// Objective: writes acknowledged again in every other region within
    /// this many seconds of the fence.
    #[arg(long, default_value_t = 3.0)]
    max_write_resume_s: f64,
    /// Objective: at most this many failed pulls in the other regions.
    #[arg(long, default_value_t = 0)]
    max_failed_pulls: u64,
    /// Objective: the restored region catches up (whole log applied, every
    /// blob copied) within this many seconds.
    #[arg(long, default_value_t = 120)]
    catch_up_timeout_s: u64,
    /// Run even if a region is already unhealthy (writes may stop).
    #[arg(long)]
    force: bool,
    /// Keep the probe repository afterwards.
    #[arg(long)]
    keep: bool,
}

/// A region as `GET /api/v1/replications` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RegionRow {
    pub(crate) region: String,
    node_id: u64,
    pub(crate) endpoint: String,
    pub(crate) health: String,
    role: Option<String>,
    lag: Option<u64>,
    blobs_to_copy: u64,
}

pub(crate) fn client_at(conn: &Connection, endpoint: &str) -> Result<Client, NodeError> {
    let mut c = conn.clone();
    c.endpoint = endpoint.to_string();
    Client::new(&c)
}

fn progress(format: Format, msg: &str) {
    // Progress goes to stderr so that --output json stays parseable.
    if !matches!(format, Format::Json) || std::env::var_os("WHARF_DRILL_VERBOSE").is_some() {
        eprintln!("drill: {msg}");
    }
}

/// Run a drill verb; the exit status to end with.
pub async fn run(args: DrillArgs) -> i32 {
    match args.verb {
        Verb::Lift { region } => match lift(&args.conn, &region).await {
            Ok(()) => {
                println!("Fence of {region} lifted.");
                0
            }
            Err(e) => {
                eprintln!("wharf drill: {e}");
                EXIT_NOT_RUN
            }
        },
        Verb::RegionOutage(o) => match outage(&args.conn, &o, args.output).await {
            Ok(report) => {
                match args.output {
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    ),
                    _ => report::print_text(&report),
                }
                if report.passed {
                    0
                } else {
                    EXIT_NOT_MET
                }
            }
            Err(e) => {
                eprintln!("wharf drill: {e}");
                EXIT_NOT_RUN
            }
        },
    }
}

pub(crate) async fn regions(client: &Client) -> Result<Vec<RegionRow>, NodeError> {
    client.get("/replications", &[]).await
}

async fn lift(conn: &Connection, region: &str) -> Result<(), NodeError> {
    let rows = regions(&Client::new(conn)?).await?;
    let row = rows
        .iter()
        .find(|r| r.region == region)
        .ok_or_else(|| NodeError::Api(format!("no region named {region}")))?;
    let _: FenceState = client_at(conn, &row.endpoint)?
        .delete("/fence", &[])
        .await?;
    Ok(())
}

/// Refuse a drill that would take the registry down rather than rehearse
/// the loss of one region.
fn check_preconditions(
    rows: &[RegionRow],
    target: &RegionRow,
    force: bool,
) -> Result<(), NodeError> {
    if rows.len() < 2 {
        return Err(NodeError::Api(
            "a single-region registry has no other region to fail over to".into(),
        ));
    }
    let voters: Vec<&RegionRow> = rows
        .iter()
        .filter(|r| matches!(r.role.as_deref(), Some("leader" | "follower" | "candidate")))
        .collect();
    let unhealthy: Vec<String> = rows
        .iter()
        .filter(|r| r.health != "ok")
        .map(|r| format!("{} ({})", r.region, r.health))
        .collect();
    if !unhealthy.is_empty() && !force {
        return Err(NodeError::Api(format!(
            "not every region is healthy: {}; fencing {} now could stop writes everywhere \
             (--force to run anyway)",
            unhealthy.join(", "),
            target.region
        )));
    }
    let left = voters
        .iter()
        .filter(|r| r.region != target.region && r.health == "ok")
        .count();
    let total = voters.len().max(rows.len());
    if left * 2 <= total && !force {
        return Err(NodeError::Api(format!(
            "without {} only {left} of {total} voting regions remain: no majority, so writes \
             would stop everywhere (--force to run anyway)",
            target.region
        )));
    }
    Ok(())
}

/// Probes running in some regions until told to stop.
struct Probes {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Probes {
    fn start(probe: &Arc<Probe>, sites: &[Site], rate: f64) -> Probes {
        let period = Duration::from_secs_f64(1.0 / rate);
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for site in sites {
            tasks.push(tokio::spawn(probe::pusher(
                probe.clone(),
                site.clone(),
                period,
                rx.clone(),
            )));
            tasks.push(tokio::spawn(probe::puller(
                probe.clone(),
                site.clone(),
                period,
                rx.clone(),
            )));
        }
        Probes { stop, tasks }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Wait until no region has blobs left to copy; the time it took.
async fn drained(client: &Client, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(rows) = regions(client).await {
            if rows.iter().all(|r| r.blobs_to_copy == 0) {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// The leader's last log index, as one of `clients` reports it.
async fn leader_log_index(clients: &[Client]) -> Option<u64> {
    for c in clients {
        if let Ok(s) = c.get::<wharf_consensus::Status>("/status", &[]).await {
            if s.role == "leader" {
                return Some(s.last_log_index);
            }
        }
    }
    None
}

/// From the restore until the region has applied the log the leader had
/// at the restore and holds every blob: how long it took.
async fn catch_up(
    target: &Client,
    survivors: &[Client],
    region: &str,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut goal = None;
    while started.elapsed() < timeout {
        if goal.is_none() {
            goal = leader_log_index(survivors).await;
        }
        let applied = target
            .get::<wharf_consensus::Status>("/status", &[])
            .await
            .ok()
            .map(|s| s.applied_index);
        let copied = match survivors.first() {
            Some(c) => regions(c)
                .await
                .ok()
                .and_then(|rows| rows.into_iter().find(|r| r.region == region))
                .is_some_and(|r| r.blobs_to_copy == 0 && r.lag.is_some()),
            None => false,
        };
        if let (Some(goal), Some(applied)) = (goal, applied) {
            if applied >= goal && copied {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Does the region refuse clients? (It must, while fenced.)
async fn answers_unavailable(probe: &Probe, base: &str) -> bool {
    let req = probe.client(base).request(reqwest::Method::GET, "/v2/");
    matches!(req.send().await, Ok(r) if r.status().as_u16() == 503)
}

/// Pull back from the restored region what it missed, and push through it.
async fn verify_restored(probe: &Probe, site: &Site, since_ms: u64) -> AfterRestore {
    let mut after = AfterRestore::default();
    let missed: Vec<probe::Image> = probe
        .images()
        .into_iter()
        .filter(|i| i.acked_ms >= since_ms && i.region != site.region)
        .take(VERIFY_MAX)
        .collect();
    for image in &missed {
        match probe.pull(&site.base, image).await {
            Ok(()) => after.pulls_ok += 1,
            Err(e) => {
                after.pulls_failed += 1;
                if after.errors.len() < 5 {
                    after.errors.push(format!("pull {}: {e}", image.tag));
                }
            }
        }
    }
    match probe
        .push(
            &site.region,
            &site.base,
            &format!("{}-restored", site.region),
        )
        .await
    {
        Ok(_) => after.push_ok = true,
        Err(e) => after.errors.push(format!("push: {e}")),
    }
    after
}

/// Sleep through the outage; Ctrl-C ends it early with an error (the
/// caller lifts the fence either way).
async fn hold(duration: Duration) -> Result<(), NodeError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = tokio::signal::ctrl_c() => Err(NodeError::Api("interrupted".into())),
    }
}

async fn outage(conn: &Connection, args: &OutageArgs, format: Format) -> Result<Report, NodeError> {
    if !(args.rate > 0.0 && args.rate <= 100.0) {
        return Err(NodeError::Config(
            "--rate must be above 0 and at most 100".into(),
        ));
    }
    wharf_oci::validate_repository(&args.repository)
        .map_err(|e| NodeError::Config(format!("--repository: {e}")))?;
    let entry = Client::new(conn)?;
    let rows = regions(&entry).await?;
    let target = rows
        .iter()
        .find(|r| r.region == args.region)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = rows.iter().map(|r| r.region.as_str()).collect();
            NodeError::Api(format!(
                "no region named {}; the regions are {}",
                args.region,
                names.join(", ")
            ))
        })?;
    check_preconditions(&rows, &target, args.force)?;
    let target_client = client_at(conn, &target.endpoint)?;
    // Fails now (not half-way) if these credentials may not fence.
    let _: FenceState = target_client.get("/fence", &[]).await?;
    let survivors: Vec<RegionRow> = rows
        .iter()
        .filter(|r| r.region != target.region && r.health == "ok")
        .cloned()
        .collect();
    let survivor_clients = survivors
        .iter()
        .map(|r| client_at(conn, &r.endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    let site = |r: &RegionRow| Site {
        region: r.region.clone(),
        base: r.endpoint.trim_end_matches('/').to_string(),
    };
    let target_site = site(&target);
    let survivor_sites: Vec<Site> = survivors.iter().map(site).collect();
    let all_sites: Vec<Site> = rows.iter().filter(|r| r.health == "ok").map(site).collect();

    let probe = Arc::new(Probe {
        http: crate::http_client(conn.cacert.as_deref())?,
        login: conn.login()?,
        repository: args.repository.clone(),
        t0: Instant::now(),
        ops: Mutex::new(Vec::new()),
        images: Mutex::new(Vec::new()),
    });

    progress(
        format,
        &format!(
            "baseline: probing {} regions for {} s",
            all_sites.len(),
            args.baseline_s
        ),
    );
    let baseline = Probes::start(&probe, &all_sites, args.rate);
    hold(Duration::from_secs(args.baseline_s)).await?;
    baseline.stop().await;
    let baseline_failures = probe.ops().iter().filter(|o| !o.ok).count() as u64;
    let drain = drained(&survivor_clients[0], DRAIN_TIMEOUT).await;
    progress(
        format,
        &match drain {
            Some(d) => format!(
                "baseline copied to every region in {:.2} s",
                d.as_secs_f64()
            ),
            None => "the mover did not copy the baseline everywhere in time; going on".into(),
        },
    );

    let outage_probes = Probes::start(&probe, &survivor_sites, args.rate);
    tokio::time::sleep(LEAD_IN).await;
    let was_leader = regions(&entry)
        .await
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.region == target.region))
        .is_some_and(|r| r.role.as_deref() == Some("leader"));
    progress(
        format,
        &format!(
            "fencing {} for {} s{}",
            target.region,
            args.fence_s,
            if was_leader {
                " (it leads the group)"
            } else {
                ""
            }
        ),
    );
    let fence_at_ms = probe.ms();
    let fenced: Result<FenceState, NodeError> = target_client
        .send_json(
            reqwest::Method::PUT,
            "/fence",
            &[],
            &FenceRequest {
                seconds: args.fence_s + FENCE_MARGIN_S,
            },
        )
        .await;
    if let Err(e) = fenced {
        outage_probes.stop().await;
        return Err(e);
    }
    let fence_verified = answers_unavailable(&probe, &target_site.base).await;
    let held = hold(Duration::from_secs(args.fence_s)).await;
    // Whatever happened, bring the region back (the fence would expire
    // by itself, later).
    let mut lifted: Result<FenceState, NodeError> = Err(NodeError::Api("not tried".into()));
    for _ in 0..10 {
        lifted = target_client.delete("/fence", &[]).await;
        if lifted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restore_at_ms = probe.ms();
    outage_probes.stop().await;
    held?;
    lifted.map_err(|e| NodeError::Api(format!("lifting the fence of {}: {e}", target.region)))?;
    progress(
        format,
        &format!("restored {}; waiting for it to catch up", target.region),
    );

    let caught = catch_up(
        &target_client,
        &survivor_clients,
        &target.region,
        Duration::from_secs(args.catch_up_timeout_s),
    )
    .await;
    let after_restore = if caught.is_some() {
        verify_restored(&probe, &target_site, fence_at_ms).await
    } else {
        AfterRestore {
            errors: vec!["not checked: the region did not catch up".into()],
            ..AfterRestore::default()
        }
    };
    if !args.keep {
        let removed: Result<wharf_api::Removed, NodeError> = survivor_clients[0]
            .delete("/repositories", &[("repository", args.repository.clone())])
            .await;
        if let Err(e) = removed {
            progress(
                format,
                &format!("could not delete {}: {e}", args.repository),
            );
        }
    }

    let ops = probe.ops();
    let regions_stats: Vec<report::RegionStats> = survivors
        .iter()
        .map(|r| report::region_stats(&ops, &r.region, fence_at_ms, restore_at_ms))
        .collect();
    let mut report = Report {
        drill: "region-outage",
        region: target.region.clone(),
        node_id: target.node_id,
        was_leader,
        fence_verified,
        fence_at_ms,
        restore_at_ms,
        baseline_drain_ms: drain.map(|d| d.as_millis() as u64),
        baseline_failures,
        writes_resumed_ms: regions_stats
            .iter()
            .filter_map(|s| s.writes_resumed_ms)
            .max(),
        regions: regions_stats,
        catch_up_ms: caught.map(|d| d.as_millis() as u64),
        after_restore,
        failures: ops
            .into_iter()
            .filter(|o| !o.ok)
            .take(FAILURES_LISTED)
            .collect(),
        objectives: Vec::new(),
        passed: false,
    };
    report::judge(
        &mut report,
        &Limits {
            max_write_resume_ms: (args.max_write_resume_s * 1000.0) as u64,
            max_failed_pulls: args.max_failed_pulls,
            catch_up_timeout_ms: args.catch_up_timeout_s * 1000,
        },
    );
    Ok(report)
}
