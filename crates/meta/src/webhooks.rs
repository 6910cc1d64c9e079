//! Webhooks and their outbox. The state machine writes every event into
//! the outbox of each webhook it matches in the same batch as the change
//! it describes, so an applied push is exactly one event with one id on
//! every replica, and an event exists only if its change does. The
//! deliverer (crate `wharf-webhooks`) drains the queue and records each
//! attempt with `Attempted`; the log keeps delivered and dead events until
//! `Expire` removes them.
//!
//! Keys (all but the waits start with the registry's prefix):
//! - `webhooks`: `registry \0 name` -> `WebhookRecord`; the cluster's event
//!   counter under `\0seq` (no registry prefix starts with NUL);
//! - `webhook_log`: `registry \0 name \0 seq(20 digits)` -> `Delivery`;
//! - `webhook_queue`: the same key -> nothing, while the event is pending:
//!   a webhook's pending events in order, its head first;
//! - `image_waits`: `region \0 registry \0 repo \0 digest` -> `ImageWait`,
//!   and `blob_waits`: `region \0 blob \0 registry \0 repo \0 digest`: the
//!   images still missing layers in a region, for `replicated` events.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::{BlobRef, Command, Envelope, Origin, PutManifest, Response};
use crate::error::{ApplyError, StoreError};
use crate::keys::*;
use crate::records::{BlobRecord, ManifestRecord};
use crate::store::{decode, encode, MetaStore};

/// The config media type that makes an OCI artifact a Helm chart.
pub const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";

/// Stored attempts per event: the first ones and the latest are kept.
pub const ATTEMPTS_KEPT: usize = 32;

const SEQ_KEY: &[u8] = b"\0seq";
/// Queue entries deleted (events delivered or given up) after which the
/// next read of the queue compacts it first. Every read starts at the
/// front of a queue, where the delivered events were, and steps over each
/// deletion RocksDB has not compacted away yet: without this, a busy
/// webhook's reads grow with everything it ever delivered since the last
/// compaction (the request-id expiry's fault of 2026-12-07, again). The
/// queue holds only what is pending, so compacting it is cheap.
pub(crate) const QUEUE_COMPACT_AFTER_DELETES: u64 = 10_000;

/// What happened. `Ping` is sent by `wharf webhook ping` only; the rest
/// are what a webhook subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAction {
    Push,
    Delete,
    ChartPush,
    ChartDelete,
    /// Accepted for compatibility with the cloud CLI; Wharf has no image
    /// quarantine, so none is ever emitted.
    Quarantine,
    /// An image's last layer became local in a region.
    Replicated,
    Ping,
}

impl WebhookAction {
    pub const SUBSCRIBABLE: [WebhookAction; 6] = [
        WebhookAction::Push,
        WebhookAction::Delete,
        WebhookAction::ChartPush,
        WebhookAction::ChartDelete,
        WebhookAction::Quarantine,
        WebhookAction::Replicated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Push => "push",
            WebhookAction::Delete => "delete",
            WebhookAction::ChartPush => "chart_push",
            WebhookAction::ChartDelete => "chart_delete",
            WebhookAction::Quarantine => "quarantine",
            WebhookAction::Replicated => "replicated",
            WebhookAction::Ping => "ping",
        }
    }

    /// A subscribable action by name.
    pub fn parse(s: &str) -> Option<WebhookAction> {
        Self::SUBSCRIBABLE.into_iter().find(|a| a.as_str() == s)
    }
}

/// The body a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The cloud registry's JSON.
    #[default]
    Default,
    /// CloudEvents 1.0, structured mode.
    Cloudevents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub name: String,
    pub uri: String,
    pub actions: Vec<WebhookAction>,
    /// `repo:tag` pattern (`*` matches any run of characters; no tag
    /// means `latest`); `None`: every event.
    #[serde(default)]
    pub scope: Option<String>,
    /// Extra request headers (custom authorization, say).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub enabled: bool,
    #[serde(default)]
    pub format: EventFormat,
    /// Key of the body's HMAC-SHA256 signature; never shown by the API.
    #[serde(default)]
    pub secret: Option<String>,
    pub created_ms: u64,
}

impl WebhookRecord {
    /// Whether an event of `action` on `repo` (`tag`, if any) is for it.
    pub fn wants(&self, action: WebhookAction, repo: &str, tag: Option<&str>) -> bool {
        if !self.enabled || !self.actions.contains(&action) {
            return false;
        }
        match &self.scope {
            None => true,
            Some(scope) => scope_matches(scope, repo, tag),
        }
    }
}

/// Whether `repo[:tag]` falls in `scope`. An event without a tag (a delete
/// by digest, of a repository) matches scopes whose tag part is `*`.
pub fn scope_matches(scope: &str, repo: &str, tag: Option<&str>) -> bool {
    let (repo_pattern, tag_pattern) = scope.split_once(':').unwrap_or((scope, "latest"));
    if !glob(repo_pattern.as_bytes(), repo.as_bytes()) {
        return false;
    }
    match tag {
        Some(t) => glob(tag_pattern.as_bytes(), t.as_bytes()),
        None => tag_pattern == "*",
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion
    // on patterns from the network.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A change to a webhook: only what is named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookChange {
    pub uri: Option<String>,
    pub actions: Option<Vec<WebhookAction>>,
    /// `Some(None)` removes the scope.
    pub scope: Option<Option<String>>,
    pub headers: Option<Vec<(String, String)>>,
    pub enabled: Option<bool>,
    pub format: Option<EventFormat>,
    /// `Some(None)` removes the secret.
    pub secret: Option<Option<String>>,
}

/// What an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTarget {
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
    pub digest: String,
    pub repository: String,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// UUID-shaped, the same on every replica and every webhook.
    pub id: String,
    pub seq: u64,
    pub at_ms: u64,
    pub action: WebhookAction,
    pub registry: String,
    pub target: EventTarget,
    /// The request that caused it (none for `replicated` and `ping`).
    #[serde(default)]
    pub request: Option<Origin>,
    /// The region a `replicated` event is about.
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Out of attempts or age: kept in the log, re-sendable.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// One request to a webhook and what came back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub latency_ms: u64,
    /// The HTTP status; `None`: no answer (`error` says why).
    pub status: Option<u16>,
    pub error: Option<String>,
    pub request_headers: Vec<(String, String)>,
    /// Truncated by the deliverer.
    pub request_body: String,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

/// What the deliverer concluded from an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Delivered,
    Retry,
    Dead,
}

