//! `wharf task create|list|show|update|delete|run|list-runs|show-run|logs|
//! cancel-run` and `wharf task timer add|list|update|remove`: stored build
//! tasks, with the cloud CLI's verbs and flags where they fit.

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::build::pairs;
use super::client::{Client, RegistryTarget};
use super::output::{self, Format};
use super::run::{watch, Follow};
use crate::CliError;

#[derive(Args)]
pub struct TaskArgs {
    #[command(flatten)]
    target: RegistryTarget,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Clone, Copy, ValueEnum)]
enum Status {
    Enabled,
    Disabled,
}

/// What a task runs, as `create` and `update` take it.
#[derive(Args, Default)]
struct What {
    /// An image and its arguments: '$Registry/app:v1 ARGS' (one cmd step).
    #[arg(long)]
    cmd: Option<String>,
    /// A task file (acr-task.yaml, read here and stored), or with -t the
    /// Dockerfile, relative to the context.
    #[arg(long, short = 'f')]
    file: Option<String>,
    /// An image the build is tagged with (repeatable): app:{{.Run.ID}}.
    #[arg(long = "image", short = 't', value_name = "IMAGE")]
    tags: Vec<String>,
    /// NAME=VALUE for the Dockerfile's ARG NAME (repeatable).
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
    /// The Dockerfile's stage to build.
    #[arg(long = "target")]
    stage: Option<String>,
    /// Build without pushing.
    #[arg(long)]
    no_push: bool,
}

#[derive(Subcommand)]
enum Verb {
    /// Store a task: a build (-t), a command (--cmd) or a task file
    /// (-f task.yaml), with its context and triggers.
    #[command(after_help = "Examples:\n  \
        wharf task create -n web -t web:{{.Run.ID}} -c 'https://git.example/app.git#main:web'\n  \
        wharf task create -n nightly --cmd '$Registry/tools:v1 cleanup' -c /dev/null --schedule '0 3 * * *'\n  \
        wharf task create -n ci -f acr-task.yaml -c https://git.example/app.git --commit-trigger-enabled true\n\n\
        A build task runs again when a base image it was built from (in this registry) moves.\n\
        With --commit-trigger-enabled, the answer shows the hook's URL and its secret, once:\n\
        give both to the git server (a push webhook, JSON, signed HMAC-SHA256).")]
    Create {
        #[arg(long, short)]
        name: String,
        /// A git URL (URL#ref:subdir), a tar.gz URL, or /dev/null.
        #[arg(long, short = 'c')]
        context: String,
        #[command(flatten)]
        what: What,
        /// NAME=VALUE for the file's {{.Values.NAME}} (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A first timer (t1): 5-field cron, UTC.
        #[arg(long)]
        schedule: Option<String>,
        /// Run again when a base image it was built from moves.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        base_image_trigger_enabled: bool,
        /// Accept signed source-commit hooks.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        commit_trigger_enabled: bool,
        /// Poll the git context's ref every this many seconds (10 or more)
        /// and build each new commit: for git servers that send no hooks.
        #[arg(long)]
        poll_interval: Option<u64>,
        /// Each run's limit, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// linux/amd64.
        #[arg(long)]
        platform: Option<String>,
    },
    /// The registry's tasks.
    List,
    /// One task: its file, context, triggers and timers.
    Show {
        #[arg(long, short)]
        name: String,
    },
    /// Change a task: only what is given changes.
    Update {
        #[arg(long, short)]
        name: String,
        /// A git URL, a tar.gz URL, or /dev/null for none.
        #[arg(long, short = 'c')]
        context: Option<String>,
        #[command(flatten)]
        what: What,
        /// NAME=VALUE (repeatable): replaces every value.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        base_image_trigger_enabled: Option<bool>,
        /// true: a new hook secret (shown once); false: no hook.
        #[arg(long)]
        commit_trigger_enabled: Option<bool>,
        /// Seconds between polls of the git ref; 0: stop polling.
        #[arg(long)]
        poll_interval: Option<u64>,
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(long)]
        platform: Option<String>,
    },
    /// Delete a task, its timers and its triggers (its runs stay).
    Delete {
        #[arg(long, short)]
        name: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Run a task now and print its log.
    Run {
        #[arg(long, short)]
        name: String,
        #[arg(long)]
        no_logs: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Runs, newest first: RUN ID, TASK, PLATFORM, STATUS, TRIGGER,
    /// STARTED, DURATION.
    ListRuns {
        /// Only this task's.
        #[arg(long, short)]
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// One run, with its steps and what it built.
    ShowRun {
        #[arg(long)]
        run_id: String,
    },
    /// A run's log (followed while it runs); with -n, the task's latest.
    Logs {
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long, short)]
        name: Option<String>,
    },
    /// Stop a run (its containers are removed).
    CancelRun {
        #[arg(long)]
        run_id: String,
    },
    /// A task's timers.
    Timer {
        #[command(subcommand)]
        verb: TimerVerb,
    },
}

