//! The sending side: stream a locally held blob to a peer region.

use std::sync::Arc;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wharf_blobstore::{BlobStore, Opened};
use wharf_oci::Digest;

use crate::pb::blob_transfer_server::{BlobTransfer, BlobTransferServer};
use crate::pb::{Chunk, FetchManyRequest, FetchRequest, Part};

/// Size of the chunks sent to peers.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the network, per transfer.
const READ_AHEAD_CHUNKS: usize = 4;
/// Largest gRPC message (one chunk plus framing).
pub const MESSAGE_MAX_BYTES: usize = 4 * CHUNK_BYTES;

pub struct Sender {
    blobs: Arc<BlobStore>,
}

/// The gRPC service to mount on the peer server.
pub fn service(blobs: Arc<BlobStore>) -> BlobTransferServer<Sender> {
    BlobTransferServer::new(Sender { blobs })
        .max_decoding_message_size(MESSAGE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_MAX_BYTES)
}

/// Digests one FetchMany may name.
pub const MANY_MAX: usize = 1024;

#[tonic::async_trait]
impl BlobTransfer for Sender {
    type FetchStream = ReceiverStream<Result<Chunk, Status>>;
    type FetchManyStream = ReceiverStream<Result<Part, Status>>;

    async fn fetch_many(
        &self,
        req: Request<FetchManyRequest>,
    ) -> Result<Response<Self::FetchManyStream>, Status> {
        let digests = req.into_inner().digests;
        if digests.len() > MANY_MAX {
            return Err(Status::invalid_argument(format!(
                "{} digests asked, at most {MANY_MAX}",
                digests.len()
            )));
        }
        let digests = digests
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("digest: {e}")))?;
        let blobs = self.blobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        tokio::spawn(async move {
            for (index, digest) in digests.iter().enumerate() {
                let index = index as u32;
                let opened = match blobs.open_blob(digest).await {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("opening {digest}: {e}"))))
                            .await;
                        return;
                    }
                };
                // A blob not held here, or an empty one: one part says so.
                let opened = match opened {
                    Some(o) if o.size > 0 => o,
                    other => {
                        let part = Part {
                            index,
                            data: Vec::new(),
                            last: true,
                            missing: other.is_none(),
                        };
                        if tx.send(Ok(part)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let size = opened.size;
                let mut left = size;
                let sent = send_chunks(opened, 0, digest, &tx, |data| {
                    left -= data.len() as u64;
                    Part {
                        index,
                        data,
                        last: left == 0,
                        missing: false,
                    }
                })
                .await;
                if !sent {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = req.into_inner();
        let digest: Digest = req
            .digest
            .parse()
            .map_err(|e| Status::invalid_argument(format!("digest: {e}")))?;
        let opened = self
            .blobs
            .open_blob(&digest)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("{digest} is not held here")))?;
        let size = opened.size;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} beyond size {size}",
                req.offset
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        tokio::spawn(async move {
            send_chunks(opened, req.offset, &digest, &tx, |data| Chunk { data }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Stream `opened` from `start` into `tx` as messages of at most
/// `CHUNK_BYTES`, each made by `msg`. False when the stream ended early (a
/// read error, sent as the stream's last item, or a receiver gone).
async fn send_chunks<M>(
    opened: Opened,
    start: u64,
    digest: &Digest,
    tx: &tokio::sync::mpsc::Sender<Result<M, Status>>,
    mut msg: impl FnMut(Vec<u8>) -> M,
) -> bool {
    let len = opened.size - start;
    let mut stream = match opened.stream(start, len).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx
                .send(Err(Status::unavailable(format!("reading {digest}: {e}"))))
                .await;
            return false;
        }
    };
    while let Some(next) = stream.next().await {
        let bytes = match next {
            Ok(b) => b,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading {digest}: {e}"))))
                    .await;
                return false;
            }
        };
        for piece in bytes.chunks(CHUNK_BYTES) {
            if tx.send(Ok(msg(piece.to_vec()))).await.is_err() {
                return false; // the receiver went away
            }
        }
    }
    true
}
