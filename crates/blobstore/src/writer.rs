//! The upload pipeline: the async side receives body chunks from the
//! network and hands them in batches (references, not copies) to two
//! blocking threads, one hashing (SHA-256 and the block sums) and one writing, so
//! hashing never stalls the runtime and the disk and the hash run side by
//! side: a push costs the slower of the two, not their sum.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use wharf_oci::Hasher;

use crate::direct::Appender;
use crate::error::BlobError;
use crate::sums::SumsBuilder;

/// Received chunks (a socket read each, often 16–64 KiB) go to the threads
/// in batches of about this many bytes: a thread wakes once per batch, not
/// once per chunk (the wakeups were 7 % of a push's CPU).
const BATCH_BYTES: usize = 256 << 10;
/// Batches in flight between the network and each thread. Bounded so a
/// fast client cannot make the node buffer a whole blob in memory (about
/// 2 MiB per upload).
const PIPELINE_DEPTH_BATCHES: usize = 8;
/// Batches already received are written together, up to this many bytes
/// (one `writev` where the page cache takes them).
const WRITE_GATHER_BYTES: usize = 1 << 20;
/// Slices per `writev` (Linux takes at most 1024).
const WRITE_GATHER_SLICES: usize = 256;

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
    /// Of `bytes`, those written around the page cache (`O_DIRECT`).
    pub direct_bytes: u64,
    /// Set when the body stream failed; `bytes` were still written.
    pub stream_error: Option<BlobError>,
}

/// Append `body` to `file` (open for writing), updating `hasher` and
/// `sums`; `direct`: around the page cache where the filesystem allows it
/// (see `direct.rs`). Stops with `stream_error` when the client stalls for
/// `idle_timeout` or sends more than `max_bytes`.
pub async fn append<S, E>(
    file: File,
    direct: bool,
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
    let (hash_tx, mut hash_rx) = mpsc::channel::<Batch>(PIPELINE_DEPTH_BATCHES);
    let (write_tx, write_rx) = mpsc::channel::<Batch>(PIPELINE_DEPTH_BATCHES);
    let hashing = tokio::task::spawn_blocking(move || {
        let (mut hasher, mut sums) = (hasher, sums);
        while let Some(batch) = hash_rx.blocking_recv() {
            for chunk in batch.iter() {
                hasher.update(chunk);
                sums.update(chunk);
            }
        }
        (hasher, sums)
    });
    let writing = tokio::task::spawn_blocking(move || write_chunks(file, direct, write_rx));

    let mut body = body;
    let mut received = 0u64;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let stream_error = loop {
        let (next, end) = match next_chunk(&mut body, idle_timeout, &mut received, max_bytes).await
        {
            Err(e) => (None, Some(Some(e))),
            Ok(None) => (None, Some(None)),
            Ok(Some(chunk)) => (Some(chunk), None),
        };
        if let Some(chunk) = next {
            batched += chunk.len();
            batch.push(chunk);
        }
        // What arrived before an error was received and is written too.
        let full = batched >= BATCH_BYTES || batch.len() >= WRITE_GATHER_SLICES;
        if full || (end.is_some() && !batch.is_empty()) {
            let full: Batch = std::mem::take(&mut batch).into();
            batched = 0;
            // A failed thread drops its receiver; its error is reported below.
            if write_tx.send(full.clone()).await.is_err() || hash_tx.send(full).await.is_err() {
                break None;
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    drop((write_tx, hash_tx));
    let joined = |e: tokio::task::JoinError| BlobError::Io(std::io::Error::other(e.to_string()));
    let (file, bytes, direct_bytes) = writing.await.map_err(joined)??;
    let (hasher, sums) = hashing.await.map_err(joined)?;
    Ok(Written {
        file,
        hasher,
        sums,
        bytes,
        direct_bytes,
        stream_error,
    })
}

/// Chunks received together, shared by both threads.
type Batch = Arc<[Bytes]>;

/// The writing thread: batches as they come, gathered into large writes.
fn write_chunks(
    file: File,
    direct: bool,
    mut rx: mpsc::Receiver<Batch>,
) -> std::io::Result<(File, u64, u64)> {
    let mut out = Appender::new(file, direct)?;
    let mut written = 0u64;
    let mut gathered: Vec<Bytes> = Vec::with_capacity(WRITE_GATHER_SLICES);
    while let Some(first) = rx.blocking_recv() {
        gathered.extend(first.iter().cloned());
        while bytes_in(&gathered) < WRITE_GATHER_BYTES && gathered.len() < WRITE_GATHER_SLICES {
            match rx.try_recv() {
                Ok(batch) => gathered.extend(batch.iter().cloned()),
                Err(_) => break,
            }
        }
        out.write(&gathered)?;
        written += bytes_in(&gathered) as u64;
        gathered.clear();
    }
    let (file, direct_bytes) = out.finish()?;
    Ok((file, written, direct_bytes))
}

fn bytes_in(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}
