//! The encoding of every value Wharf stores or sends between nodes: Raft
//! log entries, RPC payloads, state-machine records, snapshots' records.
//!
//! A value is one version byte followed by MessagePack with named fields
//! (rmp-serde's `to_vec_named`). Named fields are what make the format
//! evolvable: a field added with `#[serde(default)]` (or as an `Option`)
//! decodes from older bytes, a field an older binary does not know is
//! skipped, and a new command is a new enum variant that older entries never
//! name. The positional bincode of release 0.1 had none of that (a field
//! added to a command made every older log entry undecodable); the data it
//! wrote is read once by `legacy` and rewritten in this format.
//!
//! Rules for changing a stored type: add fields with a default, never reuse
//! a field or variant name for something else, never remove a variant an
//! older log may still hold.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte of the current format.
pub const FORMAT_V2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("format version {0} is unknown to this release (written by a newer one?)")]
    UnknownVersion(u8),
    #[error("undecodable value: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("undecodable release 0.1 value: {0}")]
    Legacy(String),
}

/// Encode `v` in the current format.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_V2);
    // Writing plain data to a Vec cannot fail: no I/O, and every Wharf
    // type is serializable by construction.
    rmp_serde::encode::write_named(&mut out, v)
        .expect("MessagePack encoding of an in-memory value");
    out
}

/// Decode a value written by `encode` (this release or an older one).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_V2, rest)) => Ok(rmp_serde::from_slice(rest)?),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A record as an older release wrote it...
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Before {
        repo: String,
        size: u64,
    }

    /// ...and after a field was added, one removed, one made optional.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct After {
        repo: String,
        #[serde(default)]
        new_links: Vec<String>,
        #[serde(default = "default_region")]
        region: String,
        note: Option<String>,
    }

    fn default_region() -> String {
        "default".into()
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum CommandBefore {
        Put { repo: String },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum CommandAfter {
        Put {
            repo: String,
            #[serde(default)]
            tag: Option<String>,
        },
        Delete {
            repo: String,
        },
    }

    #[test]
    fn bytes_written_before_a_field_was_added_still_decode() {
        let old = encode(&Before {
            repo: "team/app".into(),
            size: 7,
        });
        let new: After = decode(&old).unwrap();
        assert_eq!(
            new,
            After {
                repo: "team/app".into(),
                new_links: vec![],
                region: "default".into(),
                note: None,
            }
        );
        // And the other way round: an older reader skips what it does not know.
        let newer = encode(&After {
            repo: "x".into(),
            new_links: vec!["a".into()],
            region: "eu".into(),
            note: Some("n".into()),
        });
        assert!(
            decode::<Before>(&newer).is_err(),
            "a required field is missing"
        );
        #[derive(Deserialize)]
        struct OnlyRepo {
            repo: String,
        }
        assert_eq!(decode::<OnlyRepo>(&newer).unwrap().repo, "x");
    }

    #[test]
    fn commands_gain_fields_and_variants_without_breaking_old_entries() {
        let old = encode(&CommandBefore::Put { repo: "a".into() });
        assert_eq!(
            decode::<CommandAfter>(&old).unwrap(),
            CommandAfter::Put {
                repo: "a".into(),
                tag: None
            }
        );
        let unknown = encode(&CommandAfter::Delete { repo: "a".into() });
        assert!(
            decode::<CommandBefore>(&unknown).is_err(),
            "an older release refuses a command it does not know instead of guessing"
        );
    }

    #[test]
    fn versions_are_checked() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert_eq!(decode::<u64>(&encode(&5u64)).unwrap(), 5);
    }
}
