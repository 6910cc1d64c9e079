//! Linearizability of register histories, by the Wing–Gong search with
//! Lowe's memoization (the algorithm of Knossos' "linear" checker and of
//! porcupine): walk the invocation/completion events in time order, try
//! to linearize each pending operation at its invocation, and backtrack on
//! a completion whose operation could not be placed. Configurations
//! already explored (which operations are linearized, register value) are
//! cached, which keeps real histories tractable.
//!
//! Histories are split per key first: independent registers compose
//! (linearizability is local), so each tag is checked alone.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Operation, Outcome, RegisterOp};

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The most operations any attempted linearization placed.
    pub deepest: usize,
    /// An operation no order could place (the first completion the search
    /// could not get past), with its neighbours for the report.
    pub stuck_at: Operation,
    pub explanation: String,
}

/// The verdict for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub keys: usize,
    pub operations: usize,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Configurations explored per key before the search gives up and the
/// key is reported as undecided (never as linearizable).
pub const SEARCH_BUDGET: usize = 2_000_000;

/// Check every key of `history`. Failed operations are dropped (they did
/// not happen), so are reads with unknown outcomes (they told nothing),
/// and so are writes with unknown outcomes whose value no read returned:
/// values are unique, so such a write can be taken never to have happened
/// without making any valid history invalid (no read sits between it and
/// the next write in any order) — and each one kept would double the
/// search space.
pub fn check(history: &[Operation]) -> Report {
    let seen: HashSet<(&str, &str)> = history
        .iter()
        .filter_map(|op| match (&op.op, op.outcome) {
            (RegisterOp::Read(Some(v)), Outcome::Ok) => Some((op.key.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        let keep = match (&op.op, op.outcome) {
            (_, Outcome::Failed) | (RegisterOp::Read(_), Outcome::Unknown) => false,
            (RegisterOp::Write(v), Outcome::Unknown) => {
                seen.contains(&(op.key.as_str(), v.as_str()))
            }
            _ => true,
        };
        if keep {
            by_key.entry(&op.key).or_default().push(op.clone());
        }
    }
    let mut violations = Vec::new();
    let mut operations = 0;
    for (key, ops) in &by_key {
        operations += ops.len();
        if let Err(v) = check_key(key, ops) {
            violations.push(*v);
        }
    }
    Report {
        keys: by_key.len(),
        operations,
        violations,
    }
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

/// Apply `op` to register state `s`: Some(new state) if legal.
fn step(s: &Option<String>, op: &RegisterOp) -> Option<Option<String>> {
    match op {
        RegisterOp::Write(v) => Some(Some(v.clone())),
        RegisterOp::Delete => Some(None),
        RegisterOp::Read(v) => (v == s).then(|| s.clone()),
    }
}

/// One register's history: the search over a doubly linked event list.
fn check_key(key: &str, ops: &[Operation]) -> Result<(), Box<Violation>> {
    const END: u64 = u64::MAX;
    // Events: (time, is_return_last?) — at equal times calls sort before
    // returns, treating touching operations as concurrent (lenient).
    let mut order: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        order.push((o.invoked_ns, 0, i, true));
        let ret = if o.outcome == Outcome::Unknown {
            END
        } else {
            o.completed_ns
        };
        order.push((ret, 1, i, false));
    }
    order.sort();
    // Linked list with a head sentinel at index 0.
    let n = order.len();
    let mut ev: Vec<Event> = Vec::with_capacity(n + 1);
    ev.push(Event {
        op: usize::MAX,
        call: false,
        prev: 0,
        next: if n > 0 { 1 } else { usize::MAX },
    });
    let mut ret_of = vec![0usize; ops.len()];
    for (j, &(_, _, op, call)) in order.iter().enumerate() {
        let idx = j + 1;
        if !call {
            ret_of[op] = idx;
        }
        ev.push(Event {
            op,
            call,
            prev: idx - 1,
            next: if idx < n { idx + 1 } else { usize::MAX },
        });
    }
    let unknown = |op: usize| ops[op].outcome == Outcome::Unknown;

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<String> = None;
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // (call event index, state before it)
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut deepest = 0usize;
    let mut stuck: Option<usize> = None;
    let mut stuck_depth = 0usize;

    fn unlink(ev: &mut [Event], i: usize) {
        let (p, nx) = (ev[i].prev, ev[i].next);
        ev[p].next = nx;
        if nx != usize::MAX {
            ev[nx].prev = p;
        }
    }
    fn relink(ev: &mut [Event], i: usize) {
        let (p, nx) = (ev[i].prev, ev[i].next);
        ev[p].next = i;
        if nx != usize::MAX {
            ev[nx].prev = i;
        }
    }

    let mut entry = ev[0].next;
    loop {
        // Done when the list is empty, or only completions of operations
        // with unknown outcomes remain (they sort last, at "never"): every
        // acknowledged operation is placed, and the unknown ones not placed
        // may simply never have taken effect.
        if entry == usize::MAX || (!ev[entry].call && unknown(ev[entry].op)) {
            return Ok(());
        }
        if ev[entry].call {
            let op = ev[entry].op;
            let next_state = step(&state, &ops[op].op);
            let mut advanced = false;
            if let Some(s2) = next_state {
                let mut lin2 = linearized.clone();
                lin2[op / 64] |= 1 << (op % 64);
                if cache.len() >= SEARCH_BUDGET {
                    let o = ops[op].clone();
                    return Err(Box::new(Violation {
                        key: key.to_string(),
                        deepest,
                        explanation: format!(
                            "undecided: the search over {} operations on {key:?} explored \
                             {SEARCH_BUDGET} configurations without an answer",
                            ops.len()
                        ),
                        stuck_at: o,
                    }));
                }
                if cache.insert((lin2.clone(), s2.clone())) {
                    stack.push((entry, state.clone()));
                    state = s2;
                    linearized = lin2;
                    // Lift the call and its completion out of the list.
                    unlink(&mut ev, entry);
                    unlink(&mut ev, ret_of[op]);
                    deepest = deepest.max(stack.len());
                    entry = ev[0].next;
                    advanced = true;
                }
            }
            if !advanced {
                entry = ev[entry].next;
            }
            continue;
        }
        // A completion (or the end) reached with its operation unplaced:
        // backtrack.
        // Remember the operation that blocked the deepest attempt.
        if stack.len() >= stuck_depth {
            stuck_depth = stack.len();
            stuck = Some(ev[entry].op);
        }
        let Some((call, prior)) = stack.pop() else {
            let op = stuck.unwrap_or(0);
            return Err(Box::new(Violation {
                key: key.to_string(),
                deepest,
                stuck_at: ops[op].clone(),
                explanation: format!(
                    "no order of the {} operations on {key:?} is consistent with a register and \
                     with real time; at best {deepest} could be placed, and {:?} by process {} \
                     (invoked at {} ns, completed at {} ns) can never be",
                    ops.len(),
                    ops[op].op,
                    ops[op].process,
                    ops[op].invoked_ns,
                    ops[op].completed_ns
                ),
            }));
        };
        let op = ev[call].op;
        relink(&mut ev, ret_of[op]);
        relink(&mut ev, call);
        linearized[op / 64] &= !(1 << (op % 64));
        state = prior;
        entry = ev[call].next;
    }
}

#[cfg(test)]
#[path = "linearizable_tests.rs"]
mod tests;
