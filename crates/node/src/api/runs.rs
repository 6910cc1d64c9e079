//! `/api/v1/runs`: `wharf run` — queue a run, show it, list them, cancel
//! one, read its log. Owners only for now: a run executes containers on
//! the agents with its requester's rights.

use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_meta::{run_id, Command, RunCommand, RunRecord, RunSpec};
use wharf_oci::ErrorCode;
use wharf_tasks::{RunValues, TaskSpec};

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

/// A run's limit when the request names none, and the most it may name.
pub(crate) const RUN_TIMEOUT_DEFAULT_S: u64 = 3600;
const RUN_TIMEOUT_MAX_S: u64 = 8 * 3600;
/// Runs listed at most per request.
const LIST_MAX: usize = 1000;
/// Bytes of a log answered per request at most.
const LOG_CHUNK_MAX: u64 = 1 << 20;

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

fn image_view(i: wharf_meta::ImageRef) -> wharf_api::ImageRef {
    wharf_api::ImageRef {
        registry: i.registry,
        repository: i.repository,
        tag: i.tag,
        digest: i.digest,
    }
}

pub(crate) fn view(r: RunRecord) -> wharf_api::Run {
    wharf_api::Run {
        context: r.spec.context,
        images: r
            .artifacts
            .images
            .into_iter()
            .map(|b| wharf_api::BuiltImage {
                image: image_view(b.image),
                runtime: b.runtime.map(image_view),
                buildtime: b.buildtime.into_iter().map(image_view).collect(),
            })
            .collect(),
        git_commit: r.artifacts.git_commit,
        id: r.id,
        status: r.status.as_str().to_string(),
        task: r.spec.task,
        platform: r.spec.platform,
        trigger: r.spec.trigger,
        queued_ms: r.queued_ms,
        started_ms: r.started_ms,
        ended_ms: r.ended_ms,
        agent: r.agent,
        attempts: r.attempts,
        error: r.error,
        steps: r
            .steps
            .into_iter()
            .map(|s| wharf_api::RunStep {
                id: s.id,
                status: s.status.as_str().to_string(),
                exit_code: s.exit_code,
                started_ms: s.started_ms,
                ended_ms: s.ended_ms,
            })
            .collect(),
    }
}

pub(crate) fn found(app: &Tenant, id: &str) -> ApiResult<RunRecord> {
    app.meta().run(id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameUnknown,
            format!("run {id} does not exist in registry {}", app.meta().name()),
        )
        .with_status(StatusCode::NOT_FOUND)
    })
}

/// The repository of a registry that uploaded build contexts go to.
pub const CONTEXT_REPOSITORY: &str = "wharf-build-contexts";

