//! What the mover's work list costs at scale: `blobs_missing_in` on a store
//! of BLOBS linked blobs (default 200,000), every one held by three regions
//! but a backlog of BACKLOG (default 1 %) that only one region holds.
//! Compares the holder-count index (the cluster's 3 regions known) with a
//! walk of every entry (what the call cost before the index: every blob
//! record read and decoded), both on the same store, in one run:
//! `cargo run --release -p wharf-meta --example missing_scan [BLOBS] [BACKLOG] [REPLICAS]`.
//!
//! With REPLICAS (1 to 4), the cluster has five regions and the registry
//! is replicated to the first REPLICAS of them only: blobs held by those
//! are placed (see `holders`), and no walk should read them.

use std::time::Instant;

use wharf_meta::{
    BlobRef, Command, Envelope, MetaStore, RegistryCommand, Response, Sku, DEFAULT_REGISTRY,
};

/// Blobs per command while filling (one LinkBlobs or BlobsReplicated).
const BATCH: usize = 1_000;
/// The mover's default scan limit.
const SCAN_LIMIT: usize = 10_000;
const ROUNDS: usize = 5;
/// The cluster's regions when REPLICAS is given.
const REGIONS_WITH_REPLICAS: usize = 5;

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

fn apply(s: &MetaStore, cmd: Command) {
    let response = s
        .apply(&Envelope::new(DEFAULT_REGISTRY, cmd, 1), &[])
        .expect("apply");
    assert!(!matches!(response, Response::Refused(_)), "{response:?}");
}

fn refs(range: std::ops::Range<usize>) -> Vec<BlobRef> {
    range
        .map(|i| BlobRef {
            digest: digest(i),
            size: 1024,
        })
        .collect()
}

/// Seconds of one call of `f`, and what it returned.
fn once(f: impl FnOnce() -> usize) -> (f64, usize) {
    let t = Instant::now();
    let n = f();
    (t.elapsed().as_secs_f64(), n)
}

/// Median seconds of `ROUNDS` calls of `f`, and what the last returned.
fn time(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        n = f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[ROUNDS / 2], n)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let blobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let backlog: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(blobs / 100);
    let replicas: Option<usize> = args.next().map(|a| {
        a.parse()
            .ok()
            .filter(|n| (1..REGIONS_WITH_REPLICAS).contains(n))
            .expect("REPLICAS is 1 to 4")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let s = MetaStore::open(dir.path()).expect("open");
    // The regions holding what is not in the backlog, and the cluster's.
    let (holders, regions): (Vec<String>, usize) = match replicas {
        None => (vec!["r2".into(), "r3".into()], 3),
        Some(n) => {
            // The tier that may replicate to several regions.
            apply(
                &s,
                Command::Registry(RegistryCommand::Update {
                    name: DEFAULT_REGISTRY.into(),
                    sku: Some(Sku::Premium),
                }),
            );
            for r in 1..=n {
                apply(
                    &s,
                    Command::Registry(RegistryCommand::SetReplica {
                        name: DEFAULT_REGISTRY.into(),
                        region: format!("r{r}"),
                        add: true,
                    }),
                );
            }
            (
                (2..=n).map(|r| format!("r{r}")).collect(),
                REGIONS_WITH_REPLICAS,
            )
        }
    };
    let t = Instant::now();
    for start in (0..blobs).step_by(BATCH) {
        let end = (start + BATCH).min(blobs);
        apply(
            &s,
            Command::LinkBlobs {
                repo: format!("scale/r{}", start / 10_000),
                region: "r1".into(),
                blobs: refs(start..end),
                now_ms: start as u64,
            },
        );
        // All but the backlog (the newest) are held everywhere.
        let held = end.min(blobs - backlog);
        if held > start {
            for region in &holders {
                apply(
                    &s,
                    Command::BlobsReplicated {
                        region: region.clone(),
                        blobs: refs(start..held),
                    },
                );
            }
        }
    }
    println!(
        "filled {blobs} blobs ({backlog} held by r1 only, the rest by r1 and {holders:?}; \
         {regions} regions) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The region asked about: one the blobs are wanted in.
    let asked = if holders.is_empty() { "r1" } else { "r2" };
    // Filling left a deletion behind for every step a blob took towards
    // three holders: the first walk compacts them away.
    let (first, _) = once(|| {
        s.blobs_missing_in(asked, regions, SCAN_LIMIT)
            .expect("query")
            .len()
    });
    println!("first indexed call (compacts the churned low counts first): {first:.4} s");
    for (what, limit) in [
        ("mover scan (limit 10,000)", SCAN_LIMIT),
        ("replication list (no limit)", usize::MAX),
    ] {
        let (indexed, n) = time(|| {
            s.blobs_missing_in(asked, regions, limit)
                .expect("query")
                .len()
        });
        if replicas.is_some() {
            // Told of no region count, the walk still leaves out placed
            // blobs: compare with a build from before them instead.
            println!("{what}: {n} missing in {asked}; index {indexed:.4} s");
            continue;
        }
        let (walked, m) = time(|| {
            s.blobs_missing_in(asked, usize::MAX, limit)
                .expect("query")
                .len()
        });
        assert_eq!(n, m, "both find the same backlog");
        println!(
            "{what}: {n} missing in {asked}; index {:.4} s, walk of every blob {:.4} s ({:.0}x)",
            indexed,
            walked,
            walked / indexed.max(1e-9)
        );
    }
}
