use futures::StreamExt;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use wharf_blobstore::{BlobError, BlobStore, StoreLimits};
use wharf_oci::Digest;

type Chunk = Result<Bytes, std::io::Error>;

fn body(parts: &[&[u8]]) -> impl futures::Stream<Item = Chunk> + Unpin {
    stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect::<Vec<_>>(),
    )
}

fn open(dir: &std::path::Path, limits: StoreLimits) -> BlobStore {
    BlobStore::open(dir, "n1", limits).unwrap()
}

async fn read_all(store: &BlobStore, d: &Digest) -> Vec<u8> {
    let opened = store.open_blob(d).await.unwrap().expect("blob present");
    opened.read_all().await.unwrap().to_vec()
}

#[tokio::test]
async fn chunked_upload_is_verified_and_then_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreLimits::default());
    let d = Digest::sha256_of(b"hello world");
    let s = store.create_session("a/b").await.unwrap();
    assert!(s.id.starts_with("n1-"));
    let info = store
        .append(&s.id, "a/b", Some(0), body(&[b"hello", b" "]))
        .await
        .unwrap();
    assert_eq!(info.offset, 6);
    let err = store
        .append(&s.id, "a/b", Some(3), body(&[b"x"]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BlobError::RangeInvalid {
            expected: 6,
            got: 3
        }
    ));
    assert!(
        store.stat(&d).await.unwrap().is_none(),
        "nothing visible before the final PUT"
    );
    let size = store
        .finish(&s.id, "a/b", &d, Some(body(&[b"world"])))
        .await
        .unwrap();
    assert_eq!(size, 11);
    assert_eq!(read_all(&store, &d).await, b"hello world");
    assert!(matches!(
        store.session_info(&s.id, "a/b").await,
        Err(BlobError::UploadUnknown)
    ));
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreLimits::default());
    let claimed = Digest::sha256_of(b"something else");
    let err = store
        .put("r", &claimed, body(&[b"actual bytes"]))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }));
    assert!(store.stat(&claimed).await.unwrap().is_none());
    assert!(store
        .stat(&Digest::sha256_of(b"actual bytes"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0,
        "no leftovers"
    );
}

#[tokio::test]
async fn sessions_survive_a_restart_and_belong_to_their_repository() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open(dir.path(), StoreLimits::default());
        let s = store.create_session("r").await.unwrap();
        store
            .append(&s.id, "r", None, body(&[b"part one,"]))
            .await
            .unwrap();
        // A monolithic upload in flight when the node dies is discarded.
        s.id
    };
    let store = open(dir.path(), StoreLimits::default());
    assert_eq!(store.session_info(&id, "r").await.unwrap().offset, 9);
    assert!(matches!(
        store.session_info(&id, "other").await,
        Err(BlobError::UploadUnknown)
    ));
    let d = Digest::sha256_of(b"part one,part two");
    store
        .finish(&id, "r", &d, Some(body(&[b"part two"])))
        .await
        .unwrap();
    assert_eq!(read_all(&store, &d).await, b"part one,part two");
}

#[tokio::test]
async fn sha512_digests_are_verified_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreLimits::default());
    let mut h = wharf_oci::Hasher::new(wharf_oci::digest::Algorithm::Sha512);
    h.update(b"abc");
    let d = h.finish();
    assert_eq!(store.put("r", &d, body(&[b"ab", b"c"])).await.unwrap(), 3);
}

#[tokio::test]
async fn idle_sessions_expire_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        sessions_max: 1,
        session_expiry: Duration::from_millis(1),
        blob_max_bytes: 4,
        ..StoreLimits::default()
    };
    let store = open(dir.path(), limits);
    let s = store.create_session("r").await.unwrap();
    assert!(matches!(
        store.create_session("r").await,
        Err(BlobError::TooManySessions(1))
    ));
    let err = store
        .append(&s.id, "r", None, body(&[b"12345"]))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::SizeInvalid { .. }), "{err:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.sweep_expired().await, 1);
    assert_eq!(store.sessions_in_progress(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_stalled_client_is_cut_off_and_keeps_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        body_idle_timeout: Duration::from_millis(100),
        ..StoreLimits::default()
    };
    let store = open(dir.path(), limits);
    let s = store.create_session("r").await.unwrap();
    let stalled = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))])
        .chain(stream::pending());
    let err = store
        .append(&s.id, "r", None, Box::pin(stalled))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Stalled(_)));
    assert_eq!(store.session_info(&s.id, "r").await.unwrap().offset, 3);
}

