//! The fence of this node, kept in DATA_DIR/fence.json so that a node
//! restarted during a drill stays out of the group until the fence is
//! lifted or expires (a fence forgotten by a crash would put the region
//! back in the middle of the rehearsal).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

#[derive(Serialize, Deserialize)]
struct FenceFile {
    until_unix_ms: u64,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("fence.json")
}

/// The fence recorded on disk, if it has not expired.
pub fn load(data_dir: &Path) -> Result<Option<u64>, NodeError> {
    let p = path(data_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::Config(format!("{}: {e}", p.display()))),
    };
    let f: FenceFile = serde_json::from_str(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", p.display())))?;
    Ok((f.until_unix_ms > wharf_consensus::now_unix_ms()).then_some(f.until_unix_ms))
}

/// Record the fence (None: lifted) durably, before it takes effect.
pub fn store(data_dir: &Path, until_ms: Option<u64>) -> std::io::Result<()> {
    let p = path(data_dir);
    match until_ms {
        Some(until_unix_ms) => {
            let bytes =
                serde_json::to_vec(&FenceFile { until_unix_ms }).map_err(std::io::Error::other)?;
            wharf_auth::write_private(&p, &bytes)
        }
        None => match std::fs::remove_file(&p) {
            Ok(()) => std::fs::File::open(data_dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_fence_is_loaded_until_it_expires_or_is_lifted() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let until = wharf_consensus::now_unix_ms() + 60_000;
        store(dir.path(), Some(until)).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(until));
        store(dir.path(), Some(1)).expect("store expired");
        assert_eq!(load(dir.path()).expect("load"), None);
        store(dir.path(), None).expect("lift");
        assert!(!path(dir.path()).exists());
        store(dir.path(), None).expect("lifting twice is fine");
        std::fs::write(path(dir.path()), b"{not json").expect("write");
        assert!(
            load(dir.path()).is_err(),
            "a damaged fence file is an error"
        );
    }
}
