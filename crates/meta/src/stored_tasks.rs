//! Stored build tasks (`wharf task`): a task file kept under a name with
//! its context and values, run on demand, by its timers, by a source
//! commit, or when a base image it was built from moves.
//!
//! Column families (registry-scoped): `tasks`, `registry \0 name` → the
//! task; `task_bases`, `base registry \0 repo \0 tag \0 task registry \0
//! task` → the digest the task's last successful run was built from. A
//! push that points that tag at another digest queues the task — in its
//! own registry, whichever the base's is — in the same apply (the state
//! machine sees the move; nothing polls), and the entry takes the new
//! digest so the same move does not queue it twice. A run's output that
//! is also its base is never armed: a task must not trigger itself.
//!
//! Timers fire by command: the leader proposes `Fire` for a timer's
//! scheduled minute, and the apply queues a run only for a minute later
//! than the last one fired, so a new leader repeating a proposal, or two
//! leaders racing, queue one run.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::error::{ApplyError, StoreError};
use crate::keys::{CF_RUN_SECRETS, CF_TASKS, CF_TASK_BASES};
use crate::repo::Registry;
use crate::store::encode;
use crate::tasks::{RunArtifacts, RunSpec};

/// Timers a task may have.
pub const TIMERS_MAX: usize = 10;
/// Secrets a registry's store may hold, and the largest sealed value.
pub const SECRETS_MAX: usize = 1000;
pub const SECRET_SEALED_MAX: usize = 64 << 10;

/// A task secret: its value sealed with the cluster key (the proposer
/// sealed it; only nodes of the cluster open it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub name: String,
    /// 5-field cron, UTC (checked by the proposer).
    pub schedule: String,
    pub enabled: bool,
    /// The last minute (Unix minutes) it fired for; runs are queued only
    /// for later minutes.
    #[serde(default)]
    pub last_fired_min: u64,
}

/// A stored task. New fields get `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub name: String,
    /// The task file, not rendered (each run renders it).
    pub task_file: String,
    /// Its steps' ids (the proposer parsed it).
    pub steps: Vec<String>,
    /// A git URL (`URL#ref:subdir`), a tar.gz URL, or none.
    #[serde(default)]
    pub context: Option<String>,
    pub platform: String,
    pub timeout_s: u64,
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    pub enabled: bool,
    /// Run again when a base image it was built from moves.
    pub base_image_trigger: bool,
    #[serde(default)]
    pub timers: Vec<TimerRecord>,
    /// The HMAC secret of its source-commit hook; none: no hook.
    #[serde(default)]
    pub hook_secret: Option<String>,
    /// Poll its git context's ref this often (seconds; 0: never), for git
    /// servers that send no hooks.
    #[serde(default)]
    pub poll_s: u64,
    /// The last commit of its context a hook or a poll reported.
    #[serde(default)]
    pub last_commit: Option<String>,
    /// Its runs act for this identity.
    pub created_by: String,
    pub created_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// The `task_bases` entries armed for it, (registry, repo, tag): to
    /// remove them.
    #[serde(default)]
    pub armed: Vec<(String, String, String)>,
}

impl TaskRecord {
    /// The spec of a run of this task.
    pub fn run_spec(&self, trigger: &str, source: Option<(&str, &str)>) -> RunSpec {
        let mut context = self.context.clone();
        let (mut commit, mut branch) = (None, None);
        if let Some((c, b)) = source {
            commit = Some(c.to_string());
            branch = Some(b.to_string());
            // Build exactly the commit the hook named, from the same URL.
            if let Some(ctx) = &context {
                let (url, frag) = ctx.split_once('#').unwrap_or((ctx, ""));
                let subdir = frag.split_once(':').map(|(_, d)| d).unwrap_or("");
                context = Some(if subdir.is_empty() {
                    format!("{url}#{c}")
                } else {
                    format!("{url}#{c}:{subdir}")
                });
            }
        }
        RunSpec {
            task_file: self.task_file.clone(),
            steps: self.steps.clone(),
            platform: self.platform.clone(),
            trigger: trigger.to_string(),
            task: Some(self.name.clone()),
            context,
            timeout_s: self.timeout_s,
            max_attempts: 0,
            requested_by: self.created_by.clone(),
            values: self.values.clone(),
            commit,
            branch,
            secret_args: BTreeMap::new(),
        }
    }
}

