//! Scrub: promise 5 of the design, "a corrupt local copy is detected and
//! replaced, never served".
//!
//! - [`verify`] hashes a region's copy of a blob, paced by a byte budget.
//! - [`verifying`] wraps a whole-blob read: it hashes the bytes as they
//!   stream and holds back the last chunk until the digest matches, so a
//!   client never receives a complete response with a flipped byte (the
//!   read ends with an error instead, and the copy is condemned).
//! - [`condemn`] moves a corrupt copy to the store's quarantine and tells
//!   the cluster (`ScrubCommand::Corrupt`): the region leaves the blob's
//!   holders, so nobody fetches from it, reads there fetch a good copy on
//!   demand, and the mover copies one back in from a healthy region.
//! - [`step`] is the background pass over the blobs the index says this
//!   region holds, a few at a time.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_blobstore::{BlobError, BlobStore, BlockSums, CopyId, SumsBuilder};
use wharf_consensus::now_unix_ms;
use wharf_meta::{Command, ScrubCommand, DEFAULT_REGISTRY};
use wharf_netem::RateLimiter;
use wharf_oci::{Digest, Hasher};
use wharf_registry::{Service, ServiceResult};

/// What a region's copy of a blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Good {
        size: u64,
    },
    /// It hashes to `actual`; `file` is the file that does.
    Corrupt {
        actual: Digest,
        file: CopyId,
    },
    /// No file (the index may still say this region holds it).
    Missing,
}

/// Hash the local copy of `digest`, taking its bytes from `pace`.
pub async fn verify(
    blobs: &BlobStore,
    digest: &Digest,
    pace: &RateLimiter,
) -> Result<Verdict, BlobError> {
    let Some(opened) = blobs.open_blob(digest).await? else {
        return Ok(Verdict::Missing);
    };
    let id = opened.copy.clone();
    let len = opened.size;
    let kept = opened.sums().cloned();
    let mut stream = opened.stream(0, len).await?;
    let mut running = (Hasher::new(digest.algorithm()), SumsBuilder::default());
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        pace.take(n).await;
        // Hash on the blocking pool: a MiB of SHA-256 is milliseconds of
        // CPU that request handlers should not wait behind.
        running = tokio::task::spawn_blocking(move || {
            let (mut hasher, mut sums) = running;
            hasher.update(&chunk);
            sums.update(&chunk);
            (hasher, sums)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        size += n;
    }
    let (hasher, sums) = running;
    let actual = hasher.finish();
    if actual != *digest {
        return Ok(Verdict::Corrupt { actual, file: id });
    }
    // A good copy without sums (written before them, or on a filesystem
    // that lost them) gets them; wrong ones are replaced.
    let sums = sums.finish();
    if kept.as_ref() != Some(&sums) {
        if kept.is_some() {
            tracing::warn!(%digest, "stored block sums disagreed with a good copy; replaced");
        }
        blobs.attach_sums(digest, &id, sums).await?;
    }
    Ok(Verdict::Good { size })
}

/// A read found a block of this region's copy of `digest` failing its
/// sums: hash the whole copy to decide. Corrupt: condemned as by the scrub
/// (true). Good: the sums were wrong and are replaced (false).
pub async fn confirm(
    service: &Arc<Service>,
    digest: &Digest,
    found_by: &str,
) -> ServiceResult<bool> {
    let unpaced = RateLimiter::new(0);
    match verify(&service.blobs, digest, &unpaced).await? {
        Verdict::Corrupt { actual, file } => {
            condemn(service, digest, Some((&actual, file)), found_by).await
        }
        Verdict::Good { .. } | Verdict::Missing => Ok(false),
    }
}

/// A copy of `digest` is bad (`actual`: what it hashed to, or None when
/// it is missing): quarantine the file found corrupt and take this region
/// out of the blob's holders. Returns whether anything was done (false: a
/// good copy replaced it meanwhile).
pub async fn condemn(
    service: &Arc<Service>,
    digest: &Digest,
    bad: Option<(&Digest, CopyId)>,
    found_by: &str,
) -> ServiceResult<bool> {
    let actual = match bad {
        Some((actual, file)) => {
            if !quarantine(service, digest, actual, file, found_by).await? {
                return Ok(false);
            }
            actual.to_string()
        }
        None => {
            tracing::error!(%digest, found_by, "blob copy missing from this region's store");
            wharf_meta::SCRUB_MISSING.to_string()
        }
    };
    report(service, digest, &actual, found_by).await?;
    Ok(true)
}

/// Move the corrupt file `file` of `digest` out of the store (false: a
/// good copy replaced it meanwhile).
pub async fn quarantine(
    service: &Service,
    digest: &Digest,
    actual: &Digest,
    file: CopyId,
    found_by: &str,
) -> Result<bool, BlobError> {
    let Some(to) = service
        .blobs
        .quarantine(digest, file, now_unix_ms())
        .await?
    else {
        return Ok(false);
    };
    tracing::error!(
        %digest, %actual, found_by, quarantined = %to,
        "corrupt blob copy quarantined; a good copy will be fetched from another region"
    );
    Ok(true)
}

/// Tell the cluster this region's copy of `digest` is gone bad.
pub async fn report(
    service: &Arc<Service>,
    digest: &Digest,
    actual: &str,
    found_by: &str,
) -> ServiceResult<()> {
    let now = now_unix_ms();
    let cmd = Command::Scrub(ScrubCommand::Corrupt {
        region: service.region.clone(),
        digest: digest.to_string(),
        actual: actual.to_string(),
        found_by: found_by.to_string(),
        now_ms: now,
    });
    service.registry(DEFAULT_REGISTRY).write(cmd).await?;
    Ok(())
}

/// `inner` (a whole blob, `digest`), hashed as it streams: the last chunk
/// is held back until the digest is confirmed. On a mismatch the stream
/// ends with an error and `on_corrupt` is called with what it hashed to;
/// on a match `on_good` gets the block sums of the bytes that matched.
pub fn verifying<S, F, G>(
    inner: S,
    digest: Digest,
    on_corrupt: F,
    on_good: G,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    F: FnOnce(Digest) + Send + 'static,
    G: FnOnce(BlockSums) + Send + 'static,
{
    struct State<S, F, G> {
        inner: S,
        hasher: Option<(Hasher, SumsBuilder)>,
        held: Option<Bytes>,
        digest: Digest,
        on_corrupt: Option<F>,
        on_good: Option<G>,
    }
    let state = State {
        inner,
        hasher: Some((Hasher::new(digest.algorithm()), SumsBuilder::default())),
        held: None,
        digest,
        on_corrupt: Some(on_corrupt),
        on_good: Some(on_good),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            let (hasher, sums) = s.hasher.as_mut()?;
            match s.inner.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    sums.update(&chunk);
                    if let Some(previous) = s.held.replace(chunk) {
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => {
                    s.hasher = None;
                    return Some((Err(e), s));
                }
                None => {
                    let (hasher, sums) = s.hasher.take()?;
                    let actual = hasher.finish();
                    if actual == s.digest {
                        if let Some(f) = s.on_good.take() {
                            f(sums.finish());
                        }
                        let last = s.held.take()?;
                        return Some((Ok(last), s));
                    }
                    if let Some(f) = s.on_corrupt.take() {
                        f(actual.clone());
                    }
                    let e = std::io::Error::other(format!(
                        "stored copy of {} hashes to {actual}: read aborted",
                        s.digest
                    ));
                    return Some((Err(e), s));
                }
            }
        }
    })
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub blobs: u64,
    pub bytes: u64,
    pub corrupt: u64,
    /// The pass went through every blob this region holds.
    pub finished: bool,
}

