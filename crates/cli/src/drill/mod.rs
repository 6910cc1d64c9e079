//! `wharf drill region-outage` / `node-outage`: rehearse the loss of a
//! region, or of one node of a region with several, against a running
//! cluster. What is taken out is fenced (it stops serving and voting, as
//! if it went dark), probes keep pushing and pulling through every node
//! left (for a node outage, its region's other nodes among them), it is
//! restored, and the report says how long writes stopped, what failed, and
//! how long it took to catch up.

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
    /// The same for one node of a region that has several: fence the node
    /// (by default the one running the region's mover), keep probing
    /// through the region's other nodes and every other region, restore
    /// it. Objectives: no failed pull, writes acknowledged again within
    /// the bound (at once unless the node led the group).
    NodeOutage(NodeOutageArgs),
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

#[derive(Args)]
struct NodeOutageArgs {
    #[command(flatten)]
    outage: OutageArgs,
    /// The node to take out (its id in `wharf replication list`); by
    /// default the region's worker.
    #[arg(long)]
    node: Option<u64>,
}

/// A node as `GET /api/v1/replications` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RegionRow {
    pub(crate) region: String,
    node_id: u64,
    pub(crate) endpoint: String,
    pub(crate) health: String,
    role: Option<String>,
    lag: Option<u64>,
    blobs_to_copy: u64,
    #[serde(default)]
    worker: bool,
}

