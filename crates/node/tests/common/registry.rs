//! A thin OCI client over reqwest for spec-level tests.
#![allow(dead_code)]

use reqwest::{Method, Response};
use serde_json::Value;
use wharf_client::{image_manifest, OciClient};

use super::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = wharf_client::OCI_CONFIG;
pub const OCI_LAYER: &str = wharf_client::OCI_LAYER;

/// The shared OCI client (`wharf-client`), with panicking helpers for
/// tests; `req` gives raw responses for tests that assert on the wire.
pub struct Reg {
    pub client: OciClient,
}

impl Reg {
    /// A client logged in as the registry owner (basic auth).
    pub fn new(addr: &str) -> Reg {
        Reg::with_login(addr, super::OWNER, super::OWNER_PASSWORD)
    }

    pub fn with_login(addr: &str, user: &str, password: &str) -> Reg {
        Reg {
            client: Reg::anonymous(addr).client.with_login(user, password),
        }
    }

    /// A client that sends no credentials.
    pub fn anonymous(addr: &str) -> Reg {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Reg {
            client: OciClient::new(http, format!("http://{addr}")),
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    /// Monolithic upload; returns the digest.
    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = self.client.upload(repo, bytes.to_vec()).await.unwrap();
        assert_eq!(d.to_string(), sha256(bytes));
        d.to_string()
    }

    /// An image manifest with a config and the given layers, all uploaded.
    pub async fn image(&self, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = self.client.upload(repo, config.to_vec()).await.unwrap();
        let mut ls = Vec::new();
        for l in layers {
            ls.push((self.client.upload(repo, l.to_vec()).await.unwrap(), l.len()));
        }
        image_manifest((&cd, config.len()), &ls)
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

/// The layer digests an image manifest names.
pub fn layers_of(manifest: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(manifest).unwrap_or(Value::Null);
    v["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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
