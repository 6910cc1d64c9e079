//! Requests served, by registry, kind and UTC day, gathered in memory and
//! written in one command per flush (with the pull times), never one Raft
//! write per request. A node that dies loses at most one flush interval of
//! counts; a flush that fails keeps them for the next. The totals since the
//! node started stay in memory for `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use wharf_meta::{Command, OperationCount, OperationKind, UsageCommand, DAY_MS, DEFAULT_REGISTRY};

use crate::{Service, ServiceResult};

/// Registries counted between flushes, at most (registries are hundreds;
/// beyond this, counts of new ones are dropped).
const KEPT: usize = 10_000;
/// Counts per command.
const PER_COMMAND: usize = 1024;

type Key = (String, u64, OperationKind);

/// One registry's counts, indexed by `OperationKind as usize`.
#[derive(Default)]
struct Counts {
    /// Since this node started.
    total: [u64; 5],
    /// Since the last flush, by day.
    unflushed: BTreeMap<u64, [u64; 5]>,
}

/// Counted on every request: one lock, no allocation once a registry has
/// been seen.
#[derive(Default)]
pub struct OperationLog {
    by_registry: Mutex<HashMap<String, Counts>>,
}

impl OperationLog {
    pub fn record(&self, registry: &str, kind: OperationKind, at_ms: u64) {
        let Ok(mut all) = self.by_registry.lock() else {
            return;
        };
        if !all.contains_key(registry) {
            if all.len() >= KEPT {
                return;
            }
            all.insert(registry.to_string(), Counts::default());
        }
        let Some(counts) = all.get_mut(registry) else {
            return;
        };
        counts.total[kind as usize] += 1;
        counts.unflushed.entry(at_ms / DAY_MS).or_default()[kind as usize] += 1;
    }

    /// Requests this node served since it started, by registry and kind.
    pub fn totals(&self) -> BTreeMap<(String, OperationKind), u64> {
        let Ok(all) = self.by_registry.lock() else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (registry, c) in all.iter() {
            for kind in OperationKind::ALL {
                out.insert((registry.clone(), kind), c.total[kind as usize]);
            }
        }
        out
    }

    fn take(&self) -> Vec<(Key, u64)> {
        let Ok(mut all) = self.by_registry.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (registry, c) in all.iter_mut() {
            for (day, n) in std::mem::take(&mut c.unflushed) {
                for kind in OperationKind::ALL {
                    if n[kind as usize] > 0 {
                        out.push(((registry.clone(), day, kind), n[kind as usize]));
                    }
                }
            }
        }
        out
    }

    fn put_back(&self, counts: impl IntoIterator<Item = (Key, u64)>) {
        let Ok(mut all) = self.by_registry.lock() else {
            return;
        };
        for ((registry, day, kind), n) in counts {
            all.entry(registry)
                .or_default()
                .unflushed
                .entry(day)
                .or_default()[kind as usize] += n;
        }
    }
}

impl Service {
    /// Write the operations counted since the last flush; how many counts.
    pub async fn flush_operations(self: &Arc<Self>) -> ServiceResult<u64> {
        let counts = self.operations.take();
        let mut written = 0;
        for (i, chunk) in counts.chunks(PER_COMMAND).enumerate() {
            let cmd = Command::Usage(UsageCommand::RecordOperations {
                counts: chunk
                    .iter()
                    .map(|((registry, day, kind), n)| OperationCount {
                        registry: registry.clone(),
                        day: *day,
                        kind: *kind,
                        count: *n,
                    })
                    .collect(),
            });
            if let Err(e) = self.registry(DEFAULT_REGISTRY).write(cmd).await {
                self.operations
                    .put_back(counts[i * PER_COMMAND..].iter().cloned());
                return Err(e);
            }
            written += chunk.len() as u64;
        }
        Ok(written)
    }
}
