//! Pushing and deleting manifests and tags (spec "Pushing manifests",
//! "Deleting manifests"): what a push links, proposes and waits for.

use wharf_meta::{BlobRef, Command, Origin, PutManifest};
use wharf_oci::manifest;
use wharf_oci::{validate_repository, Digest, ErrorCode, Hasher, Reference};

use crate::{Handle, ServiceError, ServiceResult};

/// A manifest as the client sent it.
pub struct ManifestPush<'a> {
    pub repo: &'a str,
    pub reference: &'a str,
    /// Exactly the bytes received (at most the spec's 4 MiB, bounded by
    /// the caller while reading).
    pub raw: &'a [u8],
    pub content_type: Option<&'a str>,
    /// The client's idempotency key, if it named the write.
    pub request_id: Option<String>,
    /// The request, as events report it.
    pub origin: Option<Origin>,
}

/// What an accepted push answers.
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<String>,
}

impl Handle {
    /// Validate, link the blobs uploaded with it, store (one Raft
    /// proposal), and wait for the copies the acknowledgement policy asks.
    pub async fn put_manifest(&self, push: ManifestPush<'_>) -> ServiceResult<Pushed> {
        let name = push.repo;
        validate_repository(name)?;
        let reference = Reference::parse(push.reference)?;
        let digest = match &reference {
            Reference::Digest(claimed) => {
                let mut h = Hasher::new(claimed.algorithm());
                h.update(push.raw);
                let actual = h.finish();
                if actual != *claimed {
                    return Err(ServiceError::spec(
                        ErrorCode::DigestInvalid,
                        format!("manifest hashes to {actual}, not {claimed}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(push.raw),
        };
        let parsed = manifest::parse(push.raw, push.content_type)?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
        let blobs_store = &self.service.blobs;
        // Blobs uploaded here for this push are linked by the same proposal.
        let pending_key = self.pending_key(name);
        let new_links: Vec<BlobRef> = parsed
            .blobs
            .iter()
            .filter_map(|d| {
                blobs_store
                    .pending(&pending_key, &d.digest)
                    .map(|size| BlobRef {
                        digest: d.digest.to_string(),
                        size,
                    })
            })
            .collect();
        let blobs: Vec<BlobRef> = parsed
            .blobs
            .iter()
            .filter(|d| !d.is_foreign())
            .map(|d| BlobRef {
                digest: d.digest.to_string(),
                size: d.size,
            })
            .collect();
        // Gated: the registry's storage limit is checked when it applies.
        let cmd = self
            .service
            .gated(Command::PutManifest(Box::new(PutManifest {
                repo: name.to_string(),
                digest: digest.to_string(),
                media_type: parsed.media_type.clone(),
                raw: push.raw.to_vec(),
                tag: match &reference {
                    Reference::Tag(t) => Some(t.clone()),
                    Reference::Digest(_) => None,
                },
                blobs: blobs.clone(),
                children: parsed
                    .manifests
                    .iter()
                    .map(|d| d.digest.to_string())
                    .collect(),
                subject: subject.clone(),
                artifact_type: parsed.artifact_type.clone(),
                annotations_json: parsed
                    .annotations
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()).to_string()),
                now_ms: wharf_consensus::now_unix_ms(),
                new_links: new_links.clone(),
                region: self.service.region.clone(),
                replica_regions: self.replica_regions()?,
            })));
        let request_id = push
            .request_id
            .unwrap_or_else(crate::service::new_request_id);
        let origin = push.origin;
        match self
            .write_once_from(cmd.clone(), Some(request_id.clone()), origin.clone())
            .await
        {
            // The client may have uploaded the blobs through another
            // region, whose links reach the metadata within its
            // registration window: wait that window out once before
            // calling them unknown. The refusal is remembered under the
            // first id, so the second attempt is a write of its own.
            Err(e) if e.is_blob_unknown() => {
                tokio::time::sleep(self.service.registration_window).await;
                self.write_once_from(cmd, Some(format!("{request_id}+window")), origin)
                    .await?;
            }
            Err(e) if e.is_quota_exceeded() => {
                self.service.discard_uploads(&pending_key, &new_links).await;
                return Err(e);
            }
            other => {
                other?;
            }
        }
        for b in &new_links {
            // Registered now; a failure here only leaves work for the batcher.
            if let Err(e) = blobs_store.remove_pending(&pending_key, &b.digest) {
                tracing::warn!(digest = %b.digest, error = %e, "clearing a registered pending link");
            }
        }
        self.wait_for_copies(&blobs).await?;
        Ok(Pushed { digest, subject })
    }

    /// Delete a manifest (by digest, with every tag pointing at it) or a
    /// tag (by name).
    pub async fn delete_reference(
        &self,
        repo: &str,
        reference: &str,
        request_id: Option<String>,
        origin: Option<Origin>,
    ) -> ServiceResult<u64> {
        validate_repository(repo)?;
        let cmd = match Reference::parse(reference)? {
            Reference::Digest(d) => Command::DeleteManifest {
                repo: repo.to_string(),
                digest: d.to_string(),
            },
            Reference::Tag(t) => Command::DeleteTag {
                repo: repo.to_string(),
                tag: t,
            },
        };
        self.write_once_from(cmd, request_id, origin).await
    }
}
