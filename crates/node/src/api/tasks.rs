//! `/api/v1/tasks`: stored build tasks (`wharf task`) — create, list,
//! show, update, delete, run; their timers; and the source-commit hook
//! git servers call (`/api/v1/registries/N/tasks/T/hooks/git`, signed
//! with the task's HMAC secret as GitHub and Gitea sign webhooks).
//! Owners only, like runs.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use hmac::{Hmac, Mac};
use wharf_meta::{run_id, Command, TaskChange, TaskCommand, TaskRecord, TimerRecord};
use wharf_oci::ErrorCode;

use super::runs::{bad, check_context, check_timeout, checked_steps, found, task_file, view};
use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::state::App;
use crate::tenant::Tenant;

/// Hook bodies read at most (a push event of a large merge is well
/// under).
pub const HOOK_BODY_MAX: usize = 1 << 20;

/// A task or timer name: what a URL path and a command line carry.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} name {name:?}: 1 to 50 letters, digits, - and _, starting with a letter or digit"
        )))
    }
}

/// A 5-field cron expression in UTC.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "schedule {schedule:?} has {fields} fields; a timer takes 5 (minute hour day month weekday, UTC)"
        ));
    }
    croner::Cron::from_str(schedule).map_err(|e| format!("schedule {schedule:?}: {e}"))
}

fn timer_view(t: &TimerRecord) -> wharf_api::Timer {
    wharf_api::Timer {
        name: t.name.clone(),
        schedule: t.schedule.clone(),
        enabled: t.enabled,
    }
}

fn task_view(registry: &str, t: TaskRecord) -> wharf_api::Task {
    wharf_api::Task {
        hook: t
            .hook_secret
            .as_ref()
            .map(|_| format!("/api/v1/registries/{registry}/tasks/{}/hooks/git", t.name)),
        hook_secret: None,
        name: t.name,
        enabled: t.enabled,
        context: t.context,
        platform: t.platform,
        timeout_s: t.timeout_s,
        steps: t.steps,
        base_image_trigger: t.base_image_trigger,
        timers: t.timers.iter().map(timer_view).collect(),
        watching: t
            .armed
            .iter()
            .map(|(reg, r, tag)| {
                if reg == registry {
                    format!("{r}:{tag}")
                } else {
                    format!("{r}:{tag} (registry {reg})")
                }
            })
            .collect(),
        poll_s: t.poll_s,
        last_commit: t.last_commit,
        created_by: t.created_by,
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
        file: t.task_file,
    }
}

fn task_found(app: &Tenant, name: &str) -> ApiResult<TaskRecord> {
    app.meta().task(name)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameUnknown,
            format!(
                "task {name} does not exist in registry {}",
                app.meta().name()
            ),
        )
        .with_status(StatusCode::NOT_FOUND)
    })
}

/// A task's context: fetched anew by each run, so never an upload (an
/// uploaded archive is deleted when its run ends).
fn check_task_context(app: &Tenant, context: &str) -> ApiResult<()> {
    if context.starts_with(wharf_tasks::context::UPLOAD_SCHEME) {
        return Err(bad(
            "a task's context is a git URL or a tar.gz URL, fetched by each run; \
             a local directory fits `wharf build` and `wharf run`",
        ));
    }
    check_context(app, context)
}

/// Polls at most this often: a git server is not a busy loop's.
pub const POLL_MIN_S: u64 = 10;

/// A poll interval, for a task whose context is `context`.
fn check_poll(poll_s: u64, context: Option<&str>) -> ApiResult<u64> {
    if poll_s == 0 {
        return Ok(0);
    }
    if poll_s < POLL_MIN_S {
        return Err(bad(format!(
            "a poll interval of {poll_s} s is under the {POLL_MIN_S} s minimum"
        )));
    }
    let git = context.map(wharf_tasks::context::Source::parse);
    if !matches!(git, Some(Ok(wharf_tasks::context::Source::Git { .. }))) {
        return Err(bad("only a task with a git context can poll it"));
    }
    Ok(poll_s)
}

fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