/// One attempt at event `seq`, and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub seq: u64,
    pub attempt: Attempt,
    pub outcome: Outcome,
}

/// One webhook's reports in an `AttemptedMany`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttempts {
    pub name: String,
    pub reports: Vec<AttemptReport>,
}

/// An event in one webhook's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: Event,
    pub state: DeliveryState,
    /// Attempts since it was queued (or re-sent): what the bound counts.
    pub tries: u32,
    /// When it was queued (or re-sent): what the age bound counts from.
    pub queued_ms: u64,
    /// At most `ATTEMPTS_KEPT`, oldest first.
    pub attempts: Vec<Attempt>,
}

/// An image still missing layers in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWait {
    pub missing: u32,
    pub target: EventTarget,
}

/// Changes to webhooks and their outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookCommand {
    /// Refused when the name is taken.
    Create {
        record: Box<WebhookRecord>,
    },
    Update {
        name: String,
        change: WebhookChange,
    },
    /// The webhook with its log and queue.
    Delete {
        name: String,
    },
    /// Queue a `ping` event for this webhook only.
    Ping {
        name: String,
    },
    /// The deliverer tried events of webhook `name` (in order, one
    /// command for a run of deliveries). A report is ignored unless its
    /// event is still pending (a deposed leader's late report).
    Attempted {
        name: String,
        reports: Vec<AttemptReport>,
    },
    /// `Attempted` for several webhooks of the registry in one command:
    /// the deliverer's recorder gathers every worker's reports, so fifty
    /// webhooks cost one Raft write, not fifty.
    AttemptedMany {
        webhooks: Vec<WebhookAttempts>,
    },
    /// Queue event `seq` again, with a fresh bound of attempts and age.
    Redeliver {
        name: String,
        seq: u64,
    },
    /// Remove delivered and dead events queued before `before_ms`, at most
    /// `limit` of them (the leader repeats while some are removed).
    Expire {
        before_ms: u64,
        limit: u32,
    },
}

fn log_key(registry: &str, webhook: &str, seq: u64) -> Vec<u8> {
    format!("{registry}\0{webhook}\0{seq:020}").into_bytes()
}

fn webhook_key(registry: &str, name: &str) -> Vec<u8> {
    format!("{registry}\0{name}").into_bytes()
}

/// The event id of `seq`: UUID-shaped, from a hash so that ids do not
/// reveal how many events the cluster has had.
fn event_id(seq: u64) -> String {
    let d = wharf_oci::Digest::sha256_of(format!("wharf-event\0{seq}").as_bytes()).to_string();
    let h = d.trim_start_matches("sha256:");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Events of one apply, written at its end: the counter is read once.
pub(crate) struct Outbox<'a> {
    store: &'a MetaStore,
    at_ms: u64,
    origin: Option<&'a Origin>,
    next_seq: Option<u64>,
    /// Webhooks per registry, read once per apply.
    hooks: BTreeMap<String, Vec<WebhookRecord>>,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(store: &'a MetaStore, env: &'a Envelope) -> Outbox<'a> {
        Outbox {
            store,
            at_ms: env.at_ms,
            origin: env.origin.as_ref(),
            next_seq: None,
            hooks: BTreeMap::new(),
        }
    }

    fn hooks(&mut self, registry: &str) -> Result<&[WebhookRecord], StoreError> {
        if !self.hooks.contains_key(registry) {
            let list = self.store.webhooks(registry)?;
            self.hooks.insert(registry.to_string(), list);
        }
        Ok(&self.hooks[registry])
    }

    /// Whether some webhook of `registry` wants `action` at all (so that
    /// registries without webhooks pay nothing for them).
    fn any_wants(&mut self, registry: &str, action: WebhookAction) -> Result<bool, StoreError> {
        Ok(self
            .hooks(registry)?
            .iter()
            .any(|h| h.enabled && h.actions.contains(&action)))
    }

    /// Queue an event for every webhook of `registry` it matches; `only`
    /// restricts it to one webhook (a ping).
    fn emit(
        &mut self,
        batch: &mut WriteBatch,
        registry: &str,
        action: WebhookAction,
        target: EventTarget,
        region: Option<String>,
        only: Option<&str>,
    ) -> Result<(), StoreError> {
        let at_ms = self.at_ms;
        let request = match action {
            WebhookAction::Replicated | WebhookAction::Ping => None,
            _ => self.origin.cloned(),
        };
        let wanted: Vec<String> = self
            .hooks(registry)?
            .iter()
            .filter(|h| match only {
                Some(name) => h.name == name,
                None => h.wants(action, &target.repository, target.tag.as_deref()),
            })
            .map(|h| h.name.clone())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let seq = match self.next_seq {
            Some(s) => s,
            None => self
                .store
                .get::<u64>(CF_WEBHOOKS, SEQ_KEY)?
                .unwrap_or(0)
                .saturating_add(1),
        };
        self.next_seq = Some(seq + 1);
        let event = Event {
            id: event_id(seq),
            seq,
            at_ms,
            action,
            registry: registry.to_string(),
            target,
            request,
            region,
        };
        for name in wanted {
            let key = log_key(registry, &name, seq);
            let delivery = Delivery {
                event: event.clone(),
                state: DeliveryState::Pending,
                tries: 0,
                queued_ms: at_ms,
                attempts: Vec::new(),
            };
            batch.put_cf(self.store.cf(CF_WEBHOOK_LOG), &key, encode(&delivery));
            batch.put_cf(self.store.cf(CF_WEBHOOK_QUEUE), &key, []);
        }
        Ok(())
    }

    /// Write the counter if events were emitted.
    pub(crate) fn finish(self, batch: &mut WriteBatch) {
        if let Some(next) = self.next_seq {
            batch.put_cf(self.store.cf(CF_WEBHOOKS), SEQ_KEY, encode(&(next - 1)));
        }
    }
}

