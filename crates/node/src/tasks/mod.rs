//! Build task runs on this node: the agent (on nodes with `tasks.agent`)
//! that claims queued runs and runs them with `wharf-tasks`' run loop and
//! executor, and the expiry (on the leader) that takes a run away from an
//! agent that stopped renewing its lease.
//!
//! A run acts for whoever queued it: the agent issues that subject a
//! refresh token and writes it as the identity token of a `DOCKER_CONFIG`
//! of the run's own, so the engine pulls with the requester's rights and
//! no one else's; the directory (and the token) is removed when the run
//! ends, and the token is masked in the run's log.
//!
//! Logs are files on the agent's disk, `runs/<registry>/<id>.log` under
//! the data directory, kept `tasks.log_retention_days`; other nodes
//! forward a log request to the agent that has it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wharf_config::TasksConfig;
use wharf_consensus::now_unix_ms;
use wharf_meta::{Command, Response, RunCommand, RunRecord, RunStatus, StepStatus};
use wharf_tasks::runner::{self, LogSink, Masking, Renewal, RunEnd};
use wharf_tasks::{RunValues, StepState, TaskSpec};

use crate::shutdown::Stop;
use crate::state::App;

pub mod artifacts;
pub mod context;
pub mod log_store;

/// How often an idle agent looks for queued runs, besides after every
/// applied command (a queued run is seen as soon as it applies here).
const POLL: Duration = Duration::from_secs(1);
/// How often logs past their retention are removed.
const LOG_SWEEP: Duration = Duration::from_secs(3600);

/// The directory of a registry's run logs.
pub fn log_dir(data_dir: &Path, registry: &str) -> PathBuf {
    data_dir.join("runs").join(registry)
}

pub fn log_path(data_dir: &Path, registry: &str, id: &str) -> PathBuf {
    log_dir(data_dir, registry).join(format!("{id}.log"))
}

/// `host:port` of a node's HTTP URL.
pub(crate) fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// `host:port` of this node's HTTP API: what `$Registry` is on it for
/// registry `registry` (the default one by address; another by its name
/// under `registry_domain`, which its clients resolve to the node).
pub fn login_server(app: &crate::state::AppState, registry: &str) -> Result<String, String> {
    let host = host_of(&context::own_url(app).unwrap_or_default());
    if registry == wharf_meta::DEFAULT_REGISTRY {
        return Ok(host);
    }
    let Some(domain) = &app.registry_domain else {
        return Err(format!(
            "registry {registry} has no login server on this node: set registry_domain"
        ));
    };
    let port = host.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    Ok(if port.is_empty() {
        format!("{registry}.{domain}")
    } else {
        format!("{registry}.{domain}:{port}")
    })
}

async fn propose(app: &App, registry: &str, cmd: RunCommand) -> Result<Response, String> {
    let env = wharf_registry::envelope(registry, Command::Run(cmd), None);
    app.consensus.write(env).await.map_err(|e| e.to_string())
}

/// The names of this node's run containers start with this, then the
/// run's id: a node's leftovers are found without touching another's.
fn container_prefix(node: u64, run: &str) -> String {
    format!("wharf-n{node}-{run}")
}

/// Remove the run containers an earlier life of this node left running
/// (it was killed mid-run; its runs were queued again or failed).
async fn remove_leftovers(node: u64) {
    let prefix = format!("wharf-n{node}-");
    let listed = tokio::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name=^{prefix}"))
        .output()
        .await;
    let Ok(out) = listed else {
        tracing::warn!("the task agent cannot run docker: its runs will fail");
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        if name.starts_with(&prefix) {
            tracing::info!(
                container = name,
                "removing a run container an earlier start left"
            );
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "--force", name])
                .output()
                .await;
        }
    }
}

