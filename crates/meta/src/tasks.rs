//! Build task runs in the replicated state: the queue, agents' leases, and
//! every run's record, so a run survives any node and its state is the
//! same everywhere.
//!
//! A run is queued with its task file already checked and rendered (the
//! proposer did that, with `wharf-tasks`), and gets the registry's next
//! run number, shown as an id like `cf1`. An agent node claims a queued
//! run for `lease_ms` of command time and renews the lease while it runs;
//! `ExpireRuns` (proposed by the leader when it sees an expired lease)
//! puts a run whose agent stopped renewing back in the queue, or fails it
//! after `max_attempts`, so no run is left "Running" by a dead agent.
//! Canceling a queued run ends it; canceling a running one asks its agent,
//! which learns it from its next renewal and stops the run's processes.
//!
//! Column families (both registry-scoped, so deleting a registry deletes
//! its runs): `runs`, `registry \0 <run number, 16 hex digits>` → the
//! record, so a registry's runs list newest first by a reverse scan, plus
//! `registry \0 ~next` → the next run number; and `runs_active`, the same
//! keys for the runs queued or running, so agents and the expiry read the
//! live runs, not the history.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::{ApplyError, StoreError};
use crate::keys::{CF_RUNS, CF_RUNS_ACTIVE};
use crate::repo::Registry;
use crate::store::encode;

/// The key of a registry's next run number in `runs` (after every
/// run's key: `~` sorts after hex digits).
const NEXT_KEY: &str = "~next";
/// Attempts a run gets when its proposer does not say (a run whose agent
/// died is queued again until it has had this many).
pub const MAX_ATTEMPTS_DEFAULT: u32 = 2;
/// `Renew`'s answer when the run is the agent's but was canceled.
pub const RENEWED_CANCELED: u64 = 2;
/// Longest error text kept in a record.
const ERROR_MAX_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
    /// The run took longer than its timeout.
    TimedOut,
}

impl RunStatus {
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "Queued",
            RunStatus::Running => "Running",
            RunStatus::Succeeded => "Succeeded",
            RunStatus::Failed => "Failed",
            RunStatus::Canceled => "Canceled",
            RunStatus::TimedOut => "TimedOut",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Stopped,
}

impl StepStatus {
    /// The status's name on the wire and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "Pending",
            StepStatus::Running => "Running",
            StepStatus::Succeeded => "Succeeded",
            StepStatus::Failed => "Failed",
            StepStatus::Skipped => "Skipped",
            StepStatus::Stopped => "Stopped",
        }
    }
}

/// What to run, decided when it was queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The task file, rendered and checked by the proposer.
    pub task_file: String,
    /// Its steps' ids, in the file's order.
    pub steps: Vec<String>,
    /// `linux/amd64`.
    pub platform: String,
    /// What started it: `manual`, `commit`, `image_update`, `timer`.
    pub trigger: String,
    /// The task it belongs to; none for a quick build or run.
    #[serde(default)]
    pub task: Option<String>,
    /// Where the build context is (a git URL, an uploaded archive's
    /// digest); none when the run needs none.
    #[serde(default)]
    pub context: Option<String>,
    /// The whole run's limit.
    pub timeout_s: u64,
    /// 0: `MAX_ATTEMPTS_DEFAULT`.
    #[serde(default)]
    pub max_attempts: u32,
    /// Whom the run acts for (pulls and pushes with their rights).
    #[serde(default)]
    pub requested_by: String,
    /// `--set name=value`: the file's `{{.Values.name}}`.
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, String>,
    /// The commit and branch a source-commit trigger reported
    /// (`{{.Run.Commit}}`, `{{.Run.Branch}}`).
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// `--secret-build-arg NAME=value`: each value sealed with the cluster
    /// key (the file names it `{{.Secrets.NAME}}`; the log masks it).
    #[serde(default)]
    pub secret_args: std::collections::BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub status: StepStatus,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// One run, as every node sees it. New fields get `#[serde(default)]`:
/// records written by an earlier release must keep decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub number: u64,
    pub spec: RunSpec,
    pub status: RunStatus,
    pub queued_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// The node running it (or that ran it last).
    #[serde(default)]
    pub agent: Option<u64>,
    /// Command time the agent's lease runs to.
    #[serde(default)]
    pub lease_until_ms: u64,
    /// Claims so far (a claim after a lost agent is another attempt).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub cancel_requested: bool,
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub error: Option<String>,
    /// Where its log is kept, once it ended.
    #[serde(default)]
    pub log: Option<String>,
    /// What its build steps produced and were built from (added after
    /// the first release of runs: older records decode as empty).
    #[serde(default)]
    pub artifacts: RunArtifacts,
}

/// An image by registry host, repository, tag and digest, as a run's
/// dependency block names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `host:port` of the registry serving it.
    pub registry: String,
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    /// Unknown for an image outside this cluster the engine did not report.
    #[serde(default)]
    pub digest: Option<String>,
    /// The registry of this cluster that serves it, when one does (what
    /// base-image triggers watch).
    #[serde(default)]
    pub cluster_registry: Option<String>,
}

/// A finished run's images and sources: what the dependency block prints,
/// and what a base-image trigger compares with the tags it watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunArtifacts {
    /// Each image a build step tagged (pushed unless `--no-push`), with
    /// the base image of the stage it built and the other stages' bases.
    #[serde(default)]
    pub images: Vec<BuiltImage>,
    /// The commit of a git context.
    #[serde(default)]
    pub git_commit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltImage {
    pub image: ImageRef,
    /// The `FROM` of the stage built (what the image runs on).
    #[serde(default)]
    pub runtime: Option<ImageRef>,
    /// The `FROM`s of the other stages it was built with.
    #[serde(default)]
    pub buildtime: Vec<ImageRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunCommand {
    /// Queue a run: `Changed(number)`, its run number.
    Queue { spec: Box<RunSpec> },
    /// `agent` takes the queued run `id` until `lease_ms` after the
    /// command's time: `Changed(1)`, or `Changed(0)` when it is not queued
    /// (another agent was first, or it was canceled).
    Claim {
        id: String,
        agent: u64,
        lease_ms: u64,
    },
    /// `agent` still runs `id`: `Changed(1)`, or `RENEWED_CANCELED` when
    /// it was asked to stop; refused when the run is not its any more (its
    /// lease ran out and the run went to another agent or failed).
    Renew {
        id: String,
        agent: u64,
        lease_ms: u64,
    },
    /// A step of `id` started or ended.
    Step {
        id: String,
        agent: u64,
        step: usize,
        status: StepStatus,
        #[serde(default)]
        exit_code: Option<i32>,
    },
    /// `agent` ended `id` (not `Queued` or `Running`).
    Finish {
        id: String,
        agent: u64,
        status: RunStatus,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        log: Option<String>,
        /// What the run built, from what.
        #[serde(default)]
        artifacts: Box<RunArtifacts>,
    },
    /// Cancel `id`: ended at once if queued; its agent is asked otherwise.
    Cancel { id: String },
    /// Every running run whose lease ended before the command's time goes
    /// back to the queue, or fails once it has had its attempts.
    ExpireRuns,
}

/// `cf1`: two letters fixed per registry, then the run number in base 36,
/// as the cloud registry's ids look. The letters come from the registry's
/// name (FNV-1a), so a run id read in one registry is unlikely to name a
/// run of another by mistake.
pub fn run_id(registry: &str, number: u64) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in registry.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut id = String::from("c");
    id.push(char::from(b'a' + (hash % 26) as u8));
    id.push_str(&base36(number));
    id
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The run number an id of `registry` names, if it is one.
pub fn run_number(registry: &str, id: &str) -> Option<u64> {
    let digits = id.get(2..)?;
    let n = u64::from_str_radix(digits, 36).ok()?;
    (run_id(registry, n) == id).then_some(n)
}

/// Most images a record keeps (a task file builds a handful; this bounds
/// what a faulty agent could make every node store).
const IMAGES_MAX: usize = 64;

fn clip_artifacts(a: &RunArtifacts) -> RunArtifacts {
    let mut a = a.clone();
    a.images.truncate(IMAGES_MAX);
    for i in &mut a.images {
        i.buildtime.truncate(IMAGES_MAX);
    }
    a
}

fn number_key(n: u64) -> String {
    format!("{n:016x}")
}

fn clip(text: Option<&String>) -> Option<String> {
    text.map(|t| {
        let mut end = t.len().min(ERROR_MAX_BYTES);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t[..end].to_string()
    })
}

impl Registry<'_> {
    pub(crate) fn apply_run(
        &self,
        batch: &mut WriteBatch,
        cmd: &RunCommand,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        match cmd {
            RunCommand::Queue { spec } => {
                let numbers = self.queue_runs(batch, vec![(**spec).clone()], at_ms)?;
                Ok(Response::Changed(numbers.first().copied().unwrap_or(0)))
            }
            RunCommand::Claim {
                id,
                agent,
                lease_ms,
            } => {
                let Some(mut run) = self.run(id)? else {
                    return Ok(Response::Refused(ApplyError::RunUnknown(id.clone())));
                };
                if run.status != RunStatus::Queued {
                    return Ok(Response::Changed(0));
                }
                run.status = RunStatus::Running;
                run.agent = Some(*agent);
                run.lease_until_ms = at_ms.saturating_add(*lease_ms);
                run.attempts += 1;
                run.started_ms.get_or_insert(at_ms);
                self.put_run(batch, &run);
                Ok(Response::Changed(1))
            }
            RunCommand::Renew {
                id,
                agent,
                lease_ms,
            } => {
                let mut run = match self.agents_run(id, *agent)? {
                    Ok(run) => run,
                    Err(refusal) => return Ok(Response::Refused(refusal)),
                };
                run.lease_until_ms = at_ms.saturating_add(*lease_ms);
                self.put_run(batch, &run);
                Ok(Response::Changed(if run.cancel_requested {
                    RENEWED_CANCELED
                } else {
                    1
                }))
            }
            RunCommand::Step {
                id,
                agent,
                step,
                status,
                exit_code,
            } => {
                let mut run = match self.agents_run(id, *agent)? {
                    Ok(run) => run,
                    Err(refusal) => return Ok(Response::Refused(refusal)),
                };
                let Some(s) = run.steps.get_mut(*step) else {
                    return Ok(Response::Refused(ApplyError::RunUnknown(format!(
                        "{id} step {step}"
                    ))));
                };
                s.status = *status;
                match status {
                    StepStatus::Running => s.started_ms = Some(at_ms),
                    StepStatus::Pending => {}
                    _ => s.ended_ms = Some(at_ms),
                }
                if exit_code.is_some() {
                    s.exit_code = *exit_code;
                }
                self.put_run(batch, &run);
                Ok(Response::Changed(1))
            }
            RunCommand::Finish {
                id,
                agent,
                status,
                error,
                log,
                artifacts,
            } => {
                let mut run = match self.agents_run(id, *agent)? {
                    Ok(run) => run,
                    Err(refusal) => return Ok(Response::Refused(refusal)),
                };
                if status.is_active() {
                    return Ok(Response::Refused(ApplyError::RunUnknown(format!(
                        "{id}: a run cannot finish as {}",
                        status.as_str()
                    ))));
                }
                run.status = *status;
                run.error = clip(error.as_ref());
                run.log = log.clone();
                run.artifacts = clip_artifacts(artifacts);
                self.end_run(batch, &mut run, at_ms);
                if let (Some(task), RunStatus::Succeeded) = (&run.spec.task, run.status) {
                    self.arm_bases(batch, task, &run.artifacts)?;
                }
                Ok(Response::Changed(1))
            }
            RunCommand::Cancel { id } => {
                let Some(mut run) = self.run(id)? else {
                    return Ok(Response::Refused(ApplyError::RunUnknown(id.clone())));
                };
                match run.status {
                    RunStatus::Queued => {
                        run.status = RunStatus::Canceled;
                        self.end_run(batch, &mut run, at_ms);
                    }
                    RunStatus::Running if !run.cancel_requested => {
                        run.cancel_requested = true;
                        self.put_run(batch, &run);
                    }
                    _ => return Ok(Response::Changed(0)),
                }
                Ok(Response::Changed(1))
            }
            RunCommand::ExpireRuns => {
                let mut changed = 0;
                for mut run in self.active_runs()? {
                    if run.status != RunStatus::Running || run.lease_until_ms > at_ms {
                        continue;
                    }
                    changed += 1;
                    let agent = run.agent.map_or("?".into(), |a| a.to_string());
                    if run.cancel_requested {
                        run.status = RunStatus::Canceled;
                        run.error = Some(format!("canceled; agent {agent} stopped renewing"));
                        self.end_run(batch, &mut run, at_ms);
                    } else if run.attempts >= run.spec.max_attempts {
                        run.status = RunStatus::Failed;
                        run.error = Some(format!(
                            "agent {agent} stopped renewing its lease (attempt {} of {})",
                            run.attempts, run.spec.max_attempts
                        ));
                        self.end_run(batch, &mut run, at_ms);
                    } else {
                        // Another agent starts it over.
                        run.status = RunStatus::Queued;
                        run.error = Some(format!(
                            "agent {agent} stopped renewing its lease; queued again"
                        ));
                        for s in &mut run.steps {
                            s.status = StepStatus::Pending;
                            s.started_ms = None;
                            s.ended_ms = None;
                            s.exit_code = None;
                        }
                        self.put_run(batch, &run);
                    }
                }
                Ok(Response::Changed(changed))
            }
        }
    }

    /// The run `id` if `agent` runs it; the refusal otherwise.
    /// Queue `specs` in order: their run numbers. Numbers are read once
    /// and assigned here, as the batch being written cannot be read back.
    pub(crate) fn queue_runs(
        &self,
        batch: &mut WriteBatch,
        specs: Vec<RunSpec>,
        at_ms: u64,
    ) -> Result<Vec<u64>, StoreError> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let next_key = self.key(&[NEXT_KEY]);
        let first: u64 = self.get(CF_RUNS, &next_key)?.unwrap_or(1);
        let mut numbers = Vec::with_capacity(specs.len());
        for (i, mut spec) in specs.into_iter().enumerate() {
            let number = first + i as u64;
            if spec.max_attempts == 0 {
                spec.max_attempts = MAX_ATTEMPTS_DEFAULT;
            }
            let record = RunRecord {
                id: run_id(self.name(), number),
                number,
                steps: spec
                    .steps
                    .iter()
                    .map(|id| StepRecord {
                        id: id.clone(),
                        status: StepStatus::Pending,
                        started_ms: None,
                        ended_ms: None,
                        exit_code: None,
                    })
                    .collect(),
                spec,
                status: RunStatus::Queued,
                queued_ms: at_ms,
                started_ms: None,
                ended_ms: None,
                agent: None,
                lease_until_ms: 0,
                attempts: 0,
                cancel_requested: false,
                error: None,
                log: None,
                artifacts: RunArtifacts::default(),
            };
            self.put_run(batch, &record);
            numbers.push(number);
        }
        let next = first + numbers.len() as u64;
        batch.put_cf(self.cf(CF_RUNS), &next_key, encode(&next));
        Ok(numbers)
    }

    fn agents_run(
        &self,
        id: &str,
        agent: u64,
    ) -> Result<Result<RunRecord, ApplyError>, StoreError> {
        Ok(match self.run(id)? {
            None => Err(ApplyError::RunUnknown(id.to_string())),
            Some(run) if run.status != RunStatus::Running || run.agent != Some(agent) => {
                Err(ApplyError::RunNotYours(id.to_string()))
            }
            Some(run) => Ok(run),
        })
    }

    /// Write `run` and keep `runs_active` in step with its status.
    fn put_run(&self, batch: &mut WriteBatch, run: &RunRecord) {
        let key = self.key(&[&number_key(run.number)]);
        batch.put_cf(self.cf(CF_RUNS), &key, encode(run));
        if run.status.is_active() {
            batch.put_cf(self.cf(CF_RUNS_ACTIVE), &key, []);
        } else {
            batch.delete_cf(self.cf(CF_RUNS_ACTIVE), &key);
        }
    }

    /// `run` ended now: the steps it never started are skipped, those
    /// still running stopped.
    fn end_run(&self, batch: &mut WriteBatch, run: &mut RunRecord, at_ms: u64) {
        run.ended_ms = Some(at_ms);
        run.lease_until_ms = 0;
        for s in &mut run.steps {
            match s.status {
                StepStatus::Pending => s.status = StepStatus::Skipped,
                StepStatus::Running => {
                    s.status = StepStatus::Stopped;
                    s.ended_ms = Some(at_ms);
                }
                _ => {}
            }
        }
        self.put_run(batch, run);
    }

    /// The run `id` names in this registry.
    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let Some(n) = run_number(self.name(), id) else {
            return Ok(None);
        };
        self.get(CF_RUNS, &self.key(&[&number_key(n)]))
    }

    /// The registry's runs, newest first, at most `limit`, starting below
    /// run number `before` when given (the next page).
    pub fn runs(&self, before: Option<u64>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let prefix = self.key(&[""]);
        let upper = match before {
            Some(n) => self.key(&[&number_key(n)]),
            None => self.key(&[NEXT_KEY]),
        };
        let mut out = Vec::new();
        let iter = self.store.db().iterator_cf(
            self.cf(CF_RUNS),
            rocksdb::IteratorMode::From(&upper, rocksdb::Direction::Reverse),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if k[..] >= upper[..] {
                continue;
            }
            out.push(crate::store::decode(CF_RUNS, &v)?);
        }
        Ok(out)
    }

    /// The registry's queued and running runs, oldest first.
    pub fn active_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let prefix = self.key(&[""]);
        let mut out = Vec::new();
        for (k, _) in self.scan(CF_RUNS_ACTIVE, &prefix, None, usize::MAX)? {
            if let Some(run) = self.get(CF_RUNS, &k)? {
                out.push(run);
            }
        }
        Ok(out)
    }
}

