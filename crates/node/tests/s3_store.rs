//! The object-store backend against a real S3 server (SeaweedFS, started
//! if none runs): what the registry relies on from any blob store, and
//! what only a shared store gives — a session one node starts, another
//! continues and a third finishes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wharf_blobstore::{BlobError, BlobStore, Removal, S3Backend, S3Settings, StoreLimits};
use wharf_launcher::s3::{ObjectStore, SHARED_BUCKET as BUCKET};
use wharf_oci::Digest;

fn server() -> ObjectStore {
    wharf_launcher::s3::from_env()
        .unwrap_or_else(|| ObjectStore::seaweedfs().expect("an S3 server for the tests"))
}

fn settings(endpoint: &str, bucket: &str, prefix: &str) -> S3Settings {
    S3Settings {
        endpoint: endpoint.to_string(),
        bucket: bucket.to_string(),
        region: "us-east-1".into(),
        access_key_id: Some("wharf".into()),
        secret_access_key: Some("wharf-secret".into()),
        prefix: prefix.to_string(),
        request_timeout: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(2),
        max_retries: 2,
    }
}

/// A fresh prefix of the shared bucket, and `nodes` stores on it (each with its own local
/// directory, as nodes of one region have).
fn region(nodes: usize) -> (ObjectStore, String, Vec<BlobStore>, Vec<tempfile::TempDir>) {
    let s3 = server();
    s3.create_bucket(BUCKET).unwrap();
    let prefix = format!("test-{:08x}/", rand::random::<u32>());
    let mut stores = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..nodes {
        let dir = tempfile::tempdir().unwrap();
        let backend = S3Backend::connect(
            settings(&s3.endpoint, BUCKET, &prefix),
            &format!("n{i}"),
            StoreLimits::default(),
        )
        .unwrap();
        stores.push(BlobStore::with_backend(dir.path(), Arc::new(backend)).unwrap());
        dirs.push(dir);
    }
    (s3, prefix, stores, dirs)
}