/// Claim and run queued runs, at most `cfg.concurrency` at once.
pub async fn agent(app: App, cfg: TasksConfig, mut stop: Stop) {
    let me = app.consensus.node_id();
    remove_leftovers(me).await;
    let buildkit = wharf_tasks::docker::buildx_available(Path::new("docker")).await;
    if !buildkit {
        tracing::info!("docker has no buildx: builds use the classic builder");
    }
    let mut running = tokio::task::JoinSet::new();
    let mut sweep = tokio::time::interval(LOG_SWEEP);
    let mut applied = app.consensus.applied_watch();
    loop {
        tokio::select! {
            // The queue is a scan of the live runs only: cheap per apply.
            r = applied.changed() => {
                if r.is_err() {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = sweep.tick() => sweep_logs(&app.data_dir, cfg.log_retention_days),
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stop.wait() => break,
        }
        let queued: Vec<(String, RunRecord)> = match app.consensus.meta().active_runs() {
            Ok(runs) => runs
                .into_iter()
                .filter(|(_, r)| r.status == RunStatus::Queued)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the run queue");
                continue;
            }
        };
        for (registry, run) in queued {
            if running.len() >= cfg.concurrency {
                break;
            }
            let claim = RunCommand::Claim {
                id: run.id.clone(),
                agent: me,
                lease_ms: cfg.lease_s * 1000,
            };
            match propose(&app, &registry, claim).await {
                Ok(Response::Changed(1)) => {
                    tracing::info!(run = %run.id, registry, "claimed a run");
                    let (app, cfg) = (app.clone(), cfg.clone());
                    running.spawn(async move { run_one(app, cfg, registry, run, buildkit).await });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(run = %run.id, error = %e, "claiming a run"),
            }
        }
    }
    // Stopping: the runs' containers go with their steps' tokens; their
    // leases run out and another agent takes them.
    running.shutdown().await;
}

/// On the leader: expire the leases agents stopped renewing, and (every
/// `LOG_SWEEP`) the run logs kept past their retention.
pub async fn expirer(app: App, cfg: TasksConfig, mut stop: Stop) {
    let every = Duration::from_secs((cfg.lease_s / 3).max(1));
    let mut logs = tokio::time::interval(LOG_SWEEP);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = logs.tick() => {
                if app.consensus.is_leader() {
                    log_store::expire(&app, cfg.log_retention_days).await;
                }
                continue;
            }
            _ = stop.wait() => break,
        }
        if !app.consensus.is_leader() {
            continue;
        }
        let now = now_unix_ms();
        let Ok(runs) = app.consensus.meta().active_runs() else {
            continue;
        };
        let mut registries: Vec<String> = runs
            .into_iter()
            .filter(|(_, r)| r.status == RunStatus::Running && r.lease_until_ms < now)
            .map(|(reg, _)| reg)
            .collect();
        registries.dedup();
        for registry in registries {
            match propose(&app, &registry, RunCommand::ExpireRuns).await {
                Ok(Response::Changed(n)) if n > 0 => {
                    tracing::warn!(
                        registry,
                        runs = n,
                        "took runs from agents that stopped renewing"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "expiring runs"),
            }
        }
    }
}

/// How often the leader looks for due timers: a timer fires within this
/// of its minute.
const TIMER_TICK: Duration = Duration::from_secs(5);

/// On the leader: fire the task timers whose scheduled minute came. The
/// apply queues a run only for a minute later than the timer's last, so a
/// repeat (a new leader, a retried proposal) queues nothing; a minute
/// missed while no leader ran is not made up, only the latest one.
pub async fn timers(app: App, mut stop: Stop) {
    // When this leader last polled each task's git ref: not replicated (a
    // new leader polls at once, and the apply ignores a commit seen).
    let mut polled = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TIMER_TICK) => {}
            _ = stop.wait() => break,
        }
        if !app.consensus.is_leader() {
            continue;
        }
        let tasks = match app.consensus.meta().timed_tasks() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading task timers");
                continue;
            }
        };
        let now = chrono::Utc::now();
        for (registry, task) in tasks.iter().filter(|(_, t)| t.enabled && t.poll_s > 0) {
            let key = (registry.clone(), task.name.clone());
            let due = polled
                .get(&key)
                .is_none_or(|at: &std::time::Instant| at.elapsed().as_secs() >= task.poll_s);
            if due {
                polled.insert(key, std::time::Instant::now());
                poll_source(&app, registry, task).await;
            }
        }
        for (registry, task) in tasks.into_iter().filter(|(_, t)| t.enabled) {
            for timer in task.timers.iter().filter(|t| t.enabled) {
                let Ok(cron) = crate::api::tasks::parse_schedule(&timer.schedule) else {
                    continue;
                };
                let Ok(due) = cron.find_previous_occurrence(&now, true) else {
                    continue;
                };
                let minute = u64::try_from(due.timestamp()).unwrap_or(0) / 60;
                if minute <= timer.last_fired_min {
                    continue;
                }
                let fire = wharf_meta::TaskCommand::Fire {
                    name: task.name.clone(),
                    timer: timer.name.clone(),
                    minute,
                };
                let env = wharf_registry::envelope(&registry, Command::Task(fire), None);
                match app.consensus.write(env).await {
                    Ok(Response::Changed(n)) if n > 0 => tracing::info!(
                        registry,
                        task = %task.name,
                        timer = %timer.name,
                        run = %wharf_meta::run_id(&registry, n),
                        "a timer queued a run"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "firing a timer"),
                }
            }
        }
    }
}

