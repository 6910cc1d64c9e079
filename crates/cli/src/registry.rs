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
    /// What the registry holds of what its tier limits (webhooks, scope
    /// maps, tokens), with the limits.
    ShowUsage {
        #[arg(long)]
        name: String,
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
        Verb::ShowUsage { name } => {
            let u: wharf_api::Usage = client
                .get(&format!("/registries/{name}/usage"), &[])
                .await?;
            match format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&u).unwrap_or_default())
                }
                _ => {
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
                }
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
