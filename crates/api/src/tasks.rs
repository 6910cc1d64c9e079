//! `/tasks`: stored build tasks (`wharf task`), their timers and triggers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runs::QuickBuild;

/// `POST /tasks`. One of `cmd`, `file` (a task file) or `build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub name: String,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub build: Option<QuickBuild>,
    /// A git URL (`URL#ref:subdir`) or a tar.gz URL; none: no context.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Run again when a base image moves (default: on).
    #[serde(default)]
    pub base_image_trigger: Option<bool>,
    /// A first timer, `t1`: 5-field cron, UTC.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Accept source-commit hooks: the answer carries the HMAC secret,
    /// shown this once.
    #[serde(default)]
    pub commit_trigger: bool,
    /// Poll the git context's ref this often (seconds, 10 or more; none:
    /// never), for git servers that send no hooks.
    #[serde(default)]
    pub poll_s: Option<u64>,
}

/// `PATCH /tasks/NAME`: only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub build: Option<QuickBuild>,
    /// `""` removes the context.
    #[serde(default)]
    pub context: Option<String>,
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
    /// On: a new hook secret (in the answer); off: no hook.
    #[serde(default)]
    pub commit_trigger: Option<bool>,
    /// 0: stop polling.
    #[serde(default)]
    pub poll_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
}

/// `POST /tasks/NAME/timers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTimer {
    pub name: String,
    pub schedule: String,
}

/// `PATCH /tasks/NAME/timers/TIMER`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerUpdate {
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A task as `task show` and `task list` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub enabled: bool,
    #[serde(default)]
    pub context: Option<String>,
    pub platform: String,
    pub timeout_s: u64,
    pub steps: Vec<String>,
    pub base_image_trigger: bool,
    #[serde(default)]
    pub timers: Vec<Timer>,
    /// Where git servers send commit events (HMAC-signed); none: no hook.
    #[serde(default)]
    pub hook: Option<String>,
    /// Only in the answer that made it: the hook's HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_secret: Option<String>,
    /// Seconds between polls of its git ref (0: none).
    #[serde(default)]
    pub poll_s: u64,
    /// The last commit of its context seen (by a hook or a poll).
    #[serde(default)]
    pub last_commit: Option<String>,
    /// `repo:tag` base images its last successful run was built from.
    #[serde(default)]
    pub watching: Vec<String>,
    pub created_by: String,
    pub created_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// The task file.
    #[serde(default)]
    pub file: String,
}

/// `PUT /secrets/NAME`: a value for the registry's task secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue {
    pub value: String,
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    pub updated_ms: u64,
}
