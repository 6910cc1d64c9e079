//! `wharf network-rule add|list|remove --registry N [--ip-address CIDR]`:
//! a registry's IP rules (the cloud CLI's `network-rule`); with
//! `wharf registry update --default-action Deny`, only clients in them
//! reach the registry.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, Connection};
use super::output::{self, Format};
use crate::CliError;

#[derive(Args)]
pub struct NetworkRuleArgs {
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
    /// Admit clients from an address or CIDR range (premium: up to 200).
    #[command(
        after_help = "Example:\n  wharf network-rule add --registry teamreg --ip-address 203.0.113.0/24\n  \
        wharf registry update --name teamreg --default-action Deny"
    )]
    Add {
        #[arg(long)]
        registry: String,
        #[arg(long)]
        ip_address: String,
    },
    /// The default action and the IP rules.
    List {
        #[arg(long)]
        registry: String,
    },
    Remove {
        #[arg(long)]
        registry: String,
        #[arg(long)]
        ip_address: String,
    },
}

fn print(out: Format, set: &wharf_api::NetworkRuleSet) {
    match out {
        Format::Json => println!("{}", serde_json::to_string_pretty(set).unwrap_or_default()),
        _ => {
            println!("default action: {}", set.default_action);
            let rows: Vec<Value> = set
                .ip_rules
                .iter()
                .map(|r| serde_json::json!({ "ip": r, "action": "Allow" }))
                .collect();
            output::print(
                out,
                &rows,
                &[("IP ADDRESS OR RANGE", "ip"), ("ACTION", "action")],
            );
        }
    }
}

pub async fn run(args: NetworkRuleArgs) -> Result<(), CliError> {
    let client = Client::new(&args.conn)?;
    let set: wharf_api::NetworkRuleSet = match args.verb {
        Verb::List { registry } => {
            client
                .get(&format!("/registries/{registry}/network-rules"), &[])
                .await?
        }
        Verb::Add {
            registry,
            ip_address,
        } => {
            client
                .post(
                    &format!("/registries/{registry}/network-rules"),
                    &wharf_api::IpRule { ip_address },
                )
                .await?
        }
        Verb::Remove {
            registry,
            ip_address,
        } => {
            client
                .delete(
                    &format!("/registries/{registry}/network-rules"),
                    &[("ip_address", ip_address)],
                )
                .await?
        }
    };
    print(args.output, &set);
    Ok(())
}