fn is_chart(artifact_type: Option<&str>) -> bool {
    artifact_type == Some(HELM_CONFIG_MEDIA_TYPE)
}

fn manifest_target(repo: &str, digest: &str, m: &ManifestRecord, tag: Option<&str>) -> EventTarget {
    EventTarget {
        media_type: m.media_type.clone(),
        size: m.raw.len() as u64,
        digest: digest.to_string(),
        repository: repo.to_string(),
        tag: tag.map(str::to_string),
    }
}

impl MetaStore {
    /// The events of `env`, applied (not refused) into `batch`. Called
    /// before the batch is written: reads see the state before the command.
    pub(crate) fn emit_events(
        &self,
        batch: &mut WriteBatch,
        env: &Envelope,
        response: &Response,
    ) -> Result<(), StoreError> {
        let mut out = Outbox::new(self, env);
        let registry = env.registry.as_str();
        match env.cmd.ungated() {
            Command::PutManifest(p) => {
                let action = if is_chart(p.artifact_type.as_deref()) {
                    WebhookAction::ChartPush
                } else {
                    WebhookAction::Push
                };
                let target = EventTarget {
                    media_type: p.media_type.clone(),
                    size: p.raw.len() as u64,
                    digest: p.digest.clone(),
                    repository: p.repo.clone(),
                    tag: p.tag.clone(),
                };
                out.emit(batch, registry, action, target.clone(), None, None)?;
                if !p.new_links.is_empty() {
                    self.blobs_arrived(batch, &mut out, &p.region, &p.new_links)?;
                }
                self.wait_for_image(batch, &mut out, registry, p, target)?;
            }
            Command::DeleteManifest { repo, digest } => {
                let r = self.registry(registry);
                if let Some(m) = r.manifest(repo, digest)? {
                    let action = if is_chart(m.artifact_type.as_deref()) {
                        WebhookAction::ChartDelete
                    } else {
                        WebhookAction::Delete
                    };
                    let target = manifest_target(repo, digest, &m, None);
                    out.emit(batch, registry, action, target, None, None)?;
                }
            }
            Command::DeleteTag { repo, tag } => {
                let r = self.registry(registry);
                if let Some(t) = r.tag(repo, tag)? {
                    let m = r.manifest(repo, &t.digest)?;
                    let chart = m
                        .as_ref()
                        .is_some_and(|m| is_chart(m.artifact_type.as_deref()));
                    let target = match &m {
                        Some(m) => manifest_target(repo, &t.digest, m, Some(tag)),
                        None => EventTarget {
                            digest: t.digest.clone(),
                            repository: repo.clone(),
                            tag: Some(tag.clone()),
                            ..EventTarget::default()
                        },
                    };
                    let action = if chart {
                        WebhookAction::ChartDelete
                    } else {
                        WebhookAction::Delete
                    };
                    out.emit(batch, registry, action, target, None, None)?;
                }
            }
            Command::DeleteRepository { repo } => {
                let target = EventTarget {
                    repository: repo.clone(),
                    ..EventTarget::default()
                };
                out.emit(batch, registry, WebhookAction::Delete, target, None, None)?;
            }
            Command::LinkBlobs { region, blobs, .. } => {
                self.blobs_arrived(batch, &mut out, region, blobs)?;
            }
            Command::BlobsReplicated { region, blobs } => {
                self.blobs_arrived(batch, &mut out, region, blobs)?;
            }
            Command::Webhook(WebhookCommand::Ping { name }) => {
                if matches!(response, Response::Ok) {
                    let target = EventTarget::default();
                    out.emit(
                        batch,
                        registry,
                        WebhookAction::Ping,
                        target,
                        None,
                        Some(name),
                    )?;
                }
            }
            _ => {}
        }
        out.finish(batch);
        Ok(())
    }

    /// Record, for each region the image belongs in, the layers it still
    /// lacks there; a region that lacks none gets its `replicated` event at
    /// once. Only when a webhook of the registry wants `replicated`.
    fn wait_for_image(
        &self,
        batch: &mut WriteBatch,
        out: &mut Outbox<'_>,
        registry: &str,
        p: &PutManifest,
        target: EventTarget,
    ) -> Result<(), StoreError> {
        if p.blobs.is_empty() || !out.any_wants(registry, WebhookAction::Replicated)? {
            return Ok(());
        }
        let mut blobs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for b in &p.blobs {
            let mut holders = self
                .get::<BlobRecord>(CF_BLOBS, b.digest.as_bytes())?
                .map(|r| r.regions)
                .unwrap_or_default();
            if p.new_links.iter().any(|n| n.digest == b.digest) {
                holders.push(p.region.clone());
            }
            blobs.insert(&b.digest, holders);
        }
        for region in &p.replica_regions {
            let image_key = format!("{region}\0{registry}\0{}\0{}", p.repo, p.digest);
            // Pushed again while a wait stands: the wait already counts.
            if self.exists(CF_IMAGE_WAITS, image_key.as_bytes())? {
                continue;
            }
            let missing: Vec<&str> = blobs
                .iter()
                .filter(|(_, holders)| !holders.iter().any(|h| h == region))
                .map(|(d, _)| *d)
                .collect();
            if missing.is_empty() {
                out.emit(
                    batch,
                    registry,
                    WebhookAction::Replicated,
                    target.clone(),
                    Some(region.clone()),
                    None,
                )?;
                continue;
            }
            for d in &missing {
                let k = format!("{region}\0{d}\0{registry}\0{}\0{}", p.repo, p.digest);
                batch.put_cf(self.cf(CF_BLOB_WAITS), k.as_bytes(), []);
            }
            let wait = ImageWait {
                missing: missing.len() as u32,
                target: target.clone(),
            };
            batch.put_cf(self.cf(CF_IMAGE_WAITS), image_key.as_bytes(), encode(&wait));
        }
        Ok(())
    }

