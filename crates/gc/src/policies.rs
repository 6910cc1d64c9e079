//! A run's first step: each registry's retention (untagged manifests,
//! then keep policies' tags) and recycle-bin purge,
//! before any link is marked, so the blobs of what retention deletes are
//! collected by the same run. Every decision is checked again when its
//! command applies (see `wharf_meta`'s `lifecycle` module).

use wharf_consensus::now_unix_ms;
use wharf_meta::{Command, LifecycleCommand, Response, TagExpiry};
use wharf_registry::{Handle, ServiceResult};

use crate::{paced, Pace, Report, BATCH};

/// Manifests a dry run names at most (the count is always whole).
const LISTED_MAX: usize = 1_000;

/// What the policies of one registry take now, read from this node's state.
struct Due {
    /// (repository, tags keep policies let go, the latest pull that does)
    tags: Vec<(String, Vec<TagExpiry>, Option<u64>)>,
    /// (repository, digests retention deletes)
    expired: Vec<(String, Vec<String>)>,
    /// (repository, bin entries past their period)
    purged: Vec<(String, Vec<String>)>,
    cutoff_ms: u64,
}

fn due(handle: &Handle, now_ms: u64) -> ServiceResult<Due> {
    let meta = handle.meta();
    let policies = meta.policies()?;
    let mut out = Due {
        tags: Vec::new(),
        expired: Vec::new(),
        purged: Vec::new(),
        cutoff_ms: now_ms.saturating_sub(policies.retention.period_ms()),
    };
    if policies.retention.enabled {
        let mut after: Option<String> = None;
        loop {
            let page = meta.repositories(after.as_deref(), 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (repo, _) in page {
                let rules: Vec<_> = policies
                    .keep
                    .iter()
                    .filter(|r| wharf_auth::scope_matches(&r.pattern, &repo))
                    .collect();
                let (tags, pulled_before) = meta.expired_tags(&repo, &rules, now_ms)?;
                if !tags.is_empty() {
                    out.tags.push((repo.clone(), tags, pulled_before));
                }
                let digests = meta.expired_manifests(&repo, now_ms, usize::MAX)?;
                if !digests.is_empty() {
                    out.expired.push((repo, digests));
                }
            }
        }
    }
    // The bin is purged whatever the policy is now: entries keep the
    // period they were deleted under.
    let mut after: Option<String> = None;
    loop {
        let page = meta.repositories_with_deleted(after.as_deref(), 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        for repo in page {
            let digests = meta.purgeable(&repo, now_ms)?;
            if !digests.is_empty() {
                out.purged.push((repo, digests));
            }
        }
    }
    Ok(out)
}

/// Apply retention and purge the bin of `handle`'s registry (a dry run
/// only counts, and names what retention would delete).
pub(crate) async fn apply(
    handle: &Handle,
    pace: Pace,
    report: &mut Report,
    dry_run: bool,
) -> ServiceResult<()> {
    let now_ms = now_unix_ms();
    let due = due(handle, now_ms)?;
    if dry_run {
        for (repo, tags, _) in &due.tags {
            report.run.tags_expired += tags.len() as u64;
            for t in tags {
                if report.expired.len() < LISTED_MAX {
                    report
                        .expired
                        .push(format!("{}/{repo}:{}", handle.name(), t.tag));
                }
            }
        }
        for (repo, digests) in &due.expired {
            report.run.manifests_expired += digests.len() as u64;
            for d in digests {
                if report.expired.len() < LISTED_MAX {
                    report.expired.push(format!("{}/{repo}@{d}", handle.name()));
                }
            }
        }
        report.run.bin_purged += due.purged.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
        return Ok(());
    }
    // Tags first: a manifest they leave untagged is retention's at a
    // later run, once its own period has passed.
    for (repo, tags, pulled_before_ms) in due.tags {
        for chunk in tags.chunks(BATCH) {
            let cmd = Command::Lifecycle(LifecycleCommand::ExpireTags {
                repo: repo.clone(),
                tags: chunk.to_vec(),
                pulled_before_ms,
            });
            if let Response::Removed(n) = paced(handle, pace, cmd).await? {
                report.run.tags_expired += n;
            }
        }
    }
    for (repo, digests) in due.expired {
        for chunk in digests.chunks(BATCH) {
            let cmd = Command::Lifecycle(LifecycleCommand::Expire {
                repo: repo.clone(),
                digests: chunk.to_vec(),
                untagged_before_ms: due.cutoff_ms,
                now_ms: now_unix_ms(),
            });
            if let Response::Removed(n) = paced(handle, pace, cmd).await? {
                report.run.manifests_expired += n;
            }
        }
    }
    for (repo, digests) in due.purged {
        for chunk in digests.chunks(BATCH) {
            let cmd = Command::Lifecycle(LifecycleCommand::Purge {
                repo: repo.clone(),
                digests: chunk.to_vec(),
                now_ms: now_unix_ms(),
            });
            if let Response::Removed(n) = paced(handle, pace, cmd).await? {
                report.run.bin_purged += n;
            }
        }
    }
    Ok(())
}