pub async fn limits(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<wharf_api::RunLimits>> {
    caller.require_owner()?;
    Ok(Json(wharf_api::RunLimits {
        max_context_bytes: app.tasks.max_context_mib << 20,
        context_repository: CONTEXT_REPOSITORY.into(),
    }))
}

/// JSON's string is YAML's double-quoted scalar: any text fits.
fn yaml_string(text: &str) -> ApiResult<String> {
    serde_json::to_string(text).map_err(ApiError::internal)
}

/// `app:v1` in this registry (`$Registry/app:v1`) unless its first part
/// names a host (`example.com/app`, `localhost:5000/app`) or is `$Registry`.
fn qualified(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or("");
    let host =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if host || tag.starts_with('$') || tag.starts_with("{{") {
        tag.to_string()
    } else {
        format!("$Registry/{tag}")
    }
}

/// The task file of a quick build: one build step, then one push step of
/// its tags (none with `--no-push` or no tags).
fn quick_build_file(b: &wharf_api::QuickBuild, platform: Option<&str>) -> ApiResult<String> {
    let quote = |w: &str| -> ApiResult<String> {
        shlex::try_quote(w)
            .map(|q| q.into_owned())
            .map_err(|_| bad(format!("{w:?} holds a NUL byte")))
    };
    let tags: Vec<String> = b.tags.iter().map(|t| qualified(t)).collect();
    let mut words = Vec::new();
    for t in &tags {
        words.push(format!("-t {}", quote(t)?));
    }
    if let Some(f) = &b.file {
        words.push(format!("-f {}", quote(f)?));
    }
    for (k, v) in &b.build_args {
        words.push(format!("--build-arg {}", quote(&format!("{k}={v}"))?));
    }
    // The value is the run's: sealed in its record, rendered by the agent.
    for k in b.secret_build_args.keys() {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!(
                "--secret-build-arg {k}: a name of letters, digits and _"
            )));
        }
        words.push(format!(
            "--build-arg {}",
            quote(&format!("{k}={{{{.Secrets.{k}}}}}"))?
        ));
    }
    if let Some(t) = &b.target {
        words.push(format!("--target {}", quote(t)?));
    }
    if let Some(p) = platform {
        words.push(format!("--platform {}", quote(p)?));
    }
    if b.no_cache {
        words.push("--no-cache".into());
    }
    words.push(".".into());
    let mut file = format!(
        "version: v1.1.0\nsteps:\n  - id: build\n    build: {}\n",
        yaml_string(&words.join(" "))?
    );
    if !b.no_push && !tags.is_empty() {
        let list: Vec<String> = tags
            .iter()
            .map(|t| yaml_string(t))
            .collect::<ApiResult<_>>()?;
        file.push_str(&format!("  - id: push\n    push: [{}]\n", list.join(", ")));
    }
    Ok(file)
}

/// Check a run's context names a source the agents can fetch, and that an
/// uploaded one exists here and is within the limit.
pub(crate) fn check_context(app: &Tenant, context: &str) -> ApiResult<()> {
    use wharf_tasks::context::Source;
    match Source::parse(context).map_err(|e| bad(e.to_string()))? {
        Source::Upload { repository, digest } => {
            let size = app
                .meta()
                .manifest(&repository, &digest)?
                .map(|m| m.blobs_size())
                .ok_or_else(|| {
                    bad(format!(
                        "the uploaded context {repository}@{digest} is not in this registry"
                    ))
                })?;
            // Compressed, it cannot be larger than the files it holds.
            let limit = app.tasks.max_context_mib << 20;
            if size > limit {
                return Err(bad(format!(
                    "the uploaded context is {size} bytes; the limit is {limit} bytes"
                )));
            }
            Ok(())
        }
        Source::Git { .. } | Source::Archive { .. } => Ok(()),
    }
}

/// The task file a run or task is given as: a command (one `cmd` step),
/// a task file, or a quick build (the registry writes the file).
pub(crate) fn task_file(
    cmd: Option<String>,
    file: Option<String>,
    build: Option<&wharf_api::QuickBuild>,
    platform: Option<&str>,
) -> ApiResult<String> {
    match (cmd, file, build) {
        (Some(cmd), None, None) => Ok(format!("steps:\n  - cmd: {}\n", yaml_string(&cmd)?)),
        (None, Some(file), None) => Ok(file),
        (None, None, Some(b)) => quick_build_file(b, platform),
        _ => Err(bad(
            "give one of a command (--cmd), a task file (-f) or a build",
        )),
    }
}

pub(crate) fn check_timeout(timeout_s: u64) -> ApiResult<u64> {
    if !(1..=RUN_TIMEOUT_MAX_S).contains(&timeout_s) {
        return Err(bad(format!(
            "a timeout of {timeout_s} s is outside 1 s to {RUN_TIMEOUT_MAX_S} s"
        )));
    }
    Ok(timeout_s)
}

