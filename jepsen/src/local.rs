//! The promise of the default read mode, `reads = "local"`, checked on a
//! history: a node serves tag hits from its own state machine (which may
//! trail the leader) and confirms misses with a read-index. So tags are not
//! linearizable, but:
//!
//! - **misses are never stale**: a read answering "unknown" (404) after a
//!   write was acknowledged, with no delete that could have come after
//!   that write, is a violation, faults or not;
//! - **monotonic reads**: one client (bound to one region) never sees a
//!   tag go back to a value written before the one it already saw;
//! - **bounded staleness**: while no fault is in force (and `grace` after
//!   one healed), a read never returns a value that a write acknowledged
//!   more than `bound` before the read's invocation had superseded. While
//!   a region is cut off its hits can be as old as its last contact: that
//!   is the mode's documented cost, not checked.
//!
//! "Superseded" is real-time order: write `a` precedes operation `b` when
//! `a` was acknowledged before `b` was invoked. Values are unique per
//! write (manifest digests), so a read names the write it saw.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Operation, Outcome, RegisterOp};

#[derive(Debug, Clone, Default)]
pub struct LocalReport {
    pub operations: usize,
    pub keys: usize,
    /// One line each, saying what was read when and what superseded it.
    pub violations: Vec<String>,
    /// Reads whose staleness was not checked (a fault in force).
    pub excused: usize,
}