/// Verify up to `n` blobs this region holds after `cursor` (None: from
/// the first), moving the cursor; condemn what fails.
pub async fn step(
    service: &Arc<Service>,
    cursor: &mut Option<String>,
    pace: &RateLimiter,
    n: usize,
) -> ServiceResult<Step> {
    let held = service
        .consensus
        .meta()
        .blobs_held_in(&service.region, cursor.as_deref(), n)?;
    let mut out = Step::default();
    if held.len() < n {
        out.finished = true;
    }
    for (d, _) in &held {
        *cursor = Some(d.clone());
        let Ok(digest) = d.parse::<Digest>() else {
            continue;
        };
        match verify(&service.blobs, &digest, pace).await? {
            Verdict::Good { size } => {
                out.blobs += 1;
                out.bytes += size;
            }
            Verdict::Corrupt { actual, file } => {
                if condemn(service, &digest, Some((&actual, file)), "scrub").await? {
                    out.corrupt += 1;
                }
            }
            Verdict::Missing => {
                // Freed and swept since it was listed, or lost: only the
                // index can tell, so ask it again before reporting.
                let still_held = service
                    .consensus
                    .meta()
                    .blob(d)?
                    .is_some_and(|b| b.regions.contains(&service.region));
                if still_held && condemn(service, &digest, None, "scrub").await? {
                    out.corrupt += 1;
                }
            }
        }
    }
    if out.finished {
        *cursor = None;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_good_blob_streams_whole_and_a_corrupt_one_never_completes() {
        let good: &[u8] = b"hello, wharf";
        let digest = Digest::sha256_of(good);
        let (sums_tx, sums_rx) = std::sync::mpsc::channel();
        let out: Vec<_> = verifying(
            chunks(&[&good[..5], &good[5..]]),
            digest.clone(),
            |_| panic!("not corrupt"),
            move |sums| sums_tx.send(sums).unwrap(),
        )
        .collect()
        .await;
        assert_eq!(sums_rx.recv().unwrap(), BlockSums::of(good));
        let bytes: Vec<u8> = out
            .iter()
            .flat_map(|c| c.as_ref().unwrap().to_vec())
            .collect();
        assert_eq!(bytes, good);

        let flipped: &[u8] = b"hellO, wharf";
        let (tx, rx) = std::sync::mpsc::channel();
        let out: Vec<_> = verifying(
            chunks(&[&flipped[..5], &flipped[5..]]),
            digest,
            move |a| tx.send(a).unwrap(),
            |_| panic!("not good"),
        )
        .collect()
        .await;
        assert!(out.last().unwrap().is_err(), "the read ends with an error");
        let served: usize = out
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .map(|c| c.len())
            .sum();
        assert!(served < flipped.len(), "the last chunk is never sent");
        assert_eq!(rx.recv().unwrap(), Digest::sha256_of(flipped));
    }
}
