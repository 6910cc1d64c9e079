//! `wharf webhook create|list|show|update|delete|ping|list-events|
//! get-config|redeliver`: the cloud CLI's webhook verbs and flags.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::client::RegistryTarget;
use super::lifecycle::Status;
use super::output::{self, Format};
use crate::CliError;

#[derive(Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    target: RegistryTarget,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Clone, Copy, ValueEnum)]
enum EventFormat {
    /// The cloud registry's JSON: {id, timestamp, action, target, request}.
    Default,
    /// CloudEvents 1.0, structured (application/cloudevents+json).
    Cloudevents,
}

impl EventFormat {
    fn as_str(self) -> &'static str {
        match self {
            EventFormat::Default => "default",
            EventFormat::Cloudevents => "cloudevents",
        }
    }
}

#[derive(Subcommand)]
enum Verb {
    /// Create a webhook: every matching event is POSTed to --uri, at least
    /// once, in order, retried with backoff, and logged.
    #[command(after_help = "Examples:\n  \
        wharf webhook create --name ci --uri https://ci.example/hook --actions push\n  \
        wharf webhook create --name sync --uri http://10.0.0.5/x --actions push,replicated \\\n      \
        --scope 'team/*:*' --headers 'Authorization=Bearer abc' --secret s3cr3t --format cloudevents\n\n\
        With --secret, each request carries X-Wharf-Signature-256: sha256=<hex HMAC-SHA256 of the body>.")]
    Create {
        #[arg(long, short)]
        name: String,
        /// http:// or https:// URL the events are POSTed to.
        #[arg(long)]
        uri: String,
        /// push, delete, chart_push, chart_delete, quarantine, replicated
        /// (comma- or space-separated).
        #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
        actions: Vec<String>,
        /// 'repo:tag', 'repo:*', 'team/*:v1'; 'repo' alone means repo:latest.
        /// Default: every repository and tag.
        #[arg(long)]
        scope: Option<String>,
        /// Custom request headers, K=V (several allowed).
        #[arg(long, num_args = 1..)]
        headers: Vec<String>,
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[arg(long, value_enum)]
        format: Option<EventFormat>,
        /// Sign bodies with this key (HMAC-SHA256).
        #[arg(long)]
        secret: Option<String>,
    },
    List,
    Show {
        #[arg(long, short)]
        name: String,
    },
    /// Change a webhook; only what is given changes. An empty --scope or
    /// --secret removes it.
    Update {
        #[arg(long, short)]
        name: String,
        #[arg(long)]
        uri: Option<String>,
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        actions: Option<Vec<String>>,
        #[arg(long)]
        scope: Option<String>,
        /// Replace the custom headers (K=V ...; give none to remove all).
        #[arg(long, num_args = 0..)]
        headers: Option<Vec<String>>,
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[arg(long, value_enum)]
        format: Option<EventFormat>,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Delete a webhook with its delivery log.
    Delete {
        #[arg(long, short)]
        name: String,
    },
    /// Send a `ping` event to the webhook (delivered and logged like any).
    Ping {
        #[arg(long, short)]
        name: String,
    },
    /// The delivery log, newest first: each attempt's status, latency and
    /// error; -o json (or --detail) adds the requests and responses.
    ListEvents {
        #[arg(long, short)]
        name: String,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// Print each attempt's request and response headers and bodies.
        #[arg(long)]
        detail: bool,
    },
    /// The URI and custom headers the webhook calls with.
    GetConfig {
        #[arg(long, short)]
        name: String,
    },
    /// Send an event again (delivered or dead-lettered), with a fresh
    /// bound of attempts.
    Redeliver {
        #[arg(long, short)]
        name: String,
        /// The event's id (from list-events).
        #[arg(long)]
        event: String,
    },
}

/// `K=V` pairs; the reason when one has no `=`.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, CliError> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(CliError::Config(format!(
                "header {h:?} is not K=V (e.g. --headers 'Authorization=Bearer abc')"
            ))),
        })
        .collect()
}

