//! Small blobs move in batches over a real gRPC socket: one stream, one
//! commit for many. What the holder lacks or sends corrupt fails alone and
//! is never kept; the rest arrive byte-exact and are queued for the blob
//! index; the background replicator drains a backlog through batches; a
//! capped link is avoided when another region holds the blob, and paced
//! when it must be used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wharf_blobstore::{BlobStore, StoreLimits};
use wharf_mover::{Directory, FetchLimits, Fetcher, Holder, ReplicatorConfig};
use wharf_oci::Digest;

struct TestDirectory {
    holders: Vec<Holder>,
    missing: Mutex<Vec<(Digest, u64)>>,
    reported: Mutex<HashMap<Digest, u64>>,
}

impl Directory for TestDirectory {
    fn holders(&self, _: &Digest) -> Vec<Holder> {
        self.holders.clone()
    }

    fn missing(&self, limit: usize) -> Vec<(Digest, u64)> {
        let reported = self.reported.lock().unwrap();
        self.missing
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| !reported.contains_key(d))
            .take(limit)
            .cloned()
            .collect()
    }

    async fn report(&self, blobs: Vec<(Digest, u64)>) -> Result<(), String> {
        self.reported.lock().unwrap().extend(blobs);
        Ok(())
    }
}

/// A holder region: a blob store with `n` distinct small blobs, served by
/// the mover's gRPC service on a loopback port.
async fn holder(
    dir: &std::path::Path,
    n: usize,
) -> (Holder, Arc<BlobStore>, Vec<(Digest, Vec<u8>)>) {
    holder_of(dir, n, 0).await
}

/// `holder`, with blobs of about `size` bytes (0: a few hundred, growing).
async fn holder_of(
    dir: &std::path::Path,
    n: usize,
    size: usize,
) -> (Holder, Arc<BlobStore>, Vec<(Digest, Vec<u8>)>) {
    let store = Arc::new(BlobStore::open(dir, "h", StoreLimits::default()).unwrap());
    let mut blobs = Vec::new();
    for i in 0..n {
        let mut data = (i as u64).to_be_bytes().to_vec();
        let len = if size > 0 { size } else { 100 + i * 7 };
        data.extend(std::iter::repeat_n((i % 251) as u8, len));
        let digest = Digest::sha256_of(&data);
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.clone()))]);
        store.put("r", &digest, body).await.unwrap();
        blobs.push((digest, data));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming =
        tonic::transport::server::TcpIncoming::from_listener(listener, true, None).unwrap();
    let svc = wharf_mover::service(store.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (
        Holder {
            region: "r1".into(),
            addr,
        },
        store,
        blobs,
    )
}

fn receiver(
    dir: &std::path::Path,
    holder: Holder,
) -> (
    Arc<TestDirectory>,
    Arc<BlobStore>,
    Arc<Fetcher<TestDirectory>>,
) {
    receiver_with(dir, vec![holder], FetchLimits::default())
}

fn receiver_with(
    dir: &std::path::Path,
    holders: Vec<Holder>,
    limits: FetchLimits,
) -> (
    Arc<TestDirectory>,
    Arc<BlobStore>,
    Arc<Fetcher<TestDirectory>>,
) {
    let store = Arc::new(BlobStore::open(dir, "x", StoreLimits::default()).unwrap());
    let directory = Arc::new(TestDirectory {
        holders,
        missing: Mutex::new(Vec::new()),
        reported: Mutex::new(HashMap::new()),
    });
    let fetcher = Fetcher::new(directory.clone(), store.clone(), limits);
    (directory, store, fetcher)
}

