//! The drill's probe: pushes small images into a region and pulls, from
//! each region, images another region pushed, the way a user's CI and
//! deployments would. Every operation is recorded with its start and end,
//! so the report can say when writes stopped and resumed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::Serialize;
use tokio::sync::watch;
use wharf_client::OciClient;
use wharf_oci::Digest;

/// Longest a single probe request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of random layer per probe image: small, so the drill measures
/// availability, not bandwidth.
const LAYER_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Push,
    Pull,
}

/// One probe operation, times in ms since the drill started.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub region: String,
    pub kind: Kind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An image a probe pushed and had acknowledged.
#[derive(Debug, Clone)]
pub struct Image {
    /// The region that acknowledged it.
    pub region: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Digest>,
    /// When it was acknowledged (ms since the drill started).
    pub acked_ms: u64,
}

/// What every probe shares: how to reach the registry, the clock, and the
/// records.
pub struct Probe {
    pub http: reqwest::Client,
    pub login: Option<(String, String)>,
    pub repository: String,
    pub t0: Instant,
    pub ops: Mutex<Vec<Op>>,
    pub images: Mutex<Vec<Image>>,
}

impl Probe {
    pub fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn record(&self, region: &str, kind: Kind, start_ms: u64, result: &Result<(), String>) {
        let op = Op {
            region: region.to_string(),
            kind,
            start_ms,
            end_ms: self.ms(),
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
        };
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn images(&self) -> Vec<Image> {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A client of the region at `base`, as this probe.
    pub fn client(&self, base: &str) -> OciClient {
        let c = OciClient::new(self.http.clone(), base).with_timeout(REQUEST_TIMEOUT);
        match &self.login {
            Some((u, p)) => c.with_login(u, p),
            None => c,
        }
    }

    /// Push one image (a config and a random layer) tagged `tag` through
    /// the region at `base`.
    pub async fn push(&self, region: &str, base: &str, tag: &str) -> Result<Image, String> {
        let mut layer = vec![0u8; LAYER_BYTES];
        rand::thread_rng().fill_bytes(&mut layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"wharf.drill.tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .map_err(|e| e.to_string())?;
        let pushed = self
            .client(base)
            .push_image(&self.repository, tag, config, vec![layer])
            .await
            .map_err(|e| e.to_string())?;
        Ok(Image {
            region: region.to_string(),
            tag: tag.to_string(),
            manifest: pushed.manifest,
            blobs: pushed.blobs,
            acked_ms: self.ms(),
        })
    }

    /// Pull `image` through the region at `base`: the manifest must be the
    /// bytes pushed, and every blob must match its digest.
    pub async fn pull(&self, base: &str, image: &Image) -> Result<(), String> {
        let client = self.client(base);
        let body = client
            .get_manifest(&self.repository, &image.tag)
            .await
            .map_err(|e| e.to_string())?;
        if body != image.manifest {
            return Err(format!(
                "manifest {} differs from the one pushed",
                image.tag
            ));
        }
        for digest in &image.blobs {
            client
                .get_blob(&self.repository, digest)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Where a probe runs: a region and its endpoint.
#[derive(Debug, Clone)]
pub struct Site {
    pub region: String,
    pub base: String,
}

/// Run `op(n)` for n = 1, 2, ... every `period` until `stop` turns true.
async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut op: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        op(n).await;
    }
}

/// Push into `site` every `period` until `stop` turns true.
pub async fn pusher(probe: Arc<Probe>, site: Site, period: Duration, stop: watch::Receiver<bool>) {
    every(period, stop, |seq| {
        let (probe, site) = (probe.clone(), site.clone());
        async move {
            let tag = format!("{}-{}-{seq}", site.region, probe.t0.elapsed().as_millis());
            let start = probe.ms();
            let result = probe.push(&site.region, &site.base, &tag).await;
            let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
            probe.record(&site.region, Kind::Push, start, &outcome);
            if let Ok(image) = result {
                probe
                    .images
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(image);
            }
        }
    })
    .await;
}

/// Pull, from `site`, images acknowledged by other regions: alternately
/// the newest one (pullable everywhere as soon as acknowledged) and an
/// older one (its blobs must be served even if its region is gone).
pub async fn puller(probe: Arc<Probe>, site: Site, period: Duration, stop: watch::Receiver<bool>) {
    every(period, stop, |n| {
        let (probe, site) = (probe.clone(), site.clone());
        async move {
            let others: Vec<Image> = probe
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|i| i.region != site.region)
                .cloned()
                .collect();
            let Some(newest) = others.last() else { return };
            let image = if n.is_multiple_of(2) {
                newest
            } else {
                &others[(n as usize / 2) % others.len()]
            };
            let start = probe.ms();
            let result = probe.pull(&site.base, image).await;
            probe.record(&site.region, Kind::Pull, start, &result);
        }
    })
    .await;
}
