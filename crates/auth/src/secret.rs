//! Secrets at rest: user passwords are argon2id hashes (memory-hard, since
//! people choose guessable passwords); generated secrets have 256 bits of
//! entropy, so a SHA-256 hash is already infeasible to invert and keeps
//! basic-auth checks of tokens cheap.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

const SHA256_PREFIX: &str = "sha256$";
/// Shortest password a person may choose.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Refuse passwords too short to resist guessing.
pub fn check_password_strength(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::BadRequest(format!(
            "passwords need at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// An argon2id PHC string for a password a person chose.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Key(format!("argon2: {e}")))
}

/// A new random secret: 32 bytes, URL-safe base64 (43 characters).
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A fresh generation number for a new principal or token: random, so a
/// name deleted and created again never accepts the old one's tokens.
pub fn new_generation() -> u64 {
    // Leave headroom for the increments of later changes.
    rand::random::<u64>() >> 8
}

/// The stored form of a generated secret.
pub fn hash_secret(secret: &str) -> String {
    format!(
        "{SHA256_PREFIX}{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

/// Whether `presented` matches the stored hash (either form), in time
/// independent of where they differ.
pub fn verify(stored: &str, presented: &str) -> bool {
    if let Some(hex_hash) = stored.strip_prefix(SHA256_PREFIX) {
        let got = hex::encode(Sha256::digest(presented.as_bytes()));
        return got.as_bytes().ct_eq(hex_hash.as_bytes()).into();
    }
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default()
            .verify_password(presented.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secrets_verify_only_when_equal_and_are_not_stored_in_clear() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify(&h, "correct horse battery"));
        assert!(!verify(&h, "correct horse batterY"));

        let s = new_secret();
        assert_eq!(s.len(), 43);
        assert_ne!(s, new_secret());
        let hs = hash_secret(&s);
        assert!(!hs.contains(&s));
        assert!(verify(&hs, &s));
        assert!(!verify(&hs, "x"));
        assert!(!verify("garbage", "garbage"));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check_password_strength("short").is_err());
        assert!(check_password_strength("long enough pass").is_ok());
    }
}