impl crate::MetaStore {
    /// Every queued or running run of the cluster, oldest first per
    /// registry, with its registry: what agents claim from and the
    /// leader's expiry reads.
    pub fn active_runs(&self) -> Result<Vec<(String, RunRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_RUNS_ACTIVE), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            let registry = k
                .iter()
                .position(|&b| b == 0)
                .map(|i| String::from_utf8_lossy(&k[..i]).into_owned())
                .unwrap_or_default();
            if let Some(run) = self.get::<RunRecord>(CF_RUNS, &k)? {
                out.push((registry, run));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Envelope, MetaStore, DEFAULT_REGISTRY};

    fn apply_at(s: &MetaStore, registry: &str, cmd: RunCommand, at_ms: u64) -> Response {
        s.apply(&Envelope::new(registry, Command::Run(cmd), at_ms), &[])
            .unwrap()
    }

    fn apply(s: &MetaStore, cmd: RunCommand, at_ms: u64) -> Response {
        apply_at(s, DEFAULT_REGISTRY, cmd, at_ms)
    }

    fn spec() -> RunSpec {
        RunSpec {
            task_file: "steps:\n  - cmd: hello-world\n".into(),
            steps: vec!["acb_step_0".into()],
            platform: "linux/amd64".into(),
            trigger: "manual".into(),
            task: None,
            context: None,
            timeout_s: 600,
            max_attempts: 0,
            requested_by: "owner".into(),
            values: Default::default(),
            commit: None,
            branch: None,
            secret_args: Default::default(),
        }
    }