async fn read(store: &BlobStore, digest: &Digest) -> Option<Vec<u8>> {
    let opened = store.open_blob(digest).await.unwrap()?;
    Some(opened.read_all().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_what_verifies_and_fails_alone_what_does_not() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h, _held, blobs) = holder(a.path(), 300).await;
    // Two blobs the holder's disk corrupted (one shorter, one longer than
    // its size), one it does not have.
    let corrupt = &blobs[17].0;
    std::fs::write(
        wharf_blobstore::fs_blob_path(a.path(), corrupt),
        b"not what the digest says",
    )
    .unwrap();
    let long = &blobs[18].0;
    std::fs::write(
        wharf_blobstore::fs_blob_path(a.path(), long),
        vec![7u8; 3 << 20],
    )
    .unwrap();
    let absent = Digest::sha256_of(b"never uploaded");
    let (_dir, store, fetcher) = receiver(b.path(), h.clone());
    let mut asked: Vec<(Digest, u64)> = blobs
        .iter()
        .map(|(d, data)| (d.clone(), data.len() as u64))
        .collect();
    asked.insert(100, (absent.clone(), 14));
    fetcher.fetch_batch(h, asked).await;

    for (d, data) in &blobs {
        let got = read(&store, d).await;
        if d == corrupt || d == long {
            assert!(got.is_none(), "a corrupt copy was kept");
        } else {
            assert_eq!(got.as_deref(), Some(&data[..]), "{d}");
        }
    }
    assert!(read(&store, &absent).await.is_none());
    // Kept ones wait for the index; nothing is left in flight.
    assert_eq!(fetcher.recorder().pending(), 298);
    assert!(fetcher.recorder().is_pending(&blobs[0].0));
    assert!(!fetcher.recorder().is_pending(corrupt));
    assert_eq!(fetcher.inflight(), 0);
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stat(&fetcher.stats.failures), 3);
    // The bad blobs failed alone: one stream carried everything else.
    assert_eq!(stat(&fetcher.stats.batches), 1);
    assert_eq!(stat(&fetcher.stats.blobs_moved), 298);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicator_drains_a_backlog_of_small_blobs_through_batches() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h, _held, blobs) = holder(a.path(), 1200).await;
    let (directory, store, fetcher) = receiver(b.path(), h);
    *directory.missing.lock().unwrap() = blobs
        .iter()
        .map(|(d, data)| (d.clone(), data.len() as u64))
        .collect();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_applied_tx, applied) = tokio::sync::watch::channel(0u64);
    let recorder = tokio::spawn(wharf_mover::run_recorder(fetcher.clone(), stop.clone()));
    let replicator = tokio::spawn(wharf_mover::run_replicator(
        fetcher.clone(),
        applied,
        ReplicatorConfig::default(),
        Arc::new(Default::default()),
        stop,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while directory.reported.lock().unwrap().len() < blobs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} recorded",
            directory.reported.lock().unwrap().len(),
            blobs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (d, data) in &blobs {
        assert_eq!(read(&store, d).await.as_deref(), Some(&data[..]));
    }
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stat(&fetcher.stats.blobs_moved), blobs.len() as u64);
    // In 256-blob batches: a few streams, not one per blob.
    let batches = stat(&fetcher.stats.batches);
    assert!((5..=24).contains(&batches), "{batches} batches");
    stop_tx.send(true).unwrap();
    replicator.await.unwrap();
    recorder.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_link_is_avoided_and_paced_when_it_must_be_used() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (capped, _held, _) = holder(a.path(), 0).await;
    let uncapped = Holder {
        region: "r2".into(),
        addr: "127.0.0.1:9".into(),
    };
    // 1 MB/s from r1 (where the test holder is).
    let limits = FetchLimits {
        link_bytes_per_s: [("r1".to_string(), 1_000_000)].into(),
        ..FetchLimits::default()
    };
    let (_d, _s, fetcher) = receiver_with(b.path(), vec![capped.clone(), uncapped], limits);
    let any = Digest::sha256_of(b"x");
    assert_eq!(
        fetcher.holders(&any)[0].region,
        "r2",
        "the capped link was not last"
    );

    // Ten blobs of 200 kB that only the capped link has: 2 MB at 1 MB/s.
    let (c, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h, _held, blobs) = holder_of(c.path(), 10, 200_000).await;
    let (_d, store, fetcher) = receiver_with(
        d.path(),
        vec![h.clone()],
        FetchLimits {
            link_bytes_per_s: [("r1".to_string(), 1_000_000)].into(),
            ..FetchLimits::default()
        },
    );
    let started = std::time::Instant::now();
    let asked = blobs
        .iter()
        .map(|(d, x)| (d.clone(), x.len() as u64))
        .collect();
    fetcher.fetch_batch(h, asked).await;
    let took = started.elapsed();
    for (d, data) in &blobs {
        assert_eq!(read(&store, d).await.as_deref(), Some(&data[..]));
    }
    assert!(
        took >= Duration::from_millis(1500),
        "2 MB over a 1 MB/s link in {took:?}"
    );
}