/// What `Update` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskChange {
    #[serde(default)]
    pub task_file: Option<(String, Vec<String>)>,
    #[serde(default)]
    pub context: Option<Option<String>>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub values: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub base_image_trigger: Option<bool>,
    #[serde(default)]
    pub hook_secret: Option<Option<String>>,
    #[serde(default)]
    pub poll_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskCommand {
    /// Refused when a task of that name exists.
    Create {
        task: Box<TaskRecord>,
    },
    Update {
        name: String,
        change: Box<TaskChange>,
    },
    /// Deletes its timers and base-image watches too (its runs stay).
    Delete {
        name: String,
    },
    /// Queue a run of `name`: `Changed(run number)`. `source` is a commit
    /// and branch a hook reported.
    Run {
        name: String,
        trigger: String,
        #[serde(default)]
        source: Option<(String, String)>,
    },
    /// A poll found `commit` at the head of the task's git ref: a run is
    /// queued (`Changed(number)`) when it differs from the last commit
    /// seen; the first commit seen is only recorded.
    SourceSeen {
        name: String,
        commit: String,
        branch: String,
    },
    TimerAdd {
        name: String,
        timer: String,
        schedule: String,
    },
    TimerUpdate {
        name: String,
        timer: String,
        #[serde(default)]
        schedule: Option<String>,
        #[serde(default)]
        enabled: Option<bool>,
    },
    TimerRemove {
        name: String,
        timer: String,
    },
    /// Set secret `name` of the registry's store (`name` here is the
    /// secret's, not a task's).
    SecretPut {
        name: String,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    SecretDelete {
        name: String,
    },
    /// Timer `timer` of `name` is due for `minute` (Unix minutes):
    /// `Changed(run number)`, or `Changed(0)` when that minute (or a
    /// later one) already fired, or the timer or task is disabled.
    Fire {
        name: String,
        timer: String,
        minute: u64,
    },
}

fn unknown(registry: &str, name: &str) -> Response {
    Response::Refused(ApplyError::TaskUnknown(format!(
        "task {name} does not exist in registry {registry}"
    )))
}

impl Registry<'_> {
    pub fn task(&self, name: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.get(CF_TASKS, &self.key(&[name]))
    }

    /// Every task of this registry, by name.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.scan(CF_TASKS, &self.key(&[""]), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| crate::store::decode(CF_TASKS, &v))
            .collect()
    }

    fn put_task(&self, batch: &mut WriteBatch, t: &TaskRecord) {
        batch.put_cf(self.cf(CF_TASKS), self.key(&[&t.name]), encode(t));
    }

    fn disarm(&self, batch: &mut WriteBatch, t: &mut TaskRecord) {
        for (registry, repo, tag) in t.armed.drain(..) {
            let there = self.store.registry(&registry);
            batch.delete_cf(
                self.cf(CF_TASK_BASES),
                there.key(&[&repo, &tag, self.name(), &t.name]),
            );
        }
    }

    pub fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.get(CF_RUN_SECRETS, &self.key(&[name]))
    }

    /// The store's secrets by name (values sealed).
    pub fn secrets(&self) -> Result<Vec<(String, SecretRecord)>, StoreError> {
        let prefix = self.key(&[""]);
        self.scan(CF_RUN_SECRETS, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((name, crate::store::decode(CF_RUN_SECRETS, &v)?))
            })
            .collect()
    }

    fn apply_secret(
        &self,
        batch: &mut WriteBatch,
        cmd: &TaskCommand,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        match cmd {
            TaskCommand::SecretPut { name, sealed } => {
                if sealed.len() > SECRET_SEALED_MAX {
                    return Ok(Response::Refused(ApplyError::TaskExists(format!(
                        "secret {name} is {} bytes sealed; the most is {SECRET_SEALED_MAX}",
                        sealed.len()
                    ))));
                }
                if self.secret(name)?.is_none() && self.secrets()?.len() >= SECRETS_MAX {
                    return Ok(Response::Refused(ApplyError::TaskExists(format!(
                        "the registry's secret store holds {SECRETS_MAX} secrets, the most it may"
                    ))));
                }
                let record = SecretRecord {
                    sealed: sealed.clone(),
                    updated_ms: at_ms,
                };
                batch.put_cf(self.cf(CF_RUN_SECRETS), self.key(&[name]), encode(&record));
                Ok(Response::Ok)
            }
            TaskCommand::SecretDelete { name } => {
                if self.secret(name)?.is_none() {
                    return Ok(unknown(self.name(), &format!("secret {name}")));
                }
                batch.delete_cf(self.cf(CF_RUN_SECRETS), self.key(&[name]));
                Ok(Response::Ok)
            }
            _ => Ok(Response::Ok),
        }
    }

    pub(crate) fn apply_task(
        &self,
        batch: &mut WriteBatch,
        cmd: &TaskCommand,
        at_ms: u64,
    ) -> Result<Response, StoreError> {
        let name = match cmd {
            TaskCommand::SecretPut { .. } | TaskCommand::SecretDelete { .. } => {
                return self.apply_secret(batch, cmd, at_ms);
            }
            TaskCommand::Create { task } => {
                if self.task(&task.name)?.is_some() {
                    return Ok(Response::Refused(ApplyError::TaskExists(format!(
                        "task {} already exists in registry {}",
                        task.name,
                        self.name()
                    ))));
                }
                let mut t = (**task).clone();
                t.created_ms = at_ms;
                t.updated_ms = at_ms;
                t.armed.clear();
                // Timers count from now: no run for minutes already past.
                for timer in &mut t.timers {
                    timer.last_fired_min = at_ms / 60_000;
                }
                self.put_task(batch, &t);
                return Ok(Response::Ok);
            }
            TaskCommand::Update { name, .. }
            | TaskCommand::Delete { name }
            | TaskCommand::Run { name, .. }
            | TaskCommand::SourceSeen { name, .. }
            | TaskCommand::TimerAdd { name, .. }
            | TaskCommand::TimerUpdate { name, .. }
            | TaskCommand::TimerRemove { name, .. }
            | TaskCommand::Fire { name, .. } => name,
        };
        let Some(mut t) = self.task(name)? else {
            return Ok(unknown(self.name(), name));
        };
        match cmd {
            TaskCommand::Create { .. }
            | TaskCommand::SecretPut { .. }
            | TaskCommand::SecretDelete { .. } => Ok(Response::Ok),
            TaskCommand::Update { change, .. } => {
                let c = &**change;
                if let Some((file, steps)) = &c.task_file {
                    t.task_file = file.clone();
                    t.steps = steps.clone();
                }
                if let Some(ctx) = &c.context {
                    t.context = ctx.clone();
                }
                if let Some(p) = &c.platform {
                    t.platform = p.clone();
                }
                if let Some(s) = c.timeout_s {
                    t.timeout_s = s;
                }
                if let Some(v) = &c.values {
                    t.values = v.clone();
                }
                if let Some(e) = c.enabled {
                    t.enabled = e;
                }
                if let Some(b) = c.base_image_trigger {
                    t.base_image_trigger = b;
                }
                if let Some(p) = c.poll_s {
                    t.poll_s = p;
                }
                if let Some(h) = &c.hook_secret {
                    t.hook_secret = h.clone();
                }
                t.updated_ms = at_ms;
                self.put_task(batch, &t);
                Ok(Response::Ok)
            }
            TaskCommand::Delete { .. } => {
                self.disarm(batch, &mut t);
                batch.delete_cf(self.cf(CF_TASKS), self.key(&[name]));
                Ok(Response::Ok)
            }
            TaskCommand::SourceSeen { commit, branch, .. } => {
                let first = t.last_commit.is_none();
                if t.last_commit.as_deref() == Some(commit.as_str()) {
                    return Ok(Response::Changed(0));
                }
                t.last_commit = Some(commit.clone());
                self.put_task(batch, &t);
                if first || !t.enabled {
                    return Ok(Response::Changed(0));
                }
                let spec = t.run_spec("commit", Some((commit, branch)));
                let numbers = self.queue_runs(batch, vec![spec], at_ms)?;
                Ok(Response::Changed(numbers.first().copied().unwrap_or(0)))
            }
            TaskCommand::Run {
                trigger, source, ..
            } => {
                // A hook's commit counts as seen: a poll does not build it again.
                if let Some((commit, _)) = source {
                    t.last_commit = Some(commit.clone());
                    self.put_task(batch, &t);
                }
                let source = source.as_ref().map(|(c, b)| (c.as_str(), b.as_str()));
                let numbers = self.queue_runs(batch, vec![t.run_spec(trigger, source)], at_ms)?;
                Ok(Response::Changed(numbers.first().copied().unwrap_or(0)))
            }
            TaskCommand::TimerAdd {
                timer, schedule, ..
            } => {
                if t.timers.iter().any(|x| &x.name == timer) {
                    return Ok(Response::Refused(ApplyError::TaskExists(format!(
                        "task {name} already has a timer {timer}"
                    ))));
                }
                if t.timers.len() >= TIMERS_MAX {
                    return Ok(Response::Refused(ApplyError::TaskExists(format!(
                        "task {name} has {TIMERS_MAX} timers, the most it may have"
                    ))));
                }
                t.timers.push(TimerRecord {
                    name: timer.clone(),
                    schedule: schedule.clone(),
                    enabled: true,
                    last_fired_min: at_ms / 60_000,
                });
                self.put_task(batch, &t);
                Ok(Response::Ok)
            }
            TaskCommand::TimerUpdate {
                timer,
                schedule,
                enabled,
                ..
            } => {
                let Some(x) = t.timers.iter_mut().find(|x| &x.name == timer) else {
                    return Ok(unknown(self.name(), &format!("{name} timer {timer}")));
                };
                if let Some(s) = schedule {
                    x.schedule = s.clone();
                }
                if let Some(e) = enabled {
                    x.enabled = *e;
                }
                self.put_task(batch, &t);
                Ok(Response::Ok)
            }
            TaskCommand::TimerRemove { timer, .. } => {
                let before = t.timers.len();
                t.timers.retain(|x| &x.name != timer);
                if t.timers.len() == before {
                    return Ok(unknown(self.name(), &format!("{name} timer {timer}")));
                }
                self.put_task(batch, &t);
                Ok(Response::Ok)
            }
            TaskCommand::Fire { timer, minute, .. } => {
                let enabled = t.enabled;
                let Some(x) = t.timers.iter_mut().find(|x| &x.name == timer) else {
                    return Ok(Response::Changed(0));
                };
                if *minute <= x.last_fired_min {
                    return Ok(Response::Changed(0));
                }
                x.last_fired_min = *minute;
                let fire = enabled && x.enabled;
                self.put_task(batch, &t);
                if !fire {
                    return Ok(Response::Changed(0));
                }
                let numbers = self.queue_runs(batch, vec![t.run_spec("timer", None)], at_ms)?;
                Ok(Response::Changed(numbers.first().copied().unwrap_or(0)))
            }
        }
    }

    /// A run of task `name` succeeded having built `artifacts`: watch the
    /// base images it names in any registry of the cluster at the digests
    /// it used. A watch is kept in the base's registry (whose pushes move
    /// it), keyed `repo \0 tag \0 task registry \0 task`.
    pub(crate) fn arm_bases(
        &self,
        batch: &mut WriteBatch,
        name: &str,
        artifacts: &RunArtifacts,
    ) -> Result<(), StoreError> {
        let Some(mut t) = self.task(name)? else {
            return Ok(());
        };
        self.disarm(batch, &mut t);
        let outputs: Vec<(Option<&str>, &str, Option<&str>)> = artifacts
            .images
            .iter()
            .map(|b| {
                (
                    b.image.cluster_registry.as_deref(),
                    b.image.repository.as_str(),
                    b.image.tag.as_deref(),
                )
            })
            .collect();
        for b in &artifacts.images {
            for base in b.runtime.iter().chain(&b.buildtime) {
                let (Some(registry), Some(tag), Some(digest)) =
                    (&base.cluster_registry, &base.tag, &base.digest)
                else {
                    continue;
                };
                // Its own output as its base would trigger itself.
                let own = (
                    Some(registry.as_str()),
                    base.repository.as_str(),
                    Some(tag.as_str()),
                );
                if outputs.contains(&own) {
                    continue;
                }
                let entry = (registry.clone(), base.repository.clone(), tag.clone());
                if t.armed.contains(&entry) {
                    continue;
                }
                let there = self.store.registry(registry);
                batch.put_cf(
                    self.cf(CF_TASK_BASES),
                    there.key(&[&base.repository, tag, self.name(), name]),
                    encode(digest),
                );
                t.armed.push(entry);
            }
        }
        self.put_task(batch, &t);
        Ok(())
    }

    /// Tag `repo:tag` of this registry now names `digest`: queue every
    /// task, of any registry, watching it at another digest.
    pub(crate) fn base_moved(
        &self,
        batch: &mut WriteBatch,
        repo: &str,
        tag: &str,
        digest: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let prefix = self.key(&[repo, tag, ""]);
        let watching = self.scan(CF_TASK_BASES, &prefix, None, usize::MAX)?;
        if watching.is_empty() {
            return Ok(());
        }
        // Per registry, queued together: numbers are read once each.
        let mut specs: BTreeMap<String, Vec<RunSpec>> = BTreeMap::new();
        for (k, v) in watching {
            let armed: String = crate::store::decode(CF_TASK_BASES, &v)?;
            if armed == digest {
                continue;
            }
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some((registry, task)) = rest.split_once('\0') else {
                continue;
            };
            let owner = self.store.registry(registry);
            match owner.task(task)? {
                Some(t) => {
                    batch.put_cf(self.cf(CF_TASK_BASES), &k, encode(&digest.to_string()));
                    if t.enabled && t.base_image_trigger {
                        specs
                            .entry(registry.to_string())
                            .or_default()
                            .push(t.run_spec("image_update", None));
                    }
                }
                // Its registry was deleted: the watch goes too.
                None => batch.delete_cf(self.cf(CF_TASK_BASES), &k),
            }
        }
        for (registry, specs) in specs {
            self.store
                .registry(&registry)
                .queue_runs(batch, specs, at_ms)?;
        }
        Ok(())
    }
}