    /// Queue a run; its id.
    fn queue(s: &MetaStore, at_ms: u64) -> String {
        let Response::Changed(n) = apply(
            s,
            RunCommand::Queue {
                spec: Box::new(spec()),
            },
            at_ms,
        ) else {
            panic!("not queued")
        };
        run_id(DEFAULT_REGISTRY, n)
    }

    fn run(s: &MetaStore, id: &str) -> RunRecord {
        s.registry(DEFAULT_REGISTRY).run(id).unwrap().unwrap()
    }

    fn claim(id: &str, agent: u64) -> RunCommand {
        RunCommand::Claim {
            id: id.into(),
            agent,
            lease_ms: 10_000,
        }
    }

    #[test]
    fn run_ids_look_like_the_cloud_registrys_and_name_one_registry() {
        let id = run_id("default", 1);
        assert_eq!(id.len(), 3);
        assert!(id.starts_with('c'));
        assert_eq!(&run_id("default", 36)[2..], "10");
        assert_eq!(run_number("default", &run_id("default", 1295)), Some(1295));
        assert_eq!(run_number("default", "zz1"), None);
        assert_eq!(run_number("default", &id[..2]), None);
        // Most registries' ids differ in their letters.
        let letters: std::collections::HashSet<String> = (0..100)
            .map(|i| run_id(&format!("registry{i}"), 1)[..2].to_string())
            .collect();
        assert!(letters.len() > 15, "{letters:?}");
    }