#[derive(Subcommand)]
enum TimerVerb {
    /// Add a timer: a 5-field cron schedule in UTC.
    #[command(
        after_help = "Example:\n  wharf task timer add -n web --timer-name nightly --schedule '0 3 * * *'"
    )]
    Add {
        #[arg(long, short)]
        name: String,
        #[arg(long)]
        timer_name: String,
        #[arg(long)]
        schedule: String,
    },
    List {
        #[arg(long, short)]
        name: String,
    },
    Update {
        #[arg(long, short)]
        name: String,
        #[arg(long)]
        timer_name: String,
        #[arg(long)]
        schedule: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
    Remove {
        #[arg(long, short)]
        name: String,
        #[arg(long)]
        timer_name: String,
    },
}

/// `What` as the API's cmd / file / build; all none when nothing given.
type Parts = (
    Option<String>,
    Option<String>,
    Option<wharf_api::QuickBuild>,
);

fn parts(w: What) -> Result<Parts, CliError> {
    let yaml = w
        .file
        .as_deref()
        .is_some_and(|f| f.ends_with(".yaml") || f.ends_with(".yml"));
    if !w.tags.is_empty() || w.no_push || (w.file.is_some() && !yaml && w.cmd.is_none()) {
        if w.cmd.is_some() || yaml {
            return Err(CliError::Config(
                "a build (-t) takes a Dockerfile, not --cmd or a task file".into(),
            ));
        }
        return Ok((
            None,
            None,
            Some(wharf_api::QuickBuild {
                tags: w.tags,
                file: w.file,
                build_args: pairs("--arg", &w.build_args)?,
                target: w.stage,
                no_push: w.no_push,
                no_cache: false,
                secret_build_args: BTreeMap::new(),
            }),
        ));
    }
    let file = match w.file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| CliError::Config(format!("reading {path}: {e}")))?,
        ),
        None => None,
    };
    Ok((w.cmd, file, None))
}

fn context_of(c: &str) -> Result<Option<String>, CliError> {
    if c == "/dev/null" {
        return Ok(None);
    }
    if std::path::Path::new(c).is_dir() {
        return Err(CliError::Config(format!(
            "context {c:?} is a local directory: a task's context is fetched by each run, \
             so give a git URL (URL#ref:subdir) or a tar.gz URL (`wharf build` takes directories)"
        )));
    }
    Ok(Some(c.to_string()))
}

