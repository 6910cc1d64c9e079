//! A thin OCI client over reqwest for spec-level tests.
#![allow(dead_code)]

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

pub struct Reg {
    pub base: String,
    pub http: reqwest::Client,
    /// Basic credentials sent with every request (None: anonymous).
    pub login: Option<(String, String)>,
}

impl Reg {
    /// A client logged in as the registry owner (basic auth).
    pub fn new(addr: &str) -> Reg {
        Reg::with_login(addr, super::OWNER, super::OWNER_PASSWORD)
    }

    pub fn with_login(addr: &str, user: &str, password: &str) -> Reg {
        Reg {
            login: Some((user.into(), password.into())),
            ..Reg::anonymous(addr)
        }
    }

    /// A client that sends no credentials.
    pub fn anonymous(addr: &str) -> Reg {
        Reg {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            login: None,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self.http.request(method, url);
        match &self.login {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    /// Monolithic upload; returns the digest.
    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        d
    }

    /// An image manifest with a config and the given layers, all uploaded.
    pub async fn image(&self, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = self.blob(repo, config).await;
        let mut ls = Vec::new();
        for l in layers {
            let d = self.blob(repo, l).await;
            ls.push(json!({"mediaType": OCI_LAYER, "digest": d, "size": l.len()}));
        }
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": config.len()},
            "layers": ls,
        }))
        .unwrap()
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }
}

/// The first error code of a spec error body.
pub async fn error_code(r: Response) -> String {
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or("<no error body>")
        .to_string()
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}
