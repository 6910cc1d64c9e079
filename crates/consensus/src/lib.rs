//! Consensus for Wharf's metadata: openraft with a RocksDB log store, the
//! metadata state machine of `wharf-meta`, a gRPC network (tonic), write
//! forwarding to the leader and linearizable (read-index) reads.
//!
//! Request handlers never decide consistency themselves: they call
//! [`Consensus::write`] for every change and [`Consensus::read_barrier`]
//! before answering "unknown" from local state.

// The error types here are openraft's StorageError and tonic's Status,
// fixed by the traits this crate implements; boxing them is not an option.
#![allow(clippy::result_large_err)]

mod codec;
mod config;
mod error;
mod fence;
mod handle;
mod log_store;
mod network;
mod prevote;
mod server;
mod state_machine;
mod types;

pub mod pb {
    tonic::include_proto!("wharf.raft.v1");
}

pub use config::{ConsensusConfig, Peer, PeerTls, RaftTimings};
pub use error::ConsensusError;
pub use fence::{now_unix_ms, Fence};
pub use handle::{Consensus, Status};
pub use types::{NodeId, NodeInfo, TypeConfig};
