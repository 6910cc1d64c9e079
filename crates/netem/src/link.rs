//! One emulated, directed link: a TCP proxy that delays every piece of
//! data by the one-way latency, caps the bandwidth (one budget per
//! direction shared by all connections, as on a real line), turns "loss"
//! into retransmission delay, can be silenced (nothing passes, nothing is
//! reset: what dropped packets look like to TCP, connections hang until
//! their own timeouts, and what was sent arrives once the link heals), and
//! can be cut (open connections reset, new
//! ones refused) and healed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::limiter::RateLimiter;

/// Reads from a socket are forwarded in pieces of at most this size.
const READ_BYTES: usize = 64 * 1024;
/// Pieces in flight per direction of a connection (bounds memory).
const IN_FLIGHT_PIECES: usize = 4096;

/// How a link behaves. The default is a perfect link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkSpec {
    pub one_way_delay: Duration,
    /// 0: unlimited.
    pub bytes_per_s: u64,
    /// Packet loss, in percent. TCP hides loss as retransmissions, so a
    /// "lost" piece is delivered late (in order), as a retransmitted
    /// segment would be: two one-way delays later, and at least 200 ms
    /// (the smallest retransmission timeout) on a link with no delay.
    pub loss_pct: f64,
}

/// The smallest retransmission timeout of Linux TCP.
const MIN_RTO: Duration = Duration::from_millis(200);

impl LinkSpec {
    /// When a piece read now is due at the other end.
    fn due(&self, now: Instant) -> Instant {
        let mut due = now + self.one_way_delay;
        if self.loss_pct > 0.0 && rand::random::<f64>() * 100.0 < self.loss_pct {
            due += (self.one_way_delay * 2).max(MIN_RTO);
        }
        due
    }
}

pub struct Link {
    spec: Mutex<LinkSpec>,
    forward: RateLimiter,
    backward: RateLimiter,
    cut: AtomicBool,
    silenced: tokio::sync::watch::Sender<bool>,
    conns: Mutex<Vec<AbortHandle>>,
}

impl Link {
    /// Accept on `listener` until the runtime stops, forwarding each
    /// connection to `upstream` through the emulated link.
    pub fn start(listener: TcpListener, upstream: String, spec: LinkSpec) -> Arc<Link> {
        let link = Arc::new(Link {
            spec: Mutex::new(spec),
            forward: RateLimiter::new(spec.bytes_per_s),
            backward: RateLimiter::new(spec.bytes_per_s),
            cut: AtomicBool::new(false),
            silenced: tokio::sync::watch::Sender::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let l = link.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if l.is_cut() {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(l.clone().carry(client, upstream.clone()));
                let mut conns = l.conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|h| !h.is_finished());
                conns.push(task.abort_handle());
            }
        });
        link
    }

    pub fn spec(&self) -> LinkSpec {
        *self.spec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change how the link behaves, for open connections too.
    pub fn set_spec(&self, spec: LinkSpec) {
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = spec;
        self.forward.set_rate(spec.bytes_per_s);
        self.backward.set_rate(spec.bytes_per_s);
    }

    /// Reset every open connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    /// Let nothing through, in either direction, without resetting
    /// anything: new connections are accepted but not carried on, open
    /// ones stall (their senders' windows fill), until the link heals.
    pub fn silence(&self) {
        self.silenced.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.silenced.send_replace(false);
    }

    /// Wait while the link is silenced.
    async fn heard(&self) {
        let mut rx = self.silenced.subscribe();
        let _ = rx.wait_for(|s| !*s).await;
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    async fn carry(self: Arc<Link>, client: TcpStream, upstream: String) {
        self.heard().await;
        let Ok(server) = TcpStream::connect(&upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::join!(
            self.pipe(cr, sw, &self.forward),
            self.pipe(sr, cw, &self.backward)
        );
    }

    async fn pipe(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        limiter: &RateLimiter,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT_PIECES);
        let reader = async move {
            let mut buf = vec![0u8; READ_BYTES];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let due = self.spec().due(Instant::now());
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
            // In order, as TCP delivers: a late piece holds the ones after it.
            while let Some((due, piece)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                self.heard().await;
                limiter.take(piece.len() as u64).await;
                if to.write_all(&piece).await.is_err() {
                    break;
                }
            }
            let _ = to.shutdown().await;
        };
        tokio::join!(reader, writer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server answering each 4-byte message; its address.
    async fn echo() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut b = [0u8; 4];
                    while s.read_exact(&mut b).await.is_ok() {
                        if s.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn link(spec: LinkSpec) -> (Arc<Link>, std::net::SocketAddr) {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        (Link::start(proxy, echo().await, spec), addr)
    }

    async fn round_trip(c: &mut TcpStream) -> Duration {
        let start = std::time::Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        start.elapsed()
    }

    #[tokio::test]
    async fn delays_by_the_one_way_latency_each_way_and_can_be_slowed_while_open() {
        let spec = LinkSpec {
            one_way_delay: Duration::from_millis(50),
            ..LinkSpec::default()
        };
        let (link, addr) = link(spec).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let rtt = round_trip(&mut c).await;
        assert!(rtt >= Duration::from_millis(100), "round trip {rtt:?}");
        link.set_spec(LinkSpec {
            one_way_delay: Duration::from_millis(150),
            ..spec
        });
        let rtt = round_trip(&mut c).await;
        assert!(
            rtt >= Duration::from_millis(300),
            "slowed round trip {rtt:?}"
        );
    }

    #[tokio::test]
    async fn loss_delays_pieces_like_retransmissions() {
        let (_link, addr) = link(LinkSpec {
            loss_pct: 100.0,
            ..LinkSpec::default()
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let rtt = round_trip(&mut c).await;
        // Both directions lose their piece: two retransmission timeouts.
        assert!(rtt >= 2 * MIN_RTO, "round trip {rtt:?}");
    }

    #[tokio::test]
    async fn a_silenced_link_stalls_without_resetting_and_delivers_once_healed() {
        let (link, addr) = link(LinkSpec::default()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut c).await;
        link.silence();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        let stalled = tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "data crossed a silenced link");
        // A new connection is accepted but goes nowhere either.
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh.write_all(b"pong").await.unwrap();
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), fresh.read_exact(&mut b)).await;
        assert!(stalled.is_err(), "a new connection got through");
        link.heal();
        // What was sent meanwhile arrives: nothing was reset or lost.
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        fresh.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
    }

    #[tokio::test]
    async fn a_cut_resets_open_connections_and_refuses_new_ones_until_healed() {
        let (link, addr) = link(LinkSpec::default()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut c).await;
        link.cut();
        let mut b = [0u8; 4];
        let _ = c.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "an open connection survived the cut"
        );
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        let _ = fresh.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(2), fresh.read_exact(&mut b)).await;
        assert!(matches!(read, Ok(Err(_))), "a new connection got through");
        link.heal();
        let mut healed = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut healed).await;
    }
}