/// How long a poll's `git ls-remote` may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Ask `task`'s git context for the commit at its ref and report it: the
/// apply queues a run when it is new.
async fn poll_source(app: &App, registry: &str, task: &wharf_meta::TaskRecord) {
    let Some(Ok(wharf_tasks::context::Source::Git { url, reference, .. })) = task
        .context
        .as_deref()
        .map(wharf_tasks::context::Source::parse)
    else {
        return;
    };
    let reference = reference.unwrap_or_else(|| "HEAD".into());
    let listed = tokio::time::timeout(
        POLL_TIMEOUT,
        tokio::process::Command::new("git")
            .args(["ls-remote", "--", &url, &reference])
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await;
    let out = match listed {
        Ok(Ok(o)) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(Ok(o)) => {
            let why = String::from_utf8_lossy(&o.stderr).into_owned();
            tracing::warn!(registry, task = %task.name, url, why, "polling a task's git ref failed");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(registry, task = %task.name, error = %e, "running git to poll a task's ref");
            return;
        }
        Err(_) => {
            tracing::warn!(registry, task = %task.name, url, "polling a task's git ref timed out");
            return;
        }
    };
    // `<commit>\t<ref>`: the branch's (or tag's) line, else the first.
    let line = out
        .lines()
        .find(|l| {
            l.ends_with(&format!("refs/heads/{reference}"))
                || l.ends_with(&format!("refs/tags/{reference}"))
        })
        .or_else(|| out.lines().next());
    let Some(commit) = line.and_then(|l| l.split_whitespace().next()) else {
        // A commit id as the ref: nothing moves.
        return;
    };
    let seen = wharf_meta::TaskCommand::SourceSeen {
        name: task.name.clone(),
        commit: commit.to_string(),
        branch: reference.clone(),
    };
    let env = wharf_registry::envelope(registry, Command::Task(seen), None);
    match app.consensus.write(env).await {
        Ok(Response::Changed(n)) if n > 0 => tracing::info!(
            registry,
            task = %task.name,
            commit,
            run = %wharf_meta::run_id(registry, n),
            "a new commit queued a run"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "reporting a polled commit"),
    }
}

fn sweep_logs(data_dir: &Path, days: u32) {
    let keep = Duration::from_secs(u64::from(days) * 86_400);
    let Ok(registries) = std::fs::read_dir(data_dir.join("runs")) else {
        return;
    };
    for reg in registries.flatten() {
        let Ok(logs) = std::fs::read_dir(reg.path()) else {
            continue;
        };
        for log in logs.flatten() {
            let old = log
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > keep);
            if old {
                let _ = std::fs::remove_file(log.path());
            }
        }
    }
}

/// The replicated state as the run loop reports to it.
struct Reports {
    app: App,
    registry: String,
    id: String,
    agent: u64,
    lease_ms: u64,
}

#[async_trait]
impl runner::Reporter for Reports {
    async fn renew(&self) -> Renewal {
        let cmd = RunCommand::Renew {
            id: self.id.clone(),
            agent: self.agent,
            lease_ms: self.lease_ms,
        };
        match propose(&self.app, &self.registry, cmd).await {
            Ok(Response::Changed(wharf_meta::RENEWED_CANCELED)) => Renewal::Canceled,
            Ok(Response::Refused(_)) => Renewal::Lost,
            Ok(_) => Renewal::Continue,
            // No leader for a moment: the next renewal tries again, well
            // before the lease (three renewals long) runs out.
            Err(e) => {
                tracing::warn!(run = %self.id, error = %e, "renewing a run's lease");
                Renewal::Continue
            }
        }
    }

