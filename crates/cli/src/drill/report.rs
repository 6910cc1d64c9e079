//! What a drill measured, and whether it met its objectives.

use serde::Serialize;

use super::probe::{Kind, Op};

/// One region's probe operations while another region was fenced.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionStats {
    pub region: String,
    pub pushes_ok: u64,
    pub pushes_failed: u64,
    pub pulls_ok: u64,
    pub pulls_failed: u64,
    /// From the fence to the first acknowledged push started after it.
    pub writes_resumed_ms: Option<u64>,
    /// Longest time without an acknowledged push while the fence held.
    pub longest_write_gap_ms: u64,
    pub push_p50_ms: Option<u64>,
    pub push_p99_ms: Option<u64>,
    pub pull_p50_ms: Option<u64>,
    pub pull_p99_ms: Option<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Statistics of `region`'s operations started in `[from_ms, to_ms)`,
/// with the fence at `from_ms`. `before` is the end of its last
/// acknowledged push before the fence, if any.
pub fn region_stats(ops: &[Op], region: &str, from_ms: u64, to_ms: u64) -> RegionStats {
    let mine: Vec<&Op> = ops.iter().filter(|o| o.region == region).collect();
    let window: Vec<&&Op> = mine
        .iter()
        .filter(|o| o.start_ms >= from_ms && o.start_ms < to_ms)
        .collect();
    let count = |kind: Kind, ok: bool| {
        window
            .iter()
            .filter(|o| o.kind == kind && o.ok == ok)
            .count() as u64
    };
    let latencies = |kind: Kind| {
        let mut l: Vec<u64> = window
            .iter()
            .filter(|o| o.kind == kind && o.ok)
            .map(|o| o.end_ms.saturating_sub(o.start_ms))
            .collect();
        l.sort_unstable();
        l
    };
    let writes_resumed_ms = window
        .iter()
        .filter(|o| o.kind == Kind::Push && o.ok)
        .map(|o| o.end_ms)
        .min()
        .map(|end| end.saturating_sub(from_ms));
    // Gaps between acknowledgements, from the last one before the fence
    // (or the fence itself) to the end of the window.
    let last_before = mine
        .iter()
        .filter(|o| o.kind == Kind::Push && o.ok && o.end_ms <= from_ms)
        .map(|o| o.end_ms)
        .max()
        .unwrap_or(from_ms);
    let mut acks: Vec<u64> = mine
        .iter()
        .filter(|o| o.kind == Kind::Push && o.ok && o.end_ms > from_ms && o.end_ms <= to_ms)
        .map(|o| o.end_ms)
        .collect();
    acks.sort_unstable();
    let mut longest = 0;
    let mut prev = last_before;
    for t in acks.iter().copied().chain([to_ms]) {
        longest = longest.max(t.saturating_sub(prev));
        prev = t;
    }
    let (push, pull) = (latencies(Kind::Push), latencies(Kind::Pull));
    RegionStats {
        region: region.to_string(),
        pushes_ok: count(Kind::Push, true),
        pushes_failed: count(Kind::Push, false),
        pulls_ok: count(Kind::Pull, true),
        pulls_failed: count(Kind::Pull, false),
        writes_resumed_ms,
        longest_write_gap_ms: longest,
        push_p50_ms: percentile(&push, 0.5),
        push_p99_ms: percentile(&push, 0.99),
        pull_p50_ms: percentile(&pull, 0.5),
        pull_p99_ms: percentile(&pull, 0.99),
    }
}

/// A target the drill is held to, and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Objective {
    pub name: String,
    pub limit: String,
    pub measured: String,
    pub met: bool,
}

