//! `/runs`: build task runs (`wharf run`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /runs`: run an image's command (`cmd`) or a task file (`file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    /// `$Registry/app:v1 ARGS`: one `cmd` step.
    #[serde(default)]
    pub cmd: Option<String>,
    /// A task file (`acr-task.yaml`), not yet rendered.
    #[serde(default)]
    pub file: Option<String>,
    /// `--set name=value`.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// The whole run's limit, seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

/// A run as `wharf run` and `list-runs` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub task: Option<String>,
    pub platform: String,
    pub trigger: String,
    pub queued_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// The node that ran it.
    #[serde(default)]
    pub agent: Option<u64>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub steps: Vec<RunStep>,
}

impl Run {
    /// Queued or running.
    pub fn is_active(&self) -> bool {
        self.status == "Queued" || self.status == "Running"
    }
}
