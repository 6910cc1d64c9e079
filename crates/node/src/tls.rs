//! TLS: the HTTP API over rustls, mutual TLS between peers (gRPC), HTTP
//! clients that trust the cluster's CA, and the local CA `wharf up --tls`
//! creates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use wharf_consensus::PeerTls;

use crate::config::TlsSettings;
use crate::error::NodeError;

/// The name every peer certificate carries and every peer verifies: peers
/// are dialed by address (often through a tunnel or emulated link), so the
/// cluster CA plus this fixed name is what identifies a node of the cluster.
pub const PEER_SERVER_NAME: &str = "wharf-peer";

fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| NodeError::Config(format!("tls: {}: {e}", path.display())))
}

/// Install the process-wide rustls crypto provider (ring) once.
pub fn install_provider() {
    // Err means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificate chain and key for the HTTP API, if TLS is on.
pub async fn http_config(
    s: &TlsSettings,
) -> Result<Option<axum_server::tls_rustls::RustlsConfig>, NodeError> {
    let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) else {
        return Ok(None);
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(read(cert)?, read(key)?)
        .await
        .map_err(|e| NodeError::Config(format!("tls: certificate or key: {e}")))?;
    Ok(Some(config))
}

/// Mutual TLS for the peer gRPC port, when `peer_mtls` is set.
pub fn peer_config(s: &TlsSettings) -> Result<Option<PeerTls>, NodeError> {
    if !s.peer_mtls {
        return Ok(None);
    }
    let (Some(cert), Some(key), Some(ca)) = (&s.cert_file, &s.key_file, &s.ca_file) else {
        return Err(NodeError::Config(
            "tls.peer_mtls needs cert_file, key_file and ca_file".into(),
        ));
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    let ca = Certificate::from_pem(read(ca)?);
    Ok(Some(PeerTls {
        server: ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone()),
        client: ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(identity)
            .domain_name(PEER_SERVER_NAME),
    }))
}

/// An HTTP client that also trusts the CA in `ca_file` (peers' HTTP APIs,
/// the CLI talking to a cluster with its own CA).
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, NodeError> {
    wharf_cli::http_client(ca_file).map_err(|e| NodeError::Config(e.to_string()))
}

/// A local certificate authority kept in a directory (`ca.pem`,
/// `ca-key.pem`), for `wharf up --tls`.
pub struct LocalCa {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn tls_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Startup(format!("tls: {e}"))
}

fn ca_params() -> Result<CertificateParams, NodeError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Wharf local CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl LocalCa {
    /// Load the CA in `dir`, or create it.
    pub fn open(dir: &Path) -> Result<LocalCa, NodeError> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("ca-key.pem");
        let key = if key_path.exists() {
            KeyPair::from_pem(&std::fs::read_to_string(&key_path)?).map_err(tls_err)?
        } else {
            let k = KeyPair::generate().map_err(tls_err)?;
            wharf_auth::write_private(&key_path, k.serialize_pem().as_bytes())?;
            k
        };
        // The same key and subject sign exactly like the CA certificate on
        // disk, so re-deriving it is enough to issue more node certificates.
        let cert = ca_params()?.self_signed(&key).map_err(tls_err)?;
        let ca_path = dir.join("ca.pem");
        if !ca_path.exists() {
            std::fs::write(&ca_path, cert.pem())?;
        }
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert,
            key,
        })
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server-and-client certificate for a node reachable as `hosts`
    /// (plus the peer name), written as `<name>.pem` / `<name>-key.pem`
    /// unless present. Returns (cert, key) paths.
    pub fn node_cert(&self, name: &str, hosts: &[&str]) -> Result<(PathBuf, PathBuf), NodeError> {
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}-key.pem"));
        // The names a kept certificate covers: made again when they change
        // (another --registry-domain).
        let sans_path = self.dir.join(format!("{name}.names"));
        let mut sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        sans.push(PEER_SERVER_NAME.into());
        let wanted = sans.join("\n");
        let same_names = std::fs::read_to_string(&sans_path).is_ok_and(|s| s == wanted);
        if cert_path.exists() && key_path.exists() && same_names {
            return Ok((cert_path, key_path));
        }
        let mut p = CertificateParams::new(sans).map_err(tls_err)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(tls_err)?;
        wharf_auth::write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&sans_path, wanted)?;
        Ok((cert_path, key_path))
    }
}
