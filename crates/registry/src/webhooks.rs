//! Webhooks as requests meet them: input checked with the reason for a
//! refusal, then one command each (delivery itself is `wharf-webhooks`').

use wharf_consensus::now_unix_ms;
use wharf_meta::{
    Command, Delivery, EventFormat, WebhookAction, WebhookChange, WebhookCommand, WebhookRecord,
};
use wharf_oci::ErrorCode;

use crate::{Handle, ServiceError, ServiceResult};

/// Bounds on what a webhook may hold (it is replicated state).
pub const URI_MAX_BYTES: usize = 2048;
pub const HEADERS_MAX: usize = 16;
pub const HEADER_VALUE_MAX_BYTES: usize = 1024;
pub const SECRET_MAX_BYTES: usize = 256;
pub const SCOPE_MAX_BYTES: usize = 256;

fn bad(message: String) -> ServiceError {
    ServiceError::Spec {
        code: ErrorCode::Unsupported,
        message,
        status: Some(400),
    }
}

/// 5 to 50 letters and digits (the cloud registry's rule).
pub fn check_name(name: &str) -> ServiceResult<()> {
    if (5..=50).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid webhook name {name:?}: 5 to 50 letters and digits"
        )))
    }
}

/// An absolute http(s) URL with a host.
pub fn check_uri(uri: &str) -> ServiceResult<()> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| {
            bad(format!(
                "invalid URI {uri:?}: it must start with http:// or https://"
            ))
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(bad(format!("invalid URI {uri:?}: no host")));
    }
    if uri.len() > URI_MAX_BYTES {
        return Err(bad(format!("the URI is longer than {URI_MAX_BYTES} bytes")));
    }
    if uri.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(format!(
            "invalid URI {uri:?}: spaces and control or non-ASCII characters must be percent-encoded"
        )));
    }
    Ok(())
}

pub fn parse_actions(actions: &[String]) -> ServiceResult<Vec<WebhookAction>> {
    if actions.is_empty() {
        return Err(bad("give at least one action".into()));
    }
    let mut out = Vec::new();
    for a in actions {
        let action = WebhookAction::parse(a.trim()).ok_or_else(|| {
            let known: Vec<&str> = WebhookAction::SUBSCRIBABLE
                .iter()
                .map(|a| a.as_str())
                .collect();
            bad(format!("unknown action {a:?}: one of {}", known.join(", ")))
        })?;
        if !out.contains(&action) {
            out.push(action);
        }
    }
    out.sort();
    Ok(out)
}

/// `repo[:tag]` where each part is a repository name or tag, `*` allowed.
pub fn check_scope(scope: &str) -> ServiceResult<()> {
    let invalid = |why: &str| {
        bad(format!(
            "invalid scope {scope:?}: {why} (e.g. 'app:*', 'team/*:v1')"
        ))
    };
    if scope.len() > SCOPE_MAX_BYTES {
        return Err(invalid("too long"));
    }
    let (repo, tag) = match scope.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (scope, None),
    };
    let repo_ok = !repo.is_empty()
        && repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
    if !repo_ok {
        return Err(invalid(
            "the repository part is lower-case letters, digits, '.', '_', '-', '/' and '*'",
        ));
    }
    if let Some(t) = tag {
        let tag_ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b));
        if !tag_ok {
            return Err(invalid(
                "the tag part is letters, digits, '.', '_', '-' and '*'",
            ));
        }
    }
    Ok(())
}

pub fn check_headers(headers: &[(String, String)]) -> ServiceResult<()> {
    if headers.len() > HEADERS_MAX {
        return Err(bad(format!("at most {HEADERS_MAX} custom headers")));
    }
    for (k, v) in headers {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(bad(format!("invalid header name {k:?}")));
        }
        if v.len() > HEADER_VALUE_MAX_BYTES
            || v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
        {
            return Err(bad(format!("invalid value for header {k}")));
        }
    }
    Ok(())
}

pub fn parse_status(status: &str) -> ServiceResult<bool> {
    match status {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        other => Err(bad(format!(
            "invalid status {other:?}: enabled or disabled"
        ))),
    }
}

pub fn parse_format(format: &str) -> ServiceResult<EventFormat> {
    match format {
        "default" => Ok(EventFormat::Default),
        "cloudevents" => Ok(EventFormat::Cloudevents),
        other => Err(bad(format!(
            "invalid format {other:?}: default or cloudevents"
        ))),
    }
}

