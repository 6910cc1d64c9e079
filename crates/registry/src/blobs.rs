//! Blobs of a registry's repositories (spec "Pushing blobs", "Mounting a
//! blob from another repository", "Deleting blobs"): what an upload, a
//! mount and a delete mean for the metadata. The bytes are the blob
//! store's; upload sessions are keyed like pending links, so a session of
//! one registry cannot be continued through another.

use std::collections::BTreeSet;

use wharf_meta::{ApplyError, Command};
use wharf_oci::{validate_repository, Digest};

use crate::{split_pending_key, Handle, ServiceError, ServiceResult};

impl Handle {
    /// Acknowledge an upload once the blob is verified, fsynced and in
    /// place: its link to the repository is recorded durably on this node
    /// and reaches the metadata with the push's manifest (one Raft
    /// proposal per push) or, for a blob pushed alone, in the next
    /// background batch.
    pub async fn link_uploaded(&self, repo: &str, digest: &Digest, size: u64) -> ServiceResult<()> {
        self.service
            .blobs
            .add_pending(&self.pending_key(repo), digest, size)
            .await?;
        Ok(())
    }

    /// Mount `digest` into `repo` from `from` (which the caller may pull;
    /// `None` when it may not, or named none). Returns its size when
    /// mounted; `None` means the client uploads it instead (the spec's
    /// fallback): the blob is not in `from`, or not held in this region.
    pub async fn mount(
        &self,
        repo: &str,
        digest: &Digest,
        from: Option<&str>,
    ) -> ServiceResult<Option<u64>> {
        // Without `from`, OCI 1.1 lets a registry mount any blob it can
        // see; Wharf only mounts from a named repository.
        let Some(from) = from else { return Ok(None) };
        validate_repository(from)?;
        let Some(size) = self.blob_in_repo(from, digest).await? else {
            return Ok(None);
        };
        // Only a blob held in this region is mounted at once; otherwise
        // the client uploads it, which is no slower. Touched, so that a GC
        // sweep of an older copy keeps it until the new link is registered.
        if self.service.blobs.touch(digest).await?.is_none() {
            return Ok(None);
        }
        self.link_uploaded(repo, digest, size).await?;
        Ok(Some(size))
    }

    /// Remove `digest`'s link from `repo` (registered or still pending).
    pub async fn unlink_blob(
        &self,
        repo: &str,
        digest: &Digest,
        request_id: Option<String>,
    ) -> ServiceResult<()> {
        validate_repository(repo)?;
        let was_pending = self
            .service
            .blobs
            .remove_pending(&self.pending_key(repo), digest.as_str())?;
        let unlinked = self
            .write_once(
                Command::UnlinkBlob {
                    repo: repo.to_string(),
                    digest: digest.to_string(),
                },
                request_id,
            )
            .await;
        match unlinked {
            Ok(_) => Ok(()),
            // Uploaded here and not registered yet: removing the pending
            // link was the whole delete.
            Err(ServiceError::Refused(ApplyError::BlobUnknown)) if was_pending => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Repositories of this registry whose first blobs were uploaded to
    /// this node and are not in the metadata yet (listed by the catalog).
    pub fn pending_repositories(&self) -> BTreeSet<String> {
        self.service
            .blobs
            .pending_repositories()
            .iter()
            .filter_map(|key| {
                let (registry, repo) = split_pending_key(key);
                (registry == self.name()).then(|| repo.to_string())
            })
            .collect()
    }
}
