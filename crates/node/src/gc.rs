//! Garbage collection's background tasks: every node sweeps the files its
//! region is to delete; the leader collects on a schedule. Both stop with
//! the node (a sweep or run cut short resumes from the replicated state).

use std::time::Duration;

use crate::shutdown::Stop;
use crate::state::App;

/// Delete this region's freed files every `every`.
pub async fn sweeper(app: App, every: Duration, mut stop: Stop) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => return,
        }
        // Another node of the region sweeps its shared store.
        if !app.region_role.held() {
            continue;
        }
        // Passes until nothing more is ready, so a large GC drains fast.
        loop {
            match wharf_gc::sweep_once(&app.service, &app.gc).await {
                Ok(s) if s.files + s.kept > 0 => {
                    tracing::info!(
                        files = s.files,
                        bytes = s.bytes,
                        kept = s.kept,
                        waiting = s.waiting,
                        "gc: swept freed blobs"
                    );
                }
                Ok(_) => break,
                // No quorum, a leader change: the entries stay, try later.
                Err(e) => {
                    tracing::debug!(error = %e, "gc: sweep postponed");
                    break;
                }
            }
            if stop.stopped() {
                return;
            }
        }
    }
}

/// On the leader, collect every registry's garbage every `every`.
pub async fn scheduler(app: App, every: Duration, mut stop: Stop) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once: skip it, a node just started.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => return,
        }
        if !app.consensus.is_leader() {
            continue;
        }
        let run = wharf_gc::run(&app.service, None, app.gc, false);
        let result = tokio::select! {
            r = run => r,
            _ = stop.wait() => return,
        };
        match result {
            Ok(r) => tracing::info!(
                run = %r.run.id,
                links_removed = r.run.links_removed,
                blobs_freed = r.run.blobs_freed,
                bytes_freed = r.run.bytes_freed,
                "gc: scheduled run finished"
            ),
            Err(e) => tracing::warn!(error = %e, "gc: scheduled run failed; the next one resumes"),
        }
    }
}

/// Write the pull times and operation counts this node saw every `every`
/// (and once more when the node stops).
pub async fn pull_flusher(app: App, every: Duration, mut stop: Stop) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait() => true,
        };
        // When stopping, a cluster without quorum does not hold the node.
        let bound = if stopping {
            Duration::from_secs(2)
        } else {
            every
        };
        match tokio::time::timeout(bound, app.service.flush_pulls()).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(tags = n, "recorded pull times"),
            Ok(Ok(_)) => {}
            // Kept in memory for the next flush.
            Ok(Err(e)) => tracing::debug!(error = %e, "recording pull times postponed"),
            Err(_) => tracing::debug!("recording pull times timed out"),
        }
        match tokio::time::timeout(bound, app.service.flush_operations()).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(counts = n, "recorded operations"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "recording operations postponed"),
            Err(_) => tracing::debug!("recording operations timed out"),
        }
        if stopping {
            return;
        }
    }
}
