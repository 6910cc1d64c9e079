//! What is wrong with a task file or its template, in the user's terms:
//! each names the step and the fault, so the message alone says what to fix.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    #[error("the task file is {bytes} bytes; the limit is {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    #[error("the task file is not valid YAML for a task: {0}")]
    Yaml(String),
    #[error("version {0} is not one this registry reads (v1.0.0, v1.1.0)")]
    Version(String),
    #[error("the task file has no steps")]
    NoSteps,
    #[error("the task file has {steps} steps; the limit is {max}")]
    TooManySteps { steps: usize, max: usize },
    #[error("{0:?} cannot be a step id (letters, digits, '_', '-', '.', at most 64)")]
    StepId(String),
    #[error("two steps have the id {0}")]
    DuplicateStep(String),
    #[error("{0:?} cannot be a secret id, or is given twice")]
    SecretId(String),
    #[error("step {step} {detail}")]
    Step { step: String, detail: String },
    #[error("step {step} waits for step {missing}, which the file does not have")]
    UnknownStep { step: String, missing: String },
    #[error("steps wait for each other in a cycle: {}", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("{}a timeout of {seconds} s is outside 1 s to {} s",
        .step.as_ref().map(|s| format!("step {s}: ")).unwrap_or_default(),
        crate::spec::STEP_TIMEOUT_MAX_S)]
    Timeout { step: Option<String>, seconds: u64 },
    #[error("{}environment entry {entry:?} is not NAME=value",
        .step.as_ref().map(|s| format!("step {s}: ")).unwrap_or_default())]
    Env { step: Option<String>, entry: String },
    #[error("a build step's arguments: {0}")]
    Build(String),
    #[error("the task file's template: {0}")]
    Template(String),
    #[error("the template uses {0}, which is not set (pass it with --set {1}=…)")]
    MissingValue(String, String),
}
