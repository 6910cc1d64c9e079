//! Running one claimed run's steps: the agent's loop, with what it talks
//! to behind two traits (the replicated state through a `Reporter`, the
//! containers through an `Executor`), so its rules are tested here and the
//! node wires real ones in.
//!
//! The rules: steps start as `plan` says, several at once when their
//! `when`s allow; a step gets its `timeout` and up to `retries` more
//! attempts `retryDelay` apart; a detached step runs until the run ends.
//! The lease is renewed every `renew_every`; a renewal that says the run
//! was canceled stops everything and ends it `Canceled`, one that says the
//! run is not this agent's any more stops everything and reports nothing
//! more (another agent, or the expiry, owns it now). The run's own timeout
//! ends it `TimedOut`. Every byte of output goes through the log sink the
//! caller gives (masking secrets is the sink's job: see `redact`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::plan::{Outcome, Plan, StepState};
use crate::spec::{Step, TaskSpec};

/// What renewing the lease answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Continue,
    /// Someone canceled the run: stop it.
    Canceled,
    /// The run is not this agent's any more: stop, report nothing.
    Lost,
}

#[async_trait]
pub trait Reporter: Send + Sync {
    async fn renew(&self) -> Renewal;
    /// Step `index` is now `state` (its exit code once it ended).
    async fn step(&self, index: usize, state: StepState, exit_code: Option<i32>);
}

/// How one attempt of a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The process's exit code; `None` when it never ran or was stopped.
    pub exit_code: Option<i32>,
    /// Why it failed, beyond its exit code (an image that would not pull).
    pub error: Option<String>,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none()
    }
}

#[async_trait]
pub trait Executor: Send + Sync {
    /// Run `step` once, its output written to `log`, until it ends or
    /// `stop` is cancelled (then stop its processes and return).
    async fn run(
        &self,
        step: &Step,
        spec: &TaskSpec,
        log: &dyn LogSink,
        stop: CancellationToken,
    ) -> Attempt;
}

pub trait LogSink: Send + Sync {
    fn write(&self, bytes: &[u8]);
}

/// A sink that masks secrets (see `redact`) before `inner` sees a byte;
/// `finish` passes on what it held back once the run has ended.
pub struct Masking<S> {
    redactor: std::sync::Mutex<crate::Redactor>,
    pub inner: S,
}

impl<S: LogSink> Masking<S> {
    pub fn new<T: AsRef<[u8]>>(secrets: impl IntoIterator<Item = T>, inner: S) -> Masking<S> {
        Masking {
            redactor: std::sync::Mutex::new(crate::Redactor::new(secrets)),
            inner,
        }
    }

    pub fn finish(&self) {
        let rest = self
            .redactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        self.inner.write(&rest);
    }
}

impl<S: LogSink> LogSink for Masking<S> {
    fn write(&self, bytes: &[u8]) {
        // Masked and passed on under one lock, so that chunks written by
        // steps side by side reach `inner` in the order they were masked.
        let mut redactor = self.redactor.lock().unwrap_or_else(|e| e.into_inner());
        let out = redactor.push(bytes);
        self.inner.write(&out);
    }
}

/// A log kept in memory.
#[derive(Default)]
pub struct MemoryLog(std::sync::Mutex<Vec<u8>>);