    #[test]
    fn runs_are_numbered_in_order_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..5).map(|i| queue(&s, 100 + i)).collect();
        let reg = s.registry(DEFAULT_REGISTRY);
        let listed: Vec<String> = reg
            .runs(None, 3)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        let page: Vec<String> = reg
            .runs(Some(3), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(page, [ids[1].clone(), ids[0].clone()]);
        let r = run(&s, &ids[0]);
        assert_eq!(
            (r.status, r.queued_ms, r.spec.max_attempts),
            (RunStatus::Queued, 100, 2)
        );
        assert_eq!(r.steps[0].status, StepStatus::Pending);
        assert_eq!(s.active_runs().unwrap().len(), 5);
        // Another registry numbers its own from 1.
        s.apply(&crate::tenancy::tests::create("teamone"), &[])
            .unwrap();
        let Response::Changed(n) = apply_at(
            &s,
            "teamone",
            RunCommand::Queue {
                spec: Box::new(spec()),
            },
            1,
        ) else {
            panic!()
        };
        assert_eq!(n, 1);
        assert!(s.registry("teamone").run(&ids[0]).unwrap().is_none());
    }

    #[test]
    fn one_agent_claims_a_run_and_only_it_reports_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let id = queue(&s, 1);
        assert_eq!(apply(&s, claim(&id, 7), 2), Response::Changed(1));
        assert_eq!(apply(&s, claim(&id, 8), 3), Response::Changed(0), "taken");
        let r = run(&s, &id);
        assert_eq!(
            (r.status, r.agent, r.lease_until_ms, r.attempts),
            (RunStatus::Running, Some(7), 10_002, 1)
        );
        let step = |agent, status| RunCommand::Step {
            id: id.clone(),
            agent,
            step: 0,
            status,
            exit_code: None,
        };
        assert!(matches!(
            apply(&s, step(8, StepStatus::Running), 4),
            Response::Refused(ApplyError::RunNotYours(_))
        ));
        assert_eq!(
            apply(&s, step(7, StepStatus::Running), 4),
            Response::Changed(1)
        );
        let finish = |agent| RunCommand::Finish {
            id: id.clone(),
            agent,
            status: RunStatus::Succeeded,
            error: None,
            log: Some("sha256:abc".into()),
            artifacts: Box::default(),
        };
        assert!(matches!(apply(&s, finish(8), 5), Response::Refused(_)));
        assert_eq!(apply(&s, finish(7), 6), Response::Changed(1));
        let r = run(&s, &id);
        assert_eq!(
            (r.status, r.ended_ms, r.log.as_deref()),
            (RunStatus::Succeeded, Some(6), Some("sha256:abc"))
        );
        assert_eq!(
            r.steps[0].status,
            StepStatus::Stopped,
            "still running when the run ended"
        );
        assert!(s.active_runs().unwrap().is_empty());
        assert!(matches!(
            apply(&s, claim("cz9", 7), 7),
            Response::Refused(ApplyError::RunUnknown(_))
        ));
    }

    #[test]
    fn a_dead_agents_run_is_queued_again_then_failed_never_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let id = queue(&s, 0);
        apply(&s, claim(&id, 7), 0);
        // The lease holds until 10 000: nothing to expire before.
        assert_eq!(
            apply(&s, RunCommand::ExpireRuns, 9_999),
            Response::Changed(0)
        );
        let renew = |agent, at| {
            apply(
                &s,
                RunCommand::Renew {
                    id: id.clone(),
                    agent,
                    lease_ms: 10_000,
                },
                at,
            )
        };
        assert_eq!(renew(7, 9_000), Response::Changed(1));
        assert_eq!(
            apply(&s, RunCommand::ExpireRuns, 18_000),
            Response::Changed(0),
            "renewed to 19 000"
        );
        assert_eq!(
            apply(&s, RunCommand::ExpireRuns, 19_001),
            Response::Changed(1)
        );
        let r = run(&s, &id);
        assert_eq!(
            (r.status, r.steps[0].status),
            (RunStatus::Queued, StepStatus::Pending)
        );
        assert!(r.error.unwrap().contains("queued again"));
        // The first agent comes back too late: the run is not its any more.
        assert!(matches!(
            renew(7, 19_500),
            Response::Refused(ApplyError::RunNotYours(_))
        ));
        // A second agent takes it, and dies too: the second attempt was the last.
        assert_eq!(apply(&s, claim(&id, 8), 20_000), Response::Changed(1));
        assert_eq!(
            apply(&s, RunCommand::ExpireRuns, 40_000),
            Response::Changed(1)
        );
        let r = run(&s, &id);
        assert_eq!(
            (r.status, r.attempts, r.ended_ms),
            (RunStatus::Failed, 2, Some(40_000))
        );
        assert!(r
            .error
            .unwrap()
            .contains("agent 8 stopped renewing its lease (attempt 2 of 2)"));
        assert_eq!(r.steps[0].status, StepStatus::Skipped);
        assert!(s.active_runs().unwrap().is_empty());
    }

    #[test]
    fn canceling_ends_a_queued_run_and_asks_a_running_ones_agent() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let queued = queue(&s, 0);
        assert_eq!(
            apply(&s, RunCommand::Cancel { id: queued.clone() }, 1),
            Response::Changed(1)
        );
        assert_eq!(run(&s, &queued).status, RunStatus::Canceled);
        assert_eq!(
            apply(&s, claim(&queued, 7), 2),
            Response::Changed(0),
            "not claimable"
        );
        let running = queue(&s, 3);
        apply(&s, claim(&running, 7), 3);
        assert_eq!(
            apply(
                &s,
                RunCommand::Cancel {
                    id: running.clone()
                },
                4
            ),
            Response::Changed(1)
        );
        assert_eq!(
            run(&s, &running).status,
            RunStatus::Running,
            "until its agent stops it"
        );
        let renewed = apply(
            &s,
            RunCommand::Renew {
                id: running.clone(),
                agent: 7,
                lease_ms: 10_000,
            },
            5,
        );
        assert_eq!(renewed, Response::Changed(RENEWED_CANCELED));
        apply(
            &s,
            RunCommand::Finish {
                id: running.clone(),
                agent: 7,
                status: RunStatus::Canceled,
                error: None,
                log: None,
                artifacts: Box::default(),
            },
            6,
        );
        assert_eq!(run(&s, &running).status, RunStatus::Canceled);
        assert_eq!(
            apply(&s, RunCommand::Cancel { id: running }, 7),
            Response::Changed(0),
            "already ended"
        );
    }

    /// The previous release's `Finish` and run record had no artifacts:
    /// its log entries and stored records must still decode.
    #[test]
    fn records_and_commands_without_artifacts_still_decode() {
        #[derive(Serialize)]
        enum OldCommand {
            Finish {
                id: String,
                agent: u64,
                status: RunStatus,
                error: Option<String>,
                log: Option<String>,
            },
        }
        let old = crate::codec::encode(&OldCommand::Finish {
            id: "ca1".into(),
            agent: 3,
            status: RunStatus::Succeeded,
            error: None,
            log: Some("runs/default/ca1.log".into()),
        });
        let cmd: RunCommand = crate::codec::decode(&old).unwrap();
        let RunCommand::Finish { artifacts, log, .. } = cmd else {
            panic!("decoded as another command: {cmd:?}");
        };
        assert_eq!(
            (*artifacts, log.as_deref()),
            (RunArtifacts::default(), Some("runs/default/ca1.log"))
        );

        #[derive(Serialize)]
        struct OldRecord {
            id: String,
            number: u64,
            spec: RunSpec,
            status: RunStatus,
            queued_ms: u64,
            started_ms: Option<u64>,
            ended_ms: Option<u64>,
            agent: Option<u64>,
            lease_until_ms: u64,
            attempts: u32,
            cancel_requested: bool,
            steps: Vec<StepRecord>,
            error: Option<String>,
            log: Option<String>,
        }
        let old = crate::codec::encode(&OldRecord {
            id: "ca1".into(),
            number: 1,
            spec: spec(),
            status: RunStatus::Failed,
            queued_ms: 1,
            started_ms: Some(2),
            ended_ms: Some(3),
            agent: Some(3),
            lease_until_ms: 4,
            attempts: 1,
            cancel_requested: false,
            steps: vec![],
            error: Some("a step failed".into()),
            log: None,
        });
        let record: RunRecord = crate::codec::decode(&old).unwrap();
        assert_eq!(record.artifacts, RunArtifacts::default());
        assert_eq!(record.error.as_deref(), Some("a step failed"));
    }

    #[test]
    fn a_finished_run_keeps_what_it_built() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let Response::Changed(n) = apply(
            &s,
            RunCommand::Queue {
                spec: Box::new(spec()),
            },
            1,
        ) else {
            panic!("not queued");
        };
        let id = run_id(DEFAULT_REGISTRY, n);
        let claim = RunCommand::Claim {
            id: id.clone(),
            agent: 7,
            lease_ms: 10_000,
        };
        assert_eq!(apply(&s, claim, 2), Response::Changed(1));
        let image = |repo: &str, tag: &str| ImageRef {
            registry: "127.0.0.1:7301".into(),
            repository: repo.into(),
            tag: Some(tag.into()),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            cluster_registry: Some(DEFAULT_REGISTRY.into()),
        };
        let built = RunArtifacts {
            images: (0..IMAGES_MAX + 5)
                .map(|i| BuiltImage {
                    image: image("app", &format!("v{i}")),
                    runtime: Some(image("base", "v1")),
                    buildtime: vec![image("sdk", "v2")],
                })
                .collect(),
            git_commit: Some("0123abc".into()),
        };
        let finish = RunCommand::Finish {
            id: id.clone(),
            agent: 7,
            status: RunStatus::Succeeded,
            error: None,
            log: None,
            artifacts: Box::new(built.clone()),
        };
        assert_eq!(apply(&s, finish, 3), Response::Changed(1));
        let kept = run(&s, &id).artifacts;
        assert_eq!(kept.images.len(), IMAGES_MAX, "bounded");
        assert_eq!(kept.images[..], built.images[..IMAGES_MAX]);
        assert_eq!(kept.git_commit.as_deref(), Some("0123abc"));
    }

    #[test]
    fn deleting_a_registry_deletes_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        s.apply(&crate::tenancy::tests::create("teamone"), &[])
            .unwrap();
        apply_at(
            &s,
            "teamone",
            RunCommand::Queue {
                spec: Box::new(spec()),
            },
            1,
        );
        assert_eq!(s.active_runs().unwrap().len(), 1);
        assert_eq!(s.active_runs().unwrap()[0].0, "teamone");
        let del = Command::Registry(crate::RegistryCommand::Delete {
            name: "teamone".into(),
        });
        s.apply(&Envelope::new(DEFAULT_REGISTRY, del, 2), &[])
            .unwrap();
        assert!(s.active_runs().unwrap().is_empty());
        assert!(s.registry("teamone").runs(None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_run_record_with_only_the_first_fields_decodes() {
        // The smallest record this release writes a field for each of:
        // what a later release must keep reading (named fields, defaults).
        #[derive(Serialize)]
        struct FirstRecord {
            id: String,
            number: u64,
            spec: FirstSpec,
            status: RunStatus,
            queued_ms: u64,
            steps: Vec<StepRecord>,
        }
        #[derive(Serialize)]
        struct FirstSpec {
            task_file: String,
            steps: Vec<String>,
            platform: String,
            trigger: String,
            timeout_s: u64,
        }
        let bytes = encode(&FirstRecord {
            id: "cf1".into(),
            number: 1,
            spec: FirstSpec {
                task_file: "steps: []".into(),
                steps: vec![],
                platform: "linux/amd64".into(),
                trigger: "manual".into(),
                timeout_s: 60,
            },
            status: RunStatus::Queued,
            queued_ms: 5,
            steps: vec![],
        });
        let r: RunRecord = crate::store::decode(CF_RUNS, &bytes).unwrap();
        assert_eq!(
            (r.id.as_str(), r.attempts, r.agent, r.spec.max_attempts),
            ("cf1", 0, None, 0)
        );
    }
}
