//! The sending side: stream a locally held blob to a peer region.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wharf_blobstore::BlobStore;
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
                let Some((mut file, size)) = opened else {
                    let missing = Part {
                        index,
                        data: Vec::new(),
                        last: true,
                        missing: true,
                    };
                    if tx.send(Ok(missing)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let mut left = size;
                loop {
                    let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
                    if let Err(e) = file.read_exact(&mut buf).await {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading {digest}: {e}"))))
                            .await;
                        return;
                    }
                    left -= buf.len() as u64;
                    let part = Part {
                        index,
                        data: buf,
                        last: left == 0,
                        missing: false,
                    };
                    if tx.send(Ok(part)).await.is_err() {
                        return; // the receiver went away
                    }
                    if left == 0 {
                        break;
                    }
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
        let (mut file, size) = self
            .blobs
            .open_blob(&digest)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("{digest} is not held here")))?;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} beyond size {size}",
                req.offset
            )));
        }
        file.seek(std::io::SeekFrom::Start(req.offset)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        tokio::spawn(async move {
            let mut left = size - req.offset;
            while left > 0 {
                let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
                let sent = match file.read_exact(&mut buf).await {
                    Ok(_) => {
                        left -= buf.len() as u64;
                        tx.send(Ok(Chunk { data: buf })).await
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading {digest}: {e}"))))
                            .await;
                        return;
                    }
                };
                if sent.is_err() {
                    return; // the receiver went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
