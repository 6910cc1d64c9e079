//! `wharf registry create|list|show|update|delete|check-name`: the cluster
//! operator's verbs (an owner of the default registry).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::CliError as NodeError;

#[derive(Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    verb: Verb,
}

const COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("SKU", "sku"),
    ("LOGIN SERVER", "login_server"),
    ("REPLICAS", "replicas"),
    ("CREATED", "created"),
];

#[derive(Subcommand)]
enum Verb {
    /// Every registry of the cluster.
    List,
    /// Create a registry and its first owner. Its clients use the login
    /// server NAME.<registry_domain>.
    Create {
        /// 5 to 50 letters and digits, unique in the cluster whatever the case.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "standard", value_parser = ["basic", "standard", "premium"])]
        sku: String,
        /// Name of the first owner.
        #[arg(long, default_value = "owner")]
        owner: String,
        /// The first owner's password (12+ characters); generated and
        /// printed once when absent.
        #[arg(long, env = "WHARF_NEW_PASSWORD", hide_env_values = true)]
        owner_password: Option<String>,
        /// Enable the registry's admin account at once.
        #[arg(long)]
        admin_enabled: bool,
    },
    /// One registry.
    Show {
        #[arg(long)]
        name: String,
    },
    /// What the registry holds of what its tier limits (size, webhooks,
    /// scope maps, tokens, replications, IP rules), its storage against
    /// its limit, and what it was metered in a billing period: GiB-days
    /// per UTC day and operations by kind.
    ShowUsage {
        #[arg(long)]
        name: String,
        /// The billing period, a UTC month (`2026-12`); the current one
        /// by default.
        #[arg(long)]
        period: Option<String>,
        /// Also list repositories with what each stores (logical, and
        /// what only it links), by name, up to 1000.
        #[arg(long)]
        repositories: bool,
    },
    /// Change a registry's tier (at once; a downgrade is refused while
    /// the registry holds more than the lower tier includes, naming each).
    Update {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["basic", "standard", "premium"])]
        sku: Option<String>,
        /// Enable or disable the registry's admin account.
        #[arg(long)]
        admin_enabled: Option<bool>,
        /// Allow or Deny clients outside the network rules
        /// (`wharf network-rule`; premium).
        #[arg(long, value_parser = ["Allow", "Deny", "allow", "deny"])]
        default_action: Option<String>,
        /// The registry's own storage limit (`20GiB`, `500MB`), or `tier`
        /// for its tier's (`[tiers.*] storage_limit_gib`). A push that
        /// would store more is refused; what is stored stays.
        #[arg(long)]
        storage_limit: Option<String>,
    },
    /// Delete a registry with every repository, image and identity in it.
    Delete {
        #[arg(long)]
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Whether a name is valid and free.
    CheckName {
        #[arg(long)]
        name: String,
    },
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn with_created(mut v: Value) -> Value {
    if let Some(ms) = v["created_ms"].as_u64() {
        v["created"] = json!(if ms == 0 {
            "-".to_string()
        } else {
            output::time(ms)
        });
    }
    if let Some(r) = v["replicas"].as_array() {
        let joined: Vec<&str> = r.iter().filter_map(Value::as_str).collect();
        v["replicas"] = json!(if joined.is_empty() {
            "every region".to_string()
        } else {
            joined.join(",")
        });
    }
    v
}

/// `show-usage` as tables: the limits, the storage, the repositories
/// when asked for, then the billing period day by day.
fn print_usage(format: Format, u: &wharf_api::Usage) {
    let rows: Vec<Value> = u.value.iter().map(to_value).collect();
    output::print(
        format,
        &rows,
        &[
            ("NAME", "name"),
            ("LIMIT", "limit"),
            ("CURRENT VALUE", "currentValue"),
            ("UNIT", "unit"),
        ],
    );
    if !matches!(format, Format::Table) {
        return;
    }
    if let Some(s) = &u.storage {
        println!();
        println!(
            "Storage: {} ({} blobs; {} logical), limit {}, {} included",
            output::size(s.bytes),
            s.blobs,
            output::size(s.logical_bytes),
            s.limit_bytes.map_or("none".to_string(), output::size),
            output::size(s.included_bytes),
        );
    }
    if !u.repositories.is_empty() {
        println!();
        let rows: Vec<Value> = u
            .repositories
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "logical": output::size(r.logical_bytes),
                    "unique": output::size(r.unique_bytes),
                    "blobs": r.blobs,
                })
            })
            .collect();
        output::print(
            format,
            &rows,
            &[
                ("REPOSITORY", "name"),
                ("LOGICAL", "logical"),
                ("UNIQUE", "unique"),
                ("BLOBS", "blobs"),
            ],
        );
    }
    if let Some(m) = &u.metering {
        println!();
        let ops =
            |o: &std::collections::BTreeMap<String, u64>, k: &str| o.get(k).copied().unwrap_or(0);
        println!(
            "Billing period {}: {:.4} GiB-days; operations: {} read, {} write, {} delete, {} referrers, {} token",
            m.period,
            m.gib_days,
            ops(&m.operations, "read"),
            ops(&m.operations, "write"),
            ops(&m.operations, "delete"),
            ops(&m.operations, "referrers"),
            ops(&m.operations, "token"),
        );
        if !m.days.is_empty() {
            let rows: Vec<Value> = m
                .days
                .iter()
                .map(|d| {
                    json!({
                        "date": d.date,
                        "gib_days": format!("{:.4}", d.gib_days),
                        "read": ops(&d.operations, "read"),
                        "write": ops(&d.operations, "write"),
                        "delete": ops(&d.operations, "delete"),
                        "referrers": ops(&d.operations, "referrers"),
                        "token": ops(&d.operations, "token"),
                    })
                })
                .collect();
            output::print(
                format,
                &rows,
                &[
                    ("DATE", "date"),
                    ("GIB-DAYS", "gib_days"),
                    ("READ", "read"),
                    ("WRITE", "write"),
                    ("DELETE", "delete"),
                    ("REFERRERS", "referrers"),
                    ("TOKEN", "token"),
                ],
            );
        }
    }
}

