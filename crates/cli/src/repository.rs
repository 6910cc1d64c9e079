//! `wharf repository list|show-tags|show|show-manifests|delete`.

use std::io::{BufRead, Write};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::CliError as NodeError;

#[derive(Args)]
pub struct RepositoryArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OrderBy {
    #[value(name = "time_desc")]
    TimeDesc,
    #[value(name = "time_asc")]
    TimeAsc,
}

impl OrderBy {
    fn as_str(self) -> &'static str {
        match self {
            OrderBy::TimeDesc => "time_desc",
            OrderBy::TimeAsc => "time_asc",
        }
    }
}

#[derive(Subcommand)]
enum Verb {
    /// List repositories.
    List,
    /// List the tags of a repository.
    ShowTags {
        #[arg(long)]
        repository: String,
        /// Also show each tag's media type and manifest size.
        #[arg(long)]
        detail: bool,
        #[arg(long, value_enum)]
        orderby: Option<OrderBy>,
    },
    /// Show one image: digest, sizes, media type, created, layers.
    Show {
        /// REPO:TAG or REPO@DIGEST.
        #[arg(long)]
        image: String,
        /// Show which regions hold each blob of the image.
        #[arg(long)]
        replication: bool,
    },
    /// List the manifests of a repository with their tags.
    ShowManifests {
        #[arg(long)]
        repository: String,
        /// Only manifests no tag points at.
        #[arg(long)]
        untagged: bool,
        #[arg(long, value_enum)]
        orderby: Option<OrderBy>,
    },
    /// Delete an image (REPO:TAG untags; REPO@DIGEST removes the manifest
    /// and all its tags) or a whole repository.
    Delete {
        #[arg(
            long,
            conflicts_with = "repository",
            required_unless_present = "repository"
        )]
        image: Option<String>,
        #[arg(long)]
        repository: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// Replace every `*_ms` field by an RFC 3339 `*` field for display.
fn with_times(mut rows: Vec<Value>) -> Vec<Value> {
    for r in &mut rows {
        if let Value::Object(map) = r {
            let keys: Vec<String> = map.keys().filter(|k| k.ends_with("_ms")).cloned().collect();
            for k in keys {
                if let Some(ms) = map.get(&k).and_then(Value::as_u64) {
                    map.insert(
                        k.trim_end_matches("_ms").to_string(),
                        Value::String(output::time(ms)),
                    );
                }
            }
        }
    }
    rows
}

/// Typed answers as rows for `output::print`.
fn values<T: serde::Serialize>(rows: &[T]) -> Vec<Value> {
    rows.iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect()
}

pub(crate) fn confirm(what: &str) -> Result<bool, NodeError> {
    eprint!("Delete {what}? This cannot be undone. [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

pub async fn run(args: RepositoryArgs) -> Result<(), NodeError> {
    let client = Client::new(&args.conn)?;
    let out = args.output;
    match args.verb {
        Verb::List => {
            let rows: Vec<wharf_api::Repository> = client.get("/repositories", &[]).await?;
            let rows = values(&rows);
            output::print(
                out,
                &with_times(rows),
                &[
                    ("NAME", "name"),
                    ("TAGS", "tag_count"),
                    ("MANIFESTS", "manifest_count"),
                    ("UPDATED", "updated"),
                ],
            );
        }
        Verb::ShowTags {
            repository,
            detail,
            orderby,
        } => {
            let mut q = vec![("repository", repository)];
            if let Some(o) = orderby {
                q.push(("orderby", o.as_str().to_string()));
            }
            let rows: Vec<wharf_api::Tag> = client.get("/repositories/tags", &q).await?;
            let rows = values(&rows);
            let mut cols = vec![
                ("TAG", "name"),
                ("DIGEST", "digest"),
                ("UPDATED", "updated"),
            ];
            if detail {
                cols.extend([
                    ("MEDIA TYPE", "media_type"),
                    ("MANIFEST SIZE", "manifest_size"),
                ]);
            }
            output::print(out, &with_times(rows), &cols);
        }
        Verb::Show { image, replication } => {
            let detail: wharf_api::ImageDetail = client
                .get(
                    "/images",
                    &[("image", image), ("replication", replication.to_string())],
                )
                .await?;
            let v = serde_json::to_value(&detail).unwrap_or(Value::Null);
            match out {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
                }
                _ => {
                    let row = with_times(vec![v]);
                    output::print(
                        out,
                        &row,
                        &[
                            ("DIGEST", "digest"),
                            ("MEDIA TYPE", "media_type"),
                            ("SIZE", "image_size"),
                            ("CREATED", "created"),
                            ("TAGS", "tags"),
                        ],
                    );
                    let layers = values(&detail.layers);
                    if !layers.is_empty() {
                        println!();
                        let mut cols = vec![
                            ("BLOB", "digest"),
                            ("SIZE", "size"),
                            ("MEDIA TYPE", "media_type"),
                        ];
                        if replication {
                            cols.push(("REGIONS", "regions"));
                        }
                        output::print(out, &layers, &cols);
                    }
                    let children = values(&detail.manifests);
                    if !children.is_empty() {
                        println!();
                        output::print(
                            out,
                            &children,
                            &[
                                ("MANIFEST", "digest"),
                                ("PLATFORM", "platform"),
                                ("MEDIA TYPE", "media_type"),
                            ],
                        );
                    }
                }
            }
        }
        Verb::ShowManifests {
            repository,
            untagged,
            orderby,
        } => {
            let mut q = vec![
                ("repository", repository),
                ("untagged", untagged.to_string()),
            ];
            if let Some(o) = orderby {
                q.push(("orderby", o.as_str().to_string()));
            }
            let rows: Vec<wharf_api::Manifest> = client.get("/repositories/manifests", &q).await?;
            let rows = values(&rows);
            output::print(
                out,
                &with_times(rows),
                &[
                    ("DIGEST", "digest"),
                    ("TAGS", "tags"),
                    ("MEDIA TYPE", "media_type"),
                    ("CREATED", "created"),
                ],
            );
        }
        Verb::Delete {
            image,
            repository,
            yes,
        } => {
            let (path, q, what) = match (image, repository) {
                (Some(i), _) => ("/images", ("image", i.clone()), format!("image {i}")),
                (None, Some(r)) => (
                    "/repositories",
                    ("repository", r.clone()),
                    format!("repository {r} and all its images"),
                ),
                (None, None) => {
                    return Err(NodeError::Config("give --image or --repository".into()))
                }
            };
            if !yes && !confirm(&what)? {
                eprintln!("Nothing deleted.");
                return Ok(());
            }
            let r: wharf_api::Removed = client.delete(path, &[q]).await?;
            match out {
                Format::Json => println!("{}", serde_json::to_value(&r).unwrap_or(Value::Null)),
                _ => println!("Deleted {what} ({} items).", r.removed),
            }
        }
    }
    Ok(())
}