impl MemoryLog {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl LogSink for MemoryLog {
    fn write(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed,
    Canceled,
    TimedOut,
    /// The lease went to someone else: nothing more was reported.
    Lost,
}

pub struct Limits {
    pub run_timeout: Duration,
    pub renew_every: Duration,
}

/// What a step's task returns: its index, final state and exit code.
type Ended = (usize, StepState, Option<i32>);

/// One step to its end: attempts, timeouts and retries.
async fn run_step(
    index: usize,
    spec: Arc<TaskSpec>,
    executor: Arc<dyn Executor>,
    log: Arc<dyn LogSink>,
    stop: CancellationToken,
) -> Ended {
    let step = &spec.steps[index];
    let mut last = Attempt {
        exit_code: None,
        error: None,
    };
    for attempt in 0..=step.retries {
        if attempt > 0 {
            log.write(
                format!(
                    "step {}: retrying in {} s (attempt {} of {})\n",
                    step.id,
                    step.retry_delay_s,
                    attempt + 1,
                    step.retries + 1
                )
                .as_bytes(),
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(step.retry_delay_s)) => {}
                _ = stop.cancelled() => return (index, StepState::Stopped, last.exit_code),
            }
        }
        let this = stop.child_token();
        let timeout = Duration::from_secs(step.timeout_s);
        let run = executor.run(step, &spec, log.as_ref(), this.clone());
        tokio::pin!(run);
        last = tokio::select! {
            a = &mut run => a,
            _ = tokio::time::sleep(timeout) => {
                this.cancel();
                let mut a = run.await;
                a.error = Some(format!("timed out after {} s", step.timeout_s));
                a
            }
        };
        if stop.is_cancelled() {
            return (index, StepState::Stopped, last.exit_code);
        }
        if last.succeeded() {
            return (index, StepState::Succeeded, last.exit_code);
        }
        let why = last.error.clone().unwrap_or_else(|| {
            format!(
                "exited with {}",
                last.exit_code.map_or("no code".into(), |c| c.to_string())
            )
        });
        log.write(format!("step {}: failed: {why}\n", step.id).as_bytes());
    }
    (index, StepState::Failed, last.exit_code)
}

/// Run every step of `spec` to the run's end.
pub async fn execute(
    spec: Arc<TaskSpec>,
    executor: Arc<dyn Executor>,
    reporter: Arc<dyn Reporter>,
    log: Arc<dyn LogSink>,
    limits: Limits,
) -> RunEnd {
    let steps = spec.steps.clone();
    let plan = Plan::new(&steps);
    let mut states = vec![StepState::Pending; steps.len()];
    let mut stops: Vec<Option<CancellationToken>> = vec![None; steps.len()];
    let mut running: JoinSet<Ended> = JoinSet::new();
    // Which step a task runs, to know whose task panicked.
    let mut task_steps: std::collections::HashMap<tokio::task::Id, usize> = Default::default();
    let mut renew = tokio::time::interval(limits.renew_every);
    renew.tick().await;
    let deadline = tokio::time::sleep(limits.run_timeout);
    tokio::pin!(deadline);
    // Set when the run ends for a reason of its own (not its steps).
    let mut ended: Option<RunEnd> = None;
    loop {
        if ended.is_none() {
            let next = plan.next(&states);
            for &i in &next.skip {
                states[i] = StepState::Skipped;
                reporter.step(i, StepState::Skipped, None).await;
            }
            for &i in &next.stop {
                if let Some(t) = &stops[i] {
                    t.cancel();
                }
            }
            for &i in &next.start {
                states[i] = StepState::Running;
                reporter.step(i, StepState::Running, None).await;
                let stop = CancellationToken::new();
                stops[i] = Some(stop.clone());
                let task = running.spawn(run_step(
                    i,
                    spec.clone(),
                    executor.clone(),
                    log.clone(),
                    stop,
                ));
                task_steps.insert(task.id(), i);
            }
            // A started detached step may let others start at once.
            if next.outcome.is_none() && !next.start.is_empty() {
                continue;
            }
            if let Some(outcome) = next.outcome {
                if running.is_empty() || next.stop.len() == running.len() {
                    // Nothing left the run waits for (what runs is being stopped).
                    ended = Some(match outcome {
                        Outcome::Succeeded => RunEnd::Succeeded,
                        Outcome::Failed => RunEnd::Failed,
                    });
                }
            }
        }
        if ended.is_some() && running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next_with_id(), if !running.is_empty() => {
                let (i, state, code) = match joined {
                    Some(Ok((_, ended))) => ended,
                    // The executor panicked: the step failed.
                    Some(Err(e)) => match task_steps.get(&e.id()) {
                        Some(&i) => {
                            log.write(format!("step {}: its executor failed: {e}\n", steps[i].id).as_bytes());
                            (i, StepState::Failed, None)
                        }
                        None => continue,
                    },
                    None => continue,
                };
                // A detached step ends only when stopped; a stopped step
                // of a run that goes on is what the plan asked for.
                let state = if stops[i].as_ref().is_some_and(|t| t.is_cancelled()) {
                    StepState::Stopped
                } else {
                    state
                };
                states[i] = state;
                if ended != Some(RunEnd::Lost) {
                    reporter.step(i, state, code).await;
                }
            }
            _ = renew.tick(), if ended.is_none() => {
                match reporter.renew().await {
                    Renewal::Continue => {}
                    Renewal::Canceled => ended = Some(RunEnd::Canceled),
                    Renewal::Lost => ended = Some(RunEnd::Lost),
                }
            }
            _ = &mut deadline, if ended.is_none() => {
                log.write(format!("the run timed out after {} s\n", limits.run_timeout.as_secs()).as_bytes());
                ended = Some(RunEnd::TimedOut);
            }
        }
        if let Some(end) = ended {
            if end != RunEnd::Succeeded && end != RunEnd::Failed {
                // Stop everything; what never started is skipped.
                for t in stops.iter().flatten() {
                    t.cancel();
                }
                if end != RunEnd::Lost {
                    for i in plan.cancel(&states).skip {
                        states[i] = StepState::Skipped;
                        reporter.step(i, StepState::Skipped, None).await;
                    }
                }
            }
        }
    }
    ended.unwrap_or(RunEnd::Failed)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// Steps behave as scripted by id: each attempt takes the next of its
    /// (seconds, exit code); an unscripted step succeeds at once. It stops
    /// when told, as a real executor must.
    #[derive(Default)]
    struct Script {
        attempts: Mutex<HashMap<String, Vec<(u64, i32)>>>,
        started: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Executor for Script {
        async fn run(
            &self,
            step: &Step,
            _: &TaskSpec,
            log: &dyn LogSink,
            stop: CancellationToken,
        ) -> Attempt {
            self.started.lock().unwrap().push(step.id.clone());
            let (secs, code) = {
                let mut a = self.attempts.lock().unwrap();
                match a.get_mut(&step.id) {
                    Some(v) if !v.is_empty() => v.remove(0),
                    _ => (0, 0),
                }
            };
            log.write(format!("{} says the password is hunter2\n", step.id).as_bytes());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => Attempt { exit_code: Some(code), error: None },
                _ = stop.cancelled() => Attempt { exit_code: None, error: None },
            }
        }
    }

