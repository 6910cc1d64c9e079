//! `wharf user|role|scope-map|token|credential|signing-key|access`:
//! identities and access, through the management API (registry owners).
//! Secrets the server generates are printed once, when created.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};
use wharf_api::{
    Access, Credential, CredentialChange, Deleted, NewPrincipal, NewToken, Principal,
    PrincipalChange, PrincipalSecret, RoleChange, RoleChanged, ScopeMap, ScopeRule, SigningKey,
    Token, TokenChange, TokenSecrets,
};

use super::output::{self, Format};
use crate::CliError as NodeError;

#[derive(Args)]
pub struct IdentityArgs<V: Subcommand> {
    /// The endpoint, credentials, output format and `--registry`.
    #[command(flatten)]
    target: crate::client::RegistryTarget,
    #[command(subcommand)]
    verb: V,
}

#[derive(Subcommand)]
pub enum UserVerb {
    /// Users and service principals with their roles.
    List,
    /// Add a user (with --password) or a service principal (a secret is
    /// generated and printed once).
    Create {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["user", "service-principal"])]
        kind: String,
        /// The user's password (at least 12 characters); or set WHARF_NEW_PASSWORD.
        #[arg(long, env = "WHARF_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Enable, disable, change a password or regenerate a secret; tokens
    /// issued before the change stop working everywhere.
    Update {
        name: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long, env = "WHARF_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        /// Service principals: generate a new secret.
        #[arg(long)]
        regenerate: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum RoleVerb {
    /// Grant a role: reader (pull), contributor (push, pull), owner
    /// (everything), delete (deletes only).
    Assign(RoleSpec),
    /// Revoke a role; effective at once in every region.
    Remove(RoleSpec),
}

#[derive(Args)]
pub struct RoleSpec {
    /// User or service principal.
    #[arg(long)]
    principal: String,
    #[arg(long, value_parser = ["reader", "contributor", "owner", "delete"])]
    role: String,
    /// "*" for the whole registry (default), a repository, or "prefix/*".
    #[arg(long, default_value = "*")]
    scope: String,
}

#[derive(Subcommand)]
pub enum ScopeMapVerb {
    List,
    /// Create a scope map: which repositories a token may touch, and how.
    Create(ScopeMapSpec),
    /// Replace a scope map's rules (tokens using it change at once).
    Update(ScopeMapSpec),
    Delete {
        name: String,
    },
}

#[derive(Args)]
pub struct ScopeMapSpec {
    name: String,
    /// REPOSITORY=ACTION[,ACTION...], repeatable. REPOSITORY may be
    /// "prefix/*" or "*"; actions: content/read, content/write,
    /// content/delete, metadata/read, metadata/write.
    #[arg(long = "repository", required = true)]
    rules: Vec<String>,
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Subcommand)]
pub enum TokenVerb {
    List,
    /// Create a repository-scoped token; its two passwords are printed once.
    Create {
        name: String,
        #[arg(long)]
        scope_map: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expire_days: Option<u64>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Enable or disable, change the scope map or expiry, regenerate a password.
    Update {
        name: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        scope_map: Option<String>,
        /// Expire this many days from now; 0 removes the expiry.
        #[arg(long)]
        expire_days: Option<u64>,
        /// Regenerate password 1 or 2 (printed once).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        regenerate: Option<u8>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum CredentialVerb {
    /// The admin account: enabled or not, and its two passwords.
    Show,
    /// Generate a new password 1 or 2 (the other keeps working).
    Renew {
        /// Which password: 1 or 2.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        password_name: u8,
    },
    /// Turn the admin account on (passwords are generated if needed).
    Enable,
    /// Turn the admin account off; its tokens stop working.
    Disable,
}

#[derive(Subcommand)]
pub enum SigningKeyVerb {
    /// Sign new tokens with a fresh key; the previous key still verifies,
    /// older ones are dropped (their tokens stop working).
    Rotate,
}

#[derive(Subcommand)]
pub enum AccessVerb {
    Show,
    /// Let clients without credentials pull every repository (or not).
    /// `--anonymous-pull` (or `=true`) turns it on; `--anonymous-pull=false`
    /// or no flag turns it off.
    Set {
        #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
              action = clap::ArgAction::Set, require_equals = true)]
        anonymous_pull: bool,
    },
}

