//! A run's build context, fetched into its working directory before its
//! first step: an uploaded archive (an OCI artifact of the run's registry,
//! read through this node's own registry API with a token for the
//! requester, so a copy not yet in this region is fetched from one that
//! has it, and its digest is checked), a git repository cloned at a ref,
//! or a tar.gz downloaded; archives unpacked with every entry kept inside
//! the directory and the bytes bounded by `tasks.max_context_mib`.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use wharf_oci::Digest;
use wharf_tasks::context::Source;
use wharf_tasks::runner::LogSink;

use crate::state::AppState;

/// A fetched context: the directory builds start from, and the commit of
/// a git source.
pub struct Fetched {
    pub dir: PathBuf,
    pub git_commit: Option<String>,
}

/// Who the run acts for, to read an uploaded context as them.
pub struct Requester<'a> {
    pub registry: &'a str,
    pub subject: &'a wharf_auth::Subject,
}

/// The base URL of this node's own HTTP API.
pub fn own_url(app: &AppState) -> Option<String> {
    let me = app.consensus.node_id();
    app.consensus
        .members()
        .into_iter()
        .find(|(id, _)| *id == me)
        .map(|(_, n)| n.http.trim_end_matches('/').to_string())
}

/// A token for `subject` to `actions` repository `repo` of `registry`.
pub(crate) fn token_for(
    app: &AppState,
    who: &Requester,
    repo: &str,
    actions: &[&str],
) -> Result<String, String> {
    let meta = app.consensus.meta();
    let reg = meta.registry(who.registry);
    let grant = wharf_auth::Grant {
        kind: "repository".into(),
        name: repo.to_string(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    };
    app.auth
        .issue(
            &reg,
            who.subject,
            vec![grant],
            wharf_auth::TokenUse::Access,
            wharf_consensus::now_unix_ms(),
        )
        .map(|(t, _)| t)
        .map_err(|e| format!("a token to read the context: {e}"))
}

/// Fetch `source` into `work/context`; progress and failures go to `log`.
pub async fn fetch(
    app: &AppState,
    who: &Requester<'_>,
    source: &Source,
    work: &Path,
    limit: u64,
    log: &dyn LogSink,
) -> Result<Fetched, String> {
    let dir = work.join("context");
    match source {
        Source::Upload { repository, digest } => {
            log.write(format!("Fetching the uploaded context {repository}@{digest}\n").as_bytes());
            let archive = work.join("context.archive");
            upload(app, who, repository, digest, &archive, limit).await?;
            unpack(&archive, &dir, limit).await?;
            Ok(Fetched {
                dir,
                git_commit: None,
            })
        }
        Source::Archive { url } => {
            log.write(format!("Downloading the context {url}\n").as_bytes());
            let archive = work.join("context.archive");
            download(app, url, &archive, limit).await?;
            unpack(&archive, &dir, limit).await?;
            Ok(Fetched {
                dir,
                git_commit: None,
            })
        }
        Source::Git {
            url,
            reference,
            subdir,
        } => {
            log.write(format!("Cloning {url}\n").as_bytes());
            let commit = clone(url, reference.as_deref(), &dir, log).await?;
            let dir = match subdir {
                Some(s) => dir.join(s),
                None => dir,
            };
            if !dir.is_dir() {
                return Err(format!("the repository has no directory {subdir:?}"));
            }
            Ok(Fetched {
                dir,
                git_commit: Some(commit),
            })
        }
    }
}

/// The uploaded artifact's one layer, streamed to `to` and checked.
async fn upload(
    app: &AppState,
    who: &Requester<'_>,
    repo: &str,
    manifest: &str,
    to: &Path,
    limit: u64,
) -> Result<(), String> {
    let base = own_url(app).ok_or("this node is not a member")?;
    let token = token_for(app, who, repo, &["pull"])?;
    let m = app
        .http
        .get(format!("{base}/v2/{repo}/manifests/{manifest}"))
        .header("accept", wharf_oci::media::OCI_MANIFEST)
        .header(wharf_api::REGISTRY_HEADER, who.registry)
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| format!("reading the context's manifest: {e}"))?;
    if !m.status().is_success() {
        return Err(format!("reading the context's manifest: {}", m.status()));
    }
    let body = m
        .bytes()
        .await
        .map_err(|e| format!("reading the context's manifest: {e}"))?;
    let parsed: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the context's manifest is not JSON: {e}"))?;
    let layer = parsed["layers"]
        .get(0)
        .and_then(|l| l["digest"].as_str())
        .ok_or("the context's manifest has no layer")?;
    let digest: Digest = layer
        .parse()
        .map_err(|e| format!("the context's layer digest: {e}"))?;
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let req = app
        .http
        .get(url)
        .header(wharf_api::REGISTRY_HEADER, who.registry)
        .bearer_auth(&token);
    let got = stream_to(req, to, limit).await?;
    if got != digest {
        return Err(format!("the context archive is {got}, not {digest}"));
    }
    Ok(())
}

