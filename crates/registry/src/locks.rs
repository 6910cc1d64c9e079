//! Locks as requests meet them: changing them (one command that names
//! only the flags it changes), and the read, list and early write checks
//! a node makes against its own applied state. The binding write checks
//! are the state machine's (see `wharf_meta::locks`).

use wharf_consensus::now_unix_ms;
use wharf_meta::{AttributeChange, Command, LockTarget, ManifestRecord};
use wharf_oci::{validate_repository, Digest, ErrorCode, Reference};

use crate::{Handle, ServiceError, ServiceResult};

impl Handle {
    /// Change the locks of a repository (`reference` `None`), a tag or a
    /// manifest; the number of records changed (0: already so).
    pub async fn update_attributes(
        &self,
        repo: &str,
        reference: Option<&str>,
        change: AttributeChange,
    ) -> ServiceResult<u64> {
        validate_repository(repo)?;
        if change.is_empty() {
            return Err(ServiceError::Spec {
                code: ErrorCode::Unsupported,
                message: "nothing to change: name at least one of write-enabled, \
                          delete-enabled, read-enabled, list-enabled"
                    .into(),
                status: Some(400),
            });
        }
        let target = match reference.map(Reference::parse).transpose()? {
            None => LockTarget::Repository,
            Some(Reference::Tag(t)) => LockTarget::Tag(t),
            Some(Reference::Digest(d)) => LockTarget::Manifest(d.to_string()),
        };
        self.write(Command::UpdateAttributes {
            repo: repo.to_string(),
            target,
            change,
        })
        .await
    }

    /// A manifest for a pull: resolved as `manifest` does, then refused
    /// (403 DENIED) if the repository, the tag or the manifest is
    /// read-locked; the pull is logged for keep policies.
    pub async fn pull_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> ServiceResult<(String, ManifestRecord)> {
        let (digest, record, tag_locks) = self.manifest_and_tag(repo, reference).await?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        let with_locks = tag.map(|t| (t, tag_locks.as_ref()));
        if let Some(lock) = self
            .meta()
            .read_lock_with(repo, with_locks, &record, &digest)?
        {
            return Err(lock.into());
        }
        let reference = tag.unwrap_or(&digest);
        self.service
            .pulls
            .record(self.name(), repo, reference, now_unix_ms());
        Ok((digest, record))
    }

    /// Refuse a blob read of a read-locked repository.
    pub fn check_blob_read(&self, repo: &str, digest: &Digest) -> ServiceResult<()> {
        if self.meta().repository_reads_enabled(repo)? {
            return Ok(());
        }
        Err(wharf_meta::ApplyError::Locked(format!(
            "repository {repo} has read-enabled false (blob {digest})"
        ))
        .into())
    }

    /// Refuse an upload or mount into a write-locked repository before
    /// its bytes are sent. Only a courtesy: the manifest PUT that would
    /// use the blob is what the state machine refuses.
    pub fn check_upload(&self, repo: &str) -> ServiceResult<()> {
        let locks = self.meta().repository_attributes(repo)?;
        Ok(locks.check_write(&format!("repository {repo}"))?)
    }
}
