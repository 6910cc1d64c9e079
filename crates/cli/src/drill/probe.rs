//! The drill's probe: pushes small images into a region and pulls, from
//! each region, images another region pushed, the way a user's CI and
//! deployments would. Every operation is recorded with its start and end,
//! so the report can say when writes stopped and resumed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::Serialize;
use tokio::sync::watch;
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

    pub fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        match &self.login {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
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

    async fn upload(&self, base: &str, bytes: Vec<u8>) -> Result<Digest, String> {
        let digest = Digest::sha256_of(&bytes);
        let url = format!(
            "{base}/v2/{}/blobs/uploads/?digest={digest}",
            self.repository
        );
        let resp = self
            .request(reqwest::Method::POST, url)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("blob upload: {e}"))?;
        expect(resp, 201, "blob upload").await?;
        Ok(digest)
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
        let (config_size, layer_size) = (config.len(), layer.len());
        let config_digest = self.upload(base, config).await?;
        let layer_digest = self.upload(base, layer).await?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest.to_string(),
                "size": layer_size,
            }],
        }))
        .map_err(|e| e.to_string())?;
        let url = format!("{base}/v2/{}/manifests/{tag}", self.repository);
        let resp = self
            .request(reqwest::Method::PUT, url)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .map_err(|e| format!("manifest push: {e}"))?;
        expect(resp, 201, "manifest push").await?;
        Ok(Image {
            region: region.to_string(),
            tag: tag.to_string(),
            manifest,
            blobs: vec![config_digest, layer_digest],
            acked_ms: self.ms(),
        })
    }

    /// Pull `image` through the region at `base`: the manifest must be the
    /// bytes pushed, and every blob must match its digest.
    pub async fn pull(&self, base: &str, image: &Image) -> Result<(), String> {
        let url = format!("{base}/v2/{}/manifests/{}", self.repository, image.tag);
        let resp = self
            .request(reqwest::Method::GET, url)
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .map_err(|e| format!("manifest pull: {e}"))?;
        let body = expect(resp, 200, "manifest pull").await?;
        if body != image.manifest {
            return Err(format!(
                "manifest {} differs from the one pushed",
                image.tag
            ));
        }
        for digest in &image.blobs {
            let url = format!("{base}/v2/{}/blobs/{digest}", self.repository);
            let resp = self
                .request(reqwest::Method::GET, url)
                .send()
                .await
                .map_err(|e| format!("blob pull: {e}"))?;
            let bytes = expect(resp, 200, "blob pull").await?;
            if Digest::sha256_of(&bytes) != *digest {
                return Err(format!("blob {digest}: bytes do not match the digest"));
            }
        }
        Ok(())
    }
}

/// The body of a response with the expected status, or why not.
async fn expect(resp: reqwest::Response, status: u16, what: &str) -> Result<Vec<u8>, String> {
    let got = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the answer: {e}"))?;
    if got != status {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        return Err(format!(
            "{what}: HTTP {got}{}{}",
            if text.is_empty() { "" } else { ": " },
            &text[..text.len().min(200)]
        ));
    }
    Ok(body.to_vec())
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
