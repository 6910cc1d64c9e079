//! The outbox drainer: a supervisor on the leader and one worker per
//! webhook with pending events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wharf_consensus::{now_unix_ms, Consensus};
use wharf_meta::{
    Attempt, AttemptReport, Command, Delivery, Envelope, Outcome, WebhookAttempts, WebhookCommand,
    WebhookRecord,
};

use crate::payload;

/// Delivery bounds (the `[webhooks]` section of the node configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// One request's limit, connecting and reading the answer included.
    pub timeout: Duration,
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Age (since queued) after which a failed event is dead-lettered.
    pub max_age: Duration,
    /// The first retry's delay; each next one doubles, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Delivered and dead events are removed from the log after this long.
    pub retention: Duration,
    /// Request and response bodies are kept in the log up to this size.
    pub body_log_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(10),
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 86_400),
            body_log_bytes: 4096,
        }
    }
}

/// Events a worker sends before recording their attempts in one command.
const PAGE: usize = 64;
/// Workers' report lists waiting for the recorder (one per busy webhook).
const RECORDER_QUEUE: usize = 1024;
/// The supervisor looks for new work at least this often.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the leader removes expired log entries.
const EXPIRE_EVERY: Duration = Duration::from_secs(600);
/// Events removed per `Expire` command.
const EXPIRE_LIMIT: u32 = 1000;

/// The delay before attempt `tries + 1` of event `seq`: exponential from
/// `base`, capped at `max`, with jitter in its upper half. The jitter is a
/// function of (seq, tries), so every look at an event computes the same
/// due time.
pub fn backoff(s: &Settings, seq: u64, tries: u32) -> Duration {
    if tries == 0 {
        return Duration::ZERO;
    }
    let exp = s
        .backoff_base
        .saturating_mul(1u32 << (tries - 1).min(20))
        .min(s.backoff_max);
    let half = exp / 2;
    let mix = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
        ^ u64::from(tries).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let frac = (mix >> 11) as f64 / (1u64 << 53) as f64;
    half + half.mul_f64(frac)
}

/// What this node's deliverer did (it delivers only while it leads).
#[derive(Debug, Default)]
pub struct Stats {
    /// Attempts answered with a 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (no answer, or not 2xx).
    pub failed: AtomicU64,
    /// Events dead-lettered.
    pub dead: AtomicU64,
    /// Webhooks with pending events that a worker is sending now.
    pub busy_webhooks: AtomicU64,
}

