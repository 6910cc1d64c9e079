//! `wharf run`: run an image's command, or a task file, on the cluster's
//! agents (the cloud CLI's `acr run`), printing the run's log as it is
//! written and ending as the run did.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::client::RegistryTarget;
use super::output::Format;
use crate::CliError;

/// How often a waiting CLI asks for more of the log.
const POLL: Duration = Duration::from_millis(500);
/// For a run's first seconds, asked this often: most runs of one short
/// step end within them, and waiting a whole `POLL` would add half a
/// second to each (bench/runs.sh).
const POLL_FAST: Duration = Duration::from_millis(100);
const FAST_FOR: Duration = Duration::from_secs(5);
/// A run still queued this long gets a hint that no agent may be there.
const QUEUED_HINT: Duration = Duration::from_secs(30);

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    wharf run --cmd '$Registry/hello-world:v1' /dev/null\n  \
    wharf run --registry teamone --cmd '$Registry/tools:v2 sh -c \"echo hi\"' /dev/null\n  \
    wharf run -f task.yaml --set tag=v2 /dev/null\n\n\
    $Registry is the registry's login server on the agent, $ID the run's id.\n\
    The run acts with your rights: it pulls what you may pull.\n\
    Exit status: 0 when the run succeeded, 1 otherwise.")]
pub struct RunArgs {
    #[command(flatten)]
    target: RegistryTarget,
    /// The image and its arguments: '$Registry/app:v1 ARGS'.
    #[arg(long)]
    cmd: Option<String>,
    /// A task file (acr-task.yaml): several steps.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// NAME=VALUE for the file's {{.Values.NAME}} (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// The whole run's limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// linux/amd64.
    #[arg(long)]
    platform: Option<String>,
    /// Do not print the run's log.
    #[arg(long)]
    no_logs: bool,
    /// Queue the run and return at once.
    #[arg(long)]
    no_wait: bool,
    /// The context: a local directory (uploaded), a git URL
    /// (URL#ref:subdir), a tar.gz URL, or /dev/null for none.
    context: String,
}

pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let file = match &args.file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Config(format!("reading {}: {e}", path.display())))?,
        ),
        None => None,
    };
    if file.is_some() == args.cmd.is_some() {
        return Err(CliError::Config("give --cmd or -f, one of them".into()));
    }
    let mut values = BTreeMap::new();
    for s in &args.set {
        let Some((k, v)) = s.split_once('=') else {
            return Err(CliError::Config(format!("--set {s}: not NAME=VALUE")));
        };
        values.insert(k.to_string(), v.to_string());
    }
    let client = args.target.client()?;
    let json = matches!(args.target.output, Format::Json);
    let context = crate::build::context(&client, &args.context, None, json).await?;
    let new = wharf_api::NewRun {
        cmd: args.cmd.clone(),
        file,
        values,
        timeout_s: Some(args.timeout),
        platform: args.platform.clone(),
        context,
        build: None,
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

/// How `follow` shows a run.
pub struct Follow {
    pub json: bool,
    pub no_logs: bool,
    pub no_wait: bool,
}

/// Queue `new`, print its log as it is written (unless told not to) and
/// end as the run did: `Err` naming its failed steps unless it succeeded.
pub async fn follow(
    client: &super::client::Client,
    new: &wharf_api::NewRun,
    how: Follow,
) -> Result<(), CliError> {
    let queued: wharf_api::Run = client.post("/runs", new).await?;
    watch(client, queued, how, true).await
}

/// Print run `queued`'s log from its start until it ends (`announce`: say
/// it was queued first), and end as it did.
pub async fn watch(
    client: &super::client::Client,
    queued: wharf_api::Run,
    how: Follow,
    announce: bool,
) -> Result<(), CliError> {
    let Follow {
        json,
        no_logs,
        no_wait,
    } = how;
    let id = queued.id.clone();
    if !json && announce {
        println!("Queued a run with ID: {id}");
    }
    if no_wait {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&queued).unwrap_or_default()
            );
        }
        return Ok(());
    }
    if !json && queued.status == "Queued" {
        println!("Waiting for an agent...");
    }
    let show_log = !no_logs && !json;
    let mut offset = 0u64;
    let waiting = std::time::Instant::now();
    let mut hinted = false;
    let run = loop {
        let mut got = 0;
        if show_log {
            let chunk = client
                .get_bytes(
                    &format!("/runs/{id}/log"),
                    &[("offset", offset.to_string())],
                )
                .await?;
            got = chunk.len();
            offset += got as u64;
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk)?;
            out.flush()?;
        }
        let run: wharf_api::Run = client.get(&format!("/runs/{id}"), &[]).await?;
        // Ended, and its log read to the end.
        if !run.is_active() && got == 0 {
            break run;
        }
        if run.status == "Queued" && !hinted && waiting.elapsed() > QUEUED_HINT {
            hinted = true;
            eprintln!(
                "Run {id} is still queued after {}s: is a node running with \
                 tasks.agent = true? (it stays queued until one claims it)",
                QUEUED_HINT.as_secs()
            );
        }
        if got == 0 {
            let pause = if waiting.elapsed() < FAST_FOR {
                POLL_FAST
            } else {
                POLL
            };
            tokio::time::sleep(pause).await;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&run).unwrap_or_default());
    }
    let took = run
        .ended_ms
        .unwrap_or(run.queued_ms)
        .saturating_sub(run.started_ms.unwrap_or(run.queued_ms))
        / 1000;
    if run.status == "Succeeded" {
        if !json {
            println!("Run ID: {id} was successful after {took}s");
        }
        return Ok(());
    }
    let failed: Vec<String> = run
        .steps
        .iter()
        .filter(|s| s.status == "Failed")
        .map(|s| match s.exit_code {
            Some(code) => format!("{} (exit code {code})", s.id),
            None => s.id.clone(),
        })
        .collect();
    let why = match (run.error, failed.is_empty()) {
        (_, false) => format!(". Failed: {}", failed.join(", ")),
        (Some(e), true) => format!(". Error: {e}"),
        (None, true) => String::new(),
    };
    Err(CliError::Api(format!(
        "Run ID: {id} ended {} after {took}s{why}",
        run.status
    )))
}