    /// `region` now holds `blobs`: images waiting for them there are one
    /// layer closer; those complete get their `replicated` event (if the
    /// manifest still exists).
    fn blobs_arrived(
        &self,
        batch: &mut WriteBatch,
        out: &mut Outbox<'_>,
        region: &str,
        blobs: &[BlobRef],
    ) -> Result<(), StoreError> {
        // Counts changed by this apply, so one command naming several
        // layers of an image counts each.
        let mut waits: BTreeMap<Vec<u8>, Option<ImageWait>> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for b in blobs {
            if !seen.insert(b.digest.as_str()) {
                continue;
            }
            let prefix = format!("{region}\0{}\0", b.digest).into_bytes();
            for (k, _) in self.scan(CF_BLOB_WAITS, &prefix, None, usize::MAX)? {
                batch.delete_cf(self.cf(CF_BLOB_WAITS), &k);
                let image = format!("{region}\0").into_bytes();
                let image_key = [image.as_slice(), &k[prefix.len()..]].concat();
                if !waits.contains_key(&image_key) {
                    let w = self.get::<ImageWait>(CF_IMAGE_WAITS, &image_key)?;
                    waits.insert(image_key.clone(), w);
                }
                if let Some(Some(w)) = waits.get_mut(&image_key) {
                    w.missing = w.missing.saturating_sub(1);
                }
            }
        }
        for (key, wait) in waits {
            let Some(wait) = wait else { continue };
            if wait.missing > 0 {
                batch.put_cf(self.cf(CF_IMAGE_WAITS), &key, encode(&wait));
                continue;
            }
            batch.delete_cf(self.cf(CF_IMAGE_WAITS), &key);
            // region \0 registry \0 repo \0 digest (repo names hold no NUL)
            let parts: Vec<&[u8]> = key.split(|&b| b == 0).collect();
            let [_, registry, _, _] = parts.as_slice() else {
                continue;
            };
            let registry = String::from_utf8_lossy(registry).into_owned();
            let t = &wait.target;
            if self
                .registry(&registry)
                .manifest(&t.repository, &t.digest)?
                .is_none()
            {
                continue;
            }
            out.emit(
                batch,
                &registry,
                WebhookAction::Replicated,
                wait.target.clone(),
                Some(region.to_string()),
                None,
            )?;
        }
        Ok(())
    }

    // ---- the webhook commands ---------------------------------------------

