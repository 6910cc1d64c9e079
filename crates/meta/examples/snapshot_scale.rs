//! What a snapshot of a large state costs: fills a store with TAGS tags
//! (default 1,000,000) over TAGS/10 repositories, each tag its own
//! manifest, then times `write_snapshot` (what a leader builds before it
//! sends a new region the state) and `install_snapshot` into an empty store
//! (what the new region does) and again over that store (what a lagging
//! node does), with the peak resident memory of each step:
//! `cargo run --release -p wharf-meta --example snapshot_scale [TAGS]`.
//! Both steps stream (records in batches), so their memory should not
//! grow with the state; this is where that is checked at a million.

use std::io::{BufReader, BufWriter};
use std::time::Instant;

use wharf_meta::{MetaStore, DEFAULT_REGISTRY};

mod scale_fill;

/// Forget the peak resident memory so far (Linux: `clear_refs` 5), so the
/// next reading is the peak of one step.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak and current resident memory in MiB (`VmHWM`, `VmRSS`).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    let tags: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let source = MetaStore::open(&dir.path().join("source")).expect("open");
    let t = Instant::now();
    let repos = scale_fill::fill(&source, tags);
    println!(
        "filled {tags} tags over {repos} repositories in {:.1} s; resident {} MiB",
        t.elapsed().as_secs_f64(),
        memory().1
    );

    let file = dir.path().join("snapshot");
    reset_peak();
    let before = memory().1;
    let t = Instant::now();
    let mut w = BufWriter::new(std::fs::File::create(&file).expect("create"));
    let (records, _) = source.write_snapshot(&mut w, &[]).expect("snapshot");
    drop(w);
    let built = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let (peak, _) = memory();
    println!(
        "built: {records} records, {:.0} MiB in {built:.1} s; peak resident {peak} MiB ({} MiB above the start of the step)",
        bytes as f64 / 1048576.0,
        peak.saturating_sub(before)
    );
    drop(source);

    let target = MetaStore::open(&dir.path().join("target")).expect("open");
    let install = |what: &str| {
        reset_peak();
        let before = memory().1;
        let t = Instant::now();
        let mut r = BufReader::new(std::fs::File::open(&file).expect("open snapshot"));
        let n = target.install_snapshot(&mut r).expect("install");
        let took = t.elapsed().as_secs_f64();
        let (peak, _) = memory();
        println!(
            "{what}: {n} records in {took:.1} s; peak resident {peak} MiB ({} MiB above the start of the step)",
            peak.saturating_sub(before)
        );
    };
    install("installed");
    // A lagging node installs over the state it already holds: the old
    // contents go with one range deletion per column family.
    install("installed over a store holding it already");
    let last = scale_fill::repo_name(repos - 1);
    let reg = target.registry(DEFAULT_REGISTRY);
    assert!(
        !reg.tags(&last, None, usize::MAX).expect("tags").is_empty(),
        "the installed store holds the last repository's tags"
    );
}