pub async fn create(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<wharf_api::NewTask>,
) -> ApiResult<(StatusCode, Json<wharf_api::Task>)> {
    caller.require_owner()?;
    check_name("task", &req.name)?;
    if req
        .build
        .as_ref()
        .is_some_and(|b| !b.secret_build_args.is_empty())
    {
        return Err(bad(
            "a task keeps no secret values itself: put them in the registry's secret store \
             (wharf secret set) and name them under secrets: in a task file",
        ));
    }
    let file = task_file(
        req.cmd,
        req.file,
        req.build.as_ref(),
        req.platform.as_deref(),
    )?;
    if let Some(c) = &req.context {
        check_task_context(&app, c)?;
    }
    let steps = checked_steps(&app, &file, &req.values, &Default::default())?;
    let timeout_s = check_timeout(req.timeout_s.unwrap_or(super::runs::RUN_TIMEOUT_DEFAULT_S))?;
    let mut timers = Vec::new();
    if let Some(s) = &req.schedule {
        parse_schedule(s).map_err(bad)?;
        timers.push(TimerRecord {
            name: "t1".into(),
            schedule: s.clone(),
            enabled: true,
            last_fired_min: 0,
        });
    }
    let secret = req.commit_trigger.then(new_secret);
    let poll_s = check_poll(req.poll_s.unwrap_or(0), req.context.as_deref())?;
    let record = TaskRecord {
        name: req.name.clone(),
        task_file: file,
        steps,
        context: req.context,
        platform: req.platform.unwrap_or_else(|| "linux/amd64".into()),
        timeout_s,
        values: req.values,
        enabled: true,
        base_image_trigger: req.base_image_trigger.unwrap_or(true),
        timers,
        hook_secret: secret.clone(),
        poll_s,
        last_commit: None,
        created_by: caller.subject.name().to_string(),
        created_ms: 0,
        updated_ms: 0,
        armed: vec![],
    };
    app.registry()
        .write(Command::Task(TaskCommand::Create {
            task: Box::new(record),
        }))
        .await?;
    let mut view = task_view(app.meta().name(), task_found(&app, &req.name)?);
    view.hook_secret = secret;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<wharf_api::Task>>> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    let registry = app.meta().name().to_string();
    Ok(Json(
        app.meta()
            .tasks()?
            .into_iter()
            .map(|t| task_view(&registry, t))
            .collect(),
    ))
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Task>> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(Json(task_view(app.meta().name(), task_found(&app, &name)?)))
}

