//! `wharf login --name N`, as the cloud CLI's `acr login`: get a refresh
//! token for registry N at its login server and write it where docker and
//! podman (skopeo, buildah) read credentials, so that a plain
//! `docker push N.<domain>/app:v1` works afterwards.
//!
//! The token (30 days, `auth.refresh_token_ttl_s`) is stored as an
//! `identitytoken`: both clients trade it at the token endpoint for access
//! tokens (OAuth2 refresh grant), so the password itself is never written
//! to disk. Changing the password, or disabling the user, retires it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::client::Connection;
use crate::CliError as NodeError;

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    conn: Connection,
    /// The registry to log in to.
    #[arg(long, short)]
    name: String,
    /// Registries' login servers are NAME.<registry_domain> (the node's
    /// `registry_domain`; default: the one in the --credentials file
    /// `wharf up` writes); the port is the endpoint's.
    #[arg(long, env = "WHARF_REGISTRY_DOMAIN")]
    registry_domain: Option<String>,
    /// Docker's configuration file (default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json).
    #[arg(long)]
    docker_config: Option<PathBuf>,
    /// The containers tools' auth file (default: $REGISTRY_AUTH_FILE, or
    /// $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long)]
    authfile: Option<PathBuf>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn docker_config(args: &LoginArgs) -> PathBuf {
    if let Some(p) = &args.docker_config {
        return p.clone();
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => home().join(".docker/config.json"),
    }
}

fn containers_auth(args: &LoginArgs) -> PathBuf {
    if let Some(p) = &args.authfile {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("containers/auth.json"),
        None => home().join(".config/containers/auth.json"),
    }
}

/// Put `entry` under `auths[server]` of the JSON file at `path`, keeping
/// everything else in it; written owner-only, through a temporary file.
fn store(path: &Path, server: &str, entry: &Value) -> Result<(), NodeError> {
    let mut doc: Value = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e.into()),
    };
    if !doc.is_object() {
        return Err(NodeError::Config(format!(
            "{}: not a JSON object",
            path.display()
        )));
    }
    if !doc["auths"].is_object() {
        doc["auths"] = json!({});
    }
    doc["auths"][server] = entry.clone();
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| NodeError::Api(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    wharf_auth::write_private(path, &text)?;
    Ok(())
}

pub async fn run(args: LoginArgs) -> Result<(), NodeError> {
    let name =
        wharf_oci::RegistryName::parse(&args.name).map_err(|e| NodeError::Config(e.to_string()))?;
    let endpoint = reqwest::Url::parse(&args.conn.endpoint)
        .map_err(|e| NodeError::Config(format!("--endpoint: {e}")))?;
    let domain = match &args.registry_domain {
        Some(d) => d.clone(),
        None => domain_from_credentials(&args.conn)?,
    };
    let mut server = format!("{name}.{domain}");
    if let Some(port) = endpoint.port() {
        server.push_str(&format!(":{port}"));
    }
    let Some((user, password)) = args.conn.login()? else {
        return Err(NodeError::Config(
            "log in with --username and --password (or WHARF_USERNAME, WHARF_PASSWORD)".into(),
        ));
    };
    let http = crate::http_client(args.conn.cacert.as_deref())?;
    let url = format!("{}://{server}/auth/token", endpoint.scheme());
    let resp = http
        .post(&url)
        .form(&[
            ("grant_type", "password"),
            ("access_type", "offline"),
            ("service", "wharf"),
            ("client_id", "wharf-cli"),
            ("username", &user),
            ("password", &password),
        ])
        .send()
        .await
        .map_err(|e| NodeError::Api(format!("{url}: {e}")))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let Some(refresh) = body["refresh_token"].as_str() else {
        return Err(NodeError::Api(format!(
            "login to {server} refused ({}): {}",
            status.as_u16(),
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or("no refresh token")
        )));
    };
    // Docker keys a registry by host[:port]; the username is not used with
    // an identity token but must be present.
    let entry = json!({
        "auth": base64_user(&user),
        "identitytoken": refresh,
    });
    let docker = docker_config(&args);
    let containers = containers_auth(&args);
    store(&docker, &server, &entry)?;
    store(&containers, &server, &entry)?;
    println!(
        "Login Succeeded: {server} (docker: {}, podman/skopeo/buildah: {})",
        docker.display(),
        containers.display()
    );
    Ok(())
}

/// The `registry_domain` of the cluster.json named by --credentials.
fn domain_from_credentials(conn: &Connection) -> Result<String, NodeError> {
    let missing = || NodeError::Config("say --registry-domain (or WHARF_REGISTRY_DOMAIN)".into());
    let path = conn.credentials.as_ref().ok_or_else(missing)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    doc["registry_domain"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(missing)
}

fn base64_user(user: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
}