/// What a drill takes out, and where it probes meanwhile.
struct Scenario {
    drill: &'static str,
    region: String,
    /// Fenced, then restored.
    targets: Vec<RegionRow>,
    /// Probed during the outage (each its own site).
    probed: Vec<RegionRow>,
    /// Sites are named after nodes, not regions (several per region).
    per_node: bool,
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
        verb @ (Verb::RegionOutage(_) | Verb::NodeOutage(_)) => {
            match drill(&args.conn, verb, args.output).await {
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
            }
        }
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

/// What `verb` takes out of the cluster `rows` describes.
fn scenario(rows: &[RegionRow], verb: &Verb) -> Result<Scenario, NodeError> {
    let (args, node) = match verb {
        Verb::RegionOutage(a) => (a, None),
        Verb::NodeOutage(n) => (&n.outage, Some(n.node)),
        Verb::Lift { .. } => return Err(NodeError::Api("not a drill".into())),
    };
    let in_region: Vec<RegionRow> = rows
        .iter()
        .filter(|r| r.region == args.region)
        .cloned()
        .collect();
    if in_region.is_empty() {
        let mut names: Vec<&str> = rows.iter().map(|r| r.region.as_str()).collect();
        names.dedup();
        return Err(NodeError::Api(format!(
            "no region named {}; the regions are {}",
            args.region,
            names.join(", ")
        )));
    }
    let Some(node) = node else {
        // A region outage takes every node of the region.
        let probed = rows
            .iter()
            .filter(|r| r.region != args.region && r.health == "ok")
            .cloned()
            .collect();
        let s = Scenario {
            drill: "region-outage",
            region: args.region.clone(),
            targets: in_region,
            probed,
            per_node: false,
        };
        return Ok(s);
    };
    if in_region.len() < 2 {
        return Err(NodeError::Api(format!(
            "{} has one node: its outage is the region's (wharf drill region-outage)",
            args.region
        )));
    }
    let target = match node {
        Some(id) => in_region
            .iter()
            .find(|r| r.node_id == id)
            .cloned()
            .ok_or_else(|| {
                let ids: Vec<String> = in_region.iter().map(|r| r.node_id.to_string()).collect();
                NodeError::Api(format!(
                    "{} has no node {id}; its nodes are {}",
                    args.region,
                    ids.join(", ")
                ))
            })?,
        None => in_region
            .iter()
            .find(|r| r.worker)
            .or_else(|| in_region.first())
            .cloned()
            .expect("two nodes at least"),
    };
    let probed = rows
        .iter()
        .filter(|r| r.node_id != target.node_id && r.health == "ok")
        .cloned()
        .collect();
    let s = Scenario {
        drill: "node-outage",
        region: args.region.clone(),
        targets: vec![target],
        probed,
        per_node: true,
    };
    Ok(s)
}

/// Refuse a drill that would take the registry down rather than rehearse
/// the loss of what it takes out.
fn check_preconditions(
    rows: &[RegionRow],
    targets: &[RegionRow],
    force: bool,
) -> Result<(), NodeError> {
    let target = &targets[0];
    let taken = |r: &RegionRow| targets.iter().any(|t| t.node_id == r.node_id);
    if rows.len() <= targets.len() {
        return Err(NodeError::Api(
            "nothing would be left to fail over to".into(),
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
        .filter(|r| !taken(r) && r.health == "ok")
        .count();
    let total = voters.len().max(rows.len());
    if left * 2 <= total && !force {
        return Err(NodeError::Api(format!(
            "without {} only {left} of {total} voters remain: no majority, so writes \
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

async fn drill(conn: &Connection, verb: Verb, format: Format) -> Result<Report, NodeError> {
    let args = match &verb {
        Verb::RegionOutage(a) => a,
        Verb::NodeOutage(n) => &n.outage,
        Verb::Lift { .. } => return Err(NodeError::Api("not a drill".into())),
    };
    if !(args.rate > 0.0 && args.rate <= 100.0) {
        return Err(NodeError::Config(
            "--rate must be above 0 and at most 100".into(),
        ));
    }
    wharf_oci::validate_repository(&args.repository)
        .map_err(|e| NodeError::Config(format!("--repository: {e}")))?;
    let entry = Client::new(conn)?;
    let rows = regions(&entry).await?;
    let plan = scenario(&rows, &verb)?;
    check_preconditions(&rows, &plan.targets, args.force)?;
    let target = plan.targets[0].clone();
    let target_clients = plan
        .targets
        .iter()
        .map(|t| client_at(conn, &t.endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    let target_client = &target_clients[0];
    // Fails now (not half-way) if these credentials may not fence.
    let _: FenceState = target_client.get("/fence", &[]).await?;
    let survivors = plan.probed.clone();
    if survivors.is_empty() {
        return Err(NodeError::Api("no healthy node is left to probe".into()));
    }
    let survivor_clients = survivors
        .iter()
        .map(|r| client_at(conn, &r.endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    let per_node = plan.per_node;
    let site = |r: &RegionRow| Site {
        region: if per_node {
            format!("{}-n{}", r.region, r.node_id)
        } else {
            r.region.clone()
        },
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
    let was_leader = regions(&entry).await.ok().is_some_and(|rows| {
        rows.into_iter().any(|r| {
            plan.targets.iter().any(|t| t.node_id == r.node_id)
                && r.role.as_deref() == Some("leader")
        })
    });
    let what = if per_node {
        format!("node {} of {}", target.node_id, plan.region)
    } else {
        plan.region.clone()
    };
    progress(
        format,
        &format!(
            "fencing {what} for {} s{}",
            args.fence_s,
            if was_leader {
                " (it leads the group)"
            } else {
                ""
            }
        ),
    );
    let fence_at_ms = probe.ms();
    for c in &target_clients {
        let fenced: Result<FenceState, NodeError> = c
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
            for c in &target_clients {
                let _: Result<FenceState, NodeError> = c.delete("/fence", &[]).await;
            }
            outage_probes.stop().await;
            return Err(e);
        }
    }
    let mut fence_verified = true;
    for t in &plan.targets {
        fence_verified &= answers_unavailable(&probe, t.endpoint.trim_end_matches('/')).await;
    }
    let held = hold(Duration::from_secs(args.fence_s)).await;
    // Whatever happened, bring the region back (the fence would expire
    // by itself, later).
    let mut lifted: Result<(), NodeError> = Ok(());
    for c in &target_clients {
        let mut this: Result<FenceState, NodeError> = Err(NodeError::Api("not tried".into()));
        for _ in 0..10 {
            this = c.delete("/fence", &[]).await;
            if this.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Err(e) = this {
            lifted = Err(e);
        }
    }
    let restore_at_ms = probe.ms();
    outage_probes.stop().await;
    held?;
    lifted.map_err(|e| NodeError::Api(format!("lifting the fence of {what}: {e}")))?;
    progress(
        format,
        &format!("restored {what}; waiting for it to catch up"),
    );

    let mut caught = Some(Duration::ZERO);
    for c in &target_clients {
        let this = catch_up(
            c,
            &survivor_clients,
            &target.region,
            Duration::from_secs(args.catch_up_timeout_s),
        )
        .await;
        caught = caught.zip(this).map(|(a, b)| a.max(b));
    }
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
    let regions_stats: Vec<report::RegionStats> = survivor_sites
        .iter()
        .map(|s| report::region_stats(&ops, &s.region, fence_at_ms, restore_at_ms))
        .collect();
    let mut report = Report {
        drill: plan.drill,
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