async fn download(app: &AppState, url: &str, to: &Path, limit: u64) -> Result<(), String> {
    stream_to(app.http.get(url), to, limit).await.map(|_| ())
}

/// Send `req` and write its body to `to`, at most `limit` bytes; the
/// body's digest.
async fn stream_to(req: reqwest::RequestBuilder, to: &Path, limit: u64) -> Result<Digest, String> {
    let answer = req
        .send()
        .await
        .map_err(|e| format!("fetching the context: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("fetching the context: {}", answer.status()));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("{}: {e}", to.display()))?;
    let mut hasher = wharf_oci::Hasher::new(wharf_oci::digest::Algorithm::Sha256);
    let mut size = 0u64;
    let mut body = answer.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("fetching the context: {e}"))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(format!(
                "the context is larger than the limit of {limit} bytes"
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(hasher.finish())
}

async fn unpack(archive: &Path, dir: &Path, limit: u64) -> Result<(), String> {
    let (archive, dir) = (archive.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
        // The tar framing adds to the files' bytes: allow for it.
        wharf_tasks::context::unpack(f, &dir, limit + limit / 8 + (1 << 20))
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&archive);
        Ok(())
    })
    .await
    .map_err(|e| format!("unpacking the context: {e}"))?
}

/// `git` with its output into `log`; never asks for a password.
async fn git(args: &[&str], log: &dyn LogSink) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running git: {e}"))?;
    log.write(&out.stderr);
    if !out.status.success() {
        return Err(format!("git {} failed", args.first().unwrap_or(&"")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Clone `url` at `reference` into `dir`; the commit checked out.
async fn clone(
    url: &str,
    reference: Option<&str>,
    dir: &Path,
    log: &dyn LogSink,
) -> Result<String, String> {
    let dir_s = dir.display().to_string();
    let shallow = match reference {
        None => {
            git(
                &["clone", "--quiet", "--depth", "1", "--", url, &dir_s],
                log,
            )
            .await
        }
        // A branch or tag: one commit is enough.
        Some(r) => {
            git(
                &[
                    "clone", "--quiet", "--depth", "1", "--branch", r, "--", url, &dir_s,
                ],
                log,
            )
            .await
        }
    };
    if shallow.is_err() {
        // A commit id: the whole history, then that commit.
        let Some(r) = reference else {
            return Err(format!("cloning {url} failed (its messages are above)"));
        };
        let _ = tokio::fs::remove_dir_all(dir).await;
        git(&["clone", "--quiet", "--", url, &dir_s], log)
            .await
            .map_err(|_| format!("cloning {url} failed (its messages are above)"))?;
        git(&["-C", &dir_s, "checkout", "--quiet", r, "--"], log)
            .await
            .map_err(|_| format!("{url} has no branch, tag or commit {r}"))?;
    }
    git(&["-C", &dir_s, "rev-parse", "HEAD"], log).await
}

/// Delete the uploaded context's manifest, as the system (its requester
/// may have lost the right meanwhile; the run owned it).
pub async fn delete_upload(
    app: &AppState,
    registry: &str,
    repository: &str,
    digest: &str,
) -> Result<(), String> {
    let env = wharf_registry::envelope(
        registry,
        wharf_meta::Command::DeleteManifest {
            repo: repository.to_string(),
            digest: digest.to_string(),
        },
        None,
    );
    app.consensus
        .write(env)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
