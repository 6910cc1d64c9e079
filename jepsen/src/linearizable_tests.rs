use super::*;
use crate::history::{Operation, Outcome, RegisterOp};

fn op(process: u64, o: RegisterOp, outcome: Outcome, t0: u64, t1: u64) -> Operation {
    Operation {
        process,
        key: "app:latest".into(),
        op: o,
        outcome,
        invoked_ns: t0,
        completed_ns: t1,
    }
}

fn w(v: &str) -> RegisterOp {
    RegisterOp::Write(v.into())
}

fn r(v: Option<&str>) -> RegisterOp {
    RegisterOp::Read(v.map(str::to_string))
}

use Outcome::{Failed, Ok as Acked, Unknown};

#[test]
fn sequential_histories_follow_the_register() {
    let h = vec![
        op(1, r(None), Acked, 0, 1),
        op(1, w("a"), Acked, 2, 3),
        op(2, r(Some("a")), Acked, 4, 5),
        op(1, RegisterOp::Delete, Acked, 6, 7),
        op(2, r(None), Acked, 8, 9),
    ];
    assert!(check(&h).valid());
    let mut bad = h.clone();
    bad[4] = op(2, r(Some("a")), Acked, 8, 9);
    let report = check(&bad);
    assert!(!report.valid());
    assert_eq!(report.violations[0].stuck_at.op, r(Some("a")));
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // Two writes overlap; reads after both may see either, but two later
    // sequential reads cannot see them in both orders.
    let h = vec![
        op(1, w("a"), Acked, 0, 10),
        op(2, w("b"), Acked, 1, 9),
        op(3, r(Some("a")), Acked, 11, 12),
    ];
    assert!(check(&h).valid());
    let h = vec![
        op(1, w("a"), Acked, 0, 10),
        op(2, w("b"), Acked, 1, 9),
        op(3, r(Some("a")), Acked, 11, 12),
        op(3, r(Some("b")), Acked, 13, 14),
    ];
    assert!(!check(&h).valid(), "b cannot come back after a");
    // A read overlapping a write may see the old or the new value.
    let h = vec![
        op(1, w("a"), Acked, 0, 1),
        op(1, w("b"), Acked, 2, 10),
        op(2, r(Some("a")), Acked, 3, 4),
        op(3, r(Some("b")), Acked, 5, 6),
    ];
    assert!(check(&h).valid());
}

// The deliberately broken builds of the issue, as histories they produce.
#[test]
fn stale_reads_and_lost_acknowledged_writes_are_caught() {
    // A region answering from stale local state: the write of "b" was
    // acknowledged before the read began, yet the read returns "a".
    let stale = vec![
        op(1, w("a"), Acked, 0, 1),
        op(1, w("b"), Acked, 2, 3),
        op(2, r(Some("a")), Acked, 4, 5),
    ];
    let report = check(&stale);
    assert!(!report.valid());
    assert!(report.violations[0].explanation.contains("can never be"));

    // A 404 without the read-index: the tag was written and acknowledged,
    // then a region says it does not exist.
    let false_404 = vec![op(1, w("a"), Acked, 0, 1), op(2, r(None), Acked, 2, 3)];
    assert!(!check(&false_404).valid());

    // Acknowledging before commit: the write is acknowledged, then lost
    // (a later read sees the value before it).
    let lost = vec![
        op(1, w("a"), Acked, 0, 1),
        op(1, w("b"), Acked, 2, 3),
        op(2, r(Some("b")), Acked, 4, 5),
        op(2, r(Some("a")), Acked, 6, 7),
    ];
    assert!(!check(&lost).valid());
}

#[test]
fn unknown_outcomes_may_or_may_not_take_effect_and_failures_never_do() {
    // A timed-out write may appear later, even long after it was given up.
    let h = vec![
        op(1, w("a"), Acked, 0, 1),
        op(2, w("b"), Unknown, 2, 3),
        op(3, r(Some("a")), Acked, 4, 5),
        op(3, r(Some("b")), Acked, 100, 101),
    ];
    assert!(check(&h).valid());
    // ... or never.
    let h = vec![op(2, w("b"), Unknown, 2, 3), op(3, r(None), Acked, 4, 5)];
    assert!(check(&h).valid());
    // A failed write never takes effect.
    let h = vec![
        op(2, w("b"), Failed, 2, 3),
        op(3, r(Some("b")), Acked, 4, 5),
    ];
    assert!(!check(&h).valid());
    // An unknown write cannot take effect before it was invoked.
    let h = vec![
        op(3, r(Some("b")), Acked, 0, 1),
        op(2, w("b"), Unknown, 2, 3),
    ];
    assert!(!check(&h).valid());
}

#[test]
fn keys_are_checked_independently_and_large_histories_stay_fast() {
    let mut h = Vec::new();
    // 8 processes, 2000 operations over 4 keys, overlapping heavily.
    let mut t = 0u64;
    let mut value = vec![None::<String>; 4];
    for i in 0..2000u64 {
        let key = format!("k{}", i % 4);
        let k = (i % 4) as usize;
        let (o, v) = if i % 3 == 0 {
            (w(&format!("v{i}")), Some(format!("v{i}")))
        } else {
            (RegisterOp::Read(value[k].clone()), value[k].clone())
        };
        value[k] = v;
        h.push(Operation {
            process: i % 8,
            key,
            op: o,
            outcome: Acked,
            invoked_ns: t,
            completed_ns: t + 5,
        });
        t += 3; // operations overlap their neighbours
    }
    let start = std::time::Instant::now();
    let report = check(&h);
    assert!(report.valid(), "{:?}", report.violations);
    assert_eq!(report.keys, 4);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn unobserved_unknown_writes_are_pruned_soundly() {
    // Forty writes time out during a partition and nobody ever reads
    // their values: the search must not explode, and the history stays
    // valid.
    let mut h = vec![op(1, w("a"), Acked, 0, 1)];
    for i in 0..40 {
        h.push(op(10 + i, w(&format!("lost{i}")), Unknown, 2 + i, 3 + i));
    }
    h.push(op(2, r(Some("a")), Acked, 100, 101));
    let start = std::time::Instant::now();
    assert!(check(&h).valid());
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    // An observed unknown write is kept, and still judged: read after a
    // later acknowledged write, it cannot come back.
    let h = vec![
        op(1, w("x"), Unknown, 0, 1),
        op(2, r(Some("x")), Acked, 2, 3),
        op(1, w("y"), Acked, 4, 5),
        op(2, r(Some("x")), Acked, 6, 7),
    ];
    assert!(!check(&h).valid());
}