/// Space- or comma-separated, as the cloud CLI takes them.
fn actions(list: Vec<String>) -> Vec<String> {
    list.iter()
        .flat_map(|a| a.split([',', ' ']))
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn print_hooks(out: Format, hooks: &[wharf_api::Webhook]) {
    let rows: Vec<Value> = hooks
        .iter()
        .map(|h| {
            let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
            if !matches!(out, Format::Json) {
                v["actions"] = Value::String(h.actions.join(","));
                v["created"] = Value::String(output::time(h.created_ms));
            }
            v
        })
        .collect();
    output::print(
        out,
        &rows,
        &[
            ("NAME", "name"),
            ("STATUS", "status"),
            ("ACTIONS", "actions"),
            ("SCOPE", "scope"),
            ("URI", "uri"),
            ("FORMAT", "format"),
            ("SIGNED", "signed"),
            ("PENDING", "pending"),
        ],
    );
}

fn print_events(out: Format, events: &[wharf_api::WebhookEvent], detail: bool) {
    if matches!(out, Format::Json) {
        println!(
            "{}",
            serde_json::to_string_pretty(events).unwrap_or_default()
        );
        return;
    }
    let mut rows = Vec::new();
    for e in events {
        let target = match (&e.tag, e.digest.is_empty()) {
            (Some(t), _) => format!("{}:{t}", e.repository),
            (None, false) => format!("{}@{}", e.repository, e.digest),
            (None, true) => e.repository.clone(),
        };
        let base = serde_json::json!({
            "id": e.id,
            "action": match &e.region {
                Some(r) => format!("{} ({r})", e.action),
                None => e.action.clone(),
            },
            "target": target,
            "state": e.state,
            "time": output::time(e.timestamp_ms),
        });
        if e.attempts.is_empty() {
            rows.push(base.clone());
        }
        for (i, a) in e.attempts.iter().enumerate() {
            let mut v = base.clone();
            v["attempt"] = Value::from(i + 1);
            v["result"] = Value::String(match (a.status, &a.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(err)) => err.clone(),
                (None, None) => String::new(),
            });
            v["latency"] = Value::String(format!("{} ms", a.latency_ms));
            v["time"] = Value::String(output::time(a.at_ms));
            rows.push(v);
        }
    }
    output::print(
        out,
        &rows,
        &[
            ("EVENT ID", "id"),
            ("ACTION", "action"),
            ("TARGET", "target"),
            ("STATE", "state"),
            ("ATTEMPT", "attempt"),
            ("RESULT", "result"),
            ("LATENCY", "latency"),
            ("TIME", "time"),
        ],
    );
    if detail {
        for e in events {
            for (i, a) in e.attempts.iter().enumerate() {
                println!("\n== event {} attempt {} ==", e.id, i + 1);
                println!("-- request");
                for (k, v) in &a.request_headers {
                    println!("{k}: {v}");
                }
                println!("\n{}", a.request_body);
                println!(
                    "-- response {}",
                    a.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| a.error.clone().unwrap_or_default())
                );
                for (k, v) in &a.response_headers {
                    println!("{k}: {v}");
                }
                println!("\n{}", a.response_body);
            }
        }
    }
}

pub async fn webhook(args: WebhookArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let out = args.target.output;
    match args.verb {
        Verb::Create {
            name,
            uri,
            actions: list,
            scope,
            headers,
            status,
            format,
            secret,
        } => {
            let body = wharf_api::NewWebhook {
                name,
                uri,
                actions: actions(list),
                scope,
                headers: parse_headers(&headers)?,
                status: status.map(|s| s.as_str().to_string()),
                format: format.map(|f| f.as_str().to_string()),
                secret,
            };
            let h: wharf_api::Webhook = client.post("/webhooks", &body).await?;
            print_hooks(out, &[h]);
        }
        Verb::List => {
            let hooks: Vec<wharf_api::Webhook> = client.get("/webhooks", &[]).await?;
            print_hooks(out, &hooks);
        }
        Verb::Show { name } => {
            let h: wharf_api::Webhook = client.get(&format!("/webhooks/{name}"), &[]).await?;
            print_hooks(out, &[h]);
        }
        Verb::Update {
            name,
            uri,
            actions: list,
            scope,
            headers,
            status,
            format,
            secret,
        } => {
            let change = wharf_api::WebhookChange {
                uri,
                actions: list.map(actions),
                scope,
                headers: headers.as_deref().map(parse_headers).transpose()?,
                status: status.map(|s| s.as_str().to_string()),
                format: format.map(|f| f.as_str().to_string()),
                secret,
            };
            if change == wharf_api::WebhookChange::default() {
                return Err(CliError::Config(
                    "nothing to change: give --uri, --actions, --scope, --headers, --status, --format or --secret".into(),
                ));
            }
            let h: wharf_api::Webhook = client
                .send_json(
                    reqwest::Method::PATCH,
                    &format!("/webhooks/{name}"),
                    &[],
                    &change,
                )
                .await?;
            print_hooks(out, &[h]);
        }
        Verb::Delete { name } => {
            let r: wharf_api::Removed = client.delete(&format!("/webhooks/{name}"), &[]).await?;
            println!("deleted webhook {name} and {} logged events", r.removed);
        }
        Verb::Ping { name } => {
            let r: Value = client
                .post(&format!("/webhooks/{name}/ping"), &serde_json::json!({}))
                .await?;
            match out {
                Format::Json => println!("{r}"),
                _ => println!(
                    "ping event {} queued; see `wharf webhook list-events --name {name}`",
                    r["id"].as_str().unwrap_or("")
                ),
            }
        }
        Verb::ListEvents { name, top, detail } => {
            let events: Vec<wharf_api::WebhookEvent> = client
                .get(
                    &format!("/webhooks/{name}/events"),
                    &[("limit", top.to_string())],
                )
                .await?;
            print_events(out, &events, detail);
        }
        Verb::GetConfig { name } => {
            let c: wharf_api::WebhookConfig =
                client.get(&format!("/webhooks/{name}/config"), &[]).await?;
            match out {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default())
                }
                _ => {
                    let headers: serde_json::Map<String, Value> = c
                        .custom_headers
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    let row = serde_json::json!({
                        "uri": c.service_uri,
                        "headers": Value::Object(headers).to_string(),
                    });
                    output::print(
                        out,
                        &[row],
                        &[("SERVICE URI", "uri"), ("CUSTOM HEADERS", "headers")],
                    );
                }
            }
        }
        Verb::Redeliver { name, event } => {
            let _: Value = client
                .post(
                    &format!("/webhooks/{name}/redeliver"),
                    &wharf_api::Redeliver {
                        event_id: event.clone(),
                    },
                )
                .await?;
            println!("event {event} queued again for webhook {name}");
        }
    }
    Ok(())
}