    async fn step(&self, index: usize, state: StepState, exit_code: Option<i32>) {
        let status = match state {
            StepState::Pending => StepStatus::Pending,
            StepState::Running => StepStatus::Running,
            StepState::Succeeded => StepStatus::Succeeded,
            StepState::Failed => StepStatus::Failed,
            StepState::Skipped => StepStatus::Skipped,
            StepState::Stopped => StepStatus::Stopped,
        };
        let cmd = RunCommand::Step {
            id: self.id.clone(),
            agent: self.agent,
            step: index,
            status,
            exit_code,
        };
        if let Err(e) = propose(&self.app, &self.registry, cmd).await {
            tracing::warn!(run = %self.id, step = index, error = %e, "reporting a step");
        }
    }
}

/// A run's log file.
struct FileLog(std::sync::Mutex<std::fs::File>);

impl LogSink for FileLog {
    fn write(&self, bytes: &[u8]) {
        use std::io::Write;
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(bytes) {
            tracing::warn!(error = %e, "writing a run's log");
        }
    }
}

/// Write the `DOCKER_CONFIG` of a run: the requester's refresh token as
/// the identity token for `servers`, readable by this user only.
fn docker_config(dir: &Path, servers: &[String], token: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let auths: serde_json::Map<String, serde_json::Value> = servers
        .iter()
        .map(|s| (s.clone(), serde_json::json!({ "identitytoken": token })))
        .collect();
    let config = serde_json::json!({ "auths": auths });
    wharf_auth::write_private(&dir.join("config.json"), config.to_string().as_bytes())
}

/// Every name the run's registry answers to on this cluster's nodes: its
/// login server here, and for the default registry every member's
/// address (a Dockerfile may name any node's; all serve the same images
/// and take the same token).
fn registry_servers(app: &App, registry: &str, server: &str) -> Vec<String> {
    let mut out = vec![server.to_string()];
    if registry == wharf_meta::DEFAULT_REGISTRY {
        for (_, node) in app.consensus.members() {
            let host = host_of(&node.http);
            if !out.contains(&host) {
                out.push(host);
            }
        }
    }
    out
}

