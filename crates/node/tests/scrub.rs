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

/// Push an image with the given layers through region 1; wait until
/// every region holds them.
async fn pushed(c: &Cluster, r: &Reg, repo: &str, layers: &[&[u8]]) -> Vec<String> {
    let m = r.image(repo, layers).await;
    assert_eq!(
        r.put_manifest(repo, "v1", OCI_MANIFEST, &m).await.status(),
        201
    );
    let digests = layers_of(&m);
    eventually(60, "every region holds the layers", || {
        (0..3).all(|i| digests.iter().all(|d| c.holds(i, d)))
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