fn check_secret(secret: &str) -> ServiceResult<()> {
    if secret.len() > SECRET_MAX_BYTES {
        return Err(bad(format!(
            "the secret is longer than {SECRET_MAX_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What `create` takes, checked field by field.
pub struct NewWebhook {
    pub name: String,
    pub uri: String,
    pub actions: Vec<String>,
    pub scope: Option<String>,
    pub headers: Vec<(String, String)>,
    pub status: Option<String>,
    pub format: Option<String>,
    pub secret: Option<String>,
}

/// A change as it arrives (strings, checked here).
#[derive(Default)]
pub struct WebhookUpdate {
    pub uri: Option<String>,
    pub actions: Option<Vec<String>>,
    /// Empty: remove.
    pub scope: Option<String>,
    pub headers: Option<Vec<(String, String)>>,
    pub status: Option<String>,
    pub format: Option<String>,
    /// Empty: remove.
    pub secret: Option<String>,
}

impl Handle {
    pub async fn create_webhook(&self, w: NewWebhook) -> ServiceResult<WebhookRecord> {
        check_name(&w.name)?;
        check_uri(&w.uri)?;
        let actions = parse_actions(&w.actions)?;
        let scope = w.scope.filter(|s| !s.is_empty());
        if let Some(s) = &scope {
            check_scope(s)?;
        }
        check_headers(&w.headers)?;
        if let Some(s) = &w.secret {
            check_secret(s)?;
        }
        let record = WebhookRecord {
            name: w.name,
            uri: w.uri,
            actions,
            scope,
            headers: w.headers,
            enabled: w
                .status
                .as_deref()
                .map(parse_status)
                .transpose()?
                .unwrap_or(true),
            format: w
                .format
                .as_deref()
                .map(parse_format)
                .transpose()?
                .unwrap_or_default(),
            secret: w.secret.filter(|s| !s.is_empty()),
            created_ms: now_unix_ms(),
        };
        // How many webhooks a registry may have is its tier's.
        self.write(self.service.gated(Command::Webhook(WebhookCommand::Create {
            record: Box::new(record.clone()),
        })))
        .await?;
        Ok(record)
    }

    /// Change only what `u` names; 0 when it was already so.
    pub async fn update_webhook(&self, name: &str, u: WebhookUpdate) -> ServiceResult<u64> {
        if let Some(uri) = &u.uri {
            check_uri(uri)?;
        }
        if let Some(s) = u.scope.as_deref().filter(|s| !s.is_empty()) {
            check_scope(s)?;
        }
        if let Some(h) = &u.headers {
            check_headers(h)?;
        }
        if let Some(s) = &u.secret {
            check_secret(s)?;
        }
        let change = WebhookChange {
            uri: u.uri,
            actions: u.actions.as_deref().map(parse_actions).transpose()?,
            scope: u.scope.map(|s| Some(s).filter(|s| !s.is_empty())),
            headers: u.headers,
            enabled: u.status.as_deref().map(parse_status).transpose()?,
            format: u.format.as_deref().map(parse_format).transpose()?,
            secret: u.secret.map(|s| Some(s).filter(|s| !s.is_empty())),
        };
        if change == WebhookChange::default() {
            return Err(bad("nothing to change".into()));
        }
        self.write(Command::Webhook(WebhookCommand::Update {
            name: name.to_string(),
            change,
        }))
        .await
    }

    pub async fn delete_webhook(&self, name: &str) -> ServiceResult<u64> {
        self.write(Command::Webhook(WebhookCommand::Delete {
            name: name.to_string(),
        }))
        .await
    }

    /// Queue a `ping` event for webhook `name`; answers its id.
    pub async fn ping_webhook(&self, name: &str) -> ServiceResult<String> {
        self.write(Command::Webhook(WebhookCommand::Ping {
            name: name.to_string(),
        }))
        .await?;
        // The write applied at the leader; see it here too.
        self.service.consensus.read_barrier().await?;
        let meta = self.service.consensus.meta();
        let newest = meta.deliveries(self.name(), name, None, 1)?;
        Ok(newest
            .into_iter()
            .next()
            .map(|d| d.event.id)
            .unwrap_or_default())
    }

    /// Send event `event_id` of webhook `name` again (delivered or dead).
    pub async fn redeliver(&self, name: &str, event_id: &str) -> ServiceResult<u64> {
        let meta = self.service.consensus.meta();
        if meta.webhook(self.name(), name)?.is_none() {
            return Err(wharf_meta::ApplyError::WebhookUnknown(name.to_string()).into());
        }
        let Some(seq) = meta.delivery_seq(self.name(), name, event_id)? else {
            return Err(wharf_meta::ApplyError::EventUnknown(event_id.to_string()).into());
        };
        self.write(Command::Webhook(WebhookCommand::Redeliver {
            name: name.to_string(),
            seq,
        }))
        .await
    }

    pub fn webhooks(&self) -> ServiceResult<Vec<WebhookRecord>> {
        Ok(self.service.consensus.meta().webhooks(self.name())?)
    }

    pub fn webhook(&self, name: &str) -> ServiceResult<WebhookRecord> {
        self.service
            .consensus
            .meta()
            .webhook(self.name(), name)?
            .ok_or_else(|| wharf_meta::ApplyError::WebhookUnknown(name.to_string()).into())
    }

    /// Newest first; `before`: a seq to page from.
    pub fn webhook_events(
        &self,
        name: &str,
        before: Option<u64>,
        limit: usize,
    ) -> ServiceResult<Vec<Delivery>> {
        self.webhook(name)?;
        Ok(self
            .service
            .consensus
            .meta()
            .deliveries(self.name(), name, before, limit)?)
    }

    /// How many events of webhook `name` wait (up to `limit`).
    pub fn webhook_pending(&self, name: &str, limit: usize) -> ServiceResult<u64> {
        Ok(self
            .service
            .consensus
            .meta()
            .pending(self.name(), name, limit)?
            .len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        assert!(check_uri("http://hooks.example:8080/x").is_ok());
        assert!(check_uri("https://10.0.0.1/").is_ok());
        for (uri, why) in [
            ("ftp://x/", "http:// or https://"),
            ("http:///path", "no host"),
            ("http://a b/", "percent-encoded"),
        ] {
            let e = check_uri(uri).unwrap_err().to_string();
            assert!(e.contains(why), "{uri}: {e}");
        }
        assert!(parse_actions(&["push".into(), "replicated".into()]).is_ok());
        let e = parse_actions(&["pull".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown action \"pull\""), "{e}");
        for ok in ["app", "app:*", "team/*:v1", "*:*"] {
            assert!(check_scope(ok).is_ok(), "{ok}");
        }
        for bad in ["", "App:v1", "app:", "app:v 1", ":v1"] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
        assert!(check_headers(&[("Authorization".into(), "Bearer x".into())]).is_ok());
        assert!(check_headers(&[("bad name".into(), "v".into())]).is_err());
        assert!(check_name("hook1").is_ok());
        assert!(check_name("h-1").is_err());
    }
}
