//! What a region's blob storage must do, whatever holds the bytes: the
//! trait both backends (the local filesystem, an S3-compatible object
//! store) implement, and the handle a read gets. Callers above this crate
//! never see a file path of a stored blob: the mover, the on-demand fetch,
//! GC and the scrub work through these calls only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use wharf_oci::Digest;

use crate::error::BlobError;
use crate::session::SessionInfo;
use crate::sums::BlockSums;

/// A request body on its way into the store. The error is the client's
/// (a broken connection), as text: the store reports it as `Client`.
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// A stored copy's bytes on their way out.
pub type ReadStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Largest read when streaming a stored blob: large reads keep syscalls
/// and copies per GiB low. Block sums' blocks are multiples of it, so a
/// read never spans two blocks.
pub const READ_CHUNK_BYTES: usize = 1 << crate::sums::MIN_BLOCK_SHIFT;

/// Which stored copy a read saw, so a decision about its content (the
/// scrub's quarantine) applies to that copy only, not to a good one an
/// upload or the mover put in place since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyId {
    /// A file: device and inode.
    File { dev: u64, ino: u64 },
    /// An object: its entity tag (changes whenever it is rewritten).
    Object(String),
}

impl CopyId {
    pub fn of(m: &std::fs::Metadata) -> CopyId {
        use std::os::unix::fs::MetadataExt;
        CopyId::File {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What `remove_if_idle` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted; its size.
    Removed(u64),
    /// There was no such copy.
    Missing,
    /// Written (or touched) less than the idle time ago: kept.
    Recent,
}

/// Where an opened copy's bytes come from.
pub(crate) enum Source {
    /// Read with positioned reads on the blocking pool, straight into the
    /// buffer that goes to the socket (one copy out of the page cache).
    File(Arc<std::fs::File>),
    Object {
        store: Arc<dyn object_store::ObjectStore>,
        path: object_store::path::Path,
        /// Reads are pinned to this version: a rewrite between the open
        /// and a read fails the read instead of mixing two copies.
        e_tag: Option<String>,
    },
}

/// A stored blob opened for reading.
pub struct Opened {
    pub size: u64,
    pub copy: CopyId,
    pub(crate) source: Source,
    /// The copy's block sums, where it has them (files only).
    pub(crate) sums: Option<BlockSums>,
}

impl Opened {
    /// Whether reads of this copy can be checked block by block.
    pub fn has_sums(&self) -> bool {
        self.sums.is_some()
    }

    /// The block sums kept with this copy, if any.
    pub fn sums(&self) -> Option<&BlockSums> {
        self.sums.as_ref()
    }

    /// Bytes `start..start+len`, streamed.
    pub async fn stream(self, start: u64, len: u64) -> Result<ReadStream, BlobError> {
        match self.source {
            Source::File(file) => Ok(file_stream(file, start, len, None)),
            Source::Object { .. } if len == 0 => Ok(futures::stream::empty().boxed()),
            Source::Object { store, path, e_tag } => {
                let options = object_store::GetOptions {
                    if_match: e_tag,
                    range: Some(object_store::GetRange::Bounded(start..start + len)),
                    ..Default::default()
                };
                let got = store
                    .get_opts(&path, options)
                    .await
                    .map_err(crate::s3::unavailable)?;
                Ok(got.into_stream().map_err(std::io::Error::other).boxed())
            }
        }
    }

    /// Bytes `start..start+len`, every block they touch checked against
    /// the copy's sums: the chunk ending a block goes out only after the
    /// block matched, so no read (whole or ranged) completes with a byte
    /// that differs from what was stored. On a mismatch the stream ends
    /// with an error and `on_mismatch` is called (the caller confirms with
    /// SHA-256 before condemning: the sums, not the bytes, may be wrong).
    /// Gives `self` back when the copy has no sums.
    pub fn stream_checked(
        self,
        start: u64,
        len: u64,
        on_mismatch: impl FnOnce() + Send + 'static,
    ) -> Result<ReadStream, Box<Opened>> {
        match (self.source, self.sums) {
            (Source::File(file), Some(sums)) => Ok(file_stream(
                file,
                start,
                len,
                Some(Check {
                    sums,
                    on_mismatch: Some(Box::new(on_mismatch)),
                    block_crc: 0,
                }),
            )),
            (source, sums) => Err(Box::new(Opened {
                size: self.size,
                copy: self.copy,
                source,
                sums,
            })),
        }
    }

    /// The whole blob in memory (small blobs only: the caller checks the
    /// size first).
    pub async fn read_all(self) -> Result<Bytes, BlobError> {
        let size = self.size;
        let mut out = Vec::with_capacity(size as usize);
        let mut s = self.stream(0, size).await?;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }
}

/// A checked read's state: the sums and the CRC of the block so far.
struct Check {
    sums: BlockSums,
    on_mismatch: Option<Box<dyn FnOnce() + Send>>,
    block_crc: u32,
}

struct FileRead {
    file: Arc<std::fs::File>,
    /// The next byte to read; reading ends at `to`.
    pos: u64,
    to: u64,
    /// What the caller asked for; a checked read reads whole blocks and
    /// sends only these.
    start: u64,
    end: u64,
    check: Option<Check>,
}

fn file_stream(file: Arc<std::fs::File>, start: u64, len: u64, check: Option<Check>) -> ReadStream {
    let end = start + len;
    let (from, to) = match &check {
        Some(c) if len > 0 => {
            let b = c.sums.block_size();
            (
                start / b * b,
                end.div_ceil(b).saturating_mul(b).min(c.sums.size()),
            )
        }
        _ => (start, end),
    };
    let state = FileRead {
        file,
        pos: from,
        to,
        start,
        end,
        check,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.pos >= st.to {
                return None;
            }
            let (pos, n) = (st.pos, (READ_CHUNK_BYTES as u64).min(st.to - st.pos));
            // A block's CRC continues from the chunks of it already read
            // (cheaper than a CRC per chunk and a combine).
            let crc_from = st.check.as_ref().map(|c| {
                if pos % c.sums.block_size() == 0 {
                    0
                } else {
                    c.block_crc
                }
            });
            let file = st.file.clone();
            let read = tokio::task::spawn_blocking(move || read_at(&file, pos, n, crc_from))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let (chunk, crc) = match read {
                Ok(r) => r,
                Err(e) => {
                    st.pos = st.to;
                    return Some((Err(e), st));
                }
            };
            st.pos += n;
            if let Some(c) = st.check.as_mut() {
                let b = c.sums.block_size();
                c.block_crc = crc;
                let block = (pos / b) as usize;
                let ends_block = st.pos % b == 0 || st.pos == c.sums.size();
                if ends_block && c.sums.crc(block) != Some(c.block_crc) {
                    st.pos = st.to;
                    if let Some(f) = c.on_mismatch.take() {
                        f();
                    }
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "block {block} of the stored copy fails its checksum: read aborted"
                        ),
                    );
                    return Some((Err(e), st));
                }
            }
            let (a, z) = (st.start.max(pos), st.end.min(pos + n));
            if a < z {
                let chunk = chunk.slice((a - pos) as usize..(z - pos) as usize);
                return Some((Ok(chunk), st));
            }
            // A block's bytes before or after the range: checked, not sent.
        }
    })
    .boxed()
}