/// A worker's reports on its way to the recorder, and where to answer.
struct Reports {
    registry: String,
    name: String,
    reports: Vec<AttemptReport>,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct Deliverer {
    consensus: Arc<Consensus>,
    http: reqwest::Client,
    settings: Settings,
    pub stats: Stats,
    to_recorder: mpsc::Sender<Reports>,
    /// Taken by `run`, which starts the recorder.
    recorder_rx: std::sync::Mutex<Option<mpsc::Receiver<Reports>>>,
}

type Key = (String, String);

impl Deliverer {
    pub fn new(consensus: Arc<Consensus>, http: reqwest::Client, settings: Settings) -> Arc<Self> {
        let (to_recorder, rx) = mpsc::channel(RECORDER_QUEUE);
        Arc::new(Deliverer {
            consensus,
            http,
            settings,
            stats: Stats::default(),
            to_recorder,
            recorder_rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    /// Until `stop` turns true: on the leader, keep one worker per webhook
    /// with pending events, and expire the log.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let rx = self.recorder_rx.lock().ok().and_then(|mut r| r.take());
        let recorder = rx.map(|rx| {
            let me = self.clone();
            tokio::spawn(async move { me.record(rx).await })
        });
        let mut applied = self.consensus.applied_watch();
        let mut workers: HashMap<Key, JoinHandle<()>> = HashMap::new();
        let mut last_expire: Option<Instant> = None;
        loop {
            tokio::select! {
                r = applied.changed() => {
                    if r.is_err() {
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                _ = tokio::time::sleep(IDLE_POLL) => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
            workers.retain(|_, h| !h.is_finished());
            if !self.consensus.is_leader() {
                for (_, h) in workers.drain() {
                    h.abort();
                }
                self.stats.busy_webhooks.store(0, Ordering::Relaxed);
                continue;
            }
            // Off the runtime's workers: the read may compact the queue.
            let consensus = self.consensus.clone();
            let listed =
                tokio::task::spawn_blocking(move || consensus.meta().webhooks_with_pending())
                    .await
                    .unwrap_or_else(|e| Err(wharf_meta::StoreError::Io(std::io::Error::other(e))));
            match listed {
                Ok(list) => {
                    for key in list {
                        // A disabled webhook keeps its queue until enabled.
                        let enabled = self
                            .consensus
                            .meta()
                            .webhook(&key.0, &key.1)
                            .ok()
                            .flatten()
                            .is_some_and(|w| w.enabled);
                        if !enabled {
                            continue;
                        }
                        if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(key)
                        {
                            let me = self.clone();
                            let (registry, name) = slot.key().clone();
                            slot.insert(tokio::spawn(
                                async move { me.work(&registry, &name).await },
                            ));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: reading the queue failed"),
            }
            self.stats
                .busy_webhooks
                .store(workers.len() as u64, Ordering::Relaxed);
            if last_expire.is_none_or(|t| t.elapsed() >= EXPIRE_EVERY) {
                last_expire = Some(Instant::now());
                let me = self.clone();
                tokio::spawn(async move { me.expire().await });
            }
            // Many applies in a burst: look again after a moment, not
            // after every one.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, h) in workers.drain() {
            h.abort();
        }
        if let Some(r) = recorder {
            r.abort();
        }
    }

    /// Record the attempts workers report: everything waiting goes in one
    /// command per registry, so many busy webhooks cost one Raft write per
    /// round, not one each.
    async fn record(&self, mut rx: mpsc::Receiver<Reports>) {
        while let Some(first) = rx.recv().await {
            let mut round = vec![first];
            while let Ok(more) = rx.try_recv() {
                round.push(more);
            }
            let mut by_registry: std::collections::BTreeMap<String, Vec<Reports>> =
                Default::default();
            for r in round {
                by_registry.entry(r.registry.clone()).or_default().push(r);
            }
            for (registry, list) in by_registry {
                let webhooks = list
                    .iter()
                    .map(|r| WebhookAttempts {
                        name: r.name.clone(),
                        reports: r.reports.clone(),
                    })
                    .collect();
                let cmd = Command::Webhook(WebhookCommand::AttemptedMany { webhooks });
                let result = self.propose(&registry, cmd).await.map(|_| ());
                for r in list {
                    let _ = r.done.send(result.clone());
                }
            }
        }
    }

    /// Hand `reports` to the recorder; resolves once they are applied.
    async fn report(
        &self,
        registry: &str,
        name: &str,
        reports: Vec<AttemptReport>,
    ) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        let sent = self
            .to_recorder
            .send(Reports {
                registry: registry.to_string(),
                name: name.to_string(),
                reports,
                done,
            })
            .await;
        if sent.is_err() {
            return Err("the recorder stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the recorder stopped".into()))
    }

    /// Deliver webhook `name`'s pending events in order until none is left
    /// (or it is disabled, deleted, or this node is no longer the leader).
    async fn work(&self, registry: &str, name: &str) {
        loop {
            if !self.consensus.is_leader() {
                return;
            }
            let meta = self.consensus.meta();
            let (hook, page) = match (
                meta.webhook(registry, name),
                meta.pending(registry, name, PAGE),
            ) {
                (Ok(Some(h)), Ok(p)) => (h, p),
                (Ok(None), _) => return,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(webhook = name, error = %e, "webhooks: reading the queue failed");
                    return;
                }
            };
            if !hook.enabled || page.is_empty() {
                return;
            }
            let mut reports = Vec::new();
            let mut wait = None;
            for d in &page {
                let due = self.due_ms(d);
                let now = now_unix_ms();
                if due > now {
                    wait = Some(Duration::from_millis(due - now));
                    break;
                }
                let attempt = self.send(&hook, d).await;
                let outcome = self.outcome(d, &attempt);
                let counter = match outcome {
                    Outcome::Delivered => &self.stats.delivered,
                    _ => &self.stats.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if outcome == Outcome::Dead {
                    self.stats.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(webhook = name, event = %d.event.id, attempts = d.tries + 1, "webhooks: event dead-lettered");
                }
                if outcome == Outcome::Retry {
                    wait = Some(backoff(&self.settings, d.event.seq, d.tries + 1));
                }
                reports.push(AttemptReport {
                    seq: d.event.seq,
                    attempt,
                    outcome,
                });
                if outcome == Outcome::Retry || !self.consensus.is_leader() {
                    break;
                }
            }
            if !reports.is_empty() {
                let n = reports.len();
                if let Err(e) = self.report(registry, name, reports).await {
                    // Not recorded: those events go again (same ids).
                    tracing::warn!(webhook = name, attempts = n, error = %e, "webhooks: recording attempts failed");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            }
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
            }
        }
    }

    /// When `d` may be tried next: at once if never tried, else after the
    /// backoff of its tries since its last attempt.
    fn due_ms(&self, d: &Delivery) -> u64 {
        match d.attempts.last() {
            Some(last) if d.tries > 0 => last
                .at_ms
                .saturating_add(backoff(&self.settings, d.event.seq, d.tries).as_millis() as u64),
            _ => 0,
        }
    }

    fn outcome(&self, d: &Delivery, a: &Attempt) -> Outcome {
        if a.status.is_some_and(|s| (200..300).contains(&s)) {
            return Outcome::Delivered;
        }
        let age = Duration::from_millis(a.at_ms.saturating_sub(d.queued_ms));
        if d.tries + 1 >= self.settings.max_attempts || age >= self.settings.max_age {
            Outcome::Dead
        } else {
            Outcome::Retry
        }
    }

    /// One request; every failure (no DNS, refused, timeout, non-2xx) is
    /// an attempt with its reason.
    async fn send(&self, hook: &WebhookRecord, d: &Delivery) -> Attempt {
        let (body, content_type) = payload::body(&d.event, hook.format);
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), content_type.into()),
            (
                "user-agent".into(),
                concat!("Wharf-Webhooks/", env!("CARGO_PKG_VERSION")).into(),
            ),
            (payload::EVENT_ID_HEADER.into(), d.event.id.clone()),
            ("x-wharf-delivery-attempt".into(), (d.tries + 1).to_string()),
        ];
        if let Some(secret) = &hook.secret {
            headers.push((
                payload::SIGNATURE_HEADER.into(),
                payload::signature(secret, &body),
            ));
        }
        headers.extend(hook.headers.iter().cloned());
        let limit = self.settings.body_log_bytes;
        let mut attempt = Attempt {
            at_ms: now_unix_ms(),
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), redact(k, v)))
                .collect(),
            request_body: truncated(&body, limit),
            ..Attempt::default()
        };
        let started = Instant::now();
        let mut req = self.http.post(&hook.uri).body(body);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let exchange = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut kept = Vec::new();
            while kept.len() < limit {
                match resp.chunk().await? {
                    Some(c) => kept.extend_from_slice(&c),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, headers, kept))
        };
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Ok(Ok((status, headers, body))) => {
                attempt.status = Some(status);
                attempt.response_headers = headers;
                attempt.response_body = truncated(&body, limit);
            }
            Ok(Err(e)) => attempt.error = Some(error_chain(&e)),
            Err(_) => {
                attempt.error = Some(format!(
                    "no answer within {} s",
                    self.settings.timeout.as_secs_f64()
                ))
            }
        }
        attempt.latency_ms = started.elapsed().as_millis() as u64;
        attempt
    }

