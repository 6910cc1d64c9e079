//! `wharf replication list|create|delete`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::error::NodeError;

#[derive(Args)]
pub struct ReplicationArgs {
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
    /// Every region: health, Raft role, applied-index lag, blobs and bytes
    /// still to copy into it.
    List,
    /// Add a region. Start its node first with `wharf serve --join`; it
    /// catches up as a learner, then becomes a voter, and the mover copies
    /// every blob to it.
    Create {
        #[arg(long)]
        region: String,
        /// The new node's id (unique in the cluster).
        #[arg(long)]
        node_id: u64,
        /// host:port of the new node's peer gRPC server.
        #[arg(long)]
        grpc: String,
        /// Base URL of the new node's HTTP API.
        #[arg(long)]
        http: String,
        /// How long the new node may take to catch up before it votes;
        /// if it does not, it stays a learner and create can be run again.
        #[arg(long, default_value_t = 120)]
        catch_up_timeout_s: u64,
    },
    /// Remove a region: it stops voting and receiving metadata.
    Delete {
        #[arg(long)]
        region: String,
    },
}

pub async fn run(args: ReplicationArgs) -> Result<(), NodeError> {
    let client = Client::new(&args.conn)?;
    match args.verb {
        Verb::List => {
            let rows: Vec<Value> = client.get("/replications", &[]).await?;
            output::print(
                args.output,
                &rows,
                &[
                    ("REGION", "region"),
                    ("NODE", "node_id"),
                    ("ENDPOINT", "endpoint"),
                    ("HEALTH", "health"),
                    ("ROLE", "role"),
                    ("LAG", "lag"),
                    ("BLOBS TO COPY", "blobs_to_copy"),
                    ("BYTES TO COPY", "bytes_to_copy"),
                    ("LOST", "blobs_lost"),
                ],
            );
        }
        Verb::Create {
            region,
            node_id,
            grpc,
            http,
            catch_up_timeout_s,
        } => {
            eprintln!("Adding region {region} (node {node_id}); it catches up before it votes...");
            let v: Value = client
                .post(
                    "/replications",
                    &json!({
                        "region": region,
                        "node_id": node_id,
                        "grpc": grpc,
                        "http": http,
                        "catch_up_timeout_s": catch_up_timeout_s,
                    }),
                )
                .await?;
            match args.output {
                Format::Json => println!("{v}"),
                _ => println!("Region {region} added as a voter."),
            }
        }
        Verb::Delete { region } => {
            let v: Value = client
                .delete("/replications", &[("region", region.clone())])
                .await?;
            match args.output {
                Format::Json => println!("{v}"),
                _ => println!("Region {region} removed."),
            }
        }
    }
    Ok(())
}
