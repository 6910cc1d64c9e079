//! `wharf repository list|show-tags|show|show-manifests|delete`.

use std::io::{BufRead, Write};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::RegistryTarget;
use super::output::{self, Format};
use crate::CliError as NodeError;

#[derive(Args)]
pub struct RepositoryArgs {
    #[command(flatten)]
    target: RegistryTarget,
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
    /// List repositories in name order, with their tag and manifest counts
    /// (fetched a page of 1,000 at a time).
    List {
        /// Show at most this many.
        #[arg(long)]
        top: Option<usize>,
    },
    /// Repositories with manifests or tags in the recycle bin (soft delete).
    ListDeleted,
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
    /// Show one image (digest, sizes, media type, created, layers, locks)
    /// or, with --repository, one repository and its locks.
    Show {
        /// REPO:TAG or REPO@DIGEST.
        #[arg(
            long,
            conflicts_with = "repository",
            required_unless_present = "repository"
        )]
        image: Option<String>,
        #[arg(long)]
        repository: Option<String>,
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
    /// Lock or unlock a repository, or one tag or manifest of it: a
    /// refused write is 403 DENIED naming the lock, in every region from
    /// the next request on. Only the flags given change.
    #[command(after_help = "Examples:\n  \
        wharf repository update --repository app --write-enabled false\n  \
        wharf repository update --image app:v1 --delete-enabled false\n  \
        wharf repository update --image app@sha256:... --read-enabled false")]
    Update {
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        repository: Option<String>,
        /// REPO:TAG or REPO@DIGEST.
        #[arg(long)]
        image: Option<String>,
        /// Pushes (repository), moving the tag, deleting; false implies no deletes.
        #[arg(long, action = clap::ArgAction::Set)]
        write_enabled: Option<bool>,
        /// Deleting (the repository: anything in it).
        #[arg(long, action = clap::ArgAction::Set)]
        delete_enabled: Option<bool>,
        /// Pulling.
        #[arg(long, action = clap::ArgAction::Set)]
        read_enabled: Option<bool>,
        /// Being listed in tags/list and the catalog.
        #[arg(long, action = clap::ArgAction::Set)]
        list_enabled: Option<bool>,
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

/// The columns of a row's locks.
const LOCK_COLUMNS: [(&str, &str); 4] = [
    ("WRITE", "attributes.write_enabled"),
    ("DELETE", "attributes.delete_enabled"),
    ("READ", "attributes.read_enabled"),
    ("LIST", "attributes.list_enabled"),
];

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
    let client = args.target.client()?;
    let out = args.target.output;
    match args.verb {
        Verb::List { top } => {
            let rows: Vec<wharf_api::Repository> =
                client.get_all("/repositories", &[], top).await?;
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
        Verb::ListDeleted => {
            let names: Vec<String> = client.get("/deleted/repositories", &[]).await?;
            let rows: Vec<Value> = names
                .iter()
                .map(|n| serde_json::json!({ "name": n }))
                .collect();
            output::print(out, &rows, &[("NAME", "name")]);
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
                    ("IMAGE SIZE", "image_size"),
                    ("LAST PULLED", "pulled"),
                ]);
                cols.extend(LOCK_COLUMNS);
            }
            output::print(out, &with_times(rows), &cols);
        }
        Verb::Show {
            image: None,
            repository: Some(repository),
            ..
        } => {
            let row: wharf_api::Repository = client
                .get("/repositories/show", &[("repository", repository)])
                .await?;
            let mut cols = vec![
                ("NAME", "name"),
                ("TAGS", "tag_count"),
                ("MANIFESTS", "manifest_count"),
                ("CREATED", "created"),
                ("UPDATED", "updated"),
            ];
            cols.extend(LOCK_COLUMNS);
            output::print(out, &with_times(values(&[row])), &cols);
        }
        Verb::Show {
            image: None,
            repository: None,
            ..
        } => return Err(NodeError::Config("give --image or --repository".into())),
        Verb::Show {
            image: Some(image),
            replication,
            ..
        } => {
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
                    let mut cols = vec![
                        ("DIGEST", "digest"),
                        ("MEDIA TYPE", "media_type"),
                        ("SIZE", "image_size"),
                        ("CREATED", "created"),
                        ("TAGS", "tags"),
                    ];
                    cols.extend(LOCK_COLUMNS);
                    output::print(out, &row, &cols);
                    if let Some(t) = &detail.tag_attributes {
                        println!(
                            "\ntag locks: write {} delete {} read {} list {}",
                            t.write_enabled, t.delete_enabled, t.read_enabled, t.list_enabled
                        );
                    }
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
        Verb::Update {
            repository,
            image,
            write_enabled,
            delete_enabled,
            read_enabled,
            list_enabled,
        } => {
            let (repository, reference) = match (image, repository) {
                (Some(i), _) => {
                    let (r, reference) = wharf_oci::split_image(&i);
                    (r.to_string(), Some(reference.to_string()))
                }
                (None, Some(r)) => (r, None),
                (None, None) => {
                    return Err(NodeError::Config("give --repository or --image".into()))
                }
            };
            let change = wharf_api::AttributesChange {
                repository,
                reference,
                write_enabled,
                delete_enabled,
                read_enabled,
                list_enabled,
            };
            if change.write_enabled.is_none()
                && change.delete_enabled.is_none()
                && change.read_enabled.is_none()
                && change.list_enabled.is_none()
            {
                return Err(NodeError::Config(
                    "nothing to change: give --write-enabled, --delete-enabled, \
                     --read-enabled or --list-enabled"
                        .into(),
                ));
            }
            let now: wharf_api::Attributes = client
                .send_json(reqwest::Method::PATCH, "/repositories", &[], &change)
                .await?;
            let row = serde_json::json!({ "attributes": now });
            output::print(out, &[row], &LOCK_COLUMNS);
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