    /// Records reports; renewals answer as `answer` says after `after` of them.
    struct Recorder {
        reports: Mutex<Vec<(usize, StepState)>>,
        renewals: Mutex<u32>,
        answer: (u32, Renewal),
    }

    impl Recorder {
        fn new(answer: (u32, Renewal)) -> Arc<Recorder> {
            Arc::new(Recorder {
                reports: Mutex::new(Vec::new()),
                renewals: Mutex::new(0),
                answer,
            })
        }

        /// Every step's last reported state.
        fn last(&self, steps: usize) -> Vec<StepState> {
            let mut out = vec![StepState::Pending; steps];
            for (i, s) in self.reports.lock().unwrap().iter() {
                out[*i] = *s;
            }
            out
        }
    }

    #[async_trait]
    impl Reporter for Recorder {
        async fn renew(&self) -> Renewal {
            let mut n = self.renewals.lock().unwrap();
            *n += 1;
            if *n > self.answer.0 {
                self.answer.1
            } else {
                Renewal::Continue
            }
        }

        async fn step(&self, index: usize, state: StepState, _: Option<i32>) {
            self.reports.lock().unwrap().push((index, state));
        }
    }

    struct Outcome {
        end: RunEnd,
        states: Vec<StepState>,
        started: Vec<String>,
        log: String,
        elapsed: Duration,
    }

    async fn go(
        file: &str,
        script: &[(&str, &[(u64, i32)])],
        renewal: (u32, Renewal),
        run_timeout: u64,
    ) -> Outcome {
        let spec = Arc::new(TaskSpec::parse(file).unwrap());
        let executor = Arc::new(Script::default());
        for (id, attempts) in script {
            executor
                .attempts
                .lock()
                .unwrap()
                .insert(id.to_string(), attempts.to_vec());
        }
        let reporter = Recorder::new(renewal);
        let log = Arc::new(Masking::new(["hunter2"], MemoryLog::default()));
        let t = tokio::time::Instant::now();
        let end = execute(
            spec.clone(),
            executor.clone(),
            reporter.clone(),
            log.clone(),
            Limits {
                run_timeout: Duration::from_secs(run_timeout),
                renew_every: Duration::from_secs(10),
            },
        )
        .await;
        log.finish();
        let started = executor.started.lock().unwrap().clone();
        Outcome {
            end,
            states: reporter.last(spec.steps.len()),
            started,
            log: log.inner.text(),
            elapsed: t.elapsed(),
        }
    }

