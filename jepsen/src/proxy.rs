//! A TCP proxy per directed link between regions. Every peer connection
//! of the cluster goes through one, so a partition is a cut here: open
//! connections are reset and new ones refused until the link heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Link {
    pub from: usize,
    pub to: usize,
    cut: AtomicBool,
    conns: Mutex<Vec<AbortHandle>>,
}

impl Link {
    /// Listen on `listener`, forwarding to `upstream` while not cut.
    pub fn start(from: usize, to: usize, listener: TcpListener, upstream: String) -> Arc<Link> {
        let link = Arc::new(Link {
            from,
            to,
            cut: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let l = link.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if l.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut conns = l.conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|h| !h.is_finished());
                conns.push(task.abort_handle());
            }
        });
        link
    }

    /// Drop every connection and refuse new ones.
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

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}
