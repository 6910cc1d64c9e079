//! A finished run's log, kept in the registry itself: pushed by its agent
//! as an OCI artifact (`application/vnd.wharf.run.log.v1`) tagged with the
//! run's id in the registry's `wharf-run-logs` repository, so every region
//! serves it (the mover copies it like any layer) after the agent is gone,
//! and removed by the leader once older than `tasks.log_retention_days`
//! (the garbage collector then frees its bytes).

use wharf_meta::{Command, DEFAULT_REGISTRY};
use wharf_oci::Digest;

use super::context::{own_url, token_for, Requester};
use crate::state::AppState;

/// The repository of a registry that run logs are kept in.
pub const LOG_REPOSITORY: &str = "wharf-run-logs";
const LOG_ARTIFACT: &str = "application/vnd.wharf.run.log.v1";
const LOG_MEDIA_TYPE: &str = "text/plain; charset=utf-8";
/// The most of a log kept in the registry: its end (where a failure is)
/// once it grows past this; the agent's file keeps it whole.
pub const LOG_KEEP_MAX: u64 = 64 << 20;

/// Push `log` (the log file's bytes) as run `id`'s log artifact; its
/// manifest digest.
pub async fn store(
    app: &AppState,
    who: &Requester<'_>,
    id: &str,
    log: Vec<u8>,
) -> Result<String, String> {
    let base = own_url(app).ok_or("this node is not a member")?;
    let token = token_for(app, who, LOG_REPOSITORY, &["pull", "push"])?;
    let send = |req: reqwest::RequestBuilder, what: &'static str| {
        let req = req
            .header(wharf_api::REGISTRY_HEADER, who.registry)
            .bearer_auth(&token);
        async move {
            let answer = req.send().await.map_err(|e| format!("{what}: {e}"))?;
            if answer.status().is_success() {
                Ok(())
            } else {
                Err(format!("{what}: {}", answer.status()))
            }
        }
    };
    let upload = |bytes: Vec<u8>| {
        let digest = Digest::sha256_of(&bytes);
        let req = app
            .http
            .post(format!(
                "{base}/v2/{LOG_REPOSITORY}/blobs/uploads/?digest={digest}"
            ))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        (digest, req)
    };
    let size = log.len();
    let (log_digest, req) = upload(log);
    send(req, "uploading the log").await?;
    let (empty_digest, req) = upload(b"{}".to_vec());
    send(req, "uploading the log's config").await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": wharf_oci::media::OCI_MANIFEST,
        "artifactType": LOG_ARTIFACT,
        "config": {
            "mediaType": wharf_oci::media::OCI_EMPTY_CONFIG,
            "digest": empty_digest.to_string(),
            "size": 2
        },
        "layers": [{
            "mediaType": LOG_MEDIA_TYPE,
            "digest": log_digest.to_string(),
            "size": size
        }]
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let digest = Digest::sha256_of(&body);
    let req = app
        .http
        .put(format!("{base}/v2/{LOG_REPOSITORY}/manifests/{id}"))
        .header("content-type", wharf_oci::media::OCI_MANIFEST)
        .body(body);
    send(req, "recording the log").await?;
    Ok(digest.to_string())
}

/// The end of the file at `path`, at most `LOG_KEEP_MAX` bytes.
pub fn tail(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > LOG_KEEP_MAX {
        f.seek(SeekFrom::Start(len - LOG_KEEP_MAX))?;
    }
    let mut out = Vec::new();
    f.take(LOG_KEEP_MAX).read_to_end(&mut out)?;
    Ok(out)
}

/// Run `id`'s kept log, from `offset`: the bytes, or None when the
/// registry has no log for it. Read through this node's registry API as
/// `subject`, so a copy not yet in this region is fetched.
pub async fn read(
    app: &AppState,
    who: &Requester<'_>,
    id: &str,
    offset: u64,
    max: u64,
) -> Result<Option<Vec<u8>>, String> {
    let meta = app.consensus.meta();
    let reg = meta.registry(who.registry);
    let Ok(Some(tag)) = reg.tag(LOG_REPOSITORY, id) else {
        return Ok(None);
    };
    let Ok(Some(m)) = reg.manifest(LOG_REPOSITORY, &tag.digest) else {
        return Ok(None);
    };
    // The config first, then the one layer.
    let Some(layer) = m.blobs.last() else {
        return Ok(None);
    };
    let (digest, size) = (layer.digest.clone(), layer.size);
    if offset >= size {
        return Ok(Some(Vec::new()));
    }
    let base = own_url(app).ok_or("this node is not a member")?;
    let token = token_for(app, who, LOG_REPOSITORY, &["pull"])?;
    let end = (offset + max).min(size) - 1;
    let answer = app
        .http
        .get(format!("{base}/v2/{LOG_REPOSITORY}/blobs/{digest}"))
        .header(wharf_api::REGISTRY_HEADER, who.registry)
        .header("range", format!("bytes={offset}-{end}"))
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| format!("reading the kept log: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("reading the kept log: {}", answer.status()));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| format!("reading the kept log: {e}"))?;
    Ok(Some(bytes.to_vec()))
}

/// On the leader: delete the log artifacts older than `days` in every
/// registry.
pub async fn expire(app: &AppState, days: u32) {
    let keep_ms = u64::from(days) * 86_400_000;
    let now = wharf_consensus::now_unix_ms();
    let meta = app.consensus.meta();
    let registries = match meta.registries() {
        Ok(all) => all.into_iter().map(|r| r.name).collect(),
        Err(_) => vec![DEFAULT_REGISTRY.to_string()],
    };
    for registry in registries {
        let reg = meta.registry(&registry);
        let mut after: Option<String> = None;
        while let Ok(page) = reg.tags(LOG_REPOSITORY, after.as_deref(), 1000) {
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (tag, record) in &page {
                if record.updated_ms + keep_ms >= now {
                    continue;
                }
                let cmd = Command::DeleteManifest {
                    repo: LOG_REPOSITORY.to_string(),
                    digest: record.digest.clone(),
                };
                let env = wharf_registry::envelope(&registry, cmd, None);
                if let Err(e) = app.consensus.write(env).await {
                    tracing::debug!(registry, run = %tag, error = %e, "expiring a run's log");
                }
            }
        }
    }
}
