//! The order a run's steps go in, decided from the steps' states alone,
//! so that an agent that takes over a run (or a test) reaches the same
//! decisions: which steps start now, and whether and how the run ends.
//!
//! The rules, the cloud registry's:
//! - a step starts when every step it waits for has ended well: succeeded,
//!   or failed with `ignoreErrors`; a detached step counts as ended well
//!   once it is running;
//! - a step that fails without `ignoreErrors` fails the run: nothing more
//!   starts, the steps still running are stopped, the steps never started
//!   are skipped;
//! - the run succeeds when every step has ended well; detached steps still
//!   running are then stopped.

use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::spec::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never started: the run failed or was canceled first.
    Skipped,
    /// Stopped while running: a detached step at the end of the run, or
    /// any step of a run that failed or was canceled.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// What to do next with a run's steps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Next {
    /// Steps to start now.
    pub start: Vec<usize>,
    /// Running steps to stop now (then marked `Stopped`).
    pub stop: Vec<usize>,
    /// Steps never started, to mark `Skipped`.
    pub skip: Vec<usize>,
    /// Set once nothing is left running that the run waits for.
    pub outcome: Option<Outcome>,
}

pub struct Plan<'a> {
    steps: &'a [Step],
}

impl<'a> Plan<'a> {
    pub fn new(steps: &'a [Step]) -> Plan<'a> {
        Plan { steps }
    }

    fn ended_well(&self, i: usize, state: StepState) -> bool {
        match state {
            StepState::Succeeded => true,
            StepState::Failed => self.steps[i].ignore_errors,
            StepState::Running => self.steps[i].detach,
            _ => false,
        }
    }

    /// What follows from `states` (one per step, in the file's order).
    pub fn next(&self, states: &[StepState]) -> Next {
        assert_eq!(states.len(), self.steps.len(), "one state per step");
        let mut next = Next::default();
        let failed = states
            .iter()
            .enumerate()
            .any(|(i, s)| *s == StepState::Failed && !self.steps[i].ignore_errors);
        if failed {
            for (i, s) in states.iter().enumerate() {
                match s {
                    StepState::Running => next.stop.push(i),
                    StepState::Pending => next.skip.push(i),
                    _ => {}
                }
            }
            next.outcome = Some(Outcome::Failed);
            return next;
        }
        for (i, s) in states.iter().enumerate() {
            if *s == StepState::Pending
                && self.steps[i]
                    .after
                    .iter()
                    .all(|&j| self.ended_well(j, states[j]))
            {
                next.start.push(i);
            }
        }
        let all_ended_well = states
            .iter()
            .enumerate()
            .all(|(i, s)| self.ended_well(i, *s));
        if all_ended_well {
            next.stop = (0..states.len())
                .filter(|&i| states[i] == StepState::Running)
                .collect();
            next.outcome = Some(Outcome::Succeeded);
        }
        next
    }

    /// A canceled run: every running step stopped, every other one not
    /// ended skipped.
    pub fn cancel(&self, states: &[StepState]) -> Next {
        let mut next = Next::default();
        for (i, s) in states.iter().enumerate() {
            match s {
                StepState::Running => next.stop.push(i),
                StepState::Pending => next.skip.push(i),
                _ => {}
            }
        }
        next
    }
}

/// Refuse steps that wait for each other in a cycle (which would never
/// start), naming them in the file's order.
pub(crate) fn check_acyclic(steps: &[Step]) -> Result<(), SpecError> {
    // Kahn's algorithm: repeatedly take the steps whose every wait is
    // taken; what is left waits, directly or not, on itself.
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
    let mut waited_by: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for &j in &s.after {
            waited_by[j].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut taken = vec![false; steps.len()];
    while let Some(i) = ready.pop() {
        taken[i] = true;
        for &k in &waited_by[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.push(k);
            }
        }
    }
    let cycle: Vec<String> = steps
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|(s, _)| s.id.clone())
        .collect();
    if cycle.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Cycle(cycle))
    }
}

#[cfg(test)]
mod tests {
    use super::StepState::*;
    use super::*;
    use crate::TaskSpec;

    fn spec(text: &str) -> TaskSpec {
        TaskSpec::parse(text).unwrap()
    }