fn now_ms() -> u64 {
    wharf_consensus::now_unix_ms()
}

fn days_from_now(days: u64) -> u64 {
    now_ms() + days * 86_400_000
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// One answer: pretty JSON, or a FIELD/VALUE table.
fn print_one(format: Format, answer: &impl Serialize) {
    let v = to_value(answer);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        _ => {
            if let Some(obj) = v.as_object() {
                let rows: Vec<Value> = obj
                    .iter()
                    .map(|(k, v)| json!({"field": k, "value": v}))
                    .collect();
                output::print(format, &rows, &[("FIELD", "field"), ("VALUE", "value")]);
            }
        }
    }
}

/// Rows for a table: each answer as JSON, with its times readable.
fn rows_with_times<T: Serialize>(items: &[T], edit: impl Fn(&T, &mut Value)) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut r = to_value(item);
            for (ms, text) in [("created_ms", "created"), ("expiry_ms", "expires")] {
                if let Some(t) = r[ms].as_u64() {
                    r[text] = json!(output::time(t));
                }
            }
            edit(item, &mut r);
            r
        })
        .collect()
}

pub async fn user(args: IdentityArgs<UserVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: PrincipalSecret = match args.verb {
        UserVerb::List => {
            let list: Vec<Principal> = c.get("/users", &[]).await?;
            let rows = rows_with_times(&list, |p, r| {
                let roles: Vec<String> = p
                    .roles
                    .iter()
                    .map(|g| {
                        let scope = if g.scope.is_empty() { "*" } else { &g.scope };
                        format!("{}@{scope}", g.role)
                    })
                    .collect();
                r["roles"] = json!(roles);
            });
            output::print(
                args.target.output,
                &rows,
                &[
                    ("NAME", "name"),
                    ("KIND", "kind"),
                    ("ENABLED", "enabled"),
                    ("ROLES", "roles"),
                    ("CREATED", "created"),
                ],
            );
            return Ok(());
        }
        UserVerb::Create {
            name,
            kind,
            new_password,
        } => {
            let body = NewPrincipal {
                name,
                kind: Some(kind),
                password: new_password,
            };
            c.send_json(Method::POST, "/users", &[], &body).await?
        }
        UserVerb::Update {
            name,
            enabled,
            new_password,
            regenerate,
        } => {
            let body = PrincipalChange {
                enabled,
                password: new_password,
                regenerate,
            };
            c.send_json(Method::PATCH, &format!("/users/{name}"), &[], &body)
                .await?
        }
        UserVerb::Delete { name } => {
            let d: Deleted = c.delete(&format!("/users/{name}"), &[]).await?;
            return print_deleted(args.target.output, &d);
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

fn print_deleted(format: Format, d: &Deleted) -> Result<(), NodeError> {
    match format {
        Format::Json => print_one(format, d),
        _ => println!("Deleted {}.", d.deleted),
    }
    Ok(())
}

pub async fn role(args: IdentityArgs<RoleVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: RoleChanged = match args.verb {
        RoleVerb::Assign(r) => {
            let body = RoleChange {
                principal: r.principal,
                role: r.role,
                scope: r.scope,
            };
            c.send_json(Method::POST, "/roles", &[], &body).await?
        }
        RoleVerb::Remove(r) => {
            c.delete(
                "/roles",
                &[
                    ("principal", r.principal),
                    ("role", r.role),
                    ("scope", r.scope),
                ],
            )
            .await?
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

fn scope_map_body(s: &ScopeMapSpec) -> Result<ScopeMap, NodeError> {
    let rules = s
        .rules
        .iter()
        .map(|r| {
            let (repo, actions) = r.split_once('=').ok_or_else(|| {
                NodeError::Config(format!("--repository {r:?}: expected REPOSITORY=ACTIONS"))
            })?;
            Ok(ScopeRule {
                repository: repo.to_string(),
                actions: actions.split(',').map(str::to_string).collect(),
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    Ok(ScopeMap {
        name: s.name.clone(),
        description: s.description.clone(),
        rules,
        created_ms: 0,
    })
}

pub async fn scope_map(args: IdentityArgs<ScopeMapVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: ScopeMap = match args.verb {
        ScopeMapVerb::List => {
            let list: Vec<ScopeMap> = c.get("/scope-maps", &[]).await?;
            let rows = rows_with_times(&list, |m, r| {
                let rules: Vec<String> = m
                    .rules
                    .iter()
                    .map(|x| format!("{}={}", x.repository, x.actions.join("+")))
                    .collect();
                r["rules"] = json!(rules);
            });
            output::print(
                args.target.output,
                &rows,
                &[
                    ("NAME", "name"),
                    ("RULES", "rules"),
                    ("DESCRIPTION", "description"),
                ],
            );
            return Ok(());
        }
        ScopeMapVerb::Create(s) => {
            c.send_json(Method::PUT, "/scope-maps", &[], &scope_map_body(&s)?)
                .await?
        }
        ScopeMapVerb::Update(s) => {
            c.send_json(
                Method::PUT,
                "/scope-maps",
                &[("update", "true".into())],
                &scope_map_body(&s)?,
            )
            .await?
        }
        ScopeMapVerb::Delete { name } => {
            let d: Deleted = c.delete(&format!("/scope-maps/{name}"), &[]).await?;
            return print_deleted(args.target.output, &d);
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

pub async fn token(args: IdentityArgs<TokenVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: TokenSecrets = match args.verb {
        TokenVerb::List => {
            let list: Vec<Token> = c.get("/tokens", &[]).await?;
            output::print(
                args.target.output,
                &rows_with_times(&list, |_, _| {}),
                &[
                    ("NAME", "name"),
                    ("SCOPE MAP", "scope_map"),
                    ("ENABLED", "enabled"),
                    ("EXPIRES", "expires"),
                    ("PASSWORDS", "passwords"),
                    ("CREATED", "created"),
                ],
            );
            return Ok(());
        }
        TokenVerb::Create {
            name,
            scope_map,
            expire_days,
            disabled,
        } => {
            let body = NewToken {
                name,
                scope_map,
                expiry_ms: expire_days.map(days_from_now),
                enabled: Some(!disabled),
            };
            c.send_json(Method::POST, "/tokens", &[], &body).await?
        }
        TokenVerb::Update {
            name,
            enabled,
            scope_map,
            expire_days,
            regenerate,
        } => {
            let body = TokenChange {
                enabled,
                scope_map,
                expiry_ms: expire_days.map(|d| if d == 0 { 0 } else { days_from_now(d) }),
                regenerate,
            };
            c.send_json(Method::PATCH, &format!("/tokens/{name}"), &[], &body)
                .await?
        }
        TokenVerb::Delete { name } => {
            let d: Deleted = c.delete(&format!("/tokens/{name}"), &[]).await?;
            return print_deleted(args.target.output, &d);
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

pub async fn credential(args: IdentityArgs<CredentialVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let change = match args.verb {
        CredentialVerb::Show => None,
        CredentialVerb::Renew { password_name } => Some(CredentialChange {
            renew: Some(password_name),
            ..Default::default()
        }),
        CredentialVerb::Enable | CredentialVerb::Disable => Some(CredentialChange {
            enabled: Some(matches!(args.verb, CredentialVerb::Enable)),
            ..Default::default()
        }),
    };
    let answer: Credential = match change {
        None => c.get("/credential", &[]).await?,
        Some(body) => {
            c.send_json(Method::PATCH, "/credential", &[], &body)
                .await?
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

pub async fn signing_key(args: IdentityArgs<SigningKeyVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: SigningKey = match args.verb {
        SigningKeyVerb::Rotate => {
            c.send_json(Method::POST, "/signing-keys/rotate", &[], &json!({}))
                .await?
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}

pub async fn access(args: IdentityArgs<AccessVerb>) -> Result<(), NodeError> {
    let c = args.target.client()?;
    let answer: Access = match args.verb {
        AccessVerb::Show => c.get("/access", &[]).await?,
        AccessVerb::Set { anonymous_pull } => {
            c.send_json(Method::PUT, "/access", &[], &Access { anonymous_pull })
                .await?
        }
    };
    print_one(args.target.output, &answer);
    Ok(())
}
