//! Last-pull times for keep policies ("delete tags not pulled for D
//! days"), gathered in memory and written in one command per registry and
//! flush, never one Raft write per pull. A node that dies loses at most one
//! flush interval of pull times: a tag pulled then looks that much staler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wharf_meta::{Command, LifecycleCommand, Pull};

use crate::{Service, ServiceResult};

/// Distinct (registry, repository, reference) pulls kept between flushes,
/// at most: beyond that, new ones wait for the next flush's room (a busy
/// node's memory stays bounded).
const PULLS_KEPT: usize = 100_000;
/// Pulls per command.
const PULLS_PER_COMMAND: usize = 512;

type Key = (String, String, String);

/// Pulls seen since the last flush: (registry, repository, reference) →
/// the latest time.
#[derive(Default)]
pub struct PullLog {
    seen: Mutex<HashMap<Key, u64>>,
}

impl PullLog {
    pub fn record(&self, registry: &str, repo: &str, reference: &str, at_ms: u64) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let key = (
            registry.to_string(),
            repo.to_string(),
            reference.to_string(),
        );
        if seen.len() >= PULLS_KEPT && !seen.contains_key(&key) {
            return;
        }
        let at = seen.entry(key).or_default();
        *at = (*at).max(at_ms);
    }

    fn take(&self) -> HashMap<Key, u64> {
        self.seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    fn put_back(&self, pulls: HashMap<Key, u64>) {
        for ((registry, repo, reference), at) in pulls {
            self.record(&registry, &repo, &reference, at);
        }
    }
}

impl Service {
    /// Write the pulls seen since the last flush; the number of tags whose
    /// last-pull time moved. Pulls by digest count for the tags naming
    /// the digest now. What cannot be written now is kept for the next.
    pub async fn flush_pulls(self: &Arc<Self>) -> ServiceResult<u64> {
        let seen = self.pulls.take();
        if seen.is_empty() {
            return Ok(0);
        }
        let mut by_registry: HashMap<String, Vec<Pull>> = HashMap::new();
        for ((registry, repo, reference), at_ms) in &seen {
            let tags = if reference.contains(':') {
                self.consensus
                    .meta()
                    .registry(registry)
                    .tags_of(repo, reference)?
            } else {
                vec![reference.clone()]
            };
            let pulls = by_registry.entry(registry.clone()).or_default();
            pulls.extend(tags.into_iter().map(|tag| Pull {
                repo: repo.clone(),
                tag,
                at_ms: *at_ms,
            }));
        }
        let mut changed = 0;
        for (registry, pulls) in by_registry {
            let handle = self.registry(&registry);
            for chunk in pulls.chunks(PULLS_PER_COMMAND) {
                let cmd = Command::Lifecycle(LifecycleCommand::RecordPulls {
                    pulls: chunk.to_vec(),
                });
                match handle.write(cmd).await {
                    Ok(n) => changed += n,
                    Err(e) => {
                        self.pulls.put_back(seen);
                        return Err(e);
                    }
                }
            }
        }
        Ok(changed)
    }
}
