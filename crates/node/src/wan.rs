//! A user-space WAN emulator for local clusters (`tc netem` is not
//! available everywhere): a TCP proxy per directed link between regions
//! that delays every byte by the one-way latency and caps the bandwidth.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use wharf_mover::RateLimiter;

/// Reads from a socket are forwarded in pieces of at most this size.
const READ_BYTES: usize = 64 * 1024;
/// Pieces in flight per direction of a connection (bounds memory).
const IN_FLIGHT_PIECES: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    pub one_way_delay: Duration,
    /// 0: unlimited.
    pub bytes_per_s: u64,
    /// Packet loss, in percent. TCP hides loss as retransmissions, so a
    /// "lost" piece is delivered one extra round trip late (in order), as a
    /// retransmitted segment would be.
    pub loss_pct: f64,
}

/// Accept on `listener` forever, forwarding each connection to `upstream`
/// through the emulated link. One bandwidth budget per direction is shared
/// by every connection of the link, as on a real line.
pub async fn run_link(listener: TcpListener, upstream: String, spec: LinkSpec) {
    let forward = Arc::new(RateLimiter::new(spec.bytes_per_s));
    let backward = Arc::new(RateLimiter::new(spec.bytes_per_s));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (upstream, forward, backward) = (upstream.clone(), forward.clone(), backward.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, spec, forward), pipe(sr, cw, spec, backward));
        });
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    spec: LinkSpec,
    limiter: Arc<RateLimiter>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT_PIECES);
    let reader = async move {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut due = Instant::now() + spec.one_way_delay;
                    if spec.loss_pct > 0.0 && rand::random::<f64>() * 100.0 < spec.loss_pct {
                        due += spec.one_way_delay * 2;
                    }
                    if tx
                        .send((due, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            limiter.take(piece.len() as u64).await;
            if to.write_all(&piece).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_by_the_one_way_latency_each_way() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let spec = LinkSpec {
            one_way_delay: Duration::from_millis(50),
            bytes_per_s: 0,
            loss_pct: 0.0,
        };
        tokio::spawn(run_link(proxy, echo_addr, spec));
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        let start = std::time::Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(100), "round trip {rtt:?}");
    }
}