/// Checks of what the region did after it came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AfterRestore {
    /// Images pushed elsewhere during the outage, pulled from the region.
    pub pulls_ok: u64,
    pub pulls_failed: u64,
    /// A push through the region once it caught up.
    pub push_ok: bool,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub drill: &'static str,
    pub region: String,
    pub node_id: u64,
    /// The fenced region led the metadata group when the fence began
    /// (an election was needed).
    pub was_leader: bool,
    /// The fenced region answered 503 while fenced.
    pub fence_verified: bool,
    /// Times in ms since the drill started.
    pub fence_at_ms: u64,
    pub restore_at_ms: u64,
    /// How long the mover took to copy the baseline's blobs everywhere
    /// before the fence (None: it did not finish in time).
    pub baseline_drain_ms: Option<u64>,
    pub baseline_failures: u64,
    /// Worst region: from the fence until writes were acknowledged again.
    pub writes_resumed_ms: Option<u64>,
    pub regions: Vec<RegionStats>,
    /// From the restore until the region had applied the whole log and
    /// held every blob (None: not within the timeout).
    pub catch_up_ms: Option<u64>,
    pub after_restore: AfterRestore,
    /// The first failed operations, for diagnosis.
    pub failures: Vec<Op>,
    pub objectives: Vec<Objective>,
    pub passed: bool,
}

/// The limits a drill is held to.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_write_resume_ms: u64,
    pub max_failed_pulls: u64,
    pub catch_up_timeout_ms: u64,
}

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// Judge a report against `limits`, filling its objectives and verdict.
pub fn judge(report: &mut Report, limits: &Limits) {
    let failed_pulls: u64 = report.regions.iter().map(|r| r.pulls_failed).sum();
    let every_region_resumed = report.regions.iter().all(|r| r.writes_resumed_ms.is_some());
    let resumed = report.writes_resumed_ms.filter(|_| every_region_resumed);
    let a = &report.after_restore;
    report.objectives = vec![
        Objective {
            name: "region fenced".into(),
            limit: "answers 503 while fenced".into(),
            measured: if report.fence_verified {
                "answered 503".into()
            } else {
                "still served clients".into()
            },
            met: report.fence_verified,
        },
        Objective {
            name: "writes resumed in the other regions".into(),
            limit: format!("<= {}", secs(limits.max_write_resume_ms)),
            measured: resumed.map_or("never".into(), secs),
            met: resumed.is_some_and(|ms| ms <= limits.max_write_resume_ms),
        },
        Objective {
            name: "failed pulls in the other regions".into(),
            limit: format!("<= {}", limits.max_failed_pulls),
            measured: failed_pulls.to_string(),
            met: failed_pulls <= limits.max_failed_pulls,
        },
        Objective {
            name: "region caught up after the restore".into(),
            limit: format!("<= {}", secs(limits.catch_up_timeout_ms)),
            measured: report.catch_up_ms.map_or("not in time".into(), secs),
            met: report.catch_up_ms.is_some(),
        },
        Objective {
            name: "region serves what it missed".into(),
            limit: "every image pushed during the outage pulls from it, and it takes pushes".into(),
            measured: format!(
                "{} of {} pulled, push {}",
                a.pulls_ok,
                a.pulls_ok + a.pulls_failed,
                if a.push_ok { "ok" } else { "failed" }
            ),
            met: a.pulls_failed == 0 && a.push_ok,
        },
    ];
    report.passed = report.objectives.iter().all(|o| o.met);
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |ms| format!("{ms} ms"))
}

