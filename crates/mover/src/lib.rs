//! Cross-region blob transfer. A region that lacks a blob streams it from a
//! region that holds a verified copy: on demand when a client asks for it
//! (single-flight: concurrent requests share one transfer, and bytes are
//! served while they arrive), and in the background for every blob of the
//! registry (the replicator). Transfers resume from their partial file,
//! try other holders on failure, and are verified before being kept.

mod directory;
mod fetcher;
mod recorder;
mod replicator;
mod server;
mod transfer;

pub mod pb {
    tonic::include_proto!("wharf.blobs.v1");
}

pub use directory::{Directory, Holder};
pub use fetcher::{FetchLimits, Fetcher, FetcherStats, Priority};
pub use recorder::{run_recorder, Recorder};
pub use replicator::{run_replicator, ReplicatorConfig};
pub use server::service;
pub use transfer::{Transfer, TransferState};
