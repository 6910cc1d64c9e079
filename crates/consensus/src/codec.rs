//! Encoding of log entries, RPC payloads and bookkeeping records: the
//! versioned, evolvable format of `wharf_meta::codec`. Release 0.1 wrote
//! bincode; `legacy_decode` reads it where such data can still be found
//! (the log and the state machine's bookkeeping of an upgraded node).

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;

use crate::types::{NodeId, StorageError};

pub use wharf_meta::codec::{decode, encode, CodecError};

/// A bookkeeping value written by this release or by release 0.1. Safe
/// only for types whose 0.1 encoding cannot start with the format byte:
/// `Option<_>` and `StoredMembership` (whose bincode starts with an
/// `Option` tag, 0 or 1).
pub fn decode_or_legacy<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        Some(&wharf_meta::codec::FORMAT_V2) => decode(bytes),
        _ => bincode::deserialize(bytes).map_err(|e| CodecError::Legacy(e.to_string())),
    }
}

/// Map any storage failure to openraft's error for the given subject.
pub fn storage_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}
