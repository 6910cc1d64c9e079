//! A small client of the management API, shared by the admin verbs.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::CliError as NodeError;

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
    /// User, service principal, token or "admin" to authenticate as.
    #[arg(long, short = 'u', env = "WHARF_USERNAME", global = true)]
    pub username: Option<String>,
    /// Its password or secret (prefer the environment variable: command
    /// lines are visible to other users of the machine).
    #[arg(
        long,
        short = 'p',
        env = "WHARF_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// A JSON file with the credentials: the cluster.json `wharf up`
    /// writes, or a node's bootstrap-credentials.json.
    #[arg(long, env = "WHARF_CREDENTIALS", global = true)]
    pub credentials: Option<std::path::PathBuf>,
    /// Also trust this PEM CA certificate (a cluster with its own CA, such
    /// as DATA_DIR/tls/ca.pem of `wharf up --tls`).
    #[arg(long, env = "WHARF_CACERT", global = true)]
    pub cacert: Option<std::path::PathBuf>,
}

impl Connection {
    /// The user and password to send, from the flags or the file.
    pub fn login(&self) -> Result<Option<(String, String)>, NodeError> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some((u.clone(), p.clone())));
        }
        let Some(path) = &self.credentials else {
            if self.username.is_some() {
                return Err(NodeError::Config(
                    "--username needs --password (or WHARF_PASSWORD)".into(),
                ));
            }
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        let c = doc.get("credentials").unwrap_or(&doc);
        match (
            c.get("username").and_then(Value::as_str),
            c.get("password").and_then(Value::as_str),
        ) {
            (Some(u), Some(p)) => Ok(Some((u.to_string(), p.to_string()))),
            _ => Err(NodeError::Config(format!(
                "{}: no username and password in it",
                path.display()
            ))),
        }
    }
}

/// Where, as whom and in which registry, for the verbs that address one
/// registry's contents; with the output format.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryTarget {
    #[command(flatten)]
    pub conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = crate::output::Format::Table, global = true)]
    pub output: crate::output::Format,
    /// The registry (default: the one the endpoint's host names, else the
    /// default registry).
    #[arg(long, global = true)]
    pub registry: Option<String>,
}

impl RegistryTarget {
    pub fn client(&self) -> Result<Client, NodeError> {
        Ok(Client::new(&self.conn)?.for_registry(self.registry.clone()))
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    login: Option<(String, String)>,
    /// The registry addressed (`--registry`); none: the endpoint's.
    registry: Option<String>,
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
    pub fn new(conn: &Connection) -> Result<Client, NodeError> {
        Ok(Client {
            base: conn.endpoint.trim_end_matches('/').to_string(),
            http: crate::http_client(conn.cacert.as_deref())?,
            login: conn.login()?,
            registry: None,
        })
    }

    /// Address registry `name` (none: the one the endpoint's host names).
    pub fn for_registry(mut self, name: Option<String>) -> Client {
        self.registry = name;
        self
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, NodeError> {
        Ok(self.send_for_headers(req).await?.0)
    }

    /// Every row of a listing the node answers in pages (`n`, `last`, a
    /// `Link` header naming the next page), `top` at most.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        top: Option<usize>,
    ) -> Result<Vec<T>, NodeError> {
        let mut rows: Vec<T> = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(l) = &last {
                q.push(("last", l.clone()));
            }
            let (page, headers): (Vec<T>, _) = self
                .send_for_headers(
                    self.http
                        .get(format!("{}/api/v1{path}", self.base))
                        .query(&q),
                )
                .await?;
            rows.extend(page);
            if top.is_some_and(|t| rows.len() >= t) {
                rows.truncate(top.unwrap_or(usize::MAX));
                return Ok(rows);
            }
            match next_last(&self.base, &headers) {
                // A node that answers the same `last` again would loop.
                Some(next) if last.as_ref() != Some(&next) => last = Some(next),
                _ => return Ok(rows),
            }
        }
    }

    /// `req` with this client's credentials and registry.
    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.login {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        match &self.registry {
            Some(name) => req.header(wharf_api::REGISTRY_HEADER, name),
            None => req,
        }
    }

    /// A request to `path` under the endpoint (`/v2/...`) or to an
    /// absolute URL (an upload's `Location`), with this client's
    /// credentials and registry.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.authorized(self.http.request(method, url))
    }

    /// Send `req`; an error answer becomes a readable error.
    pub async fn expect(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, NodeError> {
        let resp = req
            .send()
            .await
            .map_err(|e| NodeError::Api(format!("{what}: cannot reach {}: {e}", self.base)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(NodeError::Api(format!(
            "{what}: {}",
            explain(status, &body)
        )))
    }

    async fn send_for_headers<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(T, reqwest::header::HeaderMap), NodeError> {
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| NodeError::Api(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| NodeError::Api(format!("reading the answer: {e}")))?;
        if status == reqwest::StatusCode::UNAUTHORIZED && self.login.is_none() {
            return Err(NodeError::Api(format!(
                "{} (401): give credentials with --username/--password, \
                 WHARF_USERNAME/WHARF_PASSWORD or --credentials FILE",
                explain(status, &body)
            )));
        }
        if !status.is_success() {
            return Err(NodeError::Api(explain(status, &body)));
        }
        let value = serde_json::from_str(&body)
            .map_err(|e| NodeError::Api(format!("unexpected answer: {e}")))?;
        Ok((value, headers))
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

    /// A GET whose answer is bytes, not JSON (a run's log).
    pub async fn get_bytes(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, NodeError> {
        let resp = self
            .authorized(
                self.http
                    .get(format!("{}/api/v1{path}", self.base))
                    .query(query),
            )
            .send()
            .await
            .map_err(|e| NodeError::Api(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| NodeError::Api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(NodeError::Api(explain(
                status,
                &String::from_utf8_lossy(&body),
            )));
        }
        Ok(body.to_vec())
    }

    pub async fn post<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, NodeError> {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.base))
                .json(body),
        )
        .await
    }

    /// A request with a JSON body (POST, PUT, PATCH).
    pub async fn send_json<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: &B,
    ) -> Result<T, NodeError> {
        self.send(
            self.http
                .request(method, format!("{}/api/v1{path}", self.base))
                .query(query)
                .json(body),
        )
        .await
    }

    /// A DELETE answered with no body (204).
    pub async fn delete_empty(&self, path: &str) -> Result<(), NodeError> {
        let req = self.request(reqwest::Method::DELETE, &format!("/api/v1{path}"));
        self.expect(req, "delete").await.map(|_| ())
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

/// The `last` of the next page a `Link: <…?n=…&last=…>; rel="next"`
/// header names, if any.
fn next_last(base: &str, headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let (target, rel) = link.split_once(';')?;
    if !rel.contains("rel=\"next\"") {
        return None;
    }
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    let url = reqwest::Url::parse(base).ok()?.join(target).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "last")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod next_page_tests {
    use super::next_last;

    fn with_link(v: &str) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::LINK, v.parse().unwrap());
        h
    }

    #[test]
    fn reads_the_next_pages_last_and_decodes_it() {
        let h = with_link("</api/v1/repositories?n=2&last=team%2Fapp>; rel=\"next\"");
        assert_eq!(
            next_last("http://127.0.0.1:5000", &h).as_deref(),
            Some("team/app")
        );
    }

    #[test]
    fn no_link_or_another_rel_is_the_end() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(next_last("http://h", &none), None);
        let prev = with_link("</x?last=a>; rel=\"prev\"");
        assert_eq!(next_last("http://h", &prev), None);
    }
}
