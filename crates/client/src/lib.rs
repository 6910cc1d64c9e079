//! The OCI push and pull client shared by the drill's probe, the jepsen
//! clients and the integration tests: one place that knows the wire
//! protocol (monolithic blob upload, manifest PUT with an idempotency key,
//! digest-verified reads), so the three do not drift apart.
//!
//! It authenticates with basic credentials on every request (Wharf accepts
//! them on `/v2/` as well as through the token flow); callers that need the
//! token flow itself use real clients (docker, skopeo) in their tests.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use wharf_oci::media::OCI_MANIFEST;
use wharf_oci::Digest;

/// Media type of an image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The header naming a write so that a retry applies once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// At most this much of an error body is kept in an error.
const BODY_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request got no answer (refused, reset, timed out).
    #[error("{what}: {source}")]
    Transport {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered, with another status than expected.
    #[error("{what}: HTTP {}{}", status.as_u16(), if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        what: &'static str,
        status: StatusCode,
        /// The start of the answer's body (an OCI error document).
        body: String,
    },
    /// The client itself could not be set up (an unreadable CA file).
    #[error("{0}")]
    Setup(String),
    /// Bytes were served that do not hash to the digest asked for.
    #[error("{what}: the bytes served for {expected} hash to {got}")]
    Corrupt {
        what: &'static str,
        expected: Digest,
        got: Digest,
    },
}

impl ClientError {
    /// The request never reached the registry: it certainly changed nothing.
    pub fn never_sent(&self) -> bool {
        matches!(self, ClientError::Transport { source, .. } if source.is_connect())
    }

    /// The status the registry answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An image this client pushed and had acknowledged.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// The config first, then the layers.
    pub blobs: Vec<Digest>,
}

/// A client of one registry endpoint (a region's node).
#[derive(Debug, Clone)]
pub struct OciClient {
    base: String,
    http: reqwest::Client,
    login: Option<(String, String)>,
    timeout: Option<Duration>,
}

impl OciClient {
    /// `base` is the endpoint URL (`http://127.0.0.1:5001`).
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> OciClient {
        OciClient {
            base: base.into().trim_end_matches('/').to_string(),
            http,
            login: None,
            timeout: None,
        }
    }

    /// Send basic credentials with every request.
    pub fn with_login(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.login = Some((user.into(), password.into()));
        self
    }

    /// Give up on any request after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (or to an absolute URL, such as a `Location`),
    /// with this client's credentials and timeout.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut r = self.http.request(method, url);
        if let Some(t) = self.timeout {
            r = r.timeout(t);
        }
        match &self.login {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Upload `bytes` as one blob of `repo` in a single request.
    pub async fn upload(&self, repo: &str, bytes: Vec<u8>) -> Result<Digest, ClientError> {
        let digest = Digest::sha256_of(&bytes);
        let req = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(bytes);
        expect(req, StatusCode::CREATED, "blob upload").await?;
        Ok(digest)
    }

    /// PUT a manifest under `reference`. With `request_id`, a retry of the
    /// same write (the same id) is applied once and answered as the first.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
        request_id: Option<&str>,
    ) -> Result<Digest, ClientError> {
        let digest = Digest::sha256_of(&body);
        let mut req = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body);
        if let Some(id) = request_id {
            req = req.header(IDEMPOTENCY_KEY, id);
        }
        expect(req, StatusCode::CREATED, "manifest push").await?;
        Ok(digest)
    }

    /// DELETE a tag or a manifest.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &str,
        request_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut req = self.request(Method::DELETE, &format!("/v2/{repo}/manifests/{reference}"));
        if let Some(id) = request_id {
            req = req.header(IDEMPOTENCY_KEY, id);
        }
        expect(req, StatusCode::ACCEPTED, "manifest delete").await?;
        Ok(())
    }

    /// Upload `config` and `layers`, then tag the image manifest naming
    /// them `tag`.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        config: Vec<u8>,
        layers: Vec<Vec<u8>>,
    ) -> Result<Pushed, ClientError> {
        let config_size = config.len();
        let config_digest = self.upload(repo, config).await?;
        let mut described = Vec::with_capacity(layers.len());
        for l in layers {
            let size = l.len();
            described.push((self.upload(repo, l).await?, size));
        }
        let manifest = image_manifest((&config_digest, config_size), &described);
        let digest = self
            .put_manifest(repo, tag, OCI_MANIFEST, manifest.clone(), None)
            .await?;
        let mut blobs = vec![config_digest];
        blobs.extend(described.into_iter().map(|(d, _)| d));
        Ok(Pushed {
            manifest,
            digest,
            blobs,
        })
    }

    /// The manifest `reference` of `repo`, as served (OCI and Docker
    /// images and indexes accepted).
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Bytes, ClientError> {
        let req = self
            .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", wharf_oci::media::MANIFEST_TYPES.join(", "));
        expect(req, StatusCode::OK, "manifest pull").await
    }

    /// Blob `digest` of `repo`; its bytes are checked against the digest.
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> Result<Bytes, ClientError> {
        let req = self.request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"));
        let bytes = expect(req, StatusCode::OK, "blob pull").await?;
        let got = Digest::sha256_of(&bytes);
        if got != *digest {
            return Err(ClientError::Corrupt {
                what: "blob pull",
                expected: digest.clone(),
                got,
            });
        }
        Ok(bytes)
    }
}

/// An HTTP client that also trusts the CA certificates in `ca_file` (a
/// cluster's own CA, as `wharf up --tls` makes), for every Wharf client.
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder();
    if let Some(p) = ca_file {
        let pem = std::fs::read(p)
            .map_err(|e| ClientError::Setup(format!("tls: {}: {e}", p.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ClientError::Setup(format!("tls: {}: {e}", p.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| ClientError::Setup(format!("tls: HTTP client: {e}")))
}

/// An OCI image manifest naming a config and layers by (digest, size).
pub fn image_manifest(config: (&Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d.as_str(), "size": size}))
        .collect();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0.as_str(), "size": config.1},
        "layers": layers,
    });
    // A json! value always serializes.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Send `req`; the body when the status is `want`, or what went wrong.
async fn expect(
    req: RequestBuilder,
    want: StatusCode,
    what: &'static str,
) -> Result<Bytes, ClientError> {
    let resp = req
        .send()
        .await
        .map_err(|source| ClientError::Transport { what, source })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport { what, source })?;
    if status != want {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        let mut end = text.len().min(BODY_EXCERPT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        return Err(ClientError::Status {
            what,
            status,
            body: text[..end].to_string(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_manifest_names_its_config_and_layers_in_order() {
        let c = Digest::sha256_of(b"config");
        let l1 = Digest::sha256_of(b"one");
        let l2 = Digest::sha256_of(b"two");
        let m = image_manifest((&c, 6), &[(l1.clone(), 3), (l2.clone(), 3)]);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["config"]["digest"], c.as_str());
        assert_eq!(v["config"]["size"], 6);
        assert_eq!(v["layers"][0]["digest"], l1.as_str());
        assert_eq!(v["layers"][1]["digest"], l2.as_str());
        // And Wharf's own parser accepts it as an image.
        wharf_oci::manifest::parse(&m, Some(OCI_MANIFEST)).unwrap();
    }
}
