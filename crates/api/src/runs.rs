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
    /// Where the build context is: `oci://REPOSITORY@DIGEST` (an archive
    /// the client uploaded as an artifact), a git URL (`URL#ref:subdir`)
    /// or a tar.gz URL. None: the run has no context.
    #[serde(default)]
    pub context: Option<String>,
    /// `wharf build`: build (and push) one image from the context; the
    /// registry writes the task file.
    #[serde(default)]
    pub build: Option<QuickBuild>,
}

/// `wharf build`'s flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickBuild {
    /// `-t app:{{.Run.ID}}`: in this registry unless it names a host.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `-f`, relative to the context.
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub no_push: bool,
    #[serde(default)]
    pub no_cache: bool,
    /// `--secret-build-arg NAME=value`: passed like a build arg, sealed in
    /// the run's record and masked in its log.
    #[serde(default)]
    pub secret_build_args: BTreeMap<String, String>,
}

/// `GET /runs/limits`: what a client checks before uploading a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    pub max_context_bytes: u64,
    /// The repository uploaded contexts go to.
    pub context_repository: String,
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
    /// Where its context came from.
    #[serde(default)]
    pub context: Option<String>,
    /// The images its build steps produced, what they were built from,
    /// and the commit of a git context.
    #[serde(default)]
    pub images: Vec<BuiltImage>,
    #[serde(default)]
    pub git_commit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltImage {
    pub image: ImageRef,
    #[serde(default)]
    pub runtime: Option<ImageRef>,
    #[serde(default)]
    pub buildtime: Vec<ImageRef>,
}

impl Run {
    /// Queued or running.
    pub fn is_active(&self) -> bool {
        self.status == "Queued" || self.status == "Running"
    }
}