fn print_task(out: Format, t: &wharf_api::Task) {
    if matches!(out, Format::Json) {
        println!("{}", serde_json::to_string_pretty(t).unwrap_or_default());
        return;
    }
    println!("Name:        {}", t.name);
    println!(
        "Status:      {}",
        if t.enabled { "Enabled" } else { "Disabled" }
    );
    println!("Context:     {}", t.context.as_deref().unwrap_or("(none)"));
    println!("Platform:    {}", t.platform);
    println!("Timeout:     {}s", t.timeout_s);
    println!("Steps:       {}", t.steps.join(", "));
    println!(
        "Base image trigger: {}{}",
        if t.base_image_trigger {
            "Enabled"
        } else {
            "Disabled"
        },
        if t.watching.is_empty() {
            String::new()
        } else {
            format!(" (watching {})", t.watching.join(", "))
        }
    );
    for timer in &t.timers {
        println!(
            "Timer {}:    {} ({})",
            timer.name,
            timer.schedule,
            if timer.enabled { "Enabled" } else { "Disabled" }
        );
    }
    if let Some(h) = &t.hook {
        println!("Commit hook: {h}");
    }
    if t.poll_s > 0 {
        println!(
            "Polling:     every {}s (last commit seen: {})",
            t.poll_s,
            t.last_commit.as_deref().unwrap_or("none yet")
        );
    }
    if let Some(s) = &t.hook_secret {
        println!("Hook secret: {s}   (shown this once: give it to the git server)");
    }
    println!(
        "Created by:  {} at {}",
        t.created_by,
        output::time(t.created_ms)
    );
    println!("Task file:\n{}", t.file);
}

fn run_rows(runs: &[wharf_api::Run]) -> Vec<Value> {
    runs.iter()
        .map(|r| {
            let duration = match (r.started_ms, r.ended_ms) {
                (Some(s), Some(e)) => format!("{}s", e.saturating_sub(s) / 1000),
                _ => String::new(),
            };
            serde_json::json!({
                "id": r.id,
                "task": r.task.clone().unwrap_or_default(),
                "platform": r.platform,
                "status": r.status,
                "trigger": r.trigger,
                "started": r.started_ms.map(output::time).unwrap_or_default(),
                "duration": duration,
            })
        })
        .collect()
}