/// Run one claimed run to its end and report how it ended.
async fn run_one(app: App, cfg: TasksConfig, registry: String, run: RunRecord, buildkit: bool) {
    let me = app.consensus.node_id();
    let log_file = log_path(&app.data_dir, &registry, &run.id);
    let work = app.data_dir.join("runs").join(".work").join(&run.id);
    let mut artifacts = wharf_meta::RunArtifacts::default();
    let (end, error) = match prepare(&app, &registry, &run, &log_file, &work) {
        Err(e) => (RunStatus::Failed, Some(e)),
        Ok(prepared) => {
            let log = Arc::new(Masking::new(
                std::iter::once(prepared.token.as_bytes())
                    .chain(prepared.secrets.iter().map(|s| s.as_bytes())),
                FileLog(std::sync::Mutex::new(prepared.file)),
            ));
            log.write(format!("Run ID: {} on node {me}\n", run.id).as_bytes());
            let who = context::Requester {
                registry: &registry,
                subject: &prepared.subject,
            };
            let fetched = match &run.spec.context {
                None => Ok(None),
                Some(c) => match wharf_tasks::context::Source::parse(c) {
                    Err(e) => Err(e.to_string()),
                    Ok(source) => {
                        let limit = cfg.max_context_mib << 20;
                        let fetch = context::fetch(&app, &who, &source, &work, limit, log.as_ref());
                        let timeout = Duration::from_secs(run.spec.timeout_s.max(1));
                        match tokio::time::timeout(timeout, fetch).await {
                            Ok(r) => r.map(Some),
                            Err(_) => {
                                Err("fetching the context took longer than the run's timeout"
                                    .into())
                            }
                        }
                    }
                },
            };
            match fetched {
                Err(e) => {
                    log.write(format!("The build context could not be fetched: {e}\n").as_bytes());
                    log.finish();
                    (RunStatus::Failed, Some(e))
                }
                Ok(fetched) => {
                    let workspace = fetched.as_ref().map(|f| f.dir.clone());
                    let executor = Arc::new(wharf_tasks::docker::Docker {
                        binary: "docker".into(),
                        config_dir: Some(work.join("docker")),
                        name_prefix: container_prefix(me, &run.id),
                        workspace: workspace.clone(),
                        buildkit,
                    });
                    let reports = Arc::new(Reports {
                        app: app.clone(),
                        registry: registry.clone(),
                        id: run.id.clone(),
                        agent: me,
                        lease_ms: cfg.lease_s * 1000,
                    });
                    let spec = Arc::new(prepared.spec);
                    let end = runner::execute(
                        spec.clone(),
                        executor,
                        reports,
                        log.clone(),
                        runner::Limits {
                            run_timeout: Duration::from_secs(run.spec.timeout_s.max(1)),
                            renew_every: Duration::from_secs((cfg.lease_s / 3).max(1)),
                        },
                    )
                    .await;
                    if end != RunEnd::Lost {
                        let statuses: Vec<StepStatus> = app
                            .consensus
                            .meta()
                            .registry(&registry)
                            .run(&run.id)
                            .ok()
                            .flatten()
                            .map(|r| r.steps.iter().map(|s| s.status).collect())
                            .unwrap_or_default();
                        artifacts = artifacts::collect(
                            &app,
                            &spec,
                            &statuses,
                            workspace.as_deref(),
                            fetched.and_then(|f| f.git_commit),
                        );
                        log.write(artifacts::block(&artifacts).as_bytes());
                        remove_built_images(&spec).await;
                    }
                    log.finish();
                    match end {
                        RunEnd::Succeeded => (RunStatus::Succeeded, None),
                        RunEnd::Failed => (RunStatus::Failed, Some("a step failed".into())),
                        RunEnd::Canceled => (RunStatus::Canceled, None),
                        RunEnd::TimedOut => (
                            RunStatus::TimedOut,
                            Some(format!("the run took longer than {} s", run.spec.timeout_s)),
                        ),
                        RunEnd::Lost => {
                            let _ = std::fs::remove_dir_all(&work);
                            tracing::warn!(run = %run.id, "the run's lease went to another agent");
                            return;
                        }
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    let log = keep_log(&app, &registry, &run, &log_file).await;
    let finish = RunCommand::Finish {
        id: run.id.clone(),
        agent: me,
        status: end,
        error,
        log: Some(log),
        artifacts: Box::new(artifacts),
    };
    if let Err(e) = propose(&app, &registry, finish).await {
        // The lease runs out and the expiry ends the run instead.
        tracing::warn!(run = %run.id, error = %e, "reporting a run's end");
    }
    forget_upload(&app, &registry, &run).await;
}

/// Keep the ended run's log in the registry (any node serves it, after
/// this one is gone); where it is: `oci://wharf-run-logs@DIGEST`, or the
/// file on this node when it could not be pushed.
async fn keep_log(app: &App, registry: &str, run: &RunRecord, file: &Path) -> String {
    let on_disk = file.display().to_string();
    let subject = match app.auth.subject_named(
        &app.consensus.meta().registry(registry),
        &run.spec.requested_by,
        now_unix_ms(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "the run's log stays on this node");
            return on_disk;
        }
    };
    let who = context::Requester {
        registry,
        subject: &subject,
    };
    let bytes = match log_store::tail(file) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "reading the run's log");
            return on_disk;
        }
    };
    match log_store::store(app, &who, &run.id, bytes).await {
        Ok(digest) => format!(
            "{}{}@{digest}",
            wharf_tasks::context::UPLOAD_SCHEME,
            log_store::LOG_REPOSITORY
        ),
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "the run's log stays on this node");
            on_disk
        }
    }
}

/// The images a run's build steps tagged, out of this host's engine once
/// pushed (the engine's build cache keeps their layers for the next run).
async fn remove_built_images(spec: &TaskSpec) {
    for step in &spec.steps {
        let wharf_tasks::Action::Build(text) = &step.action else {
            continue;
        };
        let Ok(args) = wharf_tasks::build::BuildArgs::parse(text) else {
            continue;
        };
        for tag in args.tags {
            let _ = tokio::process::Command::new("docker")
                .args(["rmi", &tag])
                .output()
                .await;
        }
    }
}

/// An ended run's uploaded context is not needed any more: its manifest
/// is deleted (the garbage collector then frees the archive). A run taken
/// over by another agent keeps it; so does one ended while queued, until
/// an operator's retention or GC policy removes it.
async fn forget_upload(app: &App, registry: &str, run: &RunRecord) {
    let Some(Ok(wharf_tasks::context::Source::Upload { repository, digest })) = run
        .spec
        .context
        .as_deref()
        .map(wharf_tasks::context::Source::parse)
    else {
        return;
    };
    if let Err(e) = context::delete_upload(app, registry, &repository, &digest).await {
        tracing::warn!(run = %run.id, error = %e, "deleting the run's uploaded context");
    }
}

/// The context a store secret is sealed under: the sealed bytes of one
/// registry's secret do not open as another's.
pub fn secret_context(registry: &str, name: &str) -> String {
    format!("wharf-task-secret/{registry}/{name}")
}

