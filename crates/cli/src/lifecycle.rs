//! `wharf config retention|soft-delete update|show` and `wharf manifest
//! list-deleted|restore`: a registry's data-lifecycle policies and its
//! recycle bin, with the cloud CLI's verbs and flags.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::client::RegistryTarget;
use super::output::{self, Format};
use crate::CliError;

#[derive(Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    target: RegistryTarget,
    #[command(subcommand)]
    policy: PolicyVerb,
}

#[derive(Subcommand)]
enum PolicyVerb {
    /// Delete untagged manifests (of every media type) this many days
    /// after they lost their last tag, at each GC run. Index children,
    /// referrers of a present subject and delete-locked manifests stay.
    Retention {
        #[command(subcommand)]
        verb: RetentionVerb,
    },
    /// Deleted manifests and tags go to a recycle bin for this many days
    /// (restorable in every region), then are purged by a GC run.
    SoftDelete {
        #[command(subcommand)]
        verb: Verb,
    },
}

/// `--status enabled|disabled`, as the cloud CLI spells it.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Status {
    Enabled,
    Disabled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }
}

#[derive(Subcommand)]
enum RetentionVerb {
    /// Change the policy; only what is given changes.
    Update {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// 0 to 365 (0: at the next GC run).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Show the policy and its keep policies.
    Show,
    /// Keep policies by repository pattern, applied at each GC run while
    /// retention is enabled: a tag goes when it is not among the
    /// --keep-last newest AND was neither pushed nor pulled for
    /// --untouched-days (every condition given). Locked tags stay.
    Keep {
        #[command(subcommand)]
        verb: KeepVerb,
    },
}

#[derive(Subcommand)]
enum KeepVerb {
    /// Add a keep policy (or replace the one of that pattern).
    #[command(after_help = "Examples:\n  \
        wharf config retention keep add --repository 'team/*' --keep-last 10\n  \
        wharf config retention keep add --repository app --untouched-days 30")]
    Add {
        /// "*", "team/*" or one repository.
        #[arg(long)]
        repository: String,
        /// Keep this many most recently pushed tags.
        #[arg(long)]
        keep_last: Option<u32>,
        /// Let go of tags neither pushed nor pulled for this many days.
        #[arg(long)]
        untouched_days: Option<u32>,
    },
    List,
    Remove {
        #[arg(long)]
        repository: String,
    },
}

#[derive(Subcommand)]
enum Verb {
    /// Change the policy; only what is given changes.
    Update {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// 1 to 90.
        #[arg(long)]
        days: Option<u32>,
    },
    /// Show the policy.
    Show,
}

fn print_policy(out: Format, p: &wharf_api::DayPolicy) {
    let row = serde_json::json!({
        "status": if p.enabled { "enabled" } else { "disabled" },
        "days": p.days,
    });
    output::print(out, &[row], &[("STATUS", "status"), ("DAYS", "days")]);
}

fn print_keep(out: Format, rules: &[wharf_api::KeepRule]) {
    let rows: Vec<Value> = rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    output::print(
        out,
        &rows,
        &[
            ("REPOSITORY", "pattern"),
            ("KEEP LAST", "keep_last"),
            ("UNTOUCHED DAYS", "untouched_days"),
        ],
    );
}

pub async fn config(args: ConfigArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let out = args.target.output;
    let (name, verb) = match args.policy {
        PolicyVerb::Retention { verb } => match verb {
            RetentionVerb::Update { status, days } => ("retention", Verb::Update { status, days }),
            RetentionVerb::Show => {
                let p: wharf_api::Policies = client.get("/policies", &[]).await?;
                print_policy(out, &p.retention);
                if !p.keep.is_empty() && !matches!(out, Format::Json) {
                    println!();
                    print_keep(out, &p.keep);
                }
                return Ok(());
            }
            RetentionVerb::Keep { verb } => {
                let p: wharf_api::Policies = match verb {
                    KeepVerb::List => client.get("/policies", &[]).await?,
                    KeepVerb::Add {
                        repository,
                        keep_last,
                        untouched_days,
                    } => {
                        let rule = wharf_api::KeepRule {
                            pattern: repository,
                            keep_last,
                            untouched_days,
                        };
                        client
                            .send_json(reqwest::Method::PUT, "/policies/keep", &[], &rule)
                            .await?
                    }
                    KeepVerb::Remove { repository } => {
                        client
                            .delete("/policies/keep", &[("pattern", repository)])
                            .await?
                    }
                };
                print_keep(out, &p.keep);
                return Ok(());
            }
        },
        PolicyVerb::SoftDelete { verb } => ("soft-delete", verb),
    };
    let policies: wharf_api::Policies = match verb {
        Verb::Show => client.get("/policies", &[]).await?,
        Verb::Update { status, days } => {
            if status.is_none() && days.is_none() {
                return Err(CliError::Config(
                    "nothing to change: give --status or --days".into(),
                ));
            }
            let change = wharf_api::PolicyChange {
                policy: name.to_string(),
                enabled: status.map(|s| matches!(s, Status::Enabled)),
                days,
            };
            client
                .send_json(reqwest::Method::PATCH, "/policies", &[], &change)
                .await?
        }
    };
    let p = match name {
        "retention" => policies.retention,
        _ => policies.soft_delete,
    };
    print_policy(out, &p);
    Ok(())
}

#[derive(Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    target: RegistryTarget,
    #[command(subcommand)]
    verb: ManifestVerb,
}

#[derive(Subcommand)]
enum ManifestVerb {
    /// Manifests and tags of a repository in the recycle bin.
    ListDeleted {
        #[arg(long)]
        repository: String,
    },
    /// Put a deleted manifest back (REPO@DIGEST, with its deleted tags
    /// that name nothing else now) or a deleted tag (REPO:TAG, with its
    /// manifest), in every region at once.
    Restore {
        #[arg(long)]
        image: String,
    },
}

/// Rows of deleted manifests, as `list-deleted` prints them.
fn print_deleted(out: Format, rows: &[wharf_api::DeletedManifest]) {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["deleted"] = Value::String(output::time(r.deleted_ms));
            v["purge"] = Value::String(output::time(r.purge_ms));
            v["what"] = Value::String(
                if r.manifest_deleted {
                    "manifest"
                } else {
                    "tags"
                }
                .into(),
            );
            v
        })
        .collect();
    output::print(
        out,
        &rows,
        &[
            ("DIGEST", "digest"),
            ("DELETED", "what"),
            ("TAGS", "tags"),
            ("MEDIA TYPE", "media_type"),
            ("DELETED AT", "deleted"),
            ("PURGED AFTER", "purge"),
        ],
    );
}

pub async fn manifest(args: ManifestArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let out = args.target.output;
    match args.verb {
        ManifestVerb::ListDeleted { repository } => {
            let rows: Vec<wharf_api::DeletedManifest> = client
                .get("/deleted", &[("repository", repository)])
                .await?;
            print_deleted(out, &rows);
        }
        ManifestVerb::Restore { image } => {
            let r: wharf_api::Restored = client
                .post(
                    "/deleted/restore",
                    &wharf_api::RestoreRequest {
                        image: image.clone(),
                    },
                )
                .await?;
            match out {
                Format::Json => println!("{}", serde_json::to_value(&r).unwrap_or(Value::Null)),
                _ => println!("Restored {image} ({} items).", r.restored),
            }
        }
    }
    Ok(())
}
