//! The background scrub of this region's blobs (see `wharf_scrub`): a pass
//! over every blob the region holds at `scrub.mib_per_s`, then a pause of
//! `scrub.interval_s`; progress is reported to the cluster every half
//! minute and at the end of each pass, for `wharf scrub status`.

use std::time::{Duration, Instant};

use wharf_meta::{Command, ScrubCommand, DEFAULT_REGISTRY};
use wharf_netem::RateLimiter;

use crate::shutdown::Stop;
use crate::state::App;

/// Blobs looked at per step (between checks for stop).
const STEP_BLOBS: usize = 16;
const REPORT_EVERY: Duration = Duration::from_secs(30);

pub async fn scrubber(app: App, bytes_per_s: u64, interval: Duration, mut stop: Stop) {
    let pace = RateLimiter::new(bytes_per_s);
    let mut cursor: Option<String> = None;
    let (mut blobs, mut bytes) = (0u64, 0u64);
    let mut reported = Instant::now();
    loop {
        // Another node of the region scrubs its shared store.
        if !app.region_role.held() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.wait() => return,
            }
        }
        let step = tokio::select! {
            s = wharf_scrub::step(&app.service, &mut cursor, &pace, STEP_BLOBS) => s,
            _ = stop.wait() => return,
        };
        let step = match step {
            Ok(s) => s,
            // No quorum for a report, a disk error: try again later.
            Err(e) => {
                tracing::warn!(error = %e, "scrub: step failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.wait() => return,
                }
            }
        };
        blobs += step.blobs;
        bytes += step.bytes;
        crate::metrics::Metrics::add(&app.metrics.scrub_bytes_verified, step.bytes);
        crate::metrics::Metrics::add(&app.metrics.scrub_corrupt, step.corrupt);
        if step.finished || reported.elapsed() >= REPORT_EVERY {
            let cmd = Command::Scrub(ScrubCommand::Progress {
                region: app.region.clone(),
                blobs,
                bytes,
                pass_finished: step.finished,
                now_ms: crate::state::now_ms(),
            });
            match app.service.registry(DEFAULT_REGISTRY).write(cmd).await {
                Ok(_) => (blobs, bytes) = (0, 0),
                Err(e) => tracing::debug!(error = %e, "scrub: progress not reported yet"),
            }
            reported = Instant::now();
        }
        if step.finished {
            tracing::info!("scrub: pass over this region's blobs finished");
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait() => return,
            }
        }
    }
}
