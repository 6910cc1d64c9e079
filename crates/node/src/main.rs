//! `wharf`: a geo-replicated OCI registry node, its local cluster launcher,
//! and the admin CLI.

// mimalloc: per-thread free lists instead of glibc's arenas; every request
// allocates (headers, the router's clones, decoded records) and malloc and
// free were a tenth of a manifest GET's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod bootstrap;
use wharf_cli as cli;
use wharf_config as config;
mod directory;
mod error;
mod fence;
mod gc;
mod http;
mod metrics;
mod network;
mod proxy;
mod ratelimit;
mod registrar;
mod request_id;
mod roles;
mod scrub;
mod serve;
mod shutdown;
mod state;
mod tasks;
mod tenant;
mod tls;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ServeConfig;
use crate::error::NodeError;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Wharf: a private, geo-replicated OCI container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one registry node (one region) from a config file and flags.
    Serve(ServeArgs),
    /// Start a whole local cluster in the foreground, one process per region.
    Up(up::UpArgs),
    /// List, inspect and delete repositories, tags and manifests.
    Repository(cli::repository::RepositoryArgs),
    /// Regions of the cluster; with --registry N, the replica regions of registry N.
    Replication(cli::replication::ReplicationArgs),
    /// Log docker and podman in to a registry (as `acr login`): a refresh
    /// token written to their credential files.
    Login(cli::login::LoginArgs),
    /// Registries of the cluster (the operator's verbs): create, list, show, update, delete, check-name.
    Registry(cli::registry::RegistryArgs),
    /// Users and service principals.
    User(cli::identity::IdentityArgs<cli::identity::UserVerb>),
    /// Grant and revoke roles (reader, contributor, owner, delete).
    Role(cli::identity::IdentityArgs<cli::identity::RoleVerb>),
    /// Scope maps: what repository-scoped tokens may do.
    ScopeMap(cli::identity::IdentityArgs<cli::identity::ScopeMapVerb>),
    /// Repository-scoped tokens.
    Token(cli::identity::IdentityArgs<cli::identity::TokenVerb>),
    /// The registry's admin account (off by default).
    Credential(cli::identity::IdentityArgs<cli::identity::CredentialVerb>),
    /// Rotate the key that signs access tokens.
    SigningKey(cli::identity::IdentityArgs<cli::identity::SigningKeyVerb>),
    /// Anonymous pull on or off.
    Access(cli::identity::IdentityArgs<cli::identity::AccessVerb>),
    /// Failover drills against a running cluster (region-outage).
    Drill(cli::drill::DrillArgs),
    /// Measure a running cluster (replication: region × region latency).
    Bench(cli::bench::BenchArgs),
    /// Garbage collection: run now (or a dry run), and its status per region.
    Gc(cli::gc::GcArgs),
    /// A registry's policies: retention of untagged manifests, soft delete.
    Config(cli::lifecycle::ConfigArgs),
    /// Deleted manifests: list the recycle bin, restore.
    Manifest(cli::lifecycle::ManifestArgs),
    /// Scrub: what each region verified of its stored blobs, and found corrupt.
    Scrub(cli::gc::ScrubArgs),
    /// Webhooks: events of pushes, deletes and replication, delivered
    /// durably, with their delivery log.
    Webhook(cli::webhook::WebhookArgs),
    /// Run an image's command or a task file on the cluster's agents,
    /// printing its log (the cloud CLI's `acr run`).
    Run(cli::run::RunArgs),
    /// Build an image from a Dockerfile on the cluster's task agents and
    /// push it (the cloud CLI's `acr build`).
    Build(cli::build::BuildArgs),
    /// Stored build tasks: run on demand, on timers, on source commits and
    /// when a base image moves (the cloud CLI's `acr task`).
    Task(cli::task::TaskArgs),
    /// The registry's task secret store: values runs read as
    /// {{.Secrets.ID}}, sealed at rest and masked in logs.
    Secret(cli::task::SecretArgs),
    /// A registry's IP rules (with `registry update --default-action Deny`).
    NetworkRule(cli::network::NetworkRuleArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; flags below override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Unique id of this node.
    #[arg(long)]
    node_id: Option<u64>,
    /// Region this node serves, e.g. us-east.
    #[arg(long)]
    region: Option<String>,
    /// Directory for metadata, the Raft log and blobs.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (OCI + management API), e.g. 127.0.0.1:5001.
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Peer gRPC listen address, e.g. 127.0.0.1:5101.
    #[arg(long)]
    grpc_listen: Option<std::net::SocketAddr>,
    /// Join an existing cluster instead of bootstrapping a new one (then add
    /// it with `wharf replication create`).
    #[arg(long)]
    join: bool,
    /// The cluster key file (the same on every node; a joining node needs
    /// a copy of the cluster's). Default: DATA_DIR/cluster.key.
    #[arg(long)]
    cluster_key_file: Option<PathBuf>,
    /// PEM certificate chain: serve the HTTP API over TLS (with --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Write the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WHARF_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve_config(args: &ServeArgs) -> Result<ServeConfig, NodeError> {
    let mut cfg = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(v) = args.node_id {
        cfg.node_id = v;
    }
    if let Some(v) = &args.region {
        cfg.region = v.clone();
    }
    if let Some(v) = &args.data_dir {
        cfg.data_dir = v.clone();
    }
    if let Some(v) = args.http_listen {
        cfg.http_listen = v;
    }
    if let Some(v) = args.grpc_listen {
        cfg.grpc_listen = v;
    }
    if args.join {
        cfg.bootstrap = false;
    }
    if let Some(v) = &args.cluster_key_file {
        cfg.auth.cluster_key_file = Some(v.clone());
    }
    if let Some(v) = &args.tls_cert {
        cfg.tls.cert_file = Some(v.clone());
    }
    if let Some(v) = &args.tls_key {
        cfg.tls.key_file = Some(v.clone());
    }
    Ok(cfg)
}

