//! Scrub against three real regions: one byte flipped in one region's
//! stored copy of a layer is found (by a whole read, or by the background
//! pass), the copy is quarantined, the region holds a good copy again
//! within a bounded time, and no client ever receives the flipped bytes in
//! a complete 200 response.

mod common;

use common::cluster::Cluster;
use common::registry::{layers_of, Reg, OCI_MANIFEST};
use common::{eventually, random_bytes, sha256, wharf_json};

/// Flip one byte in the middle of region `i`'s copy of `digest`, in place.
fn flip_byte(c: &Cluster, i: usize, digest: &str) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = c.blob_file(i, digest);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
}

/// Whether region `i` holds a copy of `digest` that matches it.
fn holds_good(c: &Cluster, i: usize, digest: &str) -> bool {
    std::fs::read(c.blob_file(i, digest)).is_ok_and(|b| sha256(&b) == digest)
}

fn quarantined(c: &Cluster, i: usize) -> usize {
    std::fs::read_dir(c.nodes[i].dir.join("data/blobs/quarantine"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Push an image with the given layers through the first region; wait
/// until every region holds them.
async fn pushed(c: &Cluster, r: &Reg, repo: &str, layers: &[&[u8]]) -> Vec<String> {
    let m = r.image(repo, layers).await;
    assert_eq!(
        r.put_manifest(repo, "v1", OCI_MANIFEST, &m).await.status(),
        201
    );
    let digests = layers_of(&m);
    eventually(60, "every region holds the layers", || {
        (0..c.nodes.len()).all(|i| digests.iter().all(|d| c.holds(i, d)))
    })
    .await;
    digests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_read_never_completes_with_a_flipped_byte_and_the_copy_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "[scrub]\nmib_per_s = 0\n");
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let (small, large) = (random_bytes(100_000), random_bytes(3 << 20));
    let d = pushed(&c, &r[0], "scrub/app", &[&small, &large]).await;
    let (ds, dl) = (&d[0], &d[1]);
    flip_byte(&c, 1, ds);
    flip_byte(&c, 1, dl);

    // A small blob is checked before its first byte: the client gets the
    // right bytes, from another region.
    let got = r[1].get(&format!("/v2/scrub/app/blobs/{ds}")).await;
    assert_eq!(got.status(), 200);
    assert_eq!(&got.bytes().await.unwrap()[..], &small[..]);

    // A large one is hashed as it streams: the read fails before its last
    // byte rather than complete with the flipped one.
    let got = r[1].get(&format!("/v2/scrub/app/blobs/{dl}")).await;
    assert_eq!(got.status(), 200, "headers go before the bytes are read");
    if let Ok(b) = got.bytes().await {
        panic!(
            "a complete response carried {} bytes (hashing to {})",
            b.len(),
            sha256(&b)
        );
    }

    // Both copies are quarantined and the region holds good ones again.
    eventually(60, "region 2 holds good copies again", || {
        holds_good(&c, 1, ds) && holds_good(&c, 1, dl)
    })
    .await;
    assert_eq!(quarantined(&c, 1), 2);
    let got = r[1].get(&format!("/v2/scrub/app/blobs/{dl}")).await;
    assert_eq!(&got.bytes().await.unwrap()[..], &large[..]);
    let status = wharf_json(&c.nodes[0].url(""), &["scrub", "status"]);
    let region2 = status["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["region"] == common::cluster::REGIONS[1])
        .cloned()
        .unwrap();
    assert_eq!(region2["corrupt_found"], 2, "{status}");
    assert_eq!(region2["recent"][0]["found_by"], "read", "{status}");
    for other in [0, 2] {
        assert!(holds_good(&c, other, ds) && holds_good(&c, other, dl));
        assert_eq!(quarantined(&c, other), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_scrub_finds_a_flipped_byte_and_the_mover_replaces_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        dir.path(),
        3,
        "[scrub]\nmib_per_s = 200\ninterval_s = 1\n[mover]\nrescan_s = 1\n",
    );
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let layer = random_bytes(2 << 20);
    let d = pushed(&c, &r[0], "scrub/bg", &[&layer]).await;
    flip_byte(&c, 2, &d[0]);
    // No client reads it: the scrub finds it, the mover copies it back.
    eventually(60, "region 3's scrub replaced the flipped copy", || {
        quarantined(&c, 2) == 1 && holds_good(&c, 2, &d[0])
    })
    .await;
    let status = wharf_json(&c.nodes[0].url(""), &["scrub", "status"]);
    let rows = status["regions"].as_array().unwrap();
    let region3 = rows
        .iter()
        .find(|s| s["region"] == common::cluster::REGIONS[2])
        .unwrap();
    assert_eq!(region3["corrupt_found"], 1, "{status}");
    assert_eq!(region3["recent"][0]["digest"], d[0], "{status}");
    assert_eq!(region3["recent"][0]["found_by"], "scrub", "{status}");
    eventually(30, "every region finished a pass", || {
        let s = wharf_json(&c.nodes[0].url(""), &["scrub", "status"]);
        s["regions"].as_array().unwrap().iter().all(|r| {
            r["passes"].as_u64().unwrap_or(0) >= 1 && r["blobs_verified"].as_u64().unwrap_or(0) >= 1
        })
    })
    .await;
    let got = r[2].get(&format!("/v2/scrub/bg/blobs/{}", d[0])).await;
    assert_eq!(&got.bytes().await.unwrap()[..], &layer[..]);
}

/// The block sums kept with region `i`'s copy of `digest`, raw.
fn sums_of(c: &Cluster, i: usize, digest: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(c.blob_file(i, digest).as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.wharf.sums".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// Replace (Some) or remove (None) the block sums of region `i`'s copy.
fn set_sums(c: &Cluster, i: usize, digest: &str, value: Option<&[u8]>) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(c.blob_file(i, digest).as_os_str().as_bytes()).unwrap();
    let name = c"user.wharf.sums";
    // SAFETY: NUL-terminated strings and a value valid for its length.
    let rc = unsafe {
        match value {
            Some(v) => libc::setxattr(path.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0),
            None => libc::removexattr(path.as_ptr(), name.as_ptr()),
        }
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Flip the byte at `at` of region `i`'s copy of `digest`, in place.
fn flip_at(c: &Cluster, i: usize, digest: &str, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(c.blob_file(i, digest))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    f.sync_all().unwrap();
}

async fn ranged(r: &Reg, path: &str, from: u64, to: u64) -> reqwest::Response {
    r.req(reqwest::Method::GET, path)
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await
        .unwrap()
}

/// Whether a read delivers its whole body. A check that fails before the
/// first byte closes the connection before even the headers went out, so
/// the failure may show at either step.
async fn completes(req: reqwest::RequestBuilder) -> bool {
    match req.send().await {
        Err(_) => false,
        Ok(resp) => resp.bytes().await.is_ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_sums_check_every_read_and_never_condemn_a_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 2, "[scrub]\nmib_per_s = 0\n");
    let r: Vec<Reg> = c.nodes.iter().map(|n| Reg::new(&n.addr())).collect();
    let layer = random_bytes((3 << 20) + 5);
    let d = pushed(&c, &r[0], "sums/app", &[&layer]).await.remove(0);
    let path = format!("/v2/sums/app/blobs/{d}");
    let right = wharf_blobstore::BlockSums::of(&layer).encode();
    // Both the uploaded copy and the one the mover brought have sums.
    assert_eq!(sums_of(&c, 0, &d).as_deref(), Some(&right[..]));
    assert_eq!(sums_of(&c, 1, &d).as_deref(), Some(&right[..]));

    // Wrong sums on a good copy (as a crash could leave): the read fails,
    // a full hash finds the copy good, the sums are replaced, nothing is
    // quarantined, and the next read completes.
    let mut other = layer.clone();
    other[5] ^= 1;
    set_sums(
        &c,
        0,
        &d,
        Some(&wharf_blobstore::BlockSums::of(&other).encode()),
    );
    assert!(
        !completes(r[0].req(reqwest::Method::GET, &path)).await,
        "block 0 fails its sum"
    );
    eventually(30, "the sums were replaced", || {
        sums_of(&c, 0, &d).as_deref() == Some(&right[..])
    })
    .await;
    assert_eq!(quarantined(&c, 0), 0, "a good copy is never condemned");
    assert_eq!(
        &r[0].get(&path).await.bytes().await.unwrap()[..],
        &layer[..]
    );

    // A flipped byte in block 2: ranges of other blocks are served, checked;
    // a range touching it never completes, and the copy is replaced.
    flip_at(&c, 0, &d, (2 << 20) + 10);
    let first = ranged(&r[0], &path, 0, (1 << 20) - 1).await;
    assert_eq!(first.status(), 206);
    assert_eq!(&first.bytes().await.unwrap()[..], &layer[..1 << 20]);
    let hit = r[0].req(reqwest::Method::GET, &path).header(
        "range",
        format!("bytes={}-{}", (2 << 20) + 5, (2 << 20) + 20),
    );
    assert!(
        !completes(hit).await,
        "a range over the flipped byte does not complete"
    );
    eventually(60, "region 1 holds a good copy again", || {
        holds_good(&c, 0, &d) && quarantined(&c, 0) == 1
    })
    .await;

    // A copy without sums (stored before they existed) is hashed whole on
    // its first read and gets them from that hash.
    set_sums(&c, 1, &d, None);
    assert_eq!(
        &r[1].get(&path).await.bytes().await.unwrap()[..],
        &layer[..]
    );
    eventually(30, "the first whole read kept the sums", || {
        sums_of(&c, 1, &d).as_deref() == Some(&right[..])
    })
    .await;
}