/// The context a run's `--secret-build-arg` is sealed under.
pub fn secret_arg_context(registry: &str, name: &str) -> String {
    format!("wharf-secret-build-arg/{registry}/{name}")
}

/// Render the run's task file with its secrets: the ones its `secrets:`
/// names, opened from the registry's store, and its sealed
/// `--secret-build-arg`s. The file is rendered once with stand-ins to
/// read which secrets it declares, then with their values.
fn with_secrets(
    app: &App,
    registry: &str,
    run: &RunRecord,
    mut values: RunValues,
) -> Result<(TaskSpec, Vec<String>), String> {
    let used = wharf_tasks::template::secret_ids(&run.spec.task_file);
    let mut probe = values.clone();
    probe.secrets = used.iter().map(|id| (id.clone(), String::new())).collect();
    let declared = probe
        .render(&run.spec.task_file)
        .and_then(|t| TaskSpec::parse(&t))
        .map_err(|e| e.to_string())?
        .secrets;
    let meta = app.consensus.meta();
    let reg = meta.registry(registry);
    for r in &declared {
        let record = reg
            .secret(&r.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("secret {:?} is not in the registry's secret store", r.name))?;
        let ctx = secret_context(registry, &r.name);
        let plain = app
            .auth
            .open(&record.sealed, &ctx)
            .map_err(|e| format!("secret {:?}: {e}", r.name))?;
        values
            .secrets
            .insert(r.id.clone(), String::from_utf8_lossy(&plain).into_owned());
    }
    for (name, sealed) in &run.spec.secret_args {
        let ctx = secret_arg_context(registry, name);
        let plain = app
            .auth
            .open(sealed, &ctx)
            .map_err(|e| format!("--secret-build-arg {name}: {e}"))?;
        values
            .secrets
            .insert(name.clone(), String::from_utf8_lossy(&plain).into_owned());
    }
    let spec = values
        .render(&run.spec.task_file)
        .and_then(|t| TaskSpec::parse(&t))
        .map_err(|e| e.to_string())?;
    let secrets = values
        .secrets
        .into_values()
        .filter(|v| !v.is_empty())
        .collect();
    Ok((spec, secrets))
}

/// What a run starts with.
struct Prepared {
    /// Its task file, rendered.
    spec: TaskSpec,
    /// The secret values it was rendered with (masked in the log).
    secrets: Vec<String>,
    /// The requester's refresh token the engine uses (masked in the log).
    token: String,
    subject: wharf_auth::Subject,
    file: std::fs::File,
}

/// The run's rendered task file, its credentials and its log file.
fn prepare(
    app: &App,
    registry: &str,
    run: &RunRecord,
    log_file: &Path,
    work: &Path,
) -> Result<Prepared, String> {
    std::fs::create_dir_all(log_dir(&app.data_dir, registry))
        .map_err(|e| format!("creating the log directory: {e}"))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .map_err(|e| format!("opening the run's log: {e}"))?;
    let server = login_server(app, registry)?;
    let values = RunValues {
        id: run.id.clone(),
        registry: server.clone(),
        registry_name: registry.to_string(),
        date: chrono::Utc::now().format("%Y%m%d-%H%M%Sz").to_string(),
        values: run.spec.values.clone(),
        commit: run.spec.commit.clone().unwrap_or_default(),
        branch: run.spec.branch.clone().unwrap_or_default(),
        ..RunValues::default()
    };
    let (spec, secrets) = with_secrets(app, registry, run, values)?;
    let meta = app.consensus.meta();
    let reg = meta.registry(registry);
    let now = now_unix_ms();
    let subject = app
        .auth
        .subject_named(&reg, &run.spec.requested_by, now)
        .map_err(|e| {
            format!(
                "the run acts for {:?}, who cannot: {e}",
                run.spec.requested_by
            )
        })?;
    let (token, _) = app
        .auth
        .issue(&reg, &subject, vec![], wharf_auth::TokenUse::Refresh, now)
        .map_err(|e| format!("issuing the run's credentials: {e}"))?;
    docker_config(
        &work.join("docker"),
        &registry_servers(app, registry, &server),
        &token,
    )
    .map_err(|e| format!("writing the run's credentials: {e}"))?;
    Ok(Prepared {
        spec,
        secrets,
        token,
        subject,

        file,
    })
}