/// `n` bytes of `file` at `pos`, read into a buffer that is not zeroed
/// first, and, when asked, the CRC32C continued from `crc_from` over them.
fn read_at(
    file: &std::fs::File,
    pos: u64,
    n: u64,
    crc_from: Option<u32>,
) -> std::io::Result<(Bytes, u32)> {
    use std::io::{Read, Seek};
    // One read of this file runs at a time (the stream waits for each), so
    // the shared offset is this stream's alone.
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(n as usize);
    f.take(n).read_to_end(&mut buf)?;
    if buf.len() as u64 != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "stored copy shorter than when it was opened",
        ));
    }
    let crc = crc_from.map_or(0, |from| crc32c::crc32c_append(from, &buf));
    Ok((Bytes::from(buf), crc))
}

/// One region's blob storage. Every method is safe to call from several
/// tasks at once; every write is durable when it returns `Ok`.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// For logs and `/readyz`: "filesystem /var/lib/wharf/blobs",
    /// "s3 http://minio:9000/bucket".
    fn describe(&self) -> String;

    /// Whether the store answers at all (`/readyz`).
    async fn check(&self) -> Result<(), BlobError>;

    /// Requests that failed even after retries, since start (`/metrics`).
    fn errors_total(&self) -> u64 {
        0
    }

    // ---- reads ----------------------------------------------------------

    /// The size of a stored blob.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Open a stored blob for reading.
    async fn open(&self, digest: &Digest) -> Result<Option<Opened>, BlobError>;

    /// Every stored blob with its size, in digest order, after `after`;
    /// at most `limit`.
    async fn list(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError>;

    /// A URL a client may GET the blob from directly for `ttl`, where the
    /// store can sign one.
    async fn presigned_url(
        &self,
        digest: &Digest,
        ttl: Duration,
    ) -> Result<Option<String>, BlobError>;

    // ---- writes of verified bytes ---------------------------------------

    /// Keep a file received whole from another region, already verified
    /// against `digest` and fsynced by the caller. The file is consumed.
    async fn adopt(&self, digest: &Digest, staged: &Path) -> Result<(), BlobError>;

    /// Keep many small verified blobs with one commit where the store has
    /// such a thing. `Err`: none may be counted as kept.
    async fn adopt_many(&self, blobs: Vec<(Digest, Bytes)>) -> Result<(), BlobError>;

    // ---- uploads --------------------------------------------------------

    /// Start an upload session for `repo`. `hidden`: a monolithic upload's
    /// own session, which no client can resume.
    async fn create_session(&self, repo: &str, hidden: bool) -> Result<SessionInfo, BlobError>;

    async fn session_info(&self, id: &str, repo: &str) -> Result<SessionInfo, BlobError>;

    /// Append a chunk; `start` must continue the upload exactly.
    async fn append(
        &self,
        id: &str,
        repo: &str,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<SessionInfo, BlobError>;

    /// Append the final body if any, verify the digest, and make the blob
    /// visible. Returns its size. A mismatch discards the session.
    async fn finish(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64, BlobError>;

    async fn cancel(&self, id: &str, repo: &str) -> Result<(), BlobError>;

    /// Delete sessions idle for longer than the expiry. Returns how many.
    async fn sweep_expired(&self) -> usize;

    /// Sessions this node knows to be open.
    fn sessions_in_progress(&self) -> usize;

    // ---- removal --------------------------------------------------------

    /// Delete the stored copy unless it was written or touched less than
    /// `idle` ago (GC's sweep).
    async fn remove_if_idle(&self, digest: &Digest, idle: Duration) -> Result<Removal, BlobError>;

    /// Move the stored copy to the quarantine if it is still `seen`.
    /// Returns where it went.
    async fn quarantine(
        &self,
        digest: &Digest,
        seen: CopyId,
        at_ms: u64,
    ) -> Result<Option<String>, BlobError>;

    /// Mark the stored copy as just written (a mount links it anew), so
    /// GC's age guard keeps it; its size, or None if absent.
    async fn touch(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Keep `sums` with the copy `copy` of `digest` (just verified by a
    /// full hash), so later reads check blocks instead of hashing. Whether
    /// they were kept: not where the backend has no block sums (objects),
    /// the copy was replaced meanwhile, or the filesystem refuses.
    async fn attach_sums(
        &self,
        _digest: &Digest,
        _copy: &CopyId,
        _sums: BlockSums,
    ) -> Result<bool, BlobError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A file with sums in 2 MiB blocks (as blobs over 512 MiB get), so
    /// each block is read in two chunks and its CRC spans both.
    fn two_mib_blocks(data: &[u8]) -> BlockSums {
        let crcs = data.chunks(2 << 20).map(crc32c::crc32c).collect();
        BlockSums::from_parts(21, data.len() as u64, crcs)
    }

    async fn read(path: &Path, sums: BlockSums, start: u64, len: u64) -> (Vec<u8>, bool, bool) {
        let file = std::fs::File::open(path).unwrap();
        let opened = Opened {
            size: sums.size(),
            copy: CopyId::of(&file.metadata().unwrap()),
            source: Source::File(Arc::new(file)),
            sums: Some(sums),
        };
        let flagged = Arc::new(AtomicBool::new(false));
        let f = flagged.clone();
        let Ok(mut s) = opened.stream_checked(start, len, move || f.store(true, Ordering::SeqCst))
        else {
            panic!("a copy with sums streams checked");
        };
        let (mut out, mut failed) = (Vec::new(), false);
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                    failed = true;
                }
            }
        }
        (out, failed, flagged.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn blocks_larger_than_a_read_are_checked_across_their_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(5 << 20) + 123u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let sums = two_mib_blocks(&data);

        let (out, failed, _) = read(&path, sums.clone(), 0, data.len() as u64).await;
        assert!(!failed && out == data);
        // A range starting in a block's second chunk and ending in the next.
        let (a, z) = ((3 << 20) + 5, (4 << 20) + (1 << 19));
        let (out, failed, _) = read(&path, sums.clone(), a, z - a).await;
        assert!(!failed && out == data[a as usize..z as usize]);

        // One byte changed in the second chunk of block 1: the read fails
        // before that block's last chunk goes out, and says so.
        let mut bad = data.clone();
        bad[(3 << 20) + 10] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (out, failed, flagged) = read(&path, sums, 0, data.len() as u64).await;
        assert!(failed && flagged);
        assert_eq!(out.len(), 3 << 20, "block 0 and block 1's first chunk only");
    }
}