/// The report as a person reads it.
pub fn print_text(r: &Report) {
    println!(
        "Drill {}: {} (node {}{}), fenced at +{:.1} s, restored at +{:.1} s",
        r.drill,
        r.region,
        r.node_id,
        if r.was_leader { ", was the leader" } else { "" },
        r.fence_at_ms as f64 / 1000.0,
        r.restore_at_ms as f64 / 1000.0
    );
    match r.baseline_drain_ms {
        Some(ms) => println!("Baseline copied to every region in {}.", secs(ms)),
        None => println!("Baseline NOT fully copied before the fence (mover behind)."),
    }
    println!();
    println!(
        "{:<16} {:>9} {:>7} {:>9} {:>7} {:>10} {:>12} {:>9} {:>9}",
        "REGION",
        "PUSHES OK",
        "FAILED",
        "PULLS OK",
        "FAILED",
        "RESUMED",
        "LONGEST GAP",
        "PUSH P99",
        "PULL P99"
    );
    for s in &r.regions {
        println!(
            "{:<16} {:>9} {:>7} {:>9} {:>7} {:>10} {:>12} {:>9} {:>9}",
            s.region,
            s.pushes_ok,
            s.pushes_failed,
            s.pulls_ok,
            s.pulls_failed,
            opt_ms(s.writes_resumed_ms),
            format!("{} ms", s.longest_write_gap_ms),
            opt_ms(s.push_p99_ms),
            opt_ms(s.pull_p99_ms)
        );
    }
    println!();
    for o in &r.objectives {
        println!(
            "[{}] {}: {} (objective {})",
            if o.met { "met" } else { "NOT MET" },
            o.name,
            o.measured,
            o.limit
        );
    }
    for e in &r.after_restore.errors {
        println!("  after restore: {e}");
    }
    for f in &r.failures {
        println!(
            "  failed {:?} in {} at +{:.1} s: {}",
            f.kind,
            f.region,
            f.start_ms as f64 / 1000.0,
            f.error.as_deref().unwrap_or("")
        );
    }
    println!();
    println!("{}", if r.passed { "PASSED" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, start_ms: u64, end_ms: u64, ok: bool) -> Op {
        Op {
            region: "us".into(),
            kind,
            start_ms,
            end_ms,
            ok,
            error: (!ok).then(|| "HTTP 503".into()),
        }
    }

    #[test]
    fn resumption_and_gaps_are_measured_from_the_fence() {
        // Fence at 1000, restore at 5000: pushes acknowledged at 900
        // (before), a failure, then acknowledgements at 3200 and 3600.
        let ops = vec![
            op(Kind::Push, 800, 900, true),
            op(Kind::Push, 1100, 2900, false),
            op(Kind::Push, 3000, 3200, true),
            op(Kind::Push, 3500, 3600, true),
            op(Kind::Pull, 1200, 1250, true),
            op(Kind::Pull, 1300, 1400, false),
        ];
        let s = region_stats(&ops, "us", 1000, 5000);
        assert_eq!(s.pushes_ok, 2);
        assert_eq!(s.pushes_failed, 1);
        assert_eq!(s.pulls_ok, 1);
        assert_eq!(s.pulls_failed, 1);
        assert_eq!(s.writes_resumed_ms, Some(2200));
        // 900 -> 3200 is the longest stretch without an acknowledgement.
        assert_eq!(s.longest_write_gap_ms, 2300);
        assert_eq!(s.push_p50_ms, Some(100));
        assert_eq!(s.push_p99_ms, Some(200));
    }

    #[test]
    fn a_region_whose_writes_never_resume_fails_the_drill() {
        let ops = vec![op(Kind::Push, 1100, 2000, false)];
        let stats = region_stats(&ops, "us", 1000, 5000);
        assert_eq!(stats.writes_resumed_ms, None);
        assert_eq!(stats.longest_write_gap_ms, 4000);
        let mut report = Report {
            drill: "region-outage",
            region: "eu".into(),
            node_id: 1,
            was_leader: true,
            fence_verified: true,
            fence_at_ms: 1000,
            restore_at_ms: 5000,
            baseline_drain_ms: Some(10),
            baseline_failures: 0,
            writes_resumed_ms: None,
            regions: vec![stats],
            catch_up_ms: Some(100),
            after_restore: AfterRestore {
                pulls_ok: 1,
                pulls_failed: 0,
                push_ok: true,
                errors: vec![],
            },
            failures: vec![],
            objectives: vec![],
            passed: false,
        };
        let limits = Limits {
            max_write_resume_ms: 3000,
            max_failed_pulls: 0,
            catch_up_timeout_ms: 60_000,
        };
        judge(&mut report, &limits);
        assert!(!report.passed);
        let unmet: Vec<&str> = report
            .objectives
            .iter()
            .filter(|o| !o.met)
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(unmet, ["writes resumed in the other regions"]);
        report.writes_resumed_ms = Some(2500);
        report.regions[0].writes_resumed_ms = Some(2500);
        judge(&mut report, &limits);
        assert!(report.passed, "{:?}", report.objectives);
        report.regions[0].pulls_failed = 1;
        judge(&mut report, &limits);
        assert!(!report.passed);
    }
}
