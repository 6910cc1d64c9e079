//! The first owner of a new registry. The bootstrap node proposes it once
//! the metadata group has a leader; the command applies only while no
//! principal exists, so a restart or a second proposer changes nothing.
//! A generated password is written to DATA_DIR/bootstrap-credentials.json
//! (mode 0600) before it is proposed, so a crash cannot lose it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_meta::Command;

use crate::error::NodeError;
use crate::state::{now_ms, App};

pub const CREDENTIALS_FILE: &str = "bootstrap-credentials.json";
pub const PASSWORD_ENV: &str = "WHARF_BOOTSTRAP_PASSWORD";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapCredentials {
    pub username: String,
    pub password: String,
}

/// The password to bootstrap with: from the environment, from a file an
/// earlier start wrote, or generated (and written) now. The flag says
/// whether it was generated and must be shown.
fn password(data_dir: &Path, user: &str) -> Result<(String, bool), NodeError> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        wharf_auth::secret::check_password_strength(&p)
            .map_err(|e| NodeError::Config(format!("{PASSWORD_ENV}: {e}")))?;
        return Ok((p, false));
    }
    let path = data_dir.join(CREDENTIALS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let c: BootstrapCredentials = serde_json::from_str(&text)
            .map_err(|e| NodeError::Startup(format!("{}: {e}", path.display())))?;
        return Ok((c.password, true));
    }
    let c = BootstrapCredentials {
        username: user.into(),
        password: wharf_auth::secret::new_secret(),
    };
    let text = serde_json::to_string_pretty(&c).unwrap_or_default();
    wharf_auth::write_private(&path, text.as_bytes())?;
    Ok((c.password, true))
}

/// Whether this node has no metadata yet (so it may create the cluster key).
pub fn is_fresh(data_dir: &Path) -> bool {
    !data_dir.join("meta").exists()
}

/// Until the owner exists or `stop`: the password file is written before
/// the owner is proposed, so a stop at any point resumes at the next start.
pub async fn run(app: App, data_dir: PathBuf, user: String, mut stop: crate::shutdown::Stop) {
    loop {
        match try_once(&app, &data_dir, &user).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "bootstrap owner not created yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
    }
}

async fn try_once(app: &App, data_dir: &Path, user: &str) -> Result<bool, NodeError> {
    if !app.consensus.is_ready() {
        return Ok(false);
    }
    app.consensus.read_barrier().await?;
    let tenant = crate::tenant::Tenant::default_registry(app.clone());
    let m = tenant.meta();
    let have_owner = !m
        .principals()
        .map_err(|e| NodeError::Startup(e.to_string()))?
        .is_empty();
    let have_key = !m
        .signing_keys()
        .map_err(|e| NodeError::Startup(e.to_string()))?
        .is_empty();
    if have_owner && have_key {
        return Ok(true);
    }
    let (pw, generated) = password(data_dir, user)?;
    let cmd = app
        .auth
        .bootstrap_command(user, &pw, now_ms())
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    app.consensus
        .write(crate::tenant::envelope(
            wharf_meta::DEFAULT_REGISTRY,
            Command::Identity(Box::new(cmd)),
            None,
        ))
        .await?;
    if !have_owner {
        if generated {
            eprintln!(
                "wharf: created the registry owner {user:?} with password {pw}\n       \
                 (saved in {}, mode 0600; change it with `wharf user update`)",
                data_dir.join(CREDENTIALS_FILE).display()
            );
        }
        tracing::info!(user, "bootstrap owner created");
    }
    Ok(true)
}
