//! Signed tokens in JWT form (HS256). Clients treat them as opaque; every
//! node verifies them locally with the replicated signing keys, so a pull
//! in any region needs no round trip to the node that issued its token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::AuthError;

/// What a token is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// Presented as `Bearer` on registry requests; hours.
    Access,
    /// Exchanged at the token endpoint for access tokens (`docker login`
    /// keeps it instead of the password); weeks.
    Refresh,
    /// A web console login, carried in an `HttpOnly` cookie (or as
    /// `Bearer` on the calls a node makes for it): everything its subject
    /// may do, like the password it was exchanged for, for a working day.
    Session,
}

impl TokenUse {
    /// Whether a token issued for `presented` may be used where `self` is
    /// asked for: a session stands in for an access token (it is one with
    /// its subject's whole rights), nothing else stands in for another.
    pub fn accepts(self, presented: TokenUse) -> bool {
        self == presented || (self == TokenUse::Access && presented == TokenUse::Session)
    }
}

/// One granted resource, as in the Docker token spec's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal, token or admin account name.
    pub sub: String,
    /// The service (registry) the token is for.
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    /// The subject's generation when issued: a changed secret, a disabled
    /// or re-created subject makes older tokens fail everywhere.
    #[serde(rename = "gen")]
    pub generation: u64,
    #[serde(default)]
    pub access: Vec<Grant>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

fn mac(key: &[u8], signing_input: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(signing_input);
    m
}

/// Sign `claims` with the key named `kid`.
pub fn sign(claims: &Claims, kid: &str, key: &[u8]) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: "JWT".into(),
        kid: kid.into(),
    };
    let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    let mut out = format!(
        "{}.{}",
        enc(&serde_json::to_vec(&header).expect("header serializes")),
        enc(&serde_json::to_vec(claims).expect("claims serialize"))
    );
    let sig = mac(key, out.as_bytes()).finalize().into_bytes();
    out.push('.');
    out.push_str(&enc(&sig));
    out
}

/// Check the signature with the key `keys` returns for the token's kid,
/// the audience and the validity window; return the claims.
pub fn verify(
    token: &str,
    audience: &str,
    now_s: u64,
    keys: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Claims, AuthError> {
    let bad = AuthError::InvalidToken;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed"));
    };
    let dec = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| bad("malformed"));
    let header: Header = serde_json::from_slice(&dec(h)?).map_err(|_| bad("malformed header"))?;
    if header.alg != "HS256" {
        return Err(bad("unsupported algorithm"));
    }
    let key = keys(&header.kid).ok_or(bad("signed by an unknown key"))?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    mac(&key, signing_input.as_bytes())
        .verify_slice(&dec(s)?)
        .map_err(|_| bad("bad signature"))?;
    let claims: Claims = serde_json::from_slice(&dec(c)?).map_err(|_| bad("malformed claims"))?;
    if claims.aud != audience {
        return Err(bad("issued for another service"));
    }
    if now_s >= claims.exp {
        return Err(bad("expired"));
    }
    // Allow a little clock skew between regions.
    if claims.iat > now_s + 60 {
        return Err(bad("issued in the future"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: "wharf".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            iat: 100,
            exp,
            jti: "j".into(),
            token_use: TokenUse::Access,
            generation: 1,
            access: vec![Grant {
                kind: "repository".into(),
                name: "app".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_and_nothing_else() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let t = sign(&claims(1000), "k1", &key);
        let keys = |kid: &str| (kid == "k1").then(|| key.clone());
        assert_eq!(verify(&t, "registry", 500, keys).unwrap(), claims(1000));

        // Another key, another kid, another service, too late.
        let other = sign(&claims(1000), "k1", b"another key entirely");
        assert!(verify(&other, "registry", 500, keys).is_err());
        let t2 = sign(&claims(1000), "k2", &key);
        assert!(verify(&t2, "registry", 500, keys).is_err());
        assert!(verify(&t, "elsewhere", 500, keys).is_err());
        assert!(verify(&t, "registry", 1000, keys).is_err());

        // Tampered claims: grant push instead of pull, same signature.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(1000);
        c.access[0].actions = vec!["push".into()];
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert!(matches!(
            verify(&forged, "registry", 500, keys),
            Err(AuthError::InvalidToken("bad signature"))
        ));
        assert!(verify("not.a.token", "registry", 500, keys).is_err());
        assert!(verify("", "registry", 500, keys).is_err());
    }
}
