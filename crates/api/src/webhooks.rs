//! `/api/v1/webhooks`: a registry's webhooks and their delivery log.

use serde::{Deserialize, Serialize};

/// A webhook as listed and shown (its secret is never answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    pub uri: String,
    pub actions: Vec<String>,
    /// `repo:tag` pattern; empty: every event.
    #[serde(default)]
    pub scope: String,
    /// enabled or disabled.
    pub status: String,
    /// default or cloudevents.
    pub format: String,
    /// Whether bodies are signed (a secret is set).
    pub signed: bool,
    /// Names of the custom headers (values: `get-config`).
    #[serde(default)]
    pub header_names: Vec<String>,
    pub created_ms: u64,
    /// Events waiting to be delivered.
    #[serde(default)]
    pub pending: u64,
}

/// `POST /webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub name: String,
    pub uri: String,
    pub actions: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// enabled (default) or disabled.
    #[serde(default)]
    pub status: Option<String>,
    /// default (default) or cloudevents.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// `PATCH /webhooks/{name}`: only what is named changes. An empty scope
/// or secret removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub headers: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// `GET /webhooks/{name}/config`: where and with what it calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub service_uri: String,
    pub custom_headers: Vec<(String, String)>,
}

/// One request of a delivery and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAttempt {
    pub at_ms: u64,
    pub latency_ms: u64,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: String,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

/// An event in a webhook's delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    pub action: String,
    pub timestamp_ms: u64,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub region: Option<String>,
    /// pending, delivered or dead.
    pub state: String,
    pub attempts: Vec<EventAttempt>,
}

/// `POST /webhooks/{name}/redeliver`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    pub event_id: String,
}
