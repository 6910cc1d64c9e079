//! Locks: the four changeable attributes of a repository, a tag and a
//! manifest (the cloud registry's `--write-enabled`, `--delete-enabled`,
//! `--read-enabled`, `--list-enabled`).
//!
//! Writes are checked here, when the command is applied: a lock
//! acknowledged through one region binds a write proposed through any
//! region from the next entry of the log on. Reads and listings are
//! checked by the node against its own applied state (`Registry::
//! read_lock`), so they bind a region once it has applied the change.
//!
//! What each flag refuses (write locks imply delete locks: deleting is a
//! write):
//! - repository `write_enabled = false`: any manifest or tag push, any
//!   delete inside the repository, deleting the repository;
//! - repository `delete_enabled = false`: deletes inside it, and of it;
//! - tag `write_enabled = false`: moving or deleting the tag (and deleting
//!   the manifest it names, which would delete the tag);
//! - manifest `write_enabled = false` / `delete_enabled = false`: deleting
//!   the manifest (its bytes are immutable anyway);
//! - `read_enabled = false`: pulling the manifest (for a repository: any
//!   manifest or blob of it);
//! - `list_enabled = false`: the tag (or every tag of the manifest, or the
//!   repository) is left out of tags/list and the catalog.
//!
//! Retention and GC never remove a delete-locked manifest (or, through it,
//! its blobs): retention deletes through the same checks.

use serde::{Deserialize, Serialize};

use crate::error::ApplyError;

fn yes() -> bool {
    true
}

/// The changeable attributes of a repository, tag or manifest; all enabled
/// unless changed (and for every record written before locks existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default = "yes")]
    pub write_enabled: bool,
    #[serde(default = "yes")]
    pub delete_enabled: bool,
    #[serde(default = "yes")]
    pub read_enabled: bool,
    #[serde(default = "yes")]
    pub list_enabled: bool,
}

impl Default for Attributes {
    fn default() -> Attributes {
        Attributes {
            write_enabled: true,
            delete_enabled: true,
            read_enabled: true,
            list_enabled: true,
        }
    }
}

/// A change of attributes: the flags named, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AttributeChange {
    #[serde(default)]
    pub write_enabled: Option<bool>,
    #[serde(default)]
    pub delete_enabled: Option<bool>,
    #[serde(default)]
    pub read_enabled: Option<bool>,
    #[serde(default)]
    pub list_enabled: Option<bool>,
}

impl AttributeChange {
    pub fn is_empty(&self) -> bool {
        *self == AttributeChange::default()
    }
}

/// What a lock is set on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockTarget {
    Repository,
    Tag(String),
    Manifest(String),
}

impl Attributes {
    /// These attributes with `change` applied; whether anything changed.
    pub fn with(self, change: &AttributeChange) -> (Attributes, bool) {
        let next = Attributes {
            write_enabled: change.write_enabled.unwrap_or(self.write_enabled),
            delete_enabled: change.delete_enabled.unwrap_or(self.delete_enabled),
            read_enabled: change.read_enabled.unwrap_or(self.read_enabled),
            list_enabled: change.list_enabled.unwrap_or(self.list_enabled),
        };
        (next, next != self)
    }

    /// Refuse a write (push, move) of `what` if it is write-locked.
    pub fn check_write(&self, what: &str) -> Result<(), ApplyError> {
        if self.write_enabled {
            Ok(())
        } else {
            Err(ApplyError::Locked(format!(
                "{what} has write-enabled false"
            )))
        }
    }

    /// Refuse deleting `what` (or something inside it) if it is write- or
    /// delete-locked.
    pub fn check_delete(&self, what: &str) -> Result<(), ApplyError> {
        self.check_write(what)?;
        if self.delete_enabled {
            Ok(())
        } else {
            Err(ApplyError::Locked(format!(
                "{what} has delete-enabled false"
            )))
        }
    }

    /// Whether this is the default (nothing locked).
    pub fn is_unlocked(&self) -> bool {
        *self == Attributes::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn absent_attributes_decode_as_unlocked() {
        #[derive(Serialize)]
        struct Empty {}
        let a: Attributes = decode(&encode(&Empty {})).unwrap();
        assert!(a.is_unlocked());
    }

    #[test]
    fn records_written_before_locks_existed_are_unlocked() {
        use crate::records::{RepoRecord, TagRecord};
        // TagRecord and RepoRecord as the release before locks wrote them.
        #[derive(Serialize)]
        struct OldTag {
            digest: String,
            updated_ms: u64,
        }
        #[derive(Serialize)]
        struct OldRepo {
            created_ms: u64,
            updated_ms: u64,
        }
        let tag: TagRecord = decode(&encode(&OldTag {
            digest: "sha256:ab".into(),
            updated_ms: 7,
        }))
        .unwrap();
        assert_eq!((tag.digest.as_str(), tag.updated_ms), ("sha256:ab", 7));
        assert!(tag.attributes.is_unlocked());
        let repo: RepoRecord = decode(&encode(&OldRepo {
            created_ms: 1,
            updated_ms: 2,
        }))
        .unwrap();
        assert!(repo.attributes.is_unlocked());
    }

    #[test]
    fn a_change_touches_only_the_flags_it_names() {
        let locked = Attributes {
            read_enabled: false,
            ..Attributes::default()
        };
        let (next, changed) = locked.with(&AttributeChange {
            write_enabled: Some(false),
            ..Default::default()
        });
        assert!(changed);
        assert!(!next.write_enabled && !next.read_enabled);
        assert!(next.delete_enabled && next.list_enabled);
        assert_eq!(next.with(&AttributeChange::default()), (next, false));
        assert!(
            next.check_delete("x").is_err(),
            "a write lock locks deletes"
        );
        let delete_only = Attributes {
            delete_enabled: false,
            ..Attributes::default()
        };
        assert!(delete_only.check_write("x").is_ok());
        assert_eq!(
            delete_only.check_delete("repository a").unwrap_err(),
            ApplyError::Locked("repository a has delete-enabled false".into())
        );
    }
}
