//! The upload pipeline: the async side receives body chunks from the
//! network and hands each (a reference, not a copy) to two blocking
//! threads, one hashing (SHA-256 and the block sums) and one writing, so
//! hashing never stalls the runtime and the disk and the hash run side by
//! side: a push costs the slower of the two, not their sum.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use wharf_oci::Hasher;

use crate::error::BlobError;
use crate::sums::SumsBuilder;

/// Chunks in flight between the network and each thread. Bounded so a
/// fast client cannot make the node buffer a whole blob in memory.
const PIPELINE_DEPTH_CHUNKS: usize = 16;
/// Chunks already received are written together, up to this many bytes
/// (one `writev`, no copy into a buffer of our own).
const WRITE_GATHER_BYTES: usize = 1 << 20;
/// Slices per `writev` (Linux takes at most 1024).
const WRITE_GATHER_SLICES: usize = 256;
/// Every this many bytes written, the kernel is told to start writing them
/// out (`sync_file_range`), so the fsync that acknowledges the upload waits
/// for the last few MiB only, not the whole blob.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// The next chunk of a request body, counted into `received`: `Err` ends
/// the body (the client stalled for `idle`, broke off, or sent more than
/// `max_bytes`); `Ok(None)` is its end.
pub async fn next_chunk<S, E>(
    body: &mut S,
    idle: Duration,
    received: &mut u64,
    max_bytes: u64,
) -> Result<Option<Bytes>, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let chunk = match tokio::time::timeout(idle, body.next()).await {
        Err(_) => return Err(BlobError::Stalled(idle.as_secs())),
        Ok(None) => return Ok(None),
        Ok(Some(Err(e))) => return Err(BlobError::Client(e.to_string())),
        Ok(Some(Ok(chunk))) => chunk,
    };
    *received += chunk.len() as u64;
    if *received > max_bytes {
        return Err(BlobError::SizeInvalid {
            expected: max_bytes,
            got: *received,
        });
    }
    Ok(Some(chunk))
}

pub struct Written {
    pub file: File,
    pub hasher: Hasher,
    pub sums: SumsBuilder,
    pub bytes: u64,
    /// Set when the body stream failed; `bytes` were still written.
    pub stream_error: Option<BlobError>,
}

/// Append `body` to `file` (positioned at its end), updating `hasher` and
/// `sums`. Stops with `stream_error` when the client stalls for
/// `idle_timeout` or sends more than `max_bytes`.
pub async fn append<S, E>(
    file: File,
    hasher: Hasher,
    sums: SumsBuilder,
    body: S,
    idle_timeout: Duration,
    max_bytes: u64,
) -> Result<Written, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH_CHUNKS);
    let (write_tx, write_rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH_CHUNKS);
    let hashing = tokio::task::spawn_blocking(move || {
        let (mut hasher, mut sums) = (hasher, sums);
        while let Some(chunk) = hash_rx.blocking_recv() {
            hasher.update(&chunk);
            sums.update(&chunk);
        }
        (hasher, sums)
    });
    let writing = tokio::task::spawn_blocking(move || write_chunks(file, write_rx));

    let mut body = body;
    let mut received = 0u64;
    let stream_error = loop {
        let next = match next_chunk(&mut body, idle_timeout, &mut received, max_bytes).await {
            Err(e) => break Some(e),
            Ok(None) => break None,
            Ok(Some(chunk)) => chunk,
        };
        // A failed thread drops its receiver; its error is reported below.
        if write_tx.send(next.clone()).await.is_err() || hash_tx.send(next).await.is_err() {
            break None;
        }
    };
    drop((write_tx, hash_tx));
    let joined = |e: tokio::task::JoinError| BlobError::Io(std::io::Error::other(e.to_string()));
    let (file, bytes) = writing.await.map_err(joined)??;
    let (hasher, sums) = hashing.await.map_err(joined)?;
    Ok(Written {
        file,
        hasher,
        sums,
        bytes,
        stream_error,
    })
}

/// The writing thread: chunks as they come, gathered into `writev`s, with
/// writeback started behind them.
fn write_chunks(mut file: File, mut rx: mpsc::Receiver<Bytes>) -> std::io::Result<(File, u64)> {
    let base = file.metadata()?.len();
    let (mut written, mut started) = (0u64, 0u64);
    let mut gathered: Vec<Bytes> = Vec::with_capacity(WRITE_GATHER_SLICES);
    while let Some(first) = rx.blocking_recv() {
        let mut len = first.len();
        gathered.push(first);
        while len < WRITE_GATHER_BYTES && gathered.len() < WRITE_GATHER_SLICES {
            match rx.try_recv() {
                Ok(c) => {
                    len += c.len();
                    gathered.push(c);
                }
                Err(_) => break,
            }
        }
        write_all_vectored(&mut file, &gathered)?;
        gathered.clear();
        written += len as u64;
        if written - started >= WRITEBACK_BYTES {
            start_writeback(&file, base + started, written - started);
            started = written;
        }
    }
    Ok((file, written))
}

fn write_all_vectored(file: &mut File, bufs: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ask the kernel to start writing `len` bytes at `offset` to the disk
/// without waiting. Only a hint: the fsync after the upload is what makes
/// them durable, so a failure here changes nothing but speed.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this thread owns.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}
