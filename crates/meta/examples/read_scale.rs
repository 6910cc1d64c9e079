//! What a pull's lookups cost as the state grows: fills stores with 1,000,
//! 10,000, 100,000 and TAGS tags (default 1,000,000), then times random
//! pulls' reads (tag → manifest → the repository's read lock, what a
//! manifest GET by tag reads from the store), each size twice, alternated.
//! `cargo run --release -p wharf-meta --example read_scale [TAGS] [LOOKUPS]`.
//! One thread: the latencies are the store's, without a runtime or HTTP.
//! This is the store's share of a pull's cost at a million tags
//! (`bench/scale.py` measures the whole GET). Last, what the first pull
//! after a repository's read lock changes pays at each size: the rebuild
//! of the in-memory set of read-locked repositories.

use std::path::Path;
use std::time::Instant;

use rand::Rng;
use wharf_meta::{AttributeChange, Command, LockTarget, MetaStore, DEFAULT_REGISTRY};

mod scale_fill;

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// `lookups` random pulls' reads; per-pull latency in ns, sorted.
fn pulls(store: &MetaStore, repos: usize, lookups: usize) -> Vec<u64> {
    let reg = store.registry(DEFAULT_REGISTRY);
    let mut rng = rand::thread_rng();
    let mut ns = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let repo = scale_fill::repo_name(rng.gen_range(0..repos));
        let tag = format!("t{}", rng.gen_range(0..scale_fill::TAGS_PER_REPO));
        let t = Instant::now();
        let record = reg.tag(&repo, &tag).expect("tag").expect("tag exists");
        let manifest = reg.manifest(&repo, &record.digest).expect("manifest");
        let readable = reg.repository_reads_enabled(&repo).expect("read lock");
        ns.push(t.elapsed().as_nanos() as u64);
        assert!(manifest.is_some() && readable);
    }
    ns.sort_unstable();
    ns
}

fn measure(path: &Path, repos: usize, lookups: usize) -> (f64, f64, f64) {
    let store = MetaStore::open(path).expect("open");
    // Warm the caches (block cache, page cache) as a serving node's are.
    pulls(&store, repos, lookups / 2);
    let ns = pulls(&store, repos, lookups);
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
    (pct(&ns, 50.0), pct(&ns, 99.0), mean)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tags: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let lookups: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut stores = Vec::new();
    for size in [1_000, 10_000, 100_000, tags] {
        let path = dir.path().join(format!("tags-{size}"));
        let store = MetaStore::open(&path).expect("open");
        let t = Instant::now();
        let repos = scale_fill::fill(&store, size);
        eprintln!("filled {size} tags in {:.1} s", t.elapsed().as_secs_f64());
        stores.push((size, repos, path));
    }
    println!("| tags | round | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|---|");
    for round in 1..=2 {
        for (size, repos, path) in &stores {
            let (p50, p99, mean) = measure(path, *repos, lookups);
            println!("| {size} | {round} | {p50:.1} | {p99:.1} | {mean:.1} |");
        }
    }
    println!();
    println!("| tags | repositories | first pull after a repository lock changed, µs | the pull after it, µs |");
    println!("|---|---|---|---|");
    for (size, repos, path) in &stores {
        let store = MetaStore::open(path).expect("open");
        let reg = store.registry(DEFAULT_REGISTRY);
        let locked = scale_fill::repo_name(repos / 2);
        scale_fill::apply(
            &store,
            Command::UpdateAttributes {
                repo: locked.clone(),
                target: LockTarget::Repository,
                change: AttributeChange {
                    read_enabled: Some(false),
                    ..Default::default()
                },
            },
        );
        let mut took = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let enabled = reg.repository_reads_enabled(&locked).expect("read");
            took.push(t.elapsed().as_secs_f64() * 1e6);
            assert!(!enabled, "the lock is seen");
        }
        println!("| {size} | {repos} | {:.0} | {:.1} |", took[0], took[1]);
    }
}