    const THREE: &str = "
steps:
  - id: a
    cmd: a
  - id: b
    cmd: b
    when: ['-']
  - id: c
    cmd: c
    when: [a, b]
";

    use StepState::*;

    #[tokio::test(start_paused = true)]
    async fn independent_steps_run_together_and_the_run_succeeds() {
        let o = go(
            THREE,
            &[("a", &[(5, 0)]), ("b", &[(5, 0)])],
            (u32::MAX, Renewal::Continue),
            600,
        )
        .await;
        assert_eq!(o.end, RunEnd::Succeeded);
        assert_eq!(o.states, [Succeeded, Succeeded, Succeeded]);
        assert_eq!(o.elapsed, Duration::from_secs(5), "a and b side by side");
        assert_eq!(o.started.last().map(String::as_str), Some("c"));
        assert!(o.log.contains("a says the password is ***"), "{}", o.log);
        assert!(!o.log.contains("hunter2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_step_stops_the_others_and_skips_the_rest() {
        let o = go(
            THREE,
            &[("a", &[(1, 3)]), ("b", &[(100, 0)])],
            (u32::MAX, Renewal::Continue),
            600,
        )
        .await;
        assert_eq!(o.end, RunEnd::Failed);
        assert_eq!(o.states, [Failed, Stopped, Skipped]);
        assert_eq!(
            o.elapsed,
            Duration::from_secs(1),
            "b was stopped, not waited for"
        );
        assert!(o.log.contains("step a: failed: exited with 3"), "{}", o.log);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_success_and_timeouts_count_as_failures() {
        let file = "
steps:
  - id: flaky
    cmd: x
    retries: 2
    retryDelay: 7
  - id: slow
    cmd: y
    timeout: 30
";
        let o = go(
            file,
            &[("flaky", &[(1, 1), (1, 1), (1, 0)]), ("slow", &[(1000, 0)])],
            (u32::MAX, Renewal::Continue),
            3600,
        )
        .await;
        assert_eq!(o.end, RunEnd::Failed);
        assert_eq!(o.states, [Succeeded, Failed]);
        assert_eq!(o.started.iter().filter(|s| *s == "flaky").count(), 3);
        assert_eq!(o.elapsed, Duration::from_secs(3 + 2 * 7 + 30));
        assert!(
            o.log.contains("step slow: failed: timed out after 30 s"),
            "{}",
            o.log
        );
        assert!(
            o.log
                .contains("step flaky: retrying in 7 s (attempt 3 of 3)"),
            "{}",
            o.log
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_learned_at_renewal_stops_the_run() {
        let o = go(
            THREE,
            &[("a", &[(100, 0)]), ("b", &[(100, 0)])],
            (2, Renewal::Canceled),
            600,
        )
        .await;
        assert_eq!(o.end, RunEnd::Canceled);
        assert_eq!(o.states, [Stopped, Stopped, Skipped]);
        assert_eq!(
            o.elapsed,
            Duration::from_secs(30),
            "the third renewal, at 30 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_stops_everything_and_reports_nothing_more() {
        let o = go(THREE, &[("a", &[(100, 0)])], (0, Renewal::Lost), 600).await;
        assert_eq!(o.end, RunEnd::Lost);
        assert_eq!(
            o.states,
            [Running, Succeeded, Pending],
            "as last reported before the loss"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_runs_timeout_ends_it_timed_out() {
        let o = go(
            THREE,
            &[("a", &[(1000, 0)])],
            (u32::MAX, Renewal::Continue),
            60,
        )
        .await;
        assert_eq!(o.end, RunEnd::TimedOut);
        assert_eq!(o.states, [Stopped, Succeeded, Skipped]);
        assert!(o.log.contains("the run timed out after 60 s"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_step_runs_until_the_run_ends() {
        let file = "
steps:
  - id: db
    cmd: postgres
    detach: true
  - id: test
    cmd: tests
";
        let o = go(
            file,
            &[("db", &[(10_000, 0)]), ("test", &[(20, 0)])],
            (u32::MAX, Renewal::Continue),
            600,
        )
        .await;
        assert_eq!(o.end, RunEnd::Succeeded);
        assert_eq!(o.states, [Stopped, Succeeded]);
        assert_eq!(o.elapsed, Duration::from_secs(20));
    }
}
