//! Build tasks: the task file (`spec`), its template values (`template`),
//! the order a run's steps go in (`plan`), the masking of secrets in logs
//! (`redact`), a build step's flags and the trigger-loop check (`build`),
//! a Dockerfile's base images (`dockerfile`), all without I/O; build
//! contexts packed and unpacked (`context`); and the
//! loop that runs a claimed run's steps (`runner`), with the replicated
//! state and the containers behind its two traits.

pub mod build;
pub mod context;
pub mod docker;
pub mod dockerfile;
pub mod error;
pub mod plan;
pub mod redact;
pub mod runner;
pub mod spec;
pub mod template;

pub use error::SpecError;
pub use plan::{Plan, StepState};
pub use redact::Redactor;
pub use spec::{Action, EnvVar, SecretRef, Step, TaskSpec};
pub use template::RunValues;
