//! One blob being copied into this region, readable while it arrives.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
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

struct Reader {
    t: Arc<Transfer>,
    /// `t.restarts` when this reader started: bytes of an attempt that
    /// turned out corrupt must not be followed by another attempt's.
    restarts: u64,
    rx: watch::Receiver<TransferState>,
    file: Option<tokio::fs::File>,
    pos: u64,
    end: u64,
}

pub struct Transfer {
    pub digest: Digest,
    pub size: u64,
    /// The partial file while running.
    pub(crate) partial: PathBuf,
    /// Where the blob lives once done.
    pub(crate) final_path: PathBuf,
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

    async fn open(&self) -> std::io::Result<tokio::fs::File> {
        match tokio::fs::File::open(&self.partial).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::File::open(&self.final_path).await
            }
            other => other,
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
            file: None,
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
                    if r.file.is_none() {
                        let mut f = r.t.open().await?;
                        f.seek(std::io::SeekFrom::Start(r.pos)).await?;
                        r.file = Some(f);
                    }
                    let want = (available.min(r.end) - r.pos).min(READ_BYTES as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let f = r.file.as_mut().expect("opened above");
                    f.read_exact(&mut buf).await?;
                    r.pos += want as u64;
                    return Ok(Bytes::from(buf));
                }
                if r.rx.changed().await.is_err() {
                    return Err(std::io::Error::other("transfer abandoned"));
                }
            }
        }
    }
}