pub async fn update(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<wharf_api::TaskUpdate>,
) -> ApiResult<Json<wharf_api::Task>> {
    caller.require_owner()?;
    let current = task_found(&app, &name)?;
    let mut change = TaskChange::default();
    if req.cmd.is_some() || req.file.is_some() || req.build.is_some() {
        let platform = req.platform.as_deref().unwrap_or(&current.platform);
        let file = task_file(req.cmd, req.file, req.build.as_ref(), Some(platform))?;
        let values = req.values.as_ref().unwrap_or(&current.values);
        let steps = checked_steps(&app, &file, values, &Default::default())?;
        change.task_file = Some((file, steps));
    } else if let Some(values) = &req.values {
        // New values must still render the stored file.
        checked_steps(&app, &current.task_file, values, &Default::default())?;
    }
    if let Some(c) = &req.context {
        if c.is_empty() {
            change.context = Some(None);
        } else {
            check_task_context(&app, c)?;
            change.context = Some(Some(c.clone()));
        }
    }
    if let Some(t) = req.timeout_s {
        change.timeout_s = Some(check_timeout(t)?);
    }
    if let Some(p) = req.poll_s {
        let context = match &change.context {
            Some(c) => c.as_deref(),
            None => current.context.as_deref(),
        };
        change.poll_s = Some(check_poll(p, context)?);
    }
    change.platform = req.platform;
    change.values = req.values;
    change.enabled = req.enabled;
    change.base_image_trigger = req.base_image_trigger;
    let secret = match req.commit_trigger {
        Some(true) => Some(new_secret()),
        _ => None,
    };
    change.hook_secret = req.commit_trigger.map(|_| secret.clone());
    app.registry()
        .write(Command::Task(TaskCommand::Update {
            name: name.clone(),
            change: Box::new(change),
        }))
        .await?;
    let mut view = task_view(app.meta().name(), task_found(&app, &name)?);
    view.hook_secret = secret;
    Ok(Json(view))
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    app.registry()
        .write(Command::Task(TaskCommand::Delete { name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a run of `name` with `trigger`; the run as queued.
async fn run_task(
    app: &Tenant,
    name: &str,
    trigger: &str,
    source: Option<(String, String)>,
) -> ApiResult<wharf_api::Run> {
    let number = app
        .registry()
        .write(Command::Task(TaskCommand::Run {
            name: name.to_string(),
            trigger: trigger.to_string(),
            source,
        }))
        .await?;
    Ok(view(found(app, &run_id(app.meta().name(), number))?))
}

pub async fn run(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<wharf_api::Run>)> {
    caller.require_owner()?;
    Ok((
        StatusCode::CREATED,
        Json(run_task(&app, &name, "manual", None).await?),
    ))
}

pub async fn add_timer(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<wharf_api::NewTimer>,
) -> ApiResult<(StatusCode, Json<wharf_api::Task>)> {
    caller.require_owner()?;
    check_name("timer", &req.name)?;
    parse_schedule(&req.schedule).map_err(bad)?;
    app.registry()
        .write(Command::Task(TaskCommand::TimerAdd {
            name: name.clone(),
            timer: req.name,
            schedule: req.schedule,
        }))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(task_view(app.meta().name(), task_found(&app, &name)?)),
    ))
}

pub async fn update_timer(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path((name, timer)): Path<(String, String)>,
    Json(req): Json<wharf_api::TimerUpdate>,
) -> ApiResult<Json<wharf_api::Task>> {
    caller.require_owner()?;
    if let Some(s) = &req.schedule {
        parse_schedule(s).map_err(bad)?;
    }
    app.registry()
        .write(Command::Task(TaskCommand::TimerUpdate {
            name: name.clone(),
            timer,
            schedule: req.schedule,
            enabled: req.enabled,
        }))
        .await?;
    Ok(Json(task_view(app.meta().name(), task_found(&app, &name)?)))
}

pub async fn remove_timer(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path((name, timer)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    app.registry()
        .write(Command::Task(TaskCommand::TimerRemove { name, timer }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Secret values a store takes at most (sealed, a little more).
const SECRET_VALUE_MAX: usize = 32 << 10;

pub async fn put_secret(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<wharf_api::SecretValue>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    check_name("secret", &name)?;
    if req.value.len() > SECRET_VALUE_MAX {
        return Err(bad(format!(
            "a secret of {} bytes is over the {SECRET_VALUE_MAX} a secret may hold",
            req.value.len()
        )));
    }
    let ctx = crate::tasks::secret_context(app.meta().name(), &name);
    let sealed = app.auth.seal(req.value.as_bytes(), &ctx);
    app.registry()
        .write(Command::Task(TaskCommand::SecretPut { name, sealed }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_secrets(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<wharf_api::Secret>>> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(Json(
        app.meta()
            .secrets()?
            .into_iter()
            .map(|(name, r)| wharf_api::Secret {
                name,
                updated_ms: r.updated_ms,
            })
            .collect(),
    ))
}

pub async fn delete_secret(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    app.registry()
        .write(Command::Task(TaskCommand::SecretDelete { name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `sha256=HEX` of `body` under `secret`, compared in constant time.
fn signed(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The commit and branch of a push event (GitHub's, Gitea's and
/// GitLab's field names), when the body is one.
fn push_event(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let commit = v["after"]
        .as_str()
        .or_else(|| v["checkout_sha"].as_str())?
        .to_string();
    let branch = v["ref"]
        .as_str()
        .map(|r| r.trim_start_matches("refs/heads/").to_string())
        .unwrap_or_default();
    // A deleted branch's event names the zero commit: nothing to build.
    if commit.chars().all(|c| c == '0') {
        return None;
    }
    Some((commit, branch))
}

/// `POST /api/v1/registries/N/tasks/T/hooks/git`: outside authentication
/// (a git server has no Wharf credentials); the HMAC of the body under the
/// task's hook secret is the credential.
pub async fn git_hook(
    State(app): State<App>,
    Path((registry, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<wharf_api::Run>)> {
    let denied = || {
        ApiError::new(
            ErrorCode::Denied,
            "the hook's signature (X-Hub-Signature-256) does not match the task's secret",
        )
        .with_status(StatusCode::UNAUTHORIZED)
    };
    if body.len() > HOOK_BODY_MAX {
        return Err(bad(format!(
            "a hook body of {} bytes is over the {HOOK_BODY_MAX} a push event needs",
            body.len()
        )));
    }
    let tenant = Tenant::new(app, registry);
    // An unknown task answers as a bad signature: the hook's URL tells
    // nobody which tasks exist.
    let task = tenant.meta().task(&name)?.ok_or_else(denied)?;
    let secret = task.hook_secret.ok_or_else(denied)?;
    let header = headers
        .get("x-hub-signature-256")
        .or_else(|| headers.get("x-gitea-signature"))
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            if s.starts_with("sha256=") {
                s.to_string()
            } else {
                format!("sha256={s}")
            }
        })
        .ok_or_else(denied)?;
    if !signed(&secret, &body, &header) {
        return Err(denied());
    }
    let source = push_event(&body)
        .ok_or_else(|| bad("not a push event: the body names no commit (`after`)"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(run_task(&tenant, &name, "commit", Some(source)).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_is_accepted_only_with_the_secrets_signature() {
        let body = br#"{"ref":"refs/heads/main","after":"0123abcd"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signed("s3cret", body, &good));
        assert!(!signed("other", body, &good));
        assert!(!signed("s3cret", b"{}", &good));
        assert!(!signed("s3cret", body, "sha1=abc"));
        assert_eq!(
            push_event(body),
            Some(("0123abcd".to_string(), "main".to_string()))
        );
        assert_eq!(push_event(br#"{"after":"0000000000"}"#), None);
    }

    #[test]
    fn schedules_are_five_fields() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        let err = parse_schedule("0 */5 * * * *").unwrap_err();
        assert!(err.contains("has 6 fields"), "{err}");
        assert!(parse_schedule("61 * * * *").is_err());
    }
}
