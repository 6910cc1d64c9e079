//! Build tasks, the parts with no I/O: the task file (`spec`), its
//! template values (`template`), the order a run's steps go in (`plan`),
//! the masking of secrets in logs (`redact`), a build step's flags and
//! the trigger-loop check (`build`), and a Dockerfile's base images
//! (`dockerfile`). Runs, their queue and the executors build on these.

pub mod build;
pub mod dockerfile;
pub mod error;
pub mod plan;
pub mod redact;
pub mod spec;
pub mod template;

pub use error::SpecError;
pub use plan::{Plan, StepState};
pub use redact::Redactor;
pub use spec::{Action, EnvVar, SecretRef, Step, TaskSpec};
pub use template::RunValues;