    /// Remove delivered and dead events older than the retention.
    async fn expire(&self) {
        let before_ms = now_unix_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        loop {
            let cmd = Command::Webhook(WebhookCommand::Expire {
                before_ms,
                limit: EXPIRE_LIMIT,
            });
            match self.propose(wharf_meta::DEFAULT_REGISTRY, cmd).await {
                Ok(n) if n >= u64::from(EXPIRE_LIMIT) => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(events = n, "webhooks: expired delivery log entries");
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "webhooks: expiry postponed");
                    return;
                }
            }
        }
    }

    async fn propose(&self, registry: &str, cmd: Command) -> Result<u64, String> {
        let id = format!("w:{:032x}", rand::random::<u128>());
        let env = Envelope::new(registry, cmd, now_unix_ms()).with_request_id(id);
        match self.consensus.write(env).await {
            Ok(r) => r.into_result().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Header values that carry credentials are not kept in the log.
fn redact(name: &str, value: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n == "authorization"
        || n == "proxy-authorization"
        || n.contains("token")
        || n.contains("key")
    {
        "[redacted]".into()
    } else {
        value.to_string()
    }
}

fn truncated(bytes: &[u8], limit: usize) -> String {
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned();
    if bytes.len() > limit {
        s.push_str("…[truncated]");
    }
    s
}

/// An error with its causes ("error sending request: ...: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half_and_is_capped() {
        let s = Settings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..Settings::default()
        };
        assert_eq!(backoff(&s, 1, 0), Duration::ZERO);
        for tries in 1..12u32 {
            let full = Duration::from_secs(1 << (tries - 1)).min(Duration::from_secs(60));
            let d = backoff(&s, 42, tries);
            assert!(d >= full / 2 && d <= full, "try {tries}: {d:?} of {full:?}");
            // Stable: the due time does not move between looks.
            assert_eq!(d, backoff(&s, 42, tries));
        }
        // Different events spread out.
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|seq| backoff(&s, seq, 5)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn credentials_are_redacted_and_bodies_truncated() {
        assert_eq!(redact("Authorization", "Bearer x"), "[redacted]");
        assert_eq!(redact("X-Api-Key", "k"), "[redacted]");
        assert_eq!(redact("x-team", "infra"), "infra");
        assert_eq!(truncated(b"abcdef", 3), "abc…[truncated]");
        assert_eq!(truncated(b"abc", 3), "abc");
    }
}
