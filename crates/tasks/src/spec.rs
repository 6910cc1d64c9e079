//! The task file: the cloud registry's multi-step YAML (`acr-task.yaml`),
//! parsed into checked types. Everything a run needs to know about its
//! steps is decided here, before a run is queued: unknown keys, a step
//! with no action or two, a `when` naming no step, a dependency cycle and
//! out-of-range timeouts are refused with the step they are in, so a bad
//! file fails at `wharf task create`, not an hour into a build.
//!
//! The file is rendered as a template first (see `template`), then parsed.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::SpecError;

/// Task files larger than this are refused before parsing.
pub const TASK_FILE_MAX_BYTES: usize = 256 << 10;
/// Steps in one task.
pub const STEPS_MAX: usize = 64;
/// A step's timeout when neither it nor the file's `stepTimeout` says.
pub const STEP_TIMEOUT_DEFAULT_S: u64 = 600;
/// The longest a step may be given (the cloud registry's run limit, 8 h).
pub const STEP_TIMEOUT_MAX_S: u64 = 8 * 3600;
/// Retries of one step, and the longest delay between two.
pub const RETRIES_MAX: u32 = 10;
pub const RETRY_DELAY_MAX_S: u64 = 3600;
/// The file versions whose keys this parser knows.
pub const VERSIONS: [&str; 2] = ["v1.0.0", "v1.1.0"];
/// `when: ["-"]`: the step starts with the run, waiting for nothing.
pub const START_AT_ONCE: &str = "-";

/// A checked task file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    pub version: String,
    /// `KEY=value` for every step, before the step's own.
    pub env: Vec<EnvVar>,
    pub secrets: Vec<SecretRef>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A secret the run reads from its registry's secret store, named `id` in
