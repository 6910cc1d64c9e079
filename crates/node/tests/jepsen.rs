//! The short fault-injection run of CI: three regions as real processes,
//! clients in every region pushing, moving, deleting and reading tags while
//! the nemesis kills, pauses, isolates, splits, bridges, slows, loses and
//! flaps links, wipes a region's disk and flips a stored byte, and while
//! garbage collection races pushes that reuse layers, deletes and mounts;
//! then every promise is checked (linearizable tags, every acknowledged
//! push byte-exact in every region after the mover drains, every image
//! still tagged whole in every region, regions converged); and the same
//! faults with the default `reads = "local"`, checked for its own promises.
//! Longer runs: `jepsen/README.md`.

use std::time::Duration;

use wharf_config::ReadConsistency;
use wharf_jepsen::nemesis::Fault;
use wharf_jepsen::run::{run, RunConfig};

/// CI's run: three regions, every kind of fault once (they are drawn in
/// rounds), two clients per region over four tags.
fn short_run(dir: &std::path::Path, reads: ReadConsistency, gc: bool) -> RunConfig {
    RunConfig {
        wharf: env!("CARGO_BIN_EXE_wharf").into(),
        regions: 3,
        duration: Duration::from_secs(105),
        clients_per_region: 2,
        keys: 4,
        rate: 5,
        faults: Fault::ALL.to_vec(),
        fault_for: Duration::from_secs(4),
        quiet_for: Duration::from_secs(3),
        out: dir.join("run"),
        gc,
        reads,
        nodes_per_region: 1,
        object_store: None,
    }
}

/// Run `cfg`; its verdict (asserting the run was valid and real) and report.
async fn valid_run(cfg: &RunConfig) -> (wharf_jepsen::run::Verdict, String) {
    let v = run(cfg).await.expect("the run completes");
    let report = std::fs::read_to_string(cfg.out.join("verdict.md")).unwrap();
    println!("{report}");
    assert!(v.valid, "{report}");
    assert!(v.faults_injected >= Fault::ALL.len(), "{report}");
    assert!(v.acknowledged_writes > 50, "{report}");
    (v, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_under_mixed_faults_keeps_every_promise() {
    let dir = tempfile::tempdir().unwrap();
    let (v, report) = valid_run(&short_run(dir.path(), ReadConsistency::Linearizable, true)).await;
    assert!(v.checks.contains_key("linearizability"), "{report}");
}

/// The default read mode under the same faults: tags are not linearizable
/// there, but misses are never stale, each client's reads never go back,
/// and while no fault is in force a read trails an acknowledged write by
/// at most `LOCAL_STALENESS_BOUND_MS`; durability and convergence as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_local_reads_keeps_the_local_promises() {
    let dir = tempfile::tempdir().unwrap();
    let (v, report) = valid_run(&short_run(dir.path(), ReadConsistency::Local, false)).await;
    assert!(v.checks.contains_key("local reads"), "{report}");
}
