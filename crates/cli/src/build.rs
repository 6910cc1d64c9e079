//! `wharf build`: build an image from a Dockerfile on the cluster's task
//! agents and push it (the cloud CLI's `acr build`), and the build context
//! every run verb takes: a local directory is packed (its `.dockerignore`
//! honoured), checked against the cluster's limit before anything is
//! sent, and uploaded with progress as an OCI artifact of the registry; a
//! git or tar.gz URL is passed on for the agent to fetch.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::Path;

use clap::Args;
use reqwest::Method;
use wharf_oci::Digest;

use super::client::{Client, RegistryTarget};
use super::output::Format;
use super::run::{follow, Follow};
use crate::CliError;

/// Bytes per upload request of a context.
const CHUNK: usize = 8 << 20;
/// The artifact type of an uploaded context.
const CONTEXT_ARTIFACT: &str = "application/vnd.wharf.build.context.v1";
const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    wharf build -t app:{{.Run.ID}} -t app:latest .\n  \
    wharf build --registry teamone -t web:v2 -f docker/Dockerfile --build-arg V=2 --target runtime ./src\n  \
    wharf build -t app:v1 'https://git.example.com/app.git#main:services/web'\n  \
    wharf build -t app:v1 file:///srv/git/app.git\n\n\
    A tag without a host is in the registry (app:v1 is $Registry/app:v1).\n\
    The build pulls and pushes with your rights. The log ends with the images\n\
    built and the base images they came from, with their digests.\n\
    Exit status: 0 when the build succeeded, 1 otherwise.")]
pub struct BuildArgs {
    #[command(flatten)]
    target: RegistryTarget,
    /// An image to tag the result with (repeatable): app:{{.Run.ID}}.
    #[arg(long = "image", short = 't', value_name = "IMAGE")]
    tags: Vec<String>,
    /// The Dockerfile, relative to the context.
    #[arg(long, short = 'f')]
    file: Option<String>,
    /// NAME=VALUE for the Dockerfile's ARG NAME (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
    /// NAME=VALUE like --build-arg, but sealed in the run's record and
    /// masked in its log (repeatable).
    #[arg(long = "secret-build-arg", value_name = "NAME=VALUE")]
    secret_build_args: Vec<String>,
    /// The stage to build.
    #[arg(long = "target")]
    stage: Option<String>,
    /// linux/amd64.
    #[arg(long)]
    platform: Option<String>,
    /// Build, but do not push.
    #[arg(long)]
    no_push: bool,
    /// Build every layer again.
    #[arg(long)]
    no_cache: bool,
    /// Do not print the build's log.
    #[arg(long)]
    no_logs: bool,
    /// Queue the build and return at once.
    #[arg(long)]
    no_wait: bool,
    /// The whole build's limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// A local directory, a git URL (URL#ref:subdir) or a tar.gz URL.
    context: String,
}

