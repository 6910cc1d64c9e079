//! A small client of the management API, shared by the admin verbs.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::NodeError;

/// Where to reach a node, for every admin verb.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Base URL of any node, e.g. http://127.0.0.1:5001.
    #[arg(
        long,
        env = "WHARF_ENDPOINT",
        default_value = "http://127.0.0.1:5001",
        global = true
    )]
    pub endpoint: String,
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// Turn an error answer (the OCI error JSON shape) into one readable line.
fn explain(status: reqwest::StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0));
    match first {
        Some(e) => format!(
            "{} ({}): {}",
            e.get("code").and_then(Value::as_str).unwrap_or("ERROR"),
            status.as_u16(),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        None => format!("HTTP {}: {}", status.as_u16(), body.trim()),
    }
}

impl Client {
    pub fn new(conn: &Connection) -> Client {
        Client {
            base: conn.endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, NodeError> {
        let resp = req
            .send()
            .await
            .map_err(|e| NodeError::Api(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| NodeError::Api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(NodeError::Api(explain(status, &body)));
        }
        serde_json::from_str(&body).map_err(|e| NodeError::Api(format!("unexpected answer: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, NodeError> {
        self.send(
            self.http
                .get(format!("{}/api/v1{path}", self.base))
                .query(query),
        )
        .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, NodeError> {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.base))
                .json(body),
        )
        .await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, NodeError> {
        self.send(
            self.http
                .delete(format!("{}/api/v1{path}", self.base))
                .query(query),
        )
        .await
    }
}