    /// Run `t` to its end, every step ending as `ends` says (by id), and
    /// return the order steps started in and the final states.
    fn run(
        t: &TaskSpec,
        ends: impl Fn(&str) -> StepState,
    ) -> (Vec<String>, Vec<StepState>, Outcome) {
        let plan = Plan::new(&t.steps);
        let mut states = vec![Pending; t.steps.len()];
        let mut started = Vec::new();
        for _ in 0..=2 * t.steps.len() {
            let next = plan.next(&states);
            for &i in &next.skip {
                states[i] = Skipped;
            }
            for &i in &next.stop {
                states[i] = Stopped;
            }
            if let Some(o) = next.outcome {
                return (started, states, o);
            }
            assert!(!next.start.is_empty(), "stuck at {states:?}");
            // Everything started this round ends before the next (a
            // detached step stays running).
            for &i in &next.start {
                started.push(t.steps[i].id.clone());
                states[i] = if t.steps[i].detach {
                    Running
                } else {
                    ends(&t.steps[i].id)
                };
            }
        }
        panic!("no outcome");
    }

    const DIAMOND: &str = "
steps:
  - id: a
    cmd: a
  - id: b
    cmd: b
    when: [a]
  - id: c
    cmd: c
    when: [a]
  - id: d
    cmd: d
    when: [b, c]
  - id: e
    cmd: e
";

    #[test]
    fn steps_start_when_what_they_wait_for_has_ended_well() {
        let t = spec(DIAMOND);
        let (order, states, outcome) = run(&t, |_| Succeeded);
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
        assert_eq!(outcome, Outcome::Succeeded);
        assert!(states.iter().all(|s| *s == Succeeded));
        // b and c start together, once a has ended.
        let plan = Plan::new(&t.steps);
        assert_eq!(
            plan.next(&[Running, Pending, Pending, Pending, Pending])
                .start,
            Vec::<usize>::new()
        );
        assert_eq!(
            plan.next(&[Succeeded, Pending, Pending, Pending, Pending])
                .start,
            [1, 2]
        );
        assert_eq!(
            plan.next(&[Succeeded, Succeeded, Running, Pending, Pending])
                .start,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_failing_step_fails_the_run_stops_the_running_and_skips_the_rest() {
        let t = spec(DIAMOND);
        let (order, states, outcome) = run(&t, |id| if id == "b" { Failed } else { Succeeded });
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(states, [Succeeded, Failed, Succeeded, Skipped, Skipped]);
        let next = Plan::new(&t.steps).next(&[Succeeded, Failed, Running, Pending, Pending]);
        assert_eq!((next.stop, next.skip), (vec![2], vec![3, 4]));
    }

    #[test]
    fn ignore_errors_lets_the_run_go_on() {
        let t = spec(&DIAMOND.replace("    cmd: b\n", "    cmd: b\n    ignoreErrors: true\n"));
        let (order, states, outcome) = run(&t, |id| if id == "b" { Failed } else { Succeeded });
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
        assert_eq!(states[1], Failed);
    }

    #[test]
    fn a_detached_step_is_waited_for_only_until_it_runs_and_stopped_at_the_end() {
        let t = spec(
            "
steps:
  - id: db
    cmd: postgres
    detach: true
  - id: test
    cmd: tests
",
        );
        let (order, states, outcome) = run(&t, |_| Succeeded);
        assert_eq!(order, ["db", "test"]);
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(states, [Stopped, Succeeded]);
    }

    #[test]
    fn a_canceled_run_stops_what_runs_and_skips_what_waits() {
        let t = spec(DIAMOND);
        let next = Plan::new(&t.steps).cancel(&[Succeeded, Running, Running, Pending, Pending]);
        assert_eq!((next.stop, next.skip), (vec![1, 2], vec![3, 4]));
    }

    #[test]
    fn a_cycle_through_several_steps_is_named() {
        let err = TaskSpec::parse(
            "
steps:
  - id: start
    cmd: s
    when: ['-']
  - id: x
    cmd: x
    when: [z]
  - id: y
    cmd: y
    when: [x]
  - id: z
    cmd: z
    when: [y, start]
",
        )
        .unwrap_err();
        assert_eq!(
            err,
            SpecError::Cycle(vec!["x".into(), "y".into(), "z".into()])
        );
    }
}