fn body(parts: Vec<Vec<u8>>) -> impl futures::Stream<Item = Result<Bytes, String>> + Send {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn key(prefix: &str, d: &Digest) -> String {
    format!("{prefix}blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_started_on_one_node_continues_and_finishes_on_others() {
    let (s3, prefix, nodes, _dirs) = region(3);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Chunks across a multipart part boundary (8 MiB) and small ones.
    let parts = [bytes(9 << 20, 1), bytes(1000, 2), bytes(3 << 20, 3)];
    let whole: Vec<u8> = parts.concat();
    let digest = Digest::sha256_of(&whole);

    let s = a.create_session("repo").await.unwrap();
    let after = a
        .append(&s.id, "repo", Some(0), body(vec![parts[0].clone()]))
        .await
        .unwrap();
    assert_eq!(after.offset, parts[0].len() as u64);
    // Another node sees the session where the first left it.
    assert_eq!(
        b.session_info(&s.id, "repo").await.unwrap().offset,
        after.offset
    );
    // A chunk that does not continue the upload is refused with the offset.
    match b
        .append(&s.id, "repo", Some(5), body(vec![b"x".to_vec()]))
        .await
    {
        Err(BlobError::RangeInvalid { expected, got: 5 }) => assert_eq!(expected, after.offset),
        other => panic!("expected RangeInvalid, got {other:?}"),
    }
    b.append(
        &s.id,
        "repo",
        Some(after.offset),
        body(vec![parts[1].clone()]),
    )
    .await
    .unwrap();
    // Another repository's session of the same id is not this one.
    assert!(matches!(
        c.session_info(&s.id, "other").await,
        Err(BlobError::UploadUnknown)
    ));
    assert!(
        !s3.exists(BUCKET, &key(&prefix, &digest)),
        "nothing visible before the digest is checked"
    );
    let size = c
        .finish(&s.id, "repo", &digest, Some(body(vec![parts[2].clone()])))
        .await
        .unwrap();
    assert_eq!(size, whole.len() as u64);
    for n in &nodes {
        assert_eq!(n.stat(&digest).await.unwrap(), Some(size));
        let got = n
            .open_blob(&digest)
            .await
            .unwrap()
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert!(got == whole, "the stored blob is the bytes sent");
    }
    // The session is gone, from every node.
    assert!(matches!(
        a.session_info(&s.id, "repo").await,
        Err(BlobError::UploadUnknown)
    ));
    assert!(s3
        .list(BUCKET, &format!("{prefix}uploads/"))
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_is_never_visible() {
    let (s3, prefix, nodes, _dirs) = region(1);
    let n = &nodes[0];
    let data = bytes(10 << 20, 7);
    let claimed = Digest::sha256_of(b"something else");
    // Monolithic (straight to the blob's key, multipart): aborted.
    let e = n.put("repo", &claimed, body(vec![data.clone()])).await;
    assert!(matches!(e, Err(BlobError::DigestMismatch { .. })), "{e:?}");
    // Chunked, finished elsewhere: discarded.
    let s = n.create_session("repo").await.unwrap();
    n.append(&s.id, "repo", None, body(vec![data.clone()]))
        .await
        .unwrap();
    let none: Option<futures::stream::Empty<Result<Bytes, String>>> = None;
    let e = n.finish(&s.id, "repo", &claimed, none).await;
    assert!(matches!(e, Err(BlobError::DigestMismatch { .. })), "{e:?}");
    assert!(n.stat(&claimed).await.unwrap().is_none());
    assert!(
        s3.list(BUCKET, &prefix).unwrap().is_empty(),
        "nothing left in the bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_mounts_and_gc_on_the_object_store() {
    let (_s3, _prefix, nodes, _dirs) = region(1);
    let n = &nodes[0];
    let data = bytes(12 << 20, 9);
    let d = Digest::sha256_of(&data);
    assert_eq!(
        n.put("repo", &d, body(vec![data.clone()])).await.unwrap(),
        data.len() as u64
    );
    let opened = n.open_blob(&d).await.unwrap().unwrap();
    let mut s = opened.stream(1 << 20, 100).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = futures::StreamExt::next(&mut s).await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, data[1 << 20..(1 << 20) + 100]);
    assert_eq!(
        n.list(None, 10).await.unwrap(),
        vec![(d.clone(), data.len() as u64)]
    );

    let idle = Duration::from_secs(3600);
    assert_eq!(n.remove_if_idle(&d, idle).await.unwrap(), Removal::Recent);
    assert_eq!(n.touch(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        n.remove_if_idle(&d, Duration::ZERO).await.unwrap(),
        Removal::Removed(data.len() as u64)
    );
    assert!(n.stat(&d).await.unwrap().is_none());
    assert_eq!(
        n.remove_if_idle(&d, Duration::ZERO).await.unwrap(),
        Removal::Missing
    );
    assert_eq!(n.touch(&d).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_is_quarantined_only_if_it_is_still_the_one_seen() {
    let (s3, prefix, nodes, _dirs) = region(1);
    let n = &nodes[0];
    let d = Digest::sha256_of(b"layer bytes");
    n.put("repo", &d, body(vec![b"layer bytes".to_vec()]))
        .await
        .unwrap();
    // The store's disk flipped it.
    s3.put(BUCKET, &key(&prefix, &d), b"layer bytez").unwrap();
    let seen = n.open_blob(&d).await.unwrap().unwrap().copy;
    // A good copy arrives (an upload) before the quarantine: kept.
    n.put("repo", &d, body(vec![b"layer bytes".to_vec()]))
        .await
        .unwrap();
    assert_eq!(n.quarantine(&d, seen, 1).await.unwrap(), None);
    assert!(n.stat(&d).await.unwrap().is_some());
    s3.put(BUCKET, &key(&prefix, &d), b"layer bytez").unwrap();
    let seen = n.open_blob(&d).await.unwrap().unwrap().copy;
    let to = n
        .quarantine(&d, seen, 2)
        .await
        .unwrap()
        .expect("quarantined");
    assert!(to.contains("quarantine/"), "{to}");
    assert!(n.stat(&d).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_unavailable_not_an_upload() {
    let port = wharf_launcher::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = S3Backend::connect(
        settings(&format!("http://127.0.0.1:{port}"), "nowhere", ""),
        "n1",
        StoreLimits::default(),
    )
    .unwrap();
    let n = BlobStore::with_backend(dir.path(), Arc::new(backend)).unwrap();
    let d = Digest::sha256_of(b"x");
    let started = std::time::Instant::now();
    let e = n.put("repo", &d, body(vec![b"x".to_vec()])).await;
    assert!(matches!(e, Err(BlobError::Unavailable(_))), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "retries are bounded"
    );
    assert!(matches!(
        n.create_session("repo").await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(n.probe().await.is_err());
    assert!(n.unavailable().is_some());
    assert!(n.errors_total() >= 2);
}
