//! A history of operations as clients observed them: each operation has an
//! invocation time and, when the client learned its outcome, a completion
//! time. Outcomes the client could not learn (a timeout, a connection cut
//! mid-request) are `Unknown`: the operation may or may not have happened.

use serde::{Deserialize, Serialize};

/// What a client did to one register (a tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterOp {
    /// Point the tag at a value (a manifest digest).
    Write(String),
    /// Remove the tag.
    Delete,
    /// Read the tag: `Some(value)`, or `None` for "unknown" (404).
    Read(Option<String>),
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged (writes) or answered (reads).
    Ok,
    /// Definitely did not happen (a refusal before any effect).
    Failed,
    /// The client does not know (timeout, reset, 5xx after sending).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client (process) that ran it; a process runs one op at a time.
    pub process: u64,
    /// The register (tag) it touched.
    pub key: String,
    pub op: RegisterOp,
    pub outcome: Outcome,
    /// Nanoseconds since the start of the run.
    pub invoked_ns: u64,
    /// When the outcome arrived (for `Unknown`: when the client gave up;
    /// the effect may land at any later time).
    pub completed_ns: u64,
}