/// Render and check `file` with a stand-in run id and stand-in secrets,
/// so that a bad file is refused before it is stored or queued (the agent
/// renders it again with the real ones): its steps' ids. Every
/// `{{.Secrets.ID}}` must be declared under `secrets:` (naming a secret
/// the registry's store has) or be one of `secret_args`.
pub(crate) fn checked_steps(
    app: &Tenant,
    file: &str,
    values: &std::collections::BTreeMap<String, String>,
    secret_args: &std::collections::BTreeSet<String>,
) -> ApiResult<Vec<String>> {
    let used = wharf_tasks::template::secret_ids(file);
    let registry = app.meta().name().to_string();
    let server = crate::tasks::login_server(app, &registry).map_err(bad)?;
    let values = RunValues {
        id: run_id(&registry, 0),
        registry: server,
        registry_name: registry,
        date: "19700101-000000z".into(),
        values: values.clone(),
        commit: "0000000".into(),
        branch: "main".into(),
        secrets: used
            .iter()
            .map(|id| (id.clone(), "secret".to_string()))
            .collect(),
    };
    let spec = values
        .render(file)
        .and_then(|t| TaskSpec::parse(&t))
        .map_err(|e| bad(e.to_string()))?;
    for r in &spec.secrets {
        if app.meta().secret(&r.name)?.is_none() {
            return Err(bad(format!(
                "secret {:?} (id {}) is not in registry {}'s secret store: wharf secret set -n {}",
                r.name,
                r.id,
                app.meta().name(),
                r.name
            )));
        }
    }
    for id in &used {
        if !secret_args.contains(id) && !spec.secrets.iter().any(|r| &r.id == id) {
            return Err(bad(format!(
                "{{{{.Secrets.{id}}}}} names no secret: declare it under secrets: (id: {id}, secret: NAME)"
            )));
        }
    }
    Ok(spec.steps.iter().map(|s| s.id.clone()).collect())
}

pub async fn queue(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<wharf_api::NewRun>,
) -> ApiResult<(StatusCode, Json<wharf_api::Run>)> {
    caller.require_owner()?;
    let file = task_file(
        req.cmd,
        req.file,
        req.build.as_ref(),
        req.platform.as_deref(),
    )?;
    if req.build.is_some() && req.context.is_none() {
        return Err(bad(
            "a build needs a context: a directory, a git URL or a tar.gz URL",
        ));
    }
    if let Some(c) = &req.context {
        check_context(&app, c)?;
    }
    let timeout_s = check_timeout(req.timeout_s.unwrap_or(RUN_TIMEOUT_DEFAULT_S))?;
    let registry = app.meta().name().to_string();
    let no_secret_args = std::collections::BTreeMap::new();
    let secret_args = req
        .build
        .as_ref()
        .map_or(&no_secret_args, |b| &b.secret_build_args);
    let steps = checked_steps(
        &app,
        &file,
        &req.values,
        &secret_args.keys().cloned().collect(),
    )?;
    let sealed = secret_args
        .iter()
        .map(|(k, v)| {
            let ctx = crate::tasks::secret_arg_context(&registry, k);
            (k.clone(), app.auth.seal(v.as_bytes(), &ctx))
        })
        .collect();
    let cmd = Command::Run(RunCommand::Queue {
        spec: Box::new(RunSpec {
            task_file: file,
            steps,
            platform: req.platform.unwrap_or_else(|| "linux/amd64".into()),
            trigger: "manual".into(),
            task: None,
            context: req.context,
            timeout_s,
            max_attempts: 0,
            requested_by: caller.subject.name().to_string(),
            values: req.values,
            commit: None,
            branch: None,
            secret_args: sealed,
        }),
    });
    let number = app.registry().write(cmd).await?;
    let run = found(&app, &run_id(&registry, number))?;
    Ok((StatusCode::CREATED, Json(view(run))))
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<wharf_api::Run>> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(Json(view(found(&app, &id)?)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub top: Option<usize>,
    /// Only the runs of this task.
    #[serde(default)]
    pub task: Option<String>,
}

pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<wharf_api::Run>>> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    let top = q.top.unwrap_or(100).min(LIST_MAX);
    let Some(task) = q.task else {
        return Ok(Json(
            app.meta().runs(None, top)?.into_iter().map(view).collect(),
        ));
    };
    // Newest first, a page at a time, until `top` of the task's are found.
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = app.meta().runs(before, LIST_MAX)?;
        let Some(last) = page.last() else { break };
        before = Some(last.number);
        out.extend(
            page.into_iter()
                .filter(|r| r.spec.task.as_deref() == Some(task.as_str()))
                .map(view),
        );
        if out.len() >= top {
            out.truncate(top);
            break;
        }
    }
    Ok(Json(out))
}

