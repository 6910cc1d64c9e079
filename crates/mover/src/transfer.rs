//! One blob being copied into this region, readable while it arrives.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use wharf_oci::Digest;

/// Largest read when serving a transfer in progress.
const READ_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferState {
    /// This many bytes (from offset 0) are in the partial file.
    Running(u64),
    /// Verified and in place.
    Done,
    Failed(String),
}

/// Where a reader takes bytes from: the partial file while it exists,
/// the store once the transfer moved it there.
enum Source {
    File(tokio::fs::File),
    Stored(wharf_blobstore::ReadStream),
}

struct Reader {
    t: Arc<Transfer>,
    /// `t.restarts` when this reader started: bytes of an attempt that
    /// turned out corrupt must not be followed by another attempt's.
    restarts: u64,
    rx: watch::Receiver<TransferState>,
    source: Option<Source>,
    pos: u64,
    end: u64,
}

pub struct Transfer {
    pub digest: Digest,
    pub size: u64,
    /// The partial file while running.
    pub(crate) partial: PathBuf,
    /// Where the blob lives once done.
    pub(crate) store: Arc<wharf_blobstore::BlobStore>,
    pub(crate) state: watch::Sender<TransferState>,
    /// Attempts thrown away because what arrived did not match the digest.
    pub(crate) restarts: std::sync::atomic::AtomicU64,
}

impl Transfer {
    pub fn state(&self) -> TransferState {
        self.state.borrow().clone()
    }

    /// Wait until the transfer is done or failed.
    pub async fn finished(&self) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let end = rx
            .wait_for(|s| !matches!(s, TransferState::Running(_)))
            .await
            .map(|s| s.clone());
        match end {
            Ok(TransferState::Failed(e)) => Err(e),
            Ok(_) => Ok(()),
            Err(_) => Err("transfer abandoned".into()),
        }
    }

    /// Open the bytes from `pos` to `end`: the partial file, or the
    /// stored copy once the transfer is done and the file moved into the
    /// store.
    async fn open(&self, pos: u64, end: u64) -> std::io::Result<Source> {
        match tokio::fs::File::open(&self.partial).await {
            Ok(mut f) => {
                f.seek(std::io::SeekFrom::Start(pos)).await?;
                Ok(Source::File(f))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let opened = self
                    .store
                    .open_blob(&self.digest)
                    .await
                    .map_err(std::io::Error::other)?
                    .ok_or(e)?;
                let stream = opened
                    .stream(pos, end - pos)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Source::Stored(stream))
            }
            Err(e) => Err(e),
        }
    }

    /// Bytes `start..start+len` of the blob, served as they arrive
    /// (stream-through): a reader waits for the bytes it needs, never for
    /// the whole blob. The last byte is released only once the whole blob
    /// matched its digest, so a corrupt copy never completes a read.
    pub fn stream(
        self: &Arc<Self>,
        start: u64,
        len: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let reader = Reader {
            restarts: self.restarts.load(std::sync::atomic::Ordering::Acquire),
            rx: self.state.subscribe(),
            t: self.clone(),
            source: None,
            pos: start,
            end: start + len,
        };
        futures::stream::unfold(reader, |mut r| async move {
            if r.pos >= r.end {
                return None;
            }
            let item = r.next_chunk().await;
            if item.is_err() {
                r.pos = r.end; // an error ends the stream
            }
            Some((item, r))
        })
    }
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Bytes, std::io::Error> {
        let r = self;
        {
            loop {
                let available = match r.rx.borrow_and_update().clone() {
                    TransferState::Running(n) => n,
                    TransferState::Done => r.t.size,
                    TransferState::Failed(e) => {
                        return Err(std::io::Error::other(format!("transfer failed: {e}")))
                    }
                };
                if r.t.restarts.load(std::sync::atomic::Ordering::Acquire) != r.restarts {
                    return Err(std::io::Error::other(
                        "a region sent a corrupt copy; the read is abandoned",
                    ));
                }
                if available > r.pos {
                    if r.source.is_none() {
                        r.source = Some(r.t.open(r.pos, r.end).await?);
                    }
                    match r.source.as_mut().expect("opened above") {
                        Source::File(f) => {
                            let want =
                                (available.min(r.end) - r.pos).min(READ_BYTES as u64) as usize;
                            let mut buf = vec![0u8; want];
                            f.read_exact(&mut buf).await?;
                            r.pos += want as u64;
                            return Ok(Bytes::from(buf));
                        }
                        // Only opened once the transfer is done: all of it
                        // is there.
                        Source::Stored(s) => {
                            let chunk = s.next().await.ok_or_else(|| {
                                std::io::Error::other("stored copy ended early")
                            })??;
                            r.pos += chunk.len() as u64;
                            return Ok(chunk);
                        }
                    }
                }
                if r.rx.changed().await.is_err() {
                    return Err(std::io::Error::other("transfer abandoned"));
                }
            }
        }
    }
}