    pub(crate) fn apply_webhook(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        at_ms: u64,
        cmd: &WebhookCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            WebhookCommand::Create { record } => {
                let key = webhook_key(registry, &record.name);
                if self.exists(CF_WEBHOOKS, &key)? {
                    return Ok(Response::Refused(ApplyError::WebhookExists(
                        record.name.clone(),
                    )));
                }
                batch.put_cf(self.cf(CF_WEBHOOKS), key, encode(record.as_ref()));
                Ok(Response::Ok)
            }
            WebhookCommand::Update { name, change } => {
                let key = webhook_key(registry, name);
                let Some(mut w) = self.get::<WebhookRecord>(CF_WEBHOOKS, &key)? else {
                    return Ok(Response::Refused(ApplyError::WebhookUnknown(name.clone())));
                };
                let before = w.clone();
                if let Some(v) = &change.uri {
                    w.uri = v.clone();
                }
                if let Some(v) = &change.actions {
                    w.actions = v.clone();
                }
                if let Some(v) = &change.scope {
                    w.scope = v.clone();
                }
                if let Some(v) = &change.headers {
                    w.headers = v.clone();
                }
                if let Some(v) = change.enabled {
                    w.enabled = v;
                }
                if let Some(v) = change.format {
                    w.format = v;
                }
                if let Some(v) = &change.secret {
                    w.secret = v.clone();
                }
                if w == before {
                    return Ok(Response::Changed(0));
                }
                batch.put_cf(self.cf(CF_WEBHOOKS), key, encode(&w));
                Ok(Response::Changed(1))
            }
            WebhookCommand::Delete { name } => {
                let key = webhook_key(registry, name);
                if !self.exists(CF_WEBHOOKS, &key)? {
                    return Ok(Response::Refused(ApplyError::WebhookUnknown(name.clone())));
                }
                batch.delete_cf(self.cf(CF_WEBHOOKS), &key);
                let mut prefix = key;
                prefix.push(0);
                let mut removed = 0;
                for (k, _) in self.scan(CF_WEBHOOK_LOG, &prefix, None, usize::MAX)? {
                    batch.delete_cf(self.cf(CF_WEBHOOK_LOG), &k);
                    removed += 1;
                }
                for (k, _) in self.scan(CF_WEBHOOK_QUEUE, &prefix, None, usize::MAX)? {
                    self.unqueue(batch, &k);
                }
                Ok(Response::Removed(removed))
            }
            WebhookCommand::Ping { name } => {
                if !self.exists(CF_WEBHOOKS, &webhook_key(registry, name))? {
                    return Ok(Response::Refused(ApplyError::WebhookUnknown(name.clone())));
                }
                // The event itself is emitted with the others (emit_events).
                Ok(Response::Ok)
            }
            WebhookCommand::Attempted { name, reports } => {
                let n = self.record_attempts(batch, registry, name, reports)?;
                Ok(Response::Changed(n))
            }
            WebhookCommand::AttemptedMany { webhooks } => {
                // One call per webhook: a webhook named twice is merged, so
                // the second list sees the first one's effect.
                let mut by_name: BTreeMap<&str, Vec<AttemptReport>> = BTreeMap::new();
                for w in webhooks {
                    by_name
                        .entry(&w.name)
                        .or_default()
                        .extend(w.reports.iter().cloned());
                }
                let mut n = 0;
                for (name, reports) in by_name {
                    n += self.record_attempts(batch, registry, name, &reports)?;
                }
                Ok(Response::Changed(n))
            }
            WebhookCommand::Redeliver { name, seq } => {
                let key = log_key(registry, name, *seq);
                let Some(mut d) = self.get::<Delivery>(CF_WEBHOOK_LOG, &key)? else {
                    return Ok(Response::Refused(ApplyError::EventUnknown(format!(
                        "{name}/{seq}"
                    ))));
                };
                d.state = DeliveryState::Pending;
                d.tries = 0;
                d.queued_ms = at_ms;
                batch.put_cf(self.cf(CF_WEBHOOK_LOG), &key, encode(&d));
                batch.put_cf(self.cf(CF_WEBHOOK_QUEUE), &key, []);
                Ok(Response::Changed(1))
            }
            WebhookCommand::Expire { before_ms, limit } => {
                self.expire_deliveries(batch, *before_ms, *limit as usize)
            }
        }
    }

    /// Apply one webhook's attempt reports; how many events changed.
    fn record_attempts(
        &self,
        batch: &mut WriteBatch,
        registry: &str,
        name: &str,
        reports: &[AttemptReport],
    ) -> Result<u64, StoreError> {
        // Several reports of one event in one command: each sees
        // the previous one's effect.
        let mut changed: BTreeMap<u64, (Delivery, bool)> = BTreeMap::new();
        for r in reports {
            let key = log_key(registry, name, r.seq);
            let (d, mut modified) = match changed.remove(&r.seq) {
                Some((d, m)) => (Some(d), m),
                None => (self.get::<Delivery>(CF_WEBHOOK_LOG, &key)?, false),
            };
            let Some(mut d) = d else { continue };
            if d.state == DeliveryState::Pending {
                if d.attempts.len() >= ATTEMPTS_KEPT {
                    // Keep the first attempts and the latest.
                    d.attempts.remove(ATTEMPTS_KEPT / 2);
                }
                d.attempts.push(r.attempt.clone());
                d.tries = d.tries.saturating_add(1);
                d.state = match r.outcome {
                    Outcome::Delivered => DeliveryState::Delivered,
                    Outcome::Retry => DeliveryState::Pending,
                    Outcome::Dead => DeliveryState::Dead,
                };
                modified = true;
            }
            changed.insert(r.seq, (d, modified));
        }
        let mut n = 0;
        for (seq, (d, modified)) in changed {
            if !modified {
                continue;
            }
            let key = log_key(registry, name, seq);
            if d.state != DeliveryState::Pending {
                self.unqueue(batch, &key);
            }
            batch.put_cf(self.cf(CF_WEBHOOK_LOG), &key, encode(&d));
            n += 1;
        }
        Ok(n)
    }

    /// Per webhook, oldest first, until an event queued at or after
    /// `before_ms` (events are queued in time order).
    fn expire_deliveries(
        &self,
        batch: &mut WriteBatch,
        before_ms: u64,
        limit: usize,
    ) -> Result<Response, StoreError> {
        let mut removed = 0u64;
        for (hook_key, _) in self.scan(CF_WEBHOOKS, b"", None, usize::MAX)? {
            if hook_key.first() == Some(&0) {
                continue;
            }
            let mut prefix = hook_key.to_vec();
            prefix.push(0);
            let mut after: Option<Vec<u8>> = None;
            'hook: loop {
                let page = self.scan(CF_WEBHOOK_LOG, &prefix, after.as_deref(), 256)?;
                if page.is_empty() {
                    break;
                }
                for (k, v) in &page {
                    let d: Delivery = decode(CF_WEBHOOK_LOG, v)?;
                    if d.queued_ms >= before_ms || removed as usize >= limit {
                        break 'hook;
                    }
                    if d.state != DeliveryState::Pending {
                        batch.delete_cf(self.cf(CF_WEBHOOK_LOG), k);
                        removed += 1;
                    }
                }
                after = page.last().map(|(k, _)| k.to_vec());
            }
        }
        Ok(Response::Removed(removed))
    }

    // ---- queries ------------------------------------------------------------

    /// The webhooks of `registry`, by name.
    pub fn webhooks(&self, registry: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        self.scan(CF_WEBHOOKS, &registry_prefix(registry), None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(CF_WEBHOOKS, v))
            .collect()
    }

    pub fn webhook(&self, registry: &str, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.get(CF_WEBHOOKS, &webhook_key(registry, name))
    }

    /// Take an event off its webhook's queue (counted, see
    /// `QUEUE_COMPACT_AFTER_DELETES`).
    fn unqueue(&self, batch: &mut WriteBatch, key: &[u8]) {
        batch.delete_cf(self.cf(CF_WEBHOOK_QUEUE), key);
        self.queue_deletes.deleted(1);
    }

    /// Compact the queue if enough was taken off it since the last time,
    /// so reads from its front do not step over every deletion.
    fn compact_queue_if_churned(&self) {
        self.queue_deletes
            .compact_if_due(self.db(), self.cf(CF_WEBHOOK_QUEUE), None, None);
    }

    /// Every webhook with pending events, as (registry, webhook): the
    /// deliverer's work list, read every poll. Blocking: it compacts the
    /// queue first when enough was delivered since the last time.
    pub fn webhooks_with_pending(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.compact_queue_if_churned();
        let mut out: Vec<(String, String)> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(CF_WEBHOOK_QUEUE, b"", after.as_deref(), 1)?;
            let Some((k, _)) = page.first() else {
                return Ok(out);
            };
            let mut parts = k.split(|&b| b == 0);
            let registry = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
            // Skip the rest of this webhook's queue in one seek.
            let mut next = webhook_key(&registry, &name);
            next.push(1);
            out.push((registry.into_owned(), name.into_owned()));
            after = Some(next);
        }
    }

    /// The oldest `limit` pending events of a webhook, in order (the
    /// deliverer's `webhooks_with_pending` keeps the deletions in front of
    /// them compacted).
    pub fn pending(
        &self,
        registry: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut prefix = webhook_key(registry, name);
        prefix.push(0);
        let mut out = Vec::new();
        for (k, _) in self.scan(CF_WEBHOOK_QUEUE, &prefix, None, limit)? {
            if let Some(d) = self.get(CF_WEBHOOK_LOG, &k)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// A webhook's log, newest first, `limit` events from before `before`
    /// (a seq; `None`: the newest).
    pub fn deliveries(
        &self,
        registry: &str,
        name: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut prefix = webhook_key(registry, name);
        prefix.push(0);
        let end = match before {
            Some(seq) => log_key(registry, name, seq),
            None => [prefix.as_slice(), &[0xff]].concat(),
        };
        let mut out = Vec::new();
        let iter = self.db().iterator_cf(
            self.cf(CF_WEBHOOK_LOG),
            rocksdb::IteratorMode::From(&end, rocksdb::Direction::Reverse),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if *k == *end {
                continue;
            }
            out.push(decode(CF_WEBHOOK_LOG, &v)?);
        }
        Ok(out)
    }

    /// The seq of event `id` in a webhook's log.
    pub fn delivery_seq(
        &self,
        registry: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut prefix = webhook_key(registry, name);
        prefix.push(0);
        for (_, v) in self.scan(CF_WEBHOOK_LOG, &prefix, None, usize::MAX)? {
            let d: Delivery = decode(CF_WEBHOOK_LOG, &v)?;
            if d.event.id == id {
                return Ok(Some(d.event.seq));
            }
        }
        Ok(None)
    }

    /// Images still missing layers in `region` (for `replication` views).
    pub fn images_waiting_in(
        &self,
        region: &str,
        limit: usize,
    ) -> Result<Vec<ImageWait>, StoreError> {
        let prefix = format!("{region}\0").into_bytes();
        self.scan(CF_IMAGE_WAITS, &prefix, None, limit)?
            .iter()
            .map(|(_, v)| decode(CF_IMAGE_WAITS, v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_REGISTRY as R;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn apply(s: &MetaStore, cmd: Command) -> Response {
        let env = Envelope::new(R, cmd, 1_000).with_origin(Some(Origin {
            id: "req-1".into(),
            host: "reg.example".into(),
            method: "PUT".into(),
            useragent: "docker/27".into(),
        }));
        s.apply(&env, &[]).unwrap()
    }

    fn hook(name: &str, actions: &[WebhookAction], scope: Option<&str>) -> Command {
        Command::Webhook(WebhookCommand::Create {
            record: Box::new(WebhookRecord {
                name: name.into(),
                uri: "http://127.0.0.1:1/x".into(),
                actions: actions.to_vec(),
                scope: scope.map(Into::into),
                headers: vec![],
                enabled: true,
                format: EventFormat::Default,
                secret: None,
                created_ms: 1,
            }),
        })
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn push(repo: &str, tag: &str, layer: char, regions: &[&str]) -> Command {
        let layer = BlobRef {
            digest: digest(layer),
            size: 10,
        };
        Command::PutManifest(Box::new(PutManifest {
            repo: repo.into(),
            digest: digest('m'),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            raw: b"{\"m\":1}".to_vec(),
            tag: Some(tag.into()),
            blobs: vec![layer.clone()],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: None,
            now_ms: 1_000,
            new_links: vec![layer],
            region: "r1".into(),
            replica_regions: regions.iter().map(|r| r.to_string()).collect(),
        }))
    }

    fn log(s: &MetaStore, name: &str) -> Vec<Delivery> {
        s.deliveries(R, name, None, 100).unwrap()
    }

    #[test]
    fn a_push_checked_against_its_tier_has_its_event_like_any() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        let gated = Command::Gated {
            tiers: Box::new(crate::tiers::uniform_table(None)),
            cmd: Box::new(push("app", "v1", 'a', &[])),
        };
        assert_eq!(apply(&s, gated), Response::Ok);
        let a = log(&s, "hooka");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].event.action, WebhookAction::Push);
        assert_eq!(a[0].event.target.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn a_push_is_one_event_with_one_id_for_every_matching_webhook() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        apply(
            &s,
            hook(
                "hookb",
                &[WebhookAction::Push, WebhookAction::Delete],
                Some("app:*"),
            ),
        );
        apply(&s, hook("other", &[WebhookAction::Push], Some("web:*")));
        apply(&s, hook("deletes", &[WebhookAction::Delete], None));
        assert_eq!(apply(&s, push("app", "v1", 'a', &[])), Response::Ok);
        let (a, b) = (log(&s, "hooka"), log(&s, "hookb"));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert!(log(&s, "other").is_empty() && log(&s, "deletes").is_empty());
        let e = &a[0].event;
        assert_eq!(e.id, b[0].event.id);
        assert_eq!(e.action, WebhookAction::Push);
        assert_eq!(e.target.repository, "app");
        assert_eq!(e.target.tag.as_deref(), Some("v1"));
        assert_eq!(e.target.digest, digest('m'));
        assert_eq!(e.target.size, 7);
        assert_eq!(e.request.as_ref().unwrap().useragent, "docker/27");
        assert_eq!(a[0].state, DeliveryState::Pending);
        assert_eq!(
            s.webhooks_with_pending().unwrap(),
            vec![
                (R.to_string(), "hooka".to_string()),
                (R.to_string(), "hookb".to_string())
            ]
        );
        // The next event has another id; a delete by tag names the tag.
        apply(
            &s,
            Command::DeleteTag {
                repo: "app".into(),
                tag: "v1".into(),
            },
        );
        let b = log(&s, "hookb");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].event.action, WebhookAction::Delete);
        assert_ne!(b[0].event.id, b[1].event.id);
        assert_eq!(log(&s, "deletes").len(), 1);
    }

    #[test]
    fn a_refused_push_and_a_disabled_webhook_have_no_event() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        // The manifest names a blob nobody uploaded.
        let mut bad = push("app", "v1", 'a', &[]);
        if let Command::PutManifest(p) = &mut bad {
            p.new_links.clear();
        }
        assert!(matches!(apply(&s, bad), Response::Refused(_)));
        assert!(log(&s, "hooka").is_empty());
        let off = WebhookChange {
            enabled: Some(false),
            ..WebhookChange::default()
        };
        apply(
            &s,
            Command::Webhook(WebhookCommand::Update {
                name: "hooka".into(),
                change: off,
            }),
        );
        apply(&s, push("app", "v1", 'a', &[]));
        assert!(log(&s, "hooka").is_empty());
    }

    #[test]
    fn attempts_are_recorded_until_delivered_and_late_reports_are_ignored() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        apply(&s, push("app", "v1", 'a', &[]));
        let seq = log(&s, "hooka")[0].event.seq;
        let report = |status: u16, outcome| AttemptReport {
            seq,
            attempt: Attempt {
                status: Some(status),
                ..Attempt::default()
            },
            outcome,
        };
        let attempted = |reports| {
            Command::Webhook(WebhookCommand::Attempted {
                name: "hooka".into(),
                reports,
            })
        };
        apply(
            &s,
            attempted(vec![
                report(500, Outcome::Retry),
                report(500, Outcome::Retry),
            ]),
        );
        apply(&s, attempted(vec![report(200, Outcome::Delivered)]));
        let d = &log(&s, "hooka")[0];
        assert_eq!(d.state, DeliveryState::Delivered);
        assert_eq!(d.attempts.len(), 3);
        assert!(s.webhooks_with_pending().unwrap().is_empty());
        // A deposed leader's report of the same event changes nothing.
        assert_eq!(
            apply(&s, attempted(vec![report(500, Outcome::Dead)])),
            Response::Changed(0)
        );
        assert_eq!(log(&s, "hooka")[0].state, DeliveryState::Delivered);
        assert_eq!(log(&s, "hooka")[0].attempts.len(), 3);
        // Re-sent: pending again with a fresh bound.
        apply(
            &s,
            Command::Webhook(WebhookCommand::Redeliver {
                name: "hooka".into(),
                seq,
            }),
        );
        let d = &log(&s, "hooka")[0];
        assert_eq!((d.state, d.tries), (DeliveryState::Pending, 0));
        assert_eq!(s.pending(R, "hooka", 10).unwrap().len(), 1);
    }

    #[test]
    fn one_command_records_attempts_of_several_webhooks() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        apply(&s, hook("hookb", &[WebhookAction::Push], None));
        apply(&s, push("app", "v1", 'a', &[]));
        let seq = log(&s, "hooka")[0].event.seq;
        let report = |status: u16, outcome| AttemptReport {
            seq,
            attempt: Attempt {
                status: Some(status),
                ..Attempt::default()
            },
            outcome,
        };
        let of = |name: &str, reports| WebhookAttempts {
            name: name.into(),
            reports,
        };
        // hooka is named twice: its second list sees the first's effect.
        let cmd = Command::Webhook(WebhookCommand::AttemptedMany {
            webhooks: vec![
                of("hooka", vec![report(500, Outcome::Retry)]),
                of("hookb", vec![report(200, Outcome::Delivered)]),
                of("hooka", vec![report(200, Outcome::Delivered)]),
            ],
        });
        assert_eq!(apply(&s, cmd), Response::Changed(2));
        let a = &log(&s, "hooka")[0];
        assert_eq!((a.state, a.attempts.len()), (DeliveryState::Delivered, 2));
        let b = &log(&s, "hookb")[0];
        assert_eq!((b.state, b.attempts.len()), (DeliveryState::Delivered, 1));
        assert!(s.webhooks_with_pending().unwrap().is_empty());
    }

    #[test]
    fn replicated_events_come_once_per_region_when_its_last_layer_lands() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Replicated], None));
        apply(&s, push("app", "v1", 'a', &["r1", "r2", "r3"]));
        // The pushing region holds every layer: complete there at once.
        let regions = |s: &MetaStore| -> Vec<String> {
            let mut r: Vec<String> = log(s, "hooka")
                .into_iter()
                .map(|d| d.event.region.unwrap())
                .collect();
            r.sort();
            r
        };
        assert_eq!(regions(&s), ["r1"]);
        assert_eq!(s.images_waiting_in("r2", 10).unwrap().len(), 1);
        let copied = |region: &str| Command::BlobsReplicated {
            region: region.into(),
            blobs: vec![BlobRef {
                digest: digest('a'),
                size: 10,
            }],
        };
        apply(&s, copied("r2"));
        assert_eq!(regions(&s), ["r1", "r2"]);
        // A second copy report of the same layer: no second event.
        apply(&s, copied("r2"));
        assert_eq!(regions(&s), ["r1", "r2"]);
        // Deleted before its layer reached r3: no event for it there.
        apply(
            &s,
            Command::DeleteManifest {
                repo: "app".into(),
                digest: digest('m'),
            },
        );
        apply(&s, copied("r3"));
        assert_eq!(regions(&s), ["r1", "r2"]);
        assert!(s.images_waiting_in("r3", 10).unwrap().is_empty());
    }

    #[test]
    fn helm_charts_give_chart_events_and_scopes_match_like_the_cloud_registry() {
        let (_d, s) = store();
        apply(&s, hook("charts", &[WebhookAction::ChartPush], None));
        apply(&s, hook("images", &[WebhookAction::Push], None));
        let mut chart = push("charts/web", "1.0.0", 'c', &[]);
        if let Command::PutManifest(p) = &mut chart {
            p.artifact_type = Some(HELM_CONFIG_MEDIA_TYPE.into());
        }
        apply(&s, chart);
        assert_eq!(log(&s, "charts").len(), 1);
        assert!(log(&s, "images").is_empty());

        assert!(scope_matches("app", "app", Some("latest")));
        assert!(!scope_matches("app", "app", Some("v1")));
        assert!(scope_matches("app:*", "app", Some("v1")));
        assert!(scope_matches("app:*", "app", None));
        assert!(!scope_matches("app:v1", "app", None));
        assert!(scope_matches("team/*:v*", "team/a/b", Some("v2")));
        assert!(!scope_matches("team/*:v*", "teams/a", Some("v2")));
        assert!(scope_matches("*:*", "x", Some("y")));
    }

    #[test]
    fn deleting_a_webhook_removes_its_log_and_queue() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        apply(&s, push("app", "v1", 'a', &[]));
        assert_eq!(
            apply(
                &s,
                Command::Webhook(WebhookCommand::Delete {
                    name: "hooka".into()
                })
            ),
            Response::Removed(1)
        );
        assert!(log(&s, "hooka").is_empty());
        assert!(s.webhooks_with_pending().unwrap().is_empty());
    }

    #[test]
    fn expiry_removes_old_finished_events_and_keeps_pending_ones() {
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        apply(&s, push("app", "v1", 'a', &[]));
        apply(&s, push("app", "v2", 'a', &[]));
        let first = log(&s, "hooka")[1].event.seq;
        apply(
            &s,
            Command::Webhook(WebhookCommand::Attempted {
                name: "hooka".into(),
                reports: vec![AttemptReport {
                    seq: first,
                    attempt: Attempt::default(),
                    outcome: Outcome::Dead,
                }],
            }),
        );
        let expire = |before_ms| {
            Command::Webhook(WebhookCommand::Expire {
                before_ms,
                limit: 10,
            })
        };
        assert_eq!(apply(&s, expire(1_000)), Response::Removed(0));
        assert_eq!(apply(&s, expire(2_000)), Response::Removed(1));
        let left = log(&s, "hooka");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state, DeliveryState::Pending);
    }

    /// An envelope and a push as the release before webhooks wrote them:
    /// no `origin`, no `replica_regions`.
    #[test]
    fn entries_written_before_webhooks_still_decode() {
        #[derive(Serialize)]
        struct OldPut {
            repo: String,
            digest: String,
            media_type: String,
            #[serde(with = "serde_bytes")]
            raw: Vec<u8>,
            tag: Option<String>,
            blobs: Vec<BlobRef>,
            children: Vec<String>,
            subject: Option<String>,
            artifact_type: Option<String>,
            annotations_json: Option<String>,
            now_ms: u64,
            new_links: Vec<BlobRef>,
            region: String,
        }
        #[derive(Serialize)]
        enum OldCommand {
            PutManifest(Box<OldPut>),
        }
        #[derive(Serialize)]
        struct OldEnvelope {
            version: u32,
            request_id: Option<String>,
            registry: String,
            at_ms: u64,
            cmd: OldCommand,
        }
        let old = OldEnvelope {
            version: 2,
            request_id: Some("r:1".into()),
            registry: R.into(),
            at_ms: 5,
            cmd: OldCommand::PutManifest(Box::new(OldPut {
                repo: "app".into(),
                digest: digest('m'),
                media_type: "m".into(),
                raw: vec![1],
                tag: None,
                blobs: vec![],
                children: vec![],
                subject: None,
                artifact_type: None,
                annotations_json: None,
                now_ms: 5,
                new_links: vec![],
                region: "r1".into(),
            })),
        };
        let env: Envelope = crate::codec::decode(&crate::codec::encode(&old)).unwrap();
        assert_eq!(env.origin, None);
        let Command::PutManifest(p) = env.cmd else {
            panic!("not a push")
        };
        assert!(p.replica_regions.is_empty());
        assert_eq!(p.repo, "app");
    }

    // Reading the queue does not step over every event delivered before
    // (counted by RocksDB, not timed): past QUEUE_COMPACT_AFTER_DELETES
    // deletions the deliverer's next read compacts them away first.
    #[test]
    fn reading_a_busy_queue_does_not_step_over_what_was_delivered() {
        use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
        let (_d, s) = store();
        apply(&s, hook("hooka", &[WebhookAction::Push], None));
        let total = QUEUE_COMPACT_AFTER_DELETES + 2_000;
        for i in 0..total {
            apply(&s, push("app", &format!("v{i}"), 'a', &[]));
        }
        let seqs: Vec<u64> = s
            .pending(R, "hooka", usize::MAX)
            .unwrap()
            .iter()
            .map(|d| d.event.seq)
            .collect();
        assert_eq!(seqs.len() as u64, total);
        // Every event but the last delivered, a thousand per command.
        let (done, last) = seqs.split_at(seqs.len() - 1);
        for chunk in done.chunks(1_000) {
            let reports = chunk
                .iter()
                .map(|&seq| AttemptReport {
                    seq,
                    attempt: Attempt {
                        status: Some(200),
                        ..Attempt::default()
                    },
                    outcome: Outcome::Delivered,
                })
                .collect();
            apply(
                &s,
                Command::Webhook(WebhookCommand::Attempted {
                    name: "hooka".into(),
                    reports,
                }),
            );
        }
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        ctx.reset();
        let with_pending = s.webhooks_with_pending().unwrap();
        let first = ctx.metric(PerfMetric::InternalDeleteSkippedCount);
        ctx.reset();
        let pending = s.pending(R, "hooka", 10).unwrap();
        let second = ctx.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert_eq!(with_pending, vec![(R.to_string(), "hooka".to_string())]);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].event.seq, last[0]);
        assert!(
            first + second < 1_000,
            "stepped over {first} + {second} deletions ({} events were delivered)",
            done.len()
        );
    }
}