#[tokio::test]
async fn pending_links_are_durable_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Digest::sha256_of(b"x");
    {
        let store = open(dir.path(), StoreLimits::default());
        store.add_pending("a/b", &d, 1).await.unwrap();
        store.add_pending("c", &d, 1).await.unwrap();
        assert_eq!(store.pending("a/b", &d), Some(1));
        assert_eq!(store.pending("other", &d), None);
    }
    let store = open(dir.path(), StoreLimits::default());
    assert_eq!(store.pending_count(), 2, "pending links survive a restart");
    assert_eq!(
        store.pending_due(Duration::from_secs(60)).len(),
        2,
        "and are due at once"
    );
    assert!(store.remove_pending("a/b", d.as_str()).unwrap());
    let store = open(dir.path(), StoreLimits::default());
    assert_eq!(store.pending_count(), 1);
    assert_eq!(store.pending("c", &d), Some(1));
}

/// Age a stored blob by `secs` (as if written that long ago).
fn age(root: &std::path::Path, d: &Digest, secs: u64) {
    let f = std::fs::File::options()
        .append(true)
        .open(wharf_blobstore::fs_blob_path(root, d))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

// GC's sweep deletes a freed copy only when nothing wrote it within the
// idle time: an upload of the same bytes, or a mount's touch, keeps it.
#[tokio::test]
async fn a_gc_removal_spares_a_copy_written_or_touched_since() {
    use wharf_blobstore::Removal;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreLimits::default());
    let idle = Duration::from_secs(60);
    let d = Digest::sha256_of(b"layer");
    store.put("a", &d, body(&[b"layer"])).await.unwrap();
    assert_eq!(
        store.remove_if_idle(&d, idle).await.unwrap(),
        Removal::Recent
    );
    age(dir.path(), &d, 120);
    // Uploaded again (a new push of the same layer): young again.
    store.put("b", &d, body(&[b"layer"])).await.unwrap();
    assert_eq!(
        store.remove_if_idle(&d, idle).await.unwrap(),
        Removal::Recent
    );
    age(dir.path(), &d, 120);
    // Mounted: touched, young again.
    assert_eq!(store.touch(&d).await.unwrap(), Some(5));
    assert_eq!(
        store.remove_if_idle(&d, idle).await.unwrap(),
        Removal::Recent
    );
    age(dir.path(), &d, 120);
    assert_eq!(
        store.remove_if_idle(&d, idle).await.unwrap(),
        Removal::Removed(5)
    );
    assert!(store.stat(&d).await.unwrap().is_none());
    assert_eq!(
        store.remove_if_idle(&d, idle).await.unwrap(),
        Removal::Missing
    );
    assert_eq!(store.touch(&d).await.unwrap(), None);
    // A pending link names the digest, whatever its repository.
    store.add_pending("some/repo", &d, 5).await.unwrap();
    assert!(store.is_pending(&d));
}

#[tokio::test]
async fn uploads_written_around_the_page_cache_are_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        direct_io: true,
        ..StoreLimits::default()
    };
    let store = open(dir.path(), limits);
    // Three PATCHes ending mid-block and a final PUT: heads and tails
    // through the page cache, whole blocks around it.
    let data: Vec<u8> = (0..(3 << 20) + 777u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let d = Digest::sha256_of(&data);
    let s = store.create_session("r").await.unwrap();
    let cuts = [
        0,
        1_000_001,
        1_000_002 + (1 << 20),
        (2 << 20) + 4096,
        data.len(),
    ];
    for w in cuts.windows(2).take(3) {
        let part = &data[w[0]..w[1]];
        let info = store
            .append(
                &s.id,
                "r",
                Some(w[0] as u64),
                body(&[&part[..part.len() / 2], &part[part.len() / 2..]]),
            )
            .await
            .unwrap();
        assert_eq!(info.offset, w[1] as u64);
    }
    let last = &data[cuts[3]..];
    assert_eq!(
        store
            .finish(&s.id, "r", &d, Some(body(&[last])))
            .await
            .unwrap(),
        data.len() as u64
    );
    assert!(read_all(&store, &d).await == data);
}