async fn run(cli: Cli) -> Result<(), NodeError> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = serve_config(&args)?;
            if args.print_config {
                print!("{}", cfg.to_toml());
                return Ok(());
            }
            init_logging(args.log_format);
            serve::run(cfg).await
        }
        Command::Up(args) => {
            init_logging(LogFormat::Text);
            up::run(args).await
        }
        Command::Repository(args) => Ok(cli::repository::run(args).await?),
        Command::Replication(args) => Ok(cli::replication::run(args).await?),
        Command::Registry(args) => Ok(cli::registry::run(args).await?),
        Command::Gc(args) => Ok(cli::gc::run(args).await?),
        Command::Config(args) => Ok(cli::lifecycle::config(args).await?),
        Command::Manifest(args) => Ok(cli::lifecycle::manifest(args).await?),
        Command::Webhook(args) => Ok(cli::webhook::webhook(args).await?),
        Command::Run(args) => Ok(cli::run::run(args).await?),
        Command::Build(args) => Ok(cli::build::build(args).await?),
        Command::Task(args) => Ok(cli::task::task(args).await?),
        Command::Secret(args) => Ok(cli::task::secret(args).await?),
        Command::NetworkRule(args) => Ok(cli::network::run(args).await?),
        Command::Scrub(args) => Ok(cli::gc::scrub(args).await?),
        Command::Login(args) => Ok(cli::login::run(args).await?),
        Command::User(args) => Ok(cli::identity::user(args).await?),
        Command::Role(args) => Ok(cli::identity::role(args).await?),
        Command::ScopeMap(args) => Ok(cli::identity::scope_map(args).await?),
        Command::Token(args) => Ok(cli::identity::token(args).await?),
        Command::Credential(args) => Ok(cli::identity::credential(args).await?),
        Command::SigningKey(args) => Ok(cli::identity::signing_key(args).await?),
        Command::Access(args) => Ok(cli::identity::access(args).await?),
        Command::Bench(args) => Ok(cli::bench::run(args).await?),
        Command::Drill(args) => {
            let code = cli::drill::run(args).await;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn main() {
    tls::install_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("wharf: {e}");
        std::process::exit(1);
    }
}
