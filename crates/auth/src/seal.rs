//! The cluster key: a 256-bit secret every node of a cluster holds in a
//! file outside the replicated state. It seals (encrypts and
//! authenticates) secrets that must be recoverable, such as the token
//! signing keys and the admin passwords, so a copy of the metadata alone
//! does not reveal them.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::AuthError;

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn generate() -> ClusterKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        ClusterKey(k)
    }

    /// Read a key file (64 hex digits).
    pub fn load(path: &Path) -> Result<ClusterKey, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        let bytes = hex::decode(text.trim())
            .map_err(|_| AuthError::Key(format!("{}: not hex", path.display())))?;
        let k: [u8; 32] = bytes.try_into().map_err(|_| {
            AuthError::Key(format!("{}: need 64 hex digits (32 bytes)", path.display()))
        })?;
        Ok(ClusterKey(k))
    }

    /// Write the key to a new file, readable by its owner only, durably.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        crate::private_file::write_private(path, hex::encode(self.0).as_bytes())
            .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))
    }

    /// The key file at `path`, created when `create` and it is missing.
    pub fn load_or_create(path: &Path, create: bool) -> Result<ClusterKey, AuthError> {
        if path.exists() || !create {
            return ClusterKey::load(path);
        }
        let k = ClusterKey::generate();
        k.save(path)?;
        Ok(k)
    }

    /// A key for one purpose, derived so that purposes never share a key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Encrypt `plain`, bound to `context` (a record name): nonce || ciphertext.
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(&self.derive("seal").into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what `seal` produced with the same key and context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < NONCE_LEN {
            return Err(AuthError::Key("sealed value too short".into()));
        }
        let cipher = ChaCha20Poly1305::new(&self.derive("seal").into());
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[..NONCE_LEN]),
                Payload {
                    msg: &sealed[NONCE_LEN..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                AuthError::Key(
                    "a sealed secret does not open: this node has a different cluster key".into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let k = ClusterKey::generate();
        let s = k.seal(b"signing key", "kid-1");
        assert!(!s.windows(11).any(|w| w == b"signing key"));
        assert_eq!(k.open(&s, "kid-1").unwrap(), b"signing key");
        assert!(k.open(&s, "kid-2").is_err());
        assert!(ClusterKey::generate().open(&s, "kid-1").is_err());
        let mut tampered = s.clone();
        tampered[20] ^= 1;
        assert!(k.open(&tampered, "kid-1").is_err());
    }

    #[test]
    fn key_files_round_trip_with_owner_only_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.key");
        assert!(ClusterKey::load_or_create(&p, false).is_err());
        let k = ClusterKey::load_or_create(&p, true).unwrap();
        let again = ClusterKey::load_or_create(&p, true).unwrap();
        assert_eq!(k.0, again.0);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