/// `NAME=VALUE` flags as a map.
pub(crate) fn pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for s in items {
        let Some((k, v)) = s.split_once('=') else {
            return Err(CliError::Config(format!("{flag} {s}: not NAME=VALUE")));
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn build(args: BuildArgs) -> Result<(), CliError> {
    let build_args = pairs("--build-arg", &args.build_args)?;
    let secret_build_args = pairs("--secret-build-arg", &args.secret_build_args)?;
    if args.tags.is_empty() && !args.no_push {
        return Err(CliError::Config(
            "give an image to push (-t app:v1), or --no-push".into(),
        ));
    }
    let client = args.target.client()?;
    let json = matches!(args.target.output, Format::Json);
    let context = context(&client, &args.context, args.file.as_deref(), json)
        .await?
        .ok_or_else(|| CliError::Config("a build needs a context, not /dev/null".into()))?;
    let new = wharf_api::NewRun {
        cmd: None,
        file: None,
        values: BTreeMap::new(),
        timeout_s: Some(args.timeout),
        platform: args.platform.clone(),
        context: Some(context),
        build: Some(wharf_api::QuickBuild {
            tags: args.tags.clone(),
            file: args.file.clone(),
            build_args,
            target: args.stage.clone(),
            no_push: args.no_push,
            no_cache: args.no_cache,
            secret_build_args,
        }),
    };
    follow(
        &client,
        &new,
        Follow {
            json,
            no_logs: args.no_logs,
            no_wait: args.no_wait,
        },
    )
    .await
}

/// The context as a run names it: none for `/dev/null`, a URL as given,
/// a local directory uploaded (`quiet`: no progress on stderr).
pub async fn context(
    client: &Client,
    text: &str,
    dockerfile: Option<&str>,
    quiet: bool,
) -> Result<Option<String>, CliError> {
    if text == "/dev/null" {
        return Ok(None);
    }
    let dir = Path::new(text);
    if !dir.is_dir() {
        // Checked by the cluster, which says what it takes.
        if text.contains("://") || text.starts_with("git@") {
            return Ok(Some(text.to_string()));
        }
        return Err(CliError::Config(format!(
            "context {text:?} is neither a directory nor a URL (git or tar.gz)"
        )));
    }
    upload(client, dir, dockerfile.unwrap_or("Dockerfile"), quiet)
        .await
        .map(Some)
}

fn progress(quiet: bool, line: &str) {
    if !quiet {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}");
        let _ = err.flush();
    }
}

/// Pack `dir` and upload it as an artifact; `oci://REPOSITORY@DIGEST`.
async fn upload(
    client: &Client,
    dir: &Path,
    dockerfile: &str,
    quiet: bool,
) -> Result<String, CliError> {
    let limits: wharf_api::RunLimits = client.get("/runs/limits", &[]).await?;
    let listing =
        wharf_tasks::context::list(dir, dockerfile).map_err(|e| CliError::Config(e.to_string()))?;
    if listing.bytes > limits.max_context_bytes {
        return Err(CliError::Config(format!(
            "the build context {} holds {} bytes of files; the cluster's limit is {} bytes \
             (tasks.max_context_mib): list what the build does not need in .dockerignore",
            dir.display(),
            listing.bytes,
            limits.max_context_bytes
        )));
    }
    let total = listing.bytes.max(1);
    let mut archive = tempfile::tempfile()?;
    {
        let dir = dir.to_path_buf();
        let mut file = archive.try_clone()?;
        tokio::task::spawn_blocking(move || {
            wharf_tasks::context::pack(&dir, &listing, &mut file, |done| {
                progress(
                    quiet,
                    &format!("Packing source code: {:>3}%", done * 100 / total),
                )
            })
        })
        .await
        .map_err(|e| CliError::Config(format!("packing the context: {e}")))?
        .map_err(|e| CliError::Config(e.to_string()))?;
    }
    let size = archive.seek(std::io::SeekFrom::End(0))?;
    archive.rewind()?;
    let repo = limits.context_repository;
    // The session, then the archive in chunks, hashed on the way.
    let started = client
        .expect(
            client.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")),
            "starting the context upload",
        )
        .await?;
    let mut location = location(&started)?;
    let mut hasher = wharf_oci::Hasher::new(wharf_oci::digest::Algorithm::Sha256);
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut archive, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        let req = client
            .request(Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{sent}-{}", sent + n as u64 - 1))
            .body(buf[..n].to_vec());
        let answer = client.expect(req, "uploading the context").await?;
        location = location_of(&answer).unwrap_or(location);
        sent += n as u64;
        progress(
            quiet,
            &format!(
                "Uploading archived source code: {sent} of {size} bytes ({}%)",
                sent * 100 / size.max(1)
            ),
        );
    }
    if !quiet {
        eprintln!();
    }
    let digest = hasher.finish();
    let sep = if location.contains('?') { '&' } else { '?' };
    client
        .expect(
            client.request(Method::PUT, &format!("{location}{sep}digest={digest}")),
            "finishing the context upload",
        )
        .await?;
    // The OCI empty config, then the manifest naming the archive.
    let empty = b"{}".to_vec();
    let empty_digest = Digest::sha256_of(&empty);
    client
        .expect(
            client
                .request(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={empty_digest}"),
                )
                .header("content-type", "application/octet-stream")
                .body(empty),
            "uploading the context's config",
        )
        .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": wharf_oci::media::OCI_MANIFEST,
        "artifactType": CONTEXT_ARTIFACT,
        "config": {
            "mediaType": wharf_oci::media::OCI_EMPTY_CONFIG,
            "digest": empty_digest.to_string(),
            "size": 2
        },
        "layers": [{
            "mediaType": LAYER_TAR_GZIP,
            "digest": digest.to_string(),
            "size": size
        }]
    });
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| CliError::Config(format!("the context's manifest: {e}")))?;
    let manifest_digest = Digest::sha256_of(&body);
    client
        .expect(
            client
                .request(
                    Method::PUT,
                    &format!("/v2/{repo}/manifests/{manifest_digest}"),
                )
                .header("content-type", wharf_oci::media::OCI_MANIFEST)
                .body(body),
            "recording the uploaded context",
        )
        .await?;
    Ok(format!(
        "{}{repo}@{manifest_digest}",
        wharf_tasks::context::UPLOAD_SCHEME
    ))
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn location_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn location(r: &reqwest::Response) -> Result<String, CliError> {
    location_of(r).ok_or_else(|| CliError::Api("the upload session has no Location".into()))
}