/// the file (`{{.Secrets.id}}`) and `name` in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: String,
    pub action: Action,
    /// Indexes of the steps this one waits for (empty: starts at once).
    pub after: Vec<usize>,
    pub env: Vec<EnvVar>,
    pub timeout_s: u64,
    /// Started and left running: later steps do not wait for it to end,
    /// and it is stopped when the run ends.
    pub detach: bool,
    /// A failure of this step does not fail the run.
    pub ignore_errors: bool,
    pub retries: u32,
    pub retry_delay_s: u64,
    pub working_directory: Option<String>,
    pub entry_point: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `docker build` arguments: `-t $Registry/app:$ID -f Dockerfile .`
    Build(String),
    /// Image references to push.
    Push(Vec<String>),
    /// An image and its arguments: `$Registry/app:v1 --flag`.
    Cmd(String),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Build(_) => "build",
            Action::Push(_) => "push",
            Action::Cmd(_) => "cmd",
        }
    }
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTask {
    version: Option<String>,
    step_timeout: Option<u64>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secrets: Vec<RawSecret>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    id: String,
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStep {
    id: Option<String>,
    build: Option<String>,
    push: Option<Vec<String>>,
    cmd: Option<String>,
    when: Option<Vec<String>>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<u64>,
    #[serde(default)]
    detach: bool,
    #[serde(default)]
    ignore_errors: bool,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    retry_delay: u64,
    working_directory: Option<String>,
    entry_point: Option<String>,
}

/// Whether `s` can name a step, a secret or a variable: what a
/// reference to it can be checked against.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn env_vars(entries: &[String], step: Option<&str>) -> Result<Vec<EnvVar>, SpecError> {
    entries
        .iter()
        .map(|e| {
            let (name, value) = e.split_once('=').unwrap_or((e, ""));
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid || !e.contains('=') {
                return Err(SpecError::Env {
                    step: step.map(str::to_string),
                    entry: e.clone(),
                });
            }
            Ok(EnvVar {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

impl TaskSpec {
    /// Parse and check a rendered task file.
    pub fn parse(text: &str) -> Result<TaskSpec, SpecError> {
        if text.len() > TASK_FILE_MAX_BYTES {
            return Err(SpecError::TooLarge {
                bytes: text.len(),
                max: TASK_FILE_MAX_BYTES,
            });
        }
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_depth: 16,
                max_nodes: 20_000,
                max_aliases: 100,
                max_anchors: 100,
            },
        };
        let raw: RawTask = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| SpecError::Yaml(e.to_string()))?;
        raw.check()
    }
}

impl RawTask {
    fn check(self) -> Result<TaskSpec, SpecError> {
        let version = self.version.unwrap_or_else(|| VERSIONS[0].to_string());
        if !VERSIONS.contains(&version.as_str()) {
            return Err(SpecError::Version(version));
        }
        let default_timeout = self.step_timeout.unwrap_or(STEP_TIMEOUT_DEFAULT_S);
        if default_timeout == 0 || default_timeout > STEP_TIMEOUT_MAX_S {
            return Err(SpecError::Timeout {
                step: None,
                seconds: default_timeout,
            });
        }
        let env = env_vars(&self.env, None)?;
        let mut secrets = Vec::new();
        for s in self.secrets {
            if !is_identifier(&s.id) || secrets.iter().any(|k: &SecretRef| k.id == s.id) {
                return Err(SpecError::SecretId(s.id));
            }
            let name = s.secret.unwrap_or_else(|| s.id.clone());
            secrets.push(SecretRef { id: s.id, name });
        }
        if self.steps.is_empty() {
            return Err(SpecError::NoSteps);
        }
        if self.steps.len() > STEPS_MAX {
            return Err(SpecError::TooManySteps {
                steps: self.steps.len(),
                max: STEPS_MAX,
            });
        }
        // Ids first: a `when` may name a step further down the file.
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut named = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let id = step.id.clone().unwrap_or_else(|| format!("acb_step_{i}"));
            if !is_identifier(&id) || id == START_AT_ONCE {
                return Err(SpecError::StepId(id));
            }
            if ids.insert(id.clone(), i).is_some() {
                return Err(SpecError::DuplicateStep(id));
            }
            named.push(id);
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, (raw, id)) in self.steps.into_iter().zip(named).enumerate() {
            steps.push(raw.check(i, id, &ids, default_timeout)?);
        }
        crate::plan::check_acyclic(&steps)?;
        Ok(TaskSpec {
            version,
            env,
            secrets,
            steps,
        })
    }
}

impl RawStep {
    fn check(
        self,
        index: usize,
        id: String,
        ids: &HashMap<String, usize>,
        default_timeout: u64,
    ) -> Result<Step, SpecError> {
        let step_err = |what: &str| SpecError::Step {
            step: id.clone(),
            detail: what.to_string(),
        };
        let action = match (self.build, self.push, self.cmd) {
            (Some(b), None, None) if !b.trim().is_empty() => Action::Build(b),
            (None, Some(p), None) if !p.is_empty() && p.iter().all(|r| !r.trim().is_empty()) => {
                Action::Push(p)
            }
            (None, None, Some(c)) if !c.trim().is_empty() => Action::Cmd(c),
            (None, None, None) => return Err(step_err("has none of build, push or cmd")),
            (b, p, c)
                if [b.is_some(), p.is_some(), c.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count()
                    > 1 =>
            {
                return Err(step_err("has more than one of build, push and cmd"))
            }
            _ => return Err(step_err("has an empty build, push or cmd")),
        };
        // No `when`: after the step before it (the file's order), as the
        // cloud registry does; `["-"]`: at once.
        let after = match self.when {
            None => index.checked_sub(1).into_iter().collect(),
            Some(when) if when.iter().any(|w| w == START_AT_ONCE) => {
                if when.len() > 1 {
                    return Err(step_err("`when` has \"-\" and other steps"));
                }
                Vec::new()
            }
            Some(when) => {
                let mut after = Vec::with_capacity(when.len());
                for w in &when {
                    match ids.get(w) {
                        Some(&j) if j == index => return Err(step_err("waits for itself")),
                        Some(&j) => after.push(j),
                        None => {
                            return Err(SpecError::UnknownStep {
                                step: id.clone(),
                                missing: w.clone(),
                            })
                        }
                    }
                }
                after.sort_unstable();
                after.dedup();
                after
            }
        };
        let timeout_s = self.timeout.unwrap_or(default_timeout);
        if timeout_s == 0 || timeout_s > STEP_TIMEOUT_MAX_S {
            return Err(SpecError::Timeout {
                step: Some(id),
                seconds: timeout_s,
            });
        }
        if self.retries > RETRIES_MAX {
            return Err(step_err(&format!(
                "retries {} is more than {RETRIES_MAX}",
                self.retries
            )));
        }
        if self.retry_delay > RETRY_DELAY_MAX_S {
            return Err(step_err(&format!(
                "retryDelay {} s is more than {RETRY_DELAY_MAX_S} s",
                self.retry_delay
            )));
        }
        if self.detach && !matches!(action, Action::Cmd(_)) {
            return Err(step_err("detach is for cmd steps only"));
        }
        if self.entry_point.is_some() && !matches!(action, Action::Cmd(_)) {
            return Err(step_err("entryPoint is for cmd steps only"));
        }
        let env = env_vars(&self.env, Some(&id))?;
        Ok(Step {
            id,
            action,
            after,
            env,
            timeout_s,
            detach: self.detach,
            ignore_errors: self.ignore_errors,
            retries: self.retries,
            retry_delay_s: self.retry_delay,
            working_directory: self.working_directory,
            entry_point: self.entry_point,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
version: v1.1.0
stepTimeout: 300
env:
  - MODE=release
secrets:
  - id: token
  - id: key
    secret: signing-key
steps:
  - id: build-base
    build: -t $Registry/base:$ID -f base.Dockerfile .
    when: ["-"]
  - id: build-web
    build: -t $Registry/web:$ID .
    when: ["-"]
    env: ["TARGET=web"]
  - push: ["$Registry/base:$ID", "$Registry/web:$ID"]
    when: [build-base, build-web]
    retries: 2
    retryDelay: 5
  - id: test
    cmd: $Registry/web:$ID --self-test
    timeout: 60
    ignoreErrors: true
    workingDirectory: /src
    entryPoint: /bin/sh
  - id: serve
    cmd: $Registry/web:$ID
    detach: true
"#;

    #[test]
    fn a_full_file_parses_with_its_defaults_and_dependencies() {
        let t = TaskSpec::parse(FULL).unwrap();
        assert_eq!(t.version, "v1.1.0");
        assert_eq!(
            t.env,
            [EnvVar {
                name: "MODE".into(),
                value: "release".into()
            }]
        );
        assert_eq!(t.secrets[1].name, "signing-key");
        assert_eq!(
            t.secrets[0].name, "token",
            "the store name defaults to the id"
        );
        let ids: Vec<_> = t.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["build-base", "build-web", "acb_step_2", "test", "serve"]
        );
        assert!(t.steps[0].after.is_empty() && t.steps[1].after.is_empty());
        assert_eq!(t.steps[2].after, [0, 1]);
        assert_eq!(t.steps[3].after, [2], "no `when`: after the step above");
        assert_eq!(t.steps[2].timeout_s, 300, "the file's stepTimeout");
        assert_eq!(t.steps[3].timeout_s, 60);
        assert_eq!((t.steps[2].retries, t.steps[2].retry_delay_s), (2, 5));
        assert!(t.steps[3].ignore_errors && t.steps[4].detach);
        assert_eq!(t.steps[3].entry_point.as_deref(), Some("/bin/sh"));
        assert_eq!(
            t.steps[2].action,
            Action::Push(vec![
                "$Registry/base:$ID".into(),
                "$Registry/web:$ID".into()
            ])
        );
    }

    #[test]
    fn a_one_step_file_takes_every_default() {
        let t = TaskSpec::parse("steps:\n  - cmd: hello-world\n").unwrap();
        assert_eq!(t.version, "v1.0.0");
        assert_eq!(t.steps[0].timeout_s, STEP_TIMEOUT_DEFAULT_S);
        assert_eq!(t.steps[0].id, "acb_step_0");
        assert!(t.steps[0].after.is_empty());
    }

    /// The error `text` is refused with, as the user reads it.
    fn refused(text: &str) -> String {
        TaskSpec::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_are_refused_naming_the_step_and_the_fault() {
        let cases: &[(&str, &str)] = &[
            ("steps:\n  - id: a\n", "step a has none of build, push or cmd"),
            (
                "steps:\n  - id: a\n    build: .\n    cmd: x\n",
                "step a has more than one of build, push and cmd",
            ),
            (
                "steps:\n  - id: a\n    cmd: x\n    when: [nope]\n",
                "step a waits for step nope, which the file does not have",
            ),
            (
                "steps:\n  - id: a\n    cmd: x\n    when: [a]\n",
                "step a waits for itself",
            ),
            (
                "steps:\n  - id: a\n    cmd: x\n    when: [b]\n  - id: b\n    cmd: y\n    when: [a]\n",
                "steps wait for each other in a cycle: a, b",
            ),
            (
                "steps:\n  - id: a\n    cmd: x\n  - id: a\n    cmd: y\n",
                "two steps have the id a",
            ),
            (
                "steps:\n  - cmd: x\n    timeout: 0\n",
                "step acb_step_0: a timeout of 0 s is outside 1 s to 28800 s",
            ),
            (
                "steps:\n  - cmd: x\n    repeat: 3\n",
                "unknown field `repeat`",
            ),
            ("version: v2\nsteps:\n  - cmd: x\n", "version v2"),
            ("steps: []\n", "has no steps"),
            (
                "steps:\n  - build: .\n    detach: true\n",
                "detach is for cmd steps only",
            ),
            (
                "env: [\"1X=2\"]\nsteps:\n  - cmd: x\n",
                "environment entry \"1X=2\"",
            ),
            (
                "steps:\n  - cmd: x\n    when: [\"-\", y]\n  - id: y\n    cmd: z\n",
                "`when` has \"-\" and other steps",
            ),
            ("steps:\n  - cmd: [unclosed\n", "not valid YAML"),
        ];
        for (text, want) in cases {
            let got = refused(text);
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn files_past_the_limits_are_refused_before_or_while_parsing() {
        let big = format!("steps:\n  - cmd: \"{}\"\n", "x".repeat(TASK_FILE_MAX_BYTES));
        assert!(refused(&big).contains("262144 bytes"));
        let many: String = (0..=STEPS_MAX)
            .map(|i| format!("  - cmd: s{i}\n"))
            .collect();
        assert!(refused(&format!("steps:\n{many}")).contains("65 steps"));
        // Nesting past the parser's budget is an error, not a stack overflow.
        let deep = format!("steps: {}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(refused(&deep).contains("not valid YAML"));
    }
}