impl crate::MetaStore {
    /// Every task of the cluster with a timer or a polled source, with its
    /// registry: what the leader's scheduling loop reads.
    pub fn timed_tasks(&self) -> Result<Vec<(String, TaskRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_TASKS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let t: TaskRecord = crate::store::decode(CF_TASKS, &v)?;
            if t.timers.is_empty() && t.poll_s == 0 {
                continue;
            }
            let registry = k
                .iter()
                .position(|&b| b == 0)
                .map(|i| String::from_utf8_lossy(&k[..i]).into_owned())
                .unwrap_or_default();
            out.push((registry, t));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Envelope, PutManifest};
    use crate::tasks::{BuiltImage, ImageRef, RunCommand, RunStatus};
    use crate::{MetaStore, DEFAULT_REGISTRY};

    fn at(s: &MetaStore, cmd: Command, at_ms: u64) -> Response {
        s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, at_ms), &[])
            .unwrap()
    }

    fn task(s: &MetaStore, cmd: TaskCommand, at_ms: u64) -> Response {
        at(s, Command::Task(cmd), at_ms)
    }

    fn record(name: &str) -> TaskRecord {
        TaskRecord {
            name: name.into(),
            task_file: "steps:\n  - build: -t $Registry/app:$ID .\n".into(),
            steps: vec!["acb_step_0".into()],
            context: Some("https://git.example/app.git#main:web".into()),
            platform: "linux/amd64".into(),
            timeout_s: 600,
            values: BTreeMap::new(),
            enabled: true,
            base_image_trigger: true,
            timers: vec![],
            hook_secret: None,
            poll_s: 0,
            last_commit: None,
            created_by: "owner".into(),
            created_ms: 0,
            updated_ms: 0,
            armed: vec![],
        }
    }

    /// A push that points `repo:tag` at `digest`.
    fn push(repo: &str, tag: &str, digest: &str) -> Command {
        Command::PutManifest(Box::new(PutManifest {
            repo: repo.into(),
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: b"{}".to_vec(),
            tag: Some(tag.into()),
            blobs: vec![],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: None,
            now_ms: 1,
            new_links: vec![],
            region: "r1".into(),
            replica_regions: vec![],
        }))
    }

    fn runs(s: &MetaStore) -> Vec<crate::RunRecord> {
        s.registry(DEFAULT_REGISTRY).runs(None, 100).unwrap()
    }

    /// Run `number` claimed by agent 1 and finished `Succeeded` with one
    /// image built on `base:v1` at `digest`.
    fn succeed(s: &MetaStore, number: u64, outputs: (&str, &str), digest: &str, at_ms: u64) {
        let id = crate::run_id(DEFAULT_REGISTRY, number);
        let claim = RunCommand::Claim {
            id: id.clone(),
            agent: 1,
            lease_ms: 60_000,
        };
        assert_eq!(at(s, Command::Run(claim), at_ms), Response::Changed(1));
        let image = |repo: &str, tag: &str, d: &str| ImageRef {
            registry: "r:5000".into(),
            repository: repo.into(),
            tag: Some(tag.into()),
            digest: Some(d.into()),
            cluster_registry: Some(DEFAULT_REGISTRY.into()),
        };
        let finish = RunCommand::Finish {
            id,
            agent: 1,
            status: RunStatus::Succeeded,
            error: None,
            log: None,
            artifacts: Box::new(RunArtifacts {
                images: vec![BuiltImage {
                    image: image(outputs.0, outputs.1, "sha256:out"),
                    runtime: Some(image("base", "v1", digest)),
                    buildtime: vec![],
                }],
                git_commit: None,
            }),
        };
        assert_eq!(at(s, Command::Run(finish), at_ms), Response::Changed(1));
    }

    #[test]
    fn a_task_runs_on_demand_with_its_spec_and_a_hooks_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let create = TaskCommand::Create {
            task: Box::new(record("web")),
        };
        assert_eq!(task(&s, create.clone(), 5), Response::Ok);
        assert!(matches!(
            task(&s, create, 6),
            Response::Refused(ApplyError::TaskExists(_))
        ));
        let run = |trigger: &str, source: Option<(String, String)>| TaskCommand::Run {
            name: "web".into(),
            trigger: trigger.into(),
            source,
        };
        assert_eq!(task(&s, run("manual", None), 7), Response::Changed(1));
        let hook = run("commit", Some(("abc123".into(), "main".into())));
        assert_eq!(task(&s, hook, 8), Response::Changed(2));
        let listed = runs(&s);
        assert_eq!(listed[1].spec.task.as_deref(), Some("web"));
        assert_eq!(
            listed[1].spec.context.as_deref(),
            Some("https://git.example/app.git#main:web")
        );
        assert_eq!(
            (
                listed[0].spec.trigger.as_str(),
                listed[0].spec.context.as_deref()
            ),
            ("commit", Some("https://git.example/app.git#abc123:web")),
            "a hook's run builds the commit it names"
        );
        assert_eq!(listed[0].spec.commit.as_deref(), Some("abc123"));
        // Polls: the first commit seen is a baseline; a new one builds; a
        // commit a hook already built is not built again.
        let seen = |c: &str| TaskCommand::SourceSeen {
            name: "web".into(),
            commit: c.into(),
            branch: "main".into(),
        };
        assert_eq!(
            task(&s, seen("abc123"), 9),
            Response::Changed(0),
            "the hook's"
        );
        assert_eq!(task(&s, seen("def456"), 10), Response::Changed(3));
        assert_eq!(task(&s, seen("def456"), 11), Response::Changed(0));
        assert_eq!(runs(&s)[0].spec.commit.as_deref(), Some("def456"));
        task(
            &s,
            TaskCommand::Create {
                task: Box::new(record("fresh")),
            },
            12,
        );
        let first = TaskCommand::SourceSeen {
            name: "fresh".into(),
            commit: "aaa".into(),
            branch: "main".into(),
        };
        assert_eq!(task(&s, first, 13), Response::Changed(0), "a baseline");
        let missing = TaskCommand::Run {
            name: "nope".into(),
            trigger: "manual".into(),
            source: None,
        };
        assert!(matches!(
            task(&s, missing, 9),
            Response::Refused(ApplyError::TaskUnknown(_))
        ));
    }

    #[test]
    fn a_timer_fires_once_per_minute_whoever_proposes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        task(
            &s,
            TaskCommand::Create {
                task: Box::new(record("nightly")),
            },
            60_000 * 100,
        );
        let add = TaskCommand::TimerAdd {
            name: "nightly".into(),
            timer: "t1".into(),
            schedule: "0 3 * * *".into(),
        };
        assert_eq!(task(&s, add.clone(), 60_000 * 100 + 5), Response::Ok);
        assert!(
            matches!(task(&s, add, 60_000 * 101), Response::Refused(_)),
            "names are unique"
        );
        let fire = |minute| TaskCommand::Fire {
            name: "nightly".into(),
            timer: "t1".into(),
            minute,
        };
        assert_eq!(
            task(&s, fire(100), 60_000 * 101),
            Response::Changed(0),
            "not after its creation"
        );
        assert_eq!(task(&s, fire(180), 60_000 * 181), Response::Changed(1));
        assert_eq!(
            task(&s, fire(180), 60_000 * 181 + 1),
            Response::Changed(0),
            "a repeat"
        );
        assert_eq!(
            task(&s, fire(170), 60_000 * 182),
            Response::Changed(0),
            "an older minute"
        );
        let off = TaskCommand::TimerUpdate {
            name: "nightly".into(),
            timer: "t1".into(),
            schedule: None,
            enabled: Some(false),
        };
        task(&s, off, 60_000 * 183);
        assert_eq!(
            task(&s, fire(240), 60_000 * 241),
            Response::Changed(0),
            "disabled"
        );
        assert_eq!(runs(&s).len(), 1);
        assert_eq!(runs(&s)[0].spec.trigger, "timer");
    }

    #[test]
    fn a_moved_base_image_queues_the_tasks_built_on_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        task(
            &s,
            TaskCommand::Create {
                task: Box::new(record("web")),
            },
            1,
        );
        task(
            &s,
            TaskCommand::Create {
                task: Box::new(record("api")),
            },
            1,
        );
        // Loops: a task whose output is its base is never armed.
        task(
            &s,
            TaskCommand::Create {
                task: Box::new(record("self")),
            },
            1,
        );
        for (i, name) in ["web", "api", "self"].iter().enumerate() {
            let run = TaskCommand::Run {
                name: name.to_string(),
                trigger: "manual".into(),
                source: None,
            };
            assert_eq!(task(&s, run, 2), Response::Changed(i as u64 + 1));
        }
        succeed(&s, 1, ("web", "v1"), "sha256:b1", 3);
        succeed(&s, 2, ("api", "v1"), "sha256:b1", 3);
        succeed(&s, 3, ("base", "v1"), "sha256:b1", 3);
        // The same digest pushed again: nothing moved.
        at(&s, push("base", "v1", "sha256:b1"), 4);
        assert_eq!(runs(&s).len(), 3);
        // Another tag of the same repository: not watched.
        at(&s, push("base", "v2", "sha256:b2"), 5);
        assert_eq!(runs(&s).len(), 3);
        // The base moves: web and api are queued, in one apply, with
        // numbers of their own.
        at(&s, push("base", "v1", "sha256:b2"), 6);
        let listed = runs(&s);
        assert_eq!(listed.len(), 5, "{listed:?}");
        let mut queued: Vec<(u64, &str, &str)> = listed[..2]
            .iter()
            .map(|r| {
                (
                    r.number,
                    r.spec.task.as_deref().unwrap(),
                    r.spec.trigger.as_str(),
                )
            })
            .collect();
        queued.sort();
        assert_eq!(
            queued,
            [(4, "api", "image_update"), (5, "web", "image_update")]
        );
        // The same move is not seen twice; a deleted task is not queued.
        at(&s, push("base", "v1", "sha256:b2"), 7);
        task(&s, TaskCommand::Delete { name: "api".into() }, 8);
        at(&s, push("base", "v1", "sha256:b3"), 9);
        let listed = runs(&s);
        assert_eq!(listed.len(), 6);
        assert_eq!(listed[0].spec.task.as_deref(), Some("web"));
        // Disabled, or with the trigger off: not queued.
        let change = TaskChange {
            base_image_trigger: Some(false),
            ..TaskChange::default()
        };
        task(
            &s,
            TaskCommand::Update {
                name: "web".into(),
                change: Box::new(change),
            },
            10,
        );
        at(&s, push("base", "v1", "sha256:b4"), 11);
        assert_eq!(runs(&s).len(), 6);
    }

    #[test]
    fn a_base_in_another_registry_queues_the_task_in_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let in_reg = |registry: &str, cmd: Command, at_ms: u64| {
            s.apply(&Envelope::new(registry, cmd, at_ms), &[]).unwrap()
        };
        let create = TaskCommand::Create {
            task: Box::new(record("app")),
        };
        in_reg("teamone", Command::Task(create), 1);
        let run = TaskCommand::Run {
            name: "app".into(),
            trigger: "manual".into(),
            source: None,
        };
        assert_eq!(
            in_reg("teamone", Command::Task(run), 2),
            Response::Changed(1)
        );
        let id = crate::run_id("teamone", 1);
        let claim = RunCommand::Claim {
            id: id.clone(),
            agent: 1,
            lease_ms: 60_000,
        };
        in_reg("teamone", Command::Run(claim), 3);
        let image = |registry: &str, repo: &str, d: &str| ImageRef {
            registry: "r:5000".into(),
            repository: repo.into(),
            tag: Some("v1".into()),
            digest: Some(d.into()),
            cluster_registry: Some(registry.into()),
        };
        let finish = RunCommand::Finish {
            id,
            agent: 1,
            status: RunStatus::Succeeded,
            error: None,
            log: None,
            artifacts: Box::new(RunArtifacts {
                images: vec![BuiltImage {
                    image: image("teamone", "app", "sha256:out"),
                    // The shared base lives in the default registry.
                    runtime: Some(image(DEFAULT_REGISTRY, "base", "sha256:b1")),
                    buildtime: vec![],
                }],
                git_commit: None,
            }),
        };
        in_reg("teamone", Command::Run(finish), 4);
        let teamone_runs = || s.registry("teamone").runs(None, 10).unwrap();
        // The same repository and tag in teamone is another image.
        in_reg("teamone", push("base", "v1", "sha256:x"), 5);
        assert_eq!(teamone_runs().len(), 1);
        at(&s, push("base", "v1", "sha256:b2"), 6);
        let listed = teamone_runs();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(
            (listed[0].spec.trigger.as_str(), listed[0].number),
            ("image_update", 2)
        );
        assert!(runs(&s).is_empty(), "nothing queued in the base's registry");
        // Deleting the task removes its watch in the other registry.
        in_reg(
            "teamone",
            Command::Task(TaskCommand::Delete { name: "app".into() }),
            7,
        );
        at(&s, push("base", "v1", "sha256:b3"), 8);
        assert_eq!(teamone_runs().len(), 2);
    }

    #[test]
    fn the_secret_store_keeps_sealed_values_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let put = |name: &str, sealed: Vec<u8>| TaskCommand::SecretPut {
            name: name.into(),
            sealed,
        };
        assert_eq!(task(&s, put("db", vec![1, 2, 3]), 5), Response::Ok);
        assert_eq!(task(&s, put("api", vec![4]), 6), Response::Ok);
        assert_eq!(task(&s, put("db", vec![9]), 7), Response::Ok, "replaced");
        let listed = s.registry(DEFAULT_REGISTRY).secrets().unwrap();
        let names: Vec<(&str, &[u8], u64)> = listed
            .iter()
            .map(|(n, r)| (n.as_str(), r.sealed.as_slice(), r.updated_ms))
            .collect();
        assert_eq!(names, [("api", &[4u8][..], 6), ("db", &[9u8][..], 7)]);
        let big = put("big", vec![0; SECRET_SEALED_MAX + 1]);
        assert!(matches!(task(&s, big, 8), Response::Refused(_)));
        let del = |name: &str| TaskCommand::SecretDelete { name: name.into() };
        assert_eq!(task(&s, del("db"), 9), Response::Ok);
        assert!(matches!(task(&s, del("db"), 10), Response::Refused(_)));
        assert!(s.registry(DEFAULT_REGISTRY).secret("db").unwrap().is_none());
        // Another registry's store is its own.
        assert!(s.registry("other").secrets().unwrap().is_empty());
    }

    /// What the previous release stored decodes: a run spec without the
    /// commit and branch a source trigger adds.
    #[test]
    fn a_run_spec_without_commit_and_branch_still_decodes() {
        #[derive(Serialize)]
        struct OldSpec {
            task_file: String,
            steps: Vec<String>,
            platform: String,
            trigger: String,
            task: Option<String>,
            context: Option<String>,
            timeout_s: u64,
            max_attempts: u32,
            requested_by: String,
            values: BTreeMap<String, String>,
        }
        let old = crate::codec::encode(&OldSpec {
            task_file: "steps: []".into(),
            steps: vec![],
            platform: "linux/amd64".into(),
            trigger: "manual".into(),
            task: None,
            context: None,
            timeout_s: 60,
            max_attempts: 2,
            requested_by: "owner".into(),
            values: BTreeMap::new(),
        });
        let spec: RunSpec = crate::codec::decode(&old).unwrap();
        assert_eq!((spec.commit, spec.branch, spec.timeout_s), (None, None, 60));
    }
}
