//! `wharf replication list|create|delete`: with `--registry N --location
//! REGION`, a registry's replica regions (as the cloud CLI's `acr
//! replication`); without, the regions of the cluster (its members).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::CliError as NodeError;

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
    /// still to copy into it. With --registry: that registry's replica
    /// regions.
    List {
        #[arg(long)]
        registry: Option<String>,
    },
    /// With --registry N --location REGION: replicate registry N to REGION
    /// (the first one makes the set explicit: its blobs then live in its
    /// replica regions only, and its clients elsewhere are served by them).
    /// Without: add a region to the cluster. Start its node first with
    /// `wharf serve --join`; it catches up as a learner, then becomes a
    /// voter, and the mover copies every blob to it.
    Create {
        #[arg(long, requires = "location", conflicts_with_all = ["region", "node_id", "grpc", "http"])]
        registry: Option<String>,
        /// A region of the cluster (with --registry).
        #[arg(long)]
        location: Option<String>,
        #[arg(long, required_unless_present = "registry")]
        region: Option<String>,
        /// The new node's id (unique in the cluster).
        #[arg(long, required_unless_present = "registry")]
        node_id: Option<u64>,
        /// host:port of the new node's peer gRPC server.
        #[arg(long, required_unless_present = "registry")]
        grpc: Option<String>,
        /// Base URL of the new node's HTTP API.
        #[arg(long, required_unless_present = "registry")]
        http: Option<String>,
        /// How long the new node may take to catch up before it votes;
        /// if it does not, it stays a learner and create can be run again.
        #[arg(long, default_value_t = 120)]
        catch_up_timeout_s: u64,
    },
    /// With --registry N --location REGION: stop replicating N to REGION.
    /// Without: remove a region from the cluster (it stops voting and
    /// receiving metadata).
    Delete {
        #[arg(long, requires = "location", conflicts_with = "region")]
        registry: Option<String>,
        #[arg(long)]
        location: Option<String>,
        #[arg(long, required_unless_present = "registry")]
        region: Option<String>,
    },
}

const REPLICA_COLUMNS: &[(&str, &str)] = &[
    ("REGISTRY", "registry"),
    ("LOCATION", "location"),
    ("EXPLICIT", "explicit"),
];

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn print_replicas(format: Format, rows: Vec<wharf_api::Replica>) {
    let rows: Vec<Value> = rows.iter().map(to_value).collect();
    match format {
        Format::Json => println!("{}", Value::Array(rows)),
        _ => output::print(format, &rows, REPLICA_COLUMNS),
    }
}

pub async fn run(args: ReplicationArgs) -> Result<(), NodeError> {
    let client = Client::new(&args.conn)?;
    match args.verb {
        Verb::List {
            registry: Some(registry),
        } => {
            let rows: Vec<wharf_api::Replica> = client
                .get(&format!("/registries/{registry}/replications"), &[])
                .await?;
            print_replicas(args.output, rows);
        }
        Verb::List { registry: None } => {
            let rows: Vec<wharf_api::Region> = client.get("/replications", &[]).await?;
            let rows: Vec<Value> = rows.iter().map(to_value).collect();
            output::print(
                args.output,
                &rows,
                &[
                    ("REGION", "region"),
                    ("NODE", "node_id"),
                    ("ENDPOINT", "endpoint"),
                    ("HEALTH", "health"),
                    ("ROLE", "role"),
                    ("WORKER", "worker"),
                    ("LAG", "lag"),
                    ("BLOBS TO COPY", "blobs_to_copy"),
                    ("BYTES TO COPY", "bytes_to_copy"),
                    ("LOST", "blobs_lost"),
                ],
            );
        }
        Verb::Create {
            registry: Some(registry),
            location: Some(location),
            ..
        } => {
            let body = serde_json::to_value(wharf_api::Location { location })
                .map_err(|e| NodeError::Api(e.to_string()))?;
            let rows: Vec<wharf_api::Replica> = client
                .post(&format!("/registries/{registry}/replications"), &body)
                .await?;
            print_replicas(args.output, rows);
        }
        Verb::Create {
            region: Some(region),
            node_id: Some(node_id),
            grpc: Some(grpc),
            http: Some(http),
            catch_up_timeout_s,
            ..
        } => {
            eprintln!("Adding region {region} (node {node_id}); it catches up before it votes...");
            let v: wharf_api::MemberChanged = client
                .post(
                    "/replications",
                    &wharf_api::NewMember {
                        region: region.clone(),
                        node_id,
                        grpc,
                        http,
                        catch_up_timeout_s: Some(catch_up_timeout_s),
                    },
                )
                .await?;
            match args.output {
                Format::Json => println!("{}", to_value(&v)),
                _ => println!("Region {region} added as a voter."),
            }
        }
        Verb::Create { .. } => {
            return Err(NodeError::Config(
                "create takes --registry N --location REGION, or --region --node-id --grpc --http"
                    .into(),
            ))
        }
        Verb::Delete {
            registry: Some(registry),
            location: Some(location),
            ..
        } => {
            let rows: Vec<wharf_api::Replica> = client
                .delete(
                    &format!("/registries/{registry}/replications"),
                    &[("location", location)],
                )
                .await?;
            print_replicas(args.output, rows);
        }
        Verb::Delete {
            region: Some(region),
            ..
        } => {
            let v: wharf_api::MemberChanged = client
                .delete("/replications", &[("region", region.clone())])
                .await?;
            match args.output {
                Format::Json => println!("{}", to_value(&v)),
                _ => println!("Region {region} removed."),
            }
        }
        Verb::Delete { .. } => {
            return Err(NodeError::Config(
                "delete takes --registry N --location REGION, or --region".into(),
            ))
        }
    }
    Ok(())
}