pub async fn run(args: RegistryArgs) -> Result<(), NodeError> {
    let client = Client::new(&args.conn)?;
    let format = args.output;
    let show = |v: Value| match format {
        Format::Json => println!("{v}"),
        _ => output::print(format, &[with_created(v)], COLUMNS),
    };
    match args.verb {
        Verb::List => {
            let rows: Vec<wharf_api::Registry> = client.get("/registries", &[]).await?;
            let rows: Vec<Value> = rows.iter().map(to_value).collect();
            match format {
                Format::Json => println!("{}", Value::Array(rows)),
                _ => {
                    let rows: Vec<Value> = rows.into_iter().map(with_created).collect();
                    output::print(format, &rows, COLUMNS)
                }
            }
        }
        Verb::Create {
            name,
            sku,
            owner,
            owner_password,
            admin_enabled,
        } => {
            let created: wharf_api::CreatedRegistry = client
                .post(
                    "/registries",
                    &wharf_api::NewRegistry {
                        name,
                        sku: Some(sku),
                        owner: Some(owner.clone()),
                        owner_password,
                        admin_enabled,
                    },
                )
                .await?;
            if let (Some(pw), false) = (&created.owner_password, matches!(format, Format::Json)) {
                eprintln!("Owner {owner}'s password (shown once): {pw}");
            }
            show(to_value(&created));
        }
        Verb::ShowUsage {
            name,
            period,
            repositories,
        } => {
            let mut query = vec![("repositories", repositories.to_string())];
            if let Some(p) = period {
                query.push(("period", p));
            }
            let u: wharf_api::Usage = client
                .get(&format!("/registries/{name}/usage"), &query)
                .await?;
            match format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&u).unwrap_or_default())
                }
                _ => print_usage(format, &u),
            }
        }
        Verb::Show { name } => {
            let r: wharf_api::Registry = client.get(&format!("/registries/{name}"), &[]).await?;
            show(to_value(&r))
        }
        Verb::Update {
            name,
            sku,
            admin_enabled,
            default_action,
            storage_limit,
        } => {
            let r: wharf_api::Registry = client
                .send_json(
                    reqwest::Method::PATCH,
                    &format!("/registries/{name}"),
                    &[],
                    &to_value(&wharf_api::RegistryChange {
                        sku,
                        admin_enabled,
                        default_action,
                        storage_limit,
                    }),
                )
                .await?;
            show(to_value(&r));
        }
        Verb::Delete { name, yes } => {
            if !yes
                && !super::repository::confirm(&format!("registry {name} and everything in it"))?
            {
                eprintln!("Nothing deleted.");
                return Ok(());
            }
            let d: wharf_api::Deleted = client.delete(&format!("/registries/{name}"), &[]).await?;
            match format {
                Format::Json => println!("{}", to_value(&d)),
                _ => println!(
                    "Registry {name} deleted with {} repositories.",
                    d.repositories
                ),
            }
        }
        Verb::CheckName { name } => {
            let check: wharf_api::NameCheck = client
                .get("/registries/check-name", &[("name", name)])
                .await?;
            let v = to_value(&check);
            match format {
                Format::Json => println!("{v}"),
                _ => output::print(
                    format,
                    &[v],
                    &[
                        ("NAME AVAILABLE", "nameAvailable"),
                        ("REASON", "reason"),
                        ("MESSAGE", "message"),
                    ],
                ),
            }
        }
    }
    Ok(())
}