async fn show_run(client: &Client, out: Format, id: &str) -> Result<(), CliError> {
    let r: wharf_api::Run = client.get(&format!("/runs/{id}"), &[]).await?;
    if matches!(out, Format::Json) {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    output::print(out, &run_rows(std::slice::from_ref(&r)), &RUN_COLUMNS);
    for s in &r.steps {
        println!(
            "  step {}: {}{}",
            s.id,
            s.status,
            s.exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        );
    }
    for b in &r.images {
        println!(
            "  image {}/{}:{} {}",
            b.image.registry,
            b.image.repository,
            b.image.tag.as_deref().unwrap_or(""),
            b.image.digest.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = &r.git_commit {
        println!("  git commit {c}");
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    Ok(())
}

const RUN_COLUMNS: [(&str, &str); 7] = [
    ("RUN ID", "id"),
    ("TASK", "task"),
    ("PLATFORM", "platform"),
    ("STATUS", "status"),
    ("TRIGGER", "trigger"),
    ("STARTED", "started"),
    ("DURATION", "duration"),
];

pub async fn task(args: TaskArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let out = args.target.output;
    let json = matches!(out, Format::Json);
    match args.verb {
        Verb::Create {
            name,
            context,
            what,
            set,
            schedule,
            base_image_trigger_enabled,
            commit_trigger_enabled,
            poll_interval,
            timeout,
            platform,
        } => {
            let (cmd, file, build) = parts(what)?;
            let new = wharf_api::NewTask {
                poll_s: poll_interval,
                name,
                cmd,
                file,
                build,
                context: context_of(&context)?,
                platform,
                timeout_s: Some(timeout),
                values: pairs("--set", &set)?,
                base_image_trigger: Some(base_image_trigger_enabled),
                schedule,
                commit_trigger: commit_trigger_enabled,
            };
            let t: wharf_api::Task = client.post("/tasks", &new).await?;
            print_task(out, &t);
        }
        Verb::List => {
            let tasks: Vec<wharf_api::Task> = client.get("/tasks", &[]).await?;
            let rows: Vec<Value> = tasks
                .iter()
                .map(|t| {
                    let mut triggers = Vec::new();
                    if t.base_image_trigger {
                        triggers.push("image".to_string());
                    }
                    if !t.timers.is_empty() {
                        triggers.push(format!("timer x{}", t.timers.len()));
                    }
                    if t.hook.is_some() {
                        triggers.push("commit".to_string());
                    }
                    serde_json::json!({
                        "name": t.name,
                        "status": if t.enabled { "Enabled" } else { "Disabled" },
                        "platform": t.platform,
                        "context": t.context.clone().unwrap_or_default(),
                        "triggers": triggers.join(", "),
                    })
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tasks).unwrap_or_default()
                );
            } else {
                output::print(
                    out,
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("STATUS", "status"),
                        ("PLATFORM", "platform"),
                        ("TRIGGERS", "triggers"),
                        ("CONTEXT", "context"),
                    ],
                );
            }
        }
        Verb::Show { name } => {
            let t: wharf_api::Task = client.get(&format!("/tasks/{name}"), &[]).await?;
            print_task(out, &t);
        }
        Verb::Update {
            name,
            context,
            what,
            set,
            status,
            base_image_trigger_enabled,
            commit_trigger_enabled,
            poll_interval,
            timeout,
            platform,
        } => {
            let (cmd, file, build) = parts(what)?;
            let context = match context.as_deref() {
                None => None,
                Some(c) => Some(context_of(c)?.unwrap_or_default()),
            };
            let update = wharf_api::TaskUpdate {
                cmd,
                file,
                build,
                context,
                platform,
                timeout_s: timeout,
                values: (!set.is_empty())
                    .then(|| pairs("--set", &set))
                    .transpose()?,
                enabled: status.map(|s| matches!(s, Status::Enabled)),
                base_image_trigger: base_image_trigger_enabled,
                commit_trigger: commit_trigger_enabled,
                poll_s: poll_interval,
            };
            let t: wharf_api::Task = client
                .send_json(
                    reqwest::Method::PATCH,
                    &format!("/tasks/{name}"),
                    &[],
                    &update,
                )
                .await?;
            print_task(out, &t);
        }
        Verb::Delete { name, yes } => {
            if !yes && !super::repository::confirm(&format!("Delete task {name}?"))? {
                return Ok(());
            }
            client.delete_empty(&format!("/tasks/{name}")).await?;
            if !json {
                println!("Deleted task {name}");
            }
        }
        Verb::Run {
            name,
            no_logs,
            no_wait,
        } => {
            let queued: wharf_api::Run = client
                .post(&format!("/tasks/{name}/run"), &serde_json::json!({}))
                .await?;
            let how = Follow {
                json,
                no_logs,
                no_wait,
            };
            watch(&client, queued, how, true).await?;
        }
        Verb::ListRuns { name, top } => {
            let mut q = vec![("top", top.to_string())];
            if let Some(n) = name {
                q.push(("task", n));
            }
            let runs: Vec<wharf_api::Run> = client.get("/runs", &q).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else {
                output::print(out, &run_rows(&runs), &RUN_COLUMNS);
            }
        }
        Verb::ShowRun { run_id } => show_run(&client, out, &run_id).await?,
        Verb::Logs { run_id, name } => {
            let id = match (run_id, name) {
                (Some(id), _) => id,
                (None, Some(n)) => {
                    let q = [("top", "1".to_string()), ("task", n.clone())];
                    let runs: Vec<wharf_api::Run> = client.get("/runs", &q).await?;
                    runs.into_iter()
                        .next()
                        .map(|r| r.id)
                        .ok_or_else(|| CliError::Api(format!("task {n} has no runs yet")))?
                }
                (None, None) => {
                    return Err(CliError::Config("give --run-id or -n TASK".into()));
                }
            };
            let r: wharf_api::Run = client.get(&format!("/runs/{id}"), &[]).await?;
            let how = Follow {
                json: false,
                no_logs: false,
                no_wait: false,
            };
            watch(&client, r, how, false).await?;
        }
        Verb::CancelRun { run_id } => {
            let r: wharf_api::Run = client
                .post(&format!("/runs/{run_id}/cancel"), &serde_json::json!({}))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!("Run {run_id}: {}", r.status);
            }
        }
        Verb::Timer { verb } => timer(&client, out, verb).await?,
    }
    Ok(())
}

async fn timer(client: &Client, out: Format, verb: TimerVerb) -> Result<(), CliError> {
    let print_timers = |t: &wharf_api::Task| {
        let rows: Vec<Value> = t
            .timers
            .iter()
            .map(|x| serde_json::to_value(x).unwrap_or_default())
            .collect();
        output::print(
            out,
            &rows,
            &[
                ("NAME", "name"),
                ("SCHEDULE", "schedule"),
                ("ENABLED", "enabled"),
            ],
        );
    };
    match verb {
        TimerVerb::Add {
            name,
            timer_name,
            schedule,
        } => {
            let new = wharf_api::NewTimer {
                name: timer_name,
                schedule,
            };
            let t: wharf_api::Task = client.post(&format!("/tasks/{name}/timers"), &new).await?;
            print_timers(&t);
        }
        TimerVerb::List { name } => {
            let t: wharf_api::Task = client.get(&format!("/tasks/{name}"), &[]).await?;
            print_timers(&t);
        }
        TimerVerb::Update {
            name,
            timer_name,
            schedule,
            enabled,
        } => {
            let update = wharf_api::TimerUpdate { schedule, enabled };
            let t: wharf_api::Task = client
                .send_json(
                    reqwest::Method::PATCH,
                    &format!("/tasks/{name}/timers/{timer_name}"),
                    &[],
                    &update,
                )
                .await?;
            print_timers(&t);
        }
        TimerVerb::Remove { name, timer_name } => {
            client
                .delete_empty(&format!("/tasks/{name}/timers/{timer_name}"))
                .await?;
            println!("Removed timer {timer_name} of task {name}");
        }
    }
    Ok(())
}

/// `wharf secret set|list|delete`: the registry's task secret store.
#[derive(Args)]
pub struct SecretArgs {
    #[command(flatten)]
    target: RegistryTarget,
    #[command(subcommand)]
    verb: SecretVerb,
}

#[derive(Subcommand)]
enum SecretVerb {
    /// Set a secret (sealed with the cluster key; runs read it as
    /// {{.Secrets.ID}} when their file names it under secrets:).
    #[command(after_help = "Examples:\n  \
        printf %s \"$DB_PASSWORD\" | wharf secret set -n db-password --value-stdin\n\n\
        In a task file:\n  \
        secrets:\n    - id: pw\n      secret: db-password\n  \
        steps:\n    - cmd: $Registry/tools:v1 login --password {{.Secrets.pw}}\n\n\
        A secret's value never appears in a run's log (it is masked) nor in any listing.")]
    Set {
        #[arg(long, short)]
        name: String,
        /// The value (visible to other users of this machine: prefer
        /// --value-stdin).
        #[arg(long, conflicts_with = "value_stdin")]
        value: Option<String>,
        /// Read the value from standard input (a trailing newline is kept).
        #[arg(long)]
        value_stdin: bool,
    },
    /// The secrets' names and when each was set.
    List,
    Delete {
        #[arg(long, short)]
        name: String,
    },
}