pub async fn cancel(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<wharf_api::Run>> {
    caller.require_owner()?;
    found(&app, &id)?;
    app.registry()
        .write(Command::Run(RunCommand::Cancel { id: id.clone() }))
        .await?;
    Ok(Json(view(found(&app, &id)?)))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub offset: u64,
}

/// The run's log from `offset`, at most `LOG_CHUNK_MAX` bytes; empty when
/// there is nothing more yet. Answered by the agent that ran it: another
/// node forwards the request there.
pub async fn log(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    req: Request,
) -> ApiResult<Response> {
    caller.require_owner()?;
    let run = found(&app, &id)?;
    // Ended and kept in the registry: any node reads it there.
    let kept = run
        .log
        .as_deref()
        .is_some_and(|l| l.starts_with(wharf_tasks::context::UPLOAD_SCHEME));
    if !run.status.is_active() && kept {
        let registry = app.name().to_string();
        let who = crate::tasks::context::Requester {
            registry: &registry,
            subject: &caller.subject,
        };
        match crate::tasks::log_store::read(&app, &who, &id, q.offset, LOG_CHUNK_MAX).await {
            Ok(Some(bytes)) => {
                return Ok(([("content-type", "text/plain; charset=utf-8")], bytes).into_response())
            }
            // Expired or not readable here: the agent's file, if it has it.
            Ok(None) => {}
            Err(e) => tracing::debug!(run = %id, error = %e, "reading a kept log"),
        }
    }
    let Some(agent) = run.agent else {
        return Ok(Vec::<u8>::new().into_response());
    };
    if agent != app.consensus.node_id() {
        return forward(&app, agent, &id, q.offset, req).await;
    }
    let path = crate::tasks::log_path(&app.data_dir, app.meta().name(), &id);
    let bytes = tokio::task::spawn_blocking(move || read_from(&path, q.offset))
        .await
        .map_err(ApiError::internal)??;
    Ok(([("content-type", "text/plain; charset=utf-8")], bytes).into_response())
}

fn read_from(path: &std::path::Path, offset: u64) -> ApiResult<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    f.seek(SeekFrom::Start(offset))
        .map_err(ApiError::internal)?;
    let mut out = Vec::new();
    f.take(LOG_CHUNK_MAX)
        .read_to_end(&mut out)
        .map_err(ApiError::internal)?;
    Ok(out)
}

/// Ask node `agent` for the log, with the caller's own credentials.
async fn forward(
    app: &Tenant,
    agent: u64,
    id: &str,
    offset: u64,
    req: Request,
) -> ApiResult<Response> {
    let Some((_, node)) = app
        .consensus
        .members()
        .into_iter()
        .find(|(id, _)| *id == agent)
    else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("node {agent}, which ran it, is no longer a member: its log is gone"),
        )
        .with_status(StatusCode::GONE));
    };
    // Rebuilt, not taken from the request: under the API's nesting its
    // URI has lost the `/api/v1` prefix the agent's router needs.
    let path = format!("/api/v1/runs/{id}/log?offset={offset}");
    let mut out = app
        .http
        .get(format!("{}{path}", node.http.trim_end_matches('/')));
    for name in ["authorization", "cookie"] {
        if let Some(v) = req.headers().get(name) {
            out = out.header(name, v.as_bytes());
        }
    }
    out = out.header(wharf_api::REGISTRY_HEADER, app.meta().name());
    let answer = out.send().await.map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("node {agent}, which ran it, did not answer: {e}"),
        )
        .with_status(StatusCode::BAD_GATEWAY)
    })?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(ApiError::internal)?;
    Response::builder()
        .status(status.as_u16())
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(bytes))
        .map_err(ApiError::internal)
}
