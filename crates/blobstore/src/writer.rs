//! The upload pipeline: the async side receives body chunks from the
//! network while a blocking thread hashes and writes them, so hashing never
//! stalls the runtime and overlaps with receiving.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_oci::Hasher;

use crate::error::BlobError;

/// Chunks in flight between the network and the writer thread. Bounded so
/// a fast client cannot make the node buffer a whole blob in memory.
const PIPELINE_DEPTH_CHUNKS: usize = 16;
/// Writes to the file are gathered into buffers of this size.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

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
    pub bytes: u64,
    /// Set when the body stream failed; `bytes` were still written.
    pub stream_error: Option<BlobError>,
}

/// Append `body` to `file` (positioned at its end), updating `hasher`.
/// Stops with `stream_error` when the client stalls for `idle_timeout` or
/// sends more than `max_bytes`.
pub async fn append<S, E>(
    file: File,
    hasher: Hasher,
    body: S,
    idle_timeout: Duration,
    max_bytes: u64,
) -> Result<Written, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH_CHUNKS);
    let worker = tokio::task::spawn_blocking(move || -> std::io::Result<(File, Hasher, u64)> {
        let mut hasher = hasher;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let mut n = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok((file, hasher, n))
    });

    let mut body = body;
    let mut received = 0u64;
    let stream_error = loop {
        let next = match next_chunk(&mut body, idle_timeout, &mut received, max_bytes).await {
            Err(e) => break Some(e),
            Ok(None) => break None,
            Ok(Some(chunk)) => chunk,
        };
        if tx.send(next).await.is_err() {
            break None; // the writer failed; its error is reported below
        }
    };
    drop(tx);
    let (file, hasher, bytes) = worker
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))??;
    Ok(Written {
        file,
        hasher,
        bytes,
        stream_error,
    })
}