pub async fn secret(args: SecretArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let out = args.target.output;
    match args.verb {
        SecretVerb::Set {
            name,
            value,
            value_stdin,
        } => {
            let value = match (value, value_stdin) {
                (Some(v), false) => v,
                (None, true) => {
                    let mut v = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut v)?;
                    v
                }
                _ => return Err(CliError::Config("give --value or --value-stdin".into())),
            };
            let req = client
                .request(reqwest::Method::PUT, &format!("/api/v1/secrets/{name}"))
                .json(&wharf_api::SecretValue { value });
            client.expect(req, "setting the secret").await?;
            if !matches!(out, Format::Json) {
                println!("Set secret {name}");
            }
        }
        SecretVerb::List => {
            let secrets: Vec<wharf_api::Secret> = client.get("/secrets", &[]).await?;
            let rows: Vec<Value> = secrets
                .iter()
                .map(|s| serde_json::json!({"name": s.name, "updated": output::time(s.updated_ms)}))
                .collect();
            output::print(out, &rows, &[("NAME", "name"), ("UPDATED", "updated")]);
        }
        SecretVerb::Delete { name } => {
            client.delete_empty(&format!("/secrets/{name}")).await?;
            if !matches!(out, Format::Json) {
                println!("Deleted secret {name}");
            }
        }
    }
    Ok(())
}
