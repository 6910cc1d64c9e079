//! `wharf gc run [--registry N] [--dry-run]` and `wharf gc status`:
//! online garbage collection.

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use wharf_api::{GcReport, GcRequest, GcStatus};

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::CliError;

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Collect now: mark blob links no manifest references (untouched for
    /// gc.grace_s), wait gc.hold_s, remove those still unreferenced; a
    /// blob with no link left is deleted from every region holding it.
    /// Prints what it frees per region.
    Run {
        /// Only this registry (the operator's default: every registry).
        #[arg(long)]
        registry: Option<String>,
        /// Report what would be freed now; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Recent runs, and per region: files deleted, bytes freed, sweeps pending.
    Status,
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub async fn run(args: GcArgs) -> Result<(), CliError> {
    let client = Client::new(&args.conn)?;
    match args.verb {
        Verb::Run { registry, dry_run } => {
            if !dry_run && !matches!(args.output, Format::Json) {
                eprintln!("Collecting (marks stand gc.hold_s before the sweep)...");
            }
            let r: GcReport = client
                .post("/gc/runs", &GcRequest { registry, dry_run })
                .await?;
            if matches!(args.output, Format::Json) {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                return Ok(());
            }
            let verb = if r.dry_run { "would free" } else { "freed" };
            println!(
                "{}: {} link(s) marked, {} removed; {verb} {} blob(s), {}.",
                r.run.id,
                r.run.links_marked,
                r.run.links_removed,
                r.run.blobs_freed,
                output::size(r.run.bytes_freed)
            );
            if r.run.manifests_expired > 0 || r.run.bin_purged > 0 {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                println!(
                    "retention {verb} {} untagged manifest(s); {} recycle-bin entr(ies) purged{}.",
                    r.run.manifests_expired,
                    r.run.bin_purged,
                    if r.dry_run { " (would be)" } else { "" }
                );
                for image in &r.expired {
                    println!("  {image}");
                }
                if r.dry_run && r.run.manifests_expired > 0 {
                    println!("  (their blobs are counted by the run that deletes them)");
                }
            }
            let rows: Vec<Value> = r
                .regions
                .iter()
                .map(|f| json!({"region": f.region, "blobs": f.blobs, "bytes": f.bytes, "size": output::size(f.bytes)}))
                .collect();
            if !rows.is_empty() {
                output::print(
                    args.output,
                    &rows,
                    &[("REGION", "region"), ("BLOBS", "blobs"), ("SIZE", "size")],
                );
            }
        }
        Verb::Status => {
            let s: GcStatus = client.get("/gc", &[]).await?;
            if matches!(args.output, Format::Json) {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return Ok(());
            }
            let regions: Vec<Value> = s
                .regions
                .iter()
                .map(|r| {
                    let mut v = to_value(r);
                    v["freed"] = json!(output::size(r.bytes_freed));
                    v["last"] = json!(if r.last_sweep_ms == 0 {
                        "-".to_string()
                    } else {
                        output::time(r.last_sweep_ms)
                    });
                    v
                })
                .collect();
            output::print(
                args.output,
                &regions,
                &[
                    ("REGION", "region"),
                    ("FILES DELETED", "files_deleted"),
                    ("FREED", "freed"),
                    ("KEPT", "files_kept"),
                    ("PENDING", "sweeps_pending"),
                    ("LAST SWEEP", "last"),
                ],
            );
            println!();
            let runs: Vec<Value> = s
                .runs
                .iter()
                .map(|r| {
                    let mut v = to_value(r);
                    v["started"] = json!(output::time(r.started_ms));
                    v["registry"] = json!(if r.registry.is_empty() {
                        "*"
                    } else {
                        &r.registry
                    });
                    v["freed"] = json!(output::size(r.bytes_freed));
                    v
                })
                .collect();
            output::print(
                args.output,
                &runs,
                &[
                    ("RUN", "id"),
                    ("REGISTRY", "registry"),
                    ("STARTED", "started"),
                    ("LINKS REMOVED", "links_removed"),
                    ("BLOBS FREED", "blobs_freed"),
                    ("FREED", "freed"),
                ],
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(super::output::size(0), "0 B");
        assert_eq!(super::output::size(1023), "1023 B");
        assert_eq!(super::output::size(1536), "1.5 KiB");
        assert_eq!(super::output::size(3 << 30), "3.0 GiB");
    }
}

#[derive(Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: ScrubVerb,
}

#[derive(Subcommand)]
enum ScrubVerb {
    /// Per region: blobs and bytes verified, passes, corrupt copies found
    /// (moved to the store's quarantine/ and replaced from a healthy region).
    Status,
}

pub async fn scrub(args: ScrubArgs) -> Result<(), CliError> {
    let client = Client::new(&args.conn)?;
    let ScrubVerb::Status = args.verb;
    let s: wharf_api::ScrubStatus = client.get("/scrub", &[]).await?;
    if matches!(args.output, Format::Json) {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Value> = s
        .regions
        .iter()
        .map(|r| {
            let mut v = to_value(r);
            v["verified"] = json!(output::size(r.bytes_verified));
            v["last"] = json!(if r.last_pass_ms == 0 {
                "-".to_string()
            } else {
                output::time(r.last_pass_ms)
            });
            v
        })
        .collect();
    output::print(
        args.output,
        &rows,
        &[
            ("REGION", "region"),
            ("BLOBS", "blobs_verified"),
            ("VERIFIED", "verified"),
            ("PASSES", "passes"),
            ("LAST PASS", "last"),
            ("CORRUPT", "corrupt_found"),
        ],
    );
    let found: Vec<Value> = s
        .regions
        .iter()
        .flat_map(|r| {
            r.recent.iter().map(|c| {
                json!({"region": r.region, "digest": c.digest, "actual": c.actual,
                       "found_by": c.found_by, "at": output::time(c.at_ms)})
            })
        })
        .collect();
    if !found.is_empty() {
        println!();
        output::print(
            args.output,
            &found,
            &[
                ("REGION", "region"),
                ("BLOB", "digest"),
                ("HASHED TO", "actual"),
                ("FOUND BY", "found_by"),
                ("AT", "at"),
            ],
        );
    }
    Ok(())
}