impl LocalReport {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// Whether `a` (a write that may have happened) was acknowledged before
/// `b` was invoked.
fn precedes(a: &Operation, b: &Operation) -> bool {
    a.outcome == Outcome::Ok && a.completed_ns < b.invoked_ns
}

/// Check `history`; `faulty(ms)` says whether a fault was in force (or
/// healed less than the grace before) at `ms` since the start.
pub fn check(history: &[Operation], faulty: impl Fn(u64) -> bool, bound_ms: u64) -> LocalReport {
    let mut report = LocalReport {
        operations: history.len(),
        ..LocalReport::default()
    };
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    report.keys = by_key.len();
    for (key, ops) in by_key {
        check_key(key, &ops, &faulty, bound_ms, &mut report);
    }
    report
}

fn check_key(
    key: &str,
    ops: &[&Operation],
    faulty: &impl Fn(u64) -> bool,
    bound_ms: u64,
    report: &mut LocalReport,
) {
    // Writes and deletes that may have happened.
    let changes: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| !matches!(o.op, RegisterOp::Read(_)) && o.outcome != Outcome::Failed)
        .collect();
    let deletes: Vec<&Operation> = changes
        .iter()
        .copied()
        .filter(|o| o.op == RegisterOp::Delete)
        .collect();
    let writer: HashMap<&str, &Operation> = changes
        .iter()
        .filter_map(|o| match &o.op {
            RegisterOp::Write(v) => Some((v.as_str(), *o)),
            _ => None,
        })
        .collect();
    let mut reads: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.op, RegisterOp::Read(_)) && o.outcome == Outcome::Ok)
        .collect();
    reads.sort_by_key(|o| o.invoked_ns);

    for r in &reads {
        let RegisterOp::Read(seen) = &r.op else {
            continue;
        };
        match seen {
            None => {
                // A miss after an acknowledged write that no delete can
                // have followed.
                let set = changes.iter().find(|w| {
                    matches!(w.op, RegisterOp::Write(_))
                        && precedes(w, r)
                        && deletes.iter().all(|d| precedes(d, w))
                });
                if let Some(w) = set {
                    report.violations.push(format!(
                        "{key}: process {} read unknown at {} ms, after a write acknowledged at {} ms that no delete followed (misses must be confirmed)",
                        r.process,
                        ms(r.invoked_ns),
                        ms(w.completed_ns)
                    ));
                }
            }
            Some(v) => {
                let Some(w) = writer.get(v.as_str()) else {
                    report.violations.push(format!(
                        "{key}: process {} read {v} at {} ms, which no write wrote",
                        r.process,
                        ms(r.invoked_ns)
                    ));
                    continue;
                };
                if faulty(ms(r.invoked_ns)) {
                    report.excused += 1;
                    continue;
                }
                let newer = changes.iter().find(|b| {
                    b.outcome == Outcome::Ok
                        && precedes(w, b)
                        && b.completed_ns + bound_ms * 1_000_000 < r.invoked_ns
                });
                if let Some(b) = newer {
                    report.violations.push(format!(
                        "{key}: process {} read {v} (written by {} ms) at {} ms, {} ms after a newer {} was acknowledged (bound {bound_ms} ms)",
                        r.process,
                        ms(w.completed_ns),
                        ms(r.invoked_ns),
                        ms(r.invoked_ns - b.completed_ns),
                        if b.op == RegisterOp::Delete { "delete" } else { "write" },
                    ));
                }
            }
        }
    }

    // Monotonic reads: each client's reads in order.
    let mut by_process: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for r in &reads {
        by_process.entry(r.process).or_default().push(r);
    }
    for (process, rs) in by_process {
        for pair in rs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (RegisterOp::Read(Some(va)), RegisterOp::Read(seen_b)) = (&a.op, &b.op) else {
                continue;
            };
            let Some(wa) = writer.get(va.as_str()) else {
                continue;
            };
            let back = match seen_b {
                Some(vb) if vb != va => writer.get(vb.as_str()).is_some_and(|wb| precedes(wb, wa)),
                Some(_) => false,
                // Unknown after a value no delete can have followed.
                None => deletes.iter().all(|d| precedes(d, wa)),
            };
            if back {
                report.violations.push(format!(
                    "{key}: process {process} read {va} at {} ms, then {} at {} ms, which it had superseded (reads went back)",
                    ms(a.invoked_ns),
                    seen_b.as_deref().unwrap_or("unknown"),
                    ms(b.invoked_ns)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u64, op: RegisterOp, outcome: Outcome, from_ms: u64, to_ms: u64) -> Operation {
        Operation {
            process,
            key: "t0".into(),
            op,
            outcome,
            invoked_ns: from_ms * 1_000_000,
            completed_ns: to_ms * 1_000_000,
        }
    }

    fn write(v: &str, from: u64, to: u64) -> Operation {
        op(1, RegisterOp::Write(v.into()), Outcome::Ok, from, to)
    }

    fn read(process: u64, v: Option<&str>, from: u64, to: u64) -> Operation {
        op(
            process,
            RegisterOp::Read(v.map(String::from)),
            Outcome::Ok,
            from,
            to,
        )
    }

    const HEALTHY: fn(u64) -> bool = |_| false;

    #[test]
    fn a_read_within_the_bound_of_a_newer_write_is_fine_and_one_past_it_is_not() {
        let mut h = vec![
            write("a", 0, 10),
            write("b", 20, 30),
            read(2, Some("a"), 500, 501),
        ];
        assert!(check(&h, HEALTHY, 1000).valid(), "470 ms stale, bound 1 s");
        h.push(read(2, Some("a"), 1500, 1501));
        let r = check(&h, HEALTHY, 1000);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("1470 ms after a newer write"),
            "{:?}",
            r.violations
        );
        // During a fault the same read is excused.
        let r = check(&h, |ms| ms > 1000, 1000);
        assert!(r.valid());
        assert_eq!(r.excused, 1);
    }

    #[test]
    fn a_miss_after_an_acknowledged_write_is_a_violation_even_under_faults() {
        let h = vec![write("a", 0, 10), read(2, None, 20, 21)];
        let r = check(&h, |_| true, 1000);
        assert!(!r.valid());
        assert!(r.violations[0].contains("misses must be confirmed"));
        // A delete that may have come after the write explains it.
        let mut h = h;
        h.push(op(1, RegisterOp::Delete, Outcome::Unknown, 5, 6));
        assert!(check(&h, |_| true, 1000).valid());
    }

    #[test]
    fn a_client_seeing_an_older_value_after_a_newer_one_went_back() {
        let h = vec![
            write("a", 0, 10),
            write("b", 20, 30),
            read(2, Some("b"), 40, 41),
            read(2, Some("a"), 50, 51),
        ];
        let r = check(&h, |_| true, 60_000);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("reads went back"));
        // Two clients may each see one of them (neither went back), and
        // concurrent writes have no order to go back in.
        let h = vec![
            write("a", 0, 30),
            write("b", 20, 40),
            read(2, Some("b"), 50, 51),
            read(2, Some("a"), 60, 61),
            read(3, Some("a"), 50, 51),
        ];
        assert!(check(&h, |_| true, 60_000).valid());
    }

    #[test]
    fn a_value_nobody_wrote_is_a_violation() {
        let h = vec![write("a", 0, 10), read(2, Some("z"), 20, 21)];
        assert!(check(&h, HEALTHY, 1000).violations[0].contains("which no write wrote"));
        // A failed write never happened.
        let h = vec![
            op(1, RegisterOp::Write("f".into()), Outcome::Failed, 0, 1),
            read(2, Some("f"), 20, 21),
        ];
        assert!(!check(&h, HEALTHY, 1000).valid());
    }
}
