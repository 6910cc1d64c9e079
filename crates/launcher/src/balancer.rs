//! One address for a region with several nodes, as a load balancer in
//! front of them gives it: each TCP connection goes to the next node in
//! turn, skipping a node that refuses connections (dead or stopped).
//! Enough to test what clients see when a node of a region dies; not a
//! production proxy (no health checks beyond the connect, no draining).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    upstreams: Vec<String>,
    next: AtomicUsize,
}

/// A connect to a node that does not answer fails over after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Balancer {
    /// Accept on `listener` until the runtime stops, spreading connections
    /// over `upstreams` (host:port).
    pub fn start(listener: TcpListener, upstreams: Vec<String>) -> Arc<Balancer> {
        let b = Arc::new(Balancer {
            upstreams,
            next: AtomicUsize::new(0),
        });
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move { me.carry(client).await });
            }
        });
        b
    }

    async fn carry(&self, mut client: TcpStream) {
        let n = self.upstreams.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let addr = &self.upstreams[(first + k) % n];
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
            if let Ok(Ok(mut upstream)) = connect {
                let _ = upstream.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
        }
        // Every node refused: the client sees its connection closed.
    }
}
