//! The per-node authority: checks credentials against the replicated
//! identities, issues and verifies access tokens, keeps the signing keys
//! (opened with the cluster key) and the login limiter in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wharf_meta::{
    AccessSettings, AdminChange, AdminRecord, IdentityCommand, PrincipalKind, PrincipalRecord,
    Registry, RegistryCommand, RegistryRecord, Role, RoleAssignment, ScopeMapRecord,
    SigningKeyRecord, TokenRecord,
};

use crate::error::AuthError;
use crate::limiter::{LoginLimiter, LoginLimits};
use crate::policy::{Subject, ADMIN_NAME};
use crate::seal::ClusterKey;
use crate::secret;
use crate::token::{self, Claims, Grant, TokenUse};

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The `service` of WWW-Authenticate and the tokens' audience.
    pub service: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub login_limits: LoginLimits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            service: "wharf".into(),
            access_ttl: Duration::from_secs(3 * 3600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(8 * 3600),
            login_limits: LoginLimits::default(),
        }
    }
}

/// How long a verified basic credential is remembered, so tools that send
/// basic auth on every request do not pay an argon2 hash each time.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 10_000;

/// Every identity record, read once per change of the identities (the
/// store's identity epoch), so that authenticating a request costs hash
/// lookups, not RocksDB reads.
struct View {
    epoch: u64,
    principals: HashMap<String, PrincipalRecord>,
    tokens: HashMap<String, TokenRecord>,
    scope_maps: HashMap<String, ScopeMapRecord>,
    /// Newest first.
    keys: Vec<SigningKeyRecord>,
    admin: AdminRecord,
    access: AccessSettings,
}

impl View {
    fn load(meta: &Registry<'_>, epoch: u64) -> Result<View, AuthError> {
        Ok(View {
            epoch,
            principals: meta
                .principals()?
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            tokens: meta
                .tokens()?
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            scope_maps: meta
                .scope_maps()?
                .into_iter()
                .map(|m| (m.name.clone(), m))
                .collect(),
            keys: meta.signing_keys()?,
            admin: meta.admin()?,
            access: meta.access_settings()?,
        })
    }
}

/// Tokens whose signature and claims were checked, remembered per identity
/// epoch (any identity change, a key rotation included, empties it).
/// Keyed by the token's signature (43 characters, unique per token) rather
/// than the whole token (~600): hashing and copying the whole token was 2 %
/// of a manifest GET. A hit is the same registry and the whole token equal.
type Verified = (u64, HashMap<Box<str>, VerifiedToken>);

struct VerifiedToken {
    registry: Box<str>,
    token: Box<str>,
    claims: Arc<Claims>,
}
const VERIFIED_MAX: usize = 10_000;

pub struct Authority {
    /// One view per registry (identities are a registry's own).
    view: RwLock<HashMap<String, Arc<View>>>,
    verified: RwLock<Verified>,
    cfg: AuthConfig,
    key: ClusterKey,
    limiter: LoginLimiter,
    /// sha256(name \0 password) -> (generation, verified at).
    basic_cache: Mutex<HashMap<[u8; 32], (u64, Instant)>>,
    /// Opened signing keys by kid.
    signing: RwLock<HashMap<String, Vec<u8>>>,
}

/// A user who owns a registry.
fn owner_record(name: &str, password: &str, now_ms: u64) -> Result<PrincipalRecord, AuthError> {
    Ok(PrincipalRecord {
        name: name.into(),
        kind: PrincipalKind::User,
        secrets: vec![secret::hash_password(password)?],
        enabled: true,
        generation: secret::new_generation(),
        roles: vec![RoleAssignment {
            scope: String::new(),
            role: Role::Owner,
        }],
        created_ms: now_ms,
    })
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Authority {
    pub fn new(cfg: AuthConfig, key: ClusterKey) -> Authority {
        Authority {
            view: RwLock::new(HashMap::new()),
            verified: RwLock::new((0, HashMap::new())),
            limiter: LoginLimiter::new(cfg.login_limits),
            cfg,
            key,
            basic_cache: Mutex::new(HashMap::new()),
            signing: RwLock::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    pub fn cluster_key(&self) -> &ClusterKey {
        &self.key
    }

    /// The identities as of the store's current identity epoch.
    fn view(&self, meta: &Registry<'_>) -> Result<Arc<View>, AuthError> {
        // Read the epoch before the records: a change racing with the load
        // bumps it again afterwards, so a stale view is never kept.
        let epoch = meta.identity_epoch();
        if let Some(v) = self
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(meta.name())
        {
            if v.epoch == epoch {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(View::load(meta, epoch)?);
        let mut views = self.view.write().unwrap_or_else(|e| e.into_inner());
        // Views of deleted registries go once the epoch moves on.
        views.retain(|_, old| old.epoch == epoch);
        views.insert(meta.name().to_string(), v.clone());
        Ok(v)
    }

    /// The registry's access settings (anonymous pull), from the view.
    pub fn access(&self, meta: &Registry<'_>) -> Result<AccessSettings, AuthError> {
        Ok(self.view(meta)?.access.clone())
    }

    // ---- records to propose ------------------------------------------

    /// A new signing key, sealed with the cluster key.
    pub fn new_signing_key(&self, now_ms: u64) -> SigningKeyRecord {
        let kid = random_hex(8);
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        SigningKeyRecord {
            sealed: self.key.seal(&k, &kid),
            kid,
            created_ms: now_ms,
        }
    }

    /// The command that creates the first owner and signing key.
    pub fn bootstrap_command(
        &self,
        owner: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<IdentityCommand, AuthError> {
        Ok(IdentityCommand::Bootstrap {
            owner: owner_record(owner, password, now_ms)?,
            signing_key: self.new_signing_key(now_ms),
        })
    }

    /// A new registry with its first owner (a user with `password`) and
    /// signing key.
    pub fn create_registry_command(
        &self,
        record: RegistryRecord,
        owner: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<RegistryCommand, AuthError> {
        Ok(RegistryCommand::Create {
            record: Box::new(record),
            owner: owner_record(owner, password, now_ms)?,
            signing_key: self.new_signing_key(now_ms),
        })
    }

    /// A fresh admin password for `slot` (0 or 1), sealed with the cluster key.
    pub fn new_admin_password(&self, slot: usize) -> Vec<u8> {
        let pw = secret::new_secret();
        self.key.seal(pw.as_bytes(), &format!("admin-{slot}"))
    }

    /// An admin-account change: `enabled` if given, a fresh password for
    /// `renew_slot` (0 or 1) if given, and fresh passwords for the slots
    /// still empty when it applies (both exist from the first change on).
    pub fn admin_change(&self, enabled: Option<bool>, renew_slot: Option<u8>) -> AdminChange {
        let mut change = AdminChange {
            enabled,
            ..AdminChange::default()
        };
        if let Some(slot) = renew_slot {
            change
                .set_passwords
                .push((slot, self.new_admin_password(usize::from(slot))));
        }
        for slot in 0..2u8 {
            change
                .fill_empty
                .push((slot, self.new_admin_password(usize::from(slot))));
        }
        change
    }

    /// Seal two new admin passwords; returns the record and the passwords.
    pub fn new_admin_passwords(
        &self,
        old: &AdminRecord,
        which: &[usize],
    ) -> (AdminRecord, Vec<String>) {
        let mut rec = old.clone();
        let mut shown = Vec::new();
        for &i in which {
            let pw = secret::new_secret();
            rec.sealed_passwords[i] = self.key.seal(pw.as_bytes(), &format!("admin-{i}"));
            shown.push(pw);
        }
        rec.generation += 1;
        (rec, shown)
    }

    /// The admin passwords in clear (`wharf credential show`); empty when
    /// never generated.
    pub fn admin_passwords(&self, rec: &AdminRecord) -> Result<Vec<String>, AuthError> {
        rec.sealed_passwords
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(i, s)| {
                let plain = self.key.open(s, &format!("admin-{i}"))?;
                String::from_utf8(plain).map_err(|_| AuthError::Key("admin password".into()))
            })
            .collect()
    }

    // ---- authentication ----------------------------------------------

    /// Check basic credentials, rate limited per name and source address.
    pub fn login(
        &self,
        meta: &Registry<'_>,
        name: &str,
        password: &str,
        source: IpAddr,
        now_ms: u64,
    ) -> Result<Subject, AuthError> {
        if let Some(retry_after_s) = self.limiter.check(name, source) {
            return Err(AuthError::RateLimited { retry_after_s });
        }
        let result = self.check_password(meta, name, password, now_ms);
        if matches!(result, Err(AuthError::BadCredentials)) {
            self.limiter.failed(name, source);
        }
        result
    }

    fn check_password(
        &self,
        meta: &Registry<'_>,
        name: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<Subject, AuthError> {
        let cache_key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(meta.name().as_bytes());
            h.update([0]);
            h.update(name.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let cached = {
            let g = self.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
            g.get(&cache_key)
                .filter(|(_, at)| at.elapsed() < BASIC_CACHE_TTL)
                .map(|(gen, _)| *gen)
        };
        if let Some(gen) = cached {
            if let Ok(s) = self.resolve(meta, name, Some(gen), now_ms) {
                return Ok(s);
            }
        }
        let view = self.view(meta)?;
        let stored: Vec<String> = if name == ADMIN_NAME {
            self.admin_passwords(&view.admin)?
        } else if let Some(p) = view.principals.get(name) {
            p.secrets.clone()
        } else if let Some(t) = view.tokens.get(name) {
            t.secrets.iter().flatten().cloned().collect()
        } else {
            // Spend the same effort on unknown names as on known ones,
            // so response times do not tell which names exist.
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let dummy =
                DUMMY.get_or_init(|| secret::hash_password("wharf-dummy").unwrap_or_default());
            let _ = secret::verify(dummy, password);
            return Err(AuthError::BadCredentials);
        };
        let ok = stored.iter().any(|s| {
            if name == ADMIN_NAME {
                s.as_bytes().ct_eq(password.as_bytes()).into()
            } else {
                secret::verify(s, password)
            }
        });
        if !ok {
            return Err(AuthError::BadCredentials);
        }
        let subject = self.resolve(meta, name, None, now_ms)?;
        let mut g = self.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= BASIC_CACHE_MAX {
            g.clear();
        }
        g.insert(cache_key, (subject.generation(), Instant::now()));
        Ok(subject)
    }

    /// The current subject named `name` (a user, a token, the admin
    /// account), refusing disabled or expired ones: whom a build task
    /// acts for when it pulls and pushes.
    pub fn subject_named(
        &self,
        meta: &Registry<'_>,
        name: &str,
        now_ms: u64,
    ) -> Result<Subject, AuthError> {
        if name.is_empty() {
            return Err(AuthError::InvalidToken("no subject named"));
        }
        self.resolve(meta, name, None, now_ms)
    }

    /// The current subject named `name`, refusing disabled, expired or
    /// (when `generation` is given) changed ones.
    fn resolve(
        &self,
        meta: &Registry<'_>,
        name: &str,
        generation: Option<u64>,
        now_ms: u64,
    ) -> Result<Subject, AuthError> {
        let view = self.view(meta)?;
        let subject = if name.is_empty() {
            // Tokens issued to anonymous callers (anonymous pull).
            Subject::Anonymous
        } else if name == ADMIN_NAME {
            let a = &view.admin;
            if !a.enabled {
                return Err(AuthError::Disabled("the admin account".into()));
            }
            Subject::Admin {
                generation: a.generation,
            }
        } else if let Some(p) = view.principals.get(name) {
            if !p.enabled {
                return Err(AuthError::Disabled(format!("user {name}")));
            }
            Subject::Principal(p.clone())
        } else if let Some(t) = view.tokens.get(name) {
            if !t.enabled {
                return Err(AuthError::Disabled(format!("token {name}")));
            }
            if t.expiry_ms.is_some_and(|e| now_ms >= e) {
                return Err(AuthError::Expired(format!("token {name}")));
            }
            let map = view
                .scope_maps
                .get(&t.scope_map)
                .ok_or(AuthError::BadCredentials)?
                .clone();
            Subject::Token {
                token: t.clone(),
                map,
            }
        } else {
            return Err(AuthError::BadCredentials);
        };
        if generation.is_some_and(|g| g != subject.generation()) {
            return Err(AuthError::InvalidToken(
                "credentials changed since it was issued",
            ));
        }
        Ok(subject)
    }

    // ---- tokens ---------------------------------------------------------

    fn signing_key(&self, meta: &Registry<'_>, kid: &str) -> Option<Vec<u8>> {
        // The replicated list (a handful of keys) decides which keys are
        // valid, so a key dropped by a rotation stops verifying at once;
        // the cache only spares decrypting it again.
        let view = self.view(meta).ok()?;
        let rec = view.keys.iter().find(|k| k.kid == kid)?;
        if let Some(k) = self
            .signing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
        {
            return Some(k.clone());
        }
        let key = match self.key.open(&rec.sealed, &rec.kid) {
            Ok(k) => k,
            Err(e) => {
                tracing_warn(&e);
                return None;
            }
        };
        self.signing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kid.to_string(), key.clone());
        Some(key)
    }

    /// Encrypt `plain` with the cluster key, bound to `context`: how task
    /// secrets are kept in the replicated state.
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        self.key.seal(plain, context)
    }

    /// Decrypt what `seal` made with the same context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, AuthError> {
        self.key.open(sealed, context)
    }

    /// Sign a token for `subject`; returns it and its lifetime in seconds.
    pub fn issue(
        &self,
        meta: &Registry<'_>,
        subject: &Subject,
        access: Vec<Grant>,
        token_use: TokenUse,
        now_ms: u64,
    ) -> Result<(String, u64), AuthError> {
        let newest = self
            .view(meta)?
            .keys
            .first()
            .cloned()
            .ok_or(AuthError::Key(
                "no signing key yet (cluster still starting)".into(),
            ))?;
        let key = self.signing_key(meta, &newest.kid).ok_or(AuthError::Key(
            "the signing key does not open with this node's cluster key".into(),
        ))?;
        let ttl = match token_use {
            TokenUse::Access => self.cfg.access_ttl,
            TokenUse::Refresh => self.cfg.refresh_ttl,
            TokenUse::Session => self.cfg.session_ttl,
        }
        .as_secs();
        let now_s = now_ms / 1000;
        let claims = Claims {
            iss: self.cfg.service.clone(),
            sub: subject.name().to_string(),
            aud: self.audience(meta),
            iat: now_s,
            exp: now_s + ttl,
            jti: random_hex(12),
            token_use,
            generation: subject.generation(),
            access,
        };
        Ok((token::sign(&claims, &newest.kid, &key), ttl))
    }

    /// Whom a token is for: the registry (the default one keeps the
    /// service name alone, so tokens issued before registries existed stay
    /// valid there). A token of one registry is refused by every other.
    fn audience(&self, meta: &Registry<'_>) -> String {
        if meta.name() == wharf_meta::DEFAULT_REGISTRY {
            self.cfg.service.clone()
        } else {
            format!("{}/{}", self.cfg.service, meta.name())
        }
    }

    /// Verify a token and resolve its subject as it is now.
    pub fn verify(
        &self,
        meta: &Registry<'_>,
        token: &str,
        token_use: TokenUse,
        now_ms: u64,
    ) -> Result<(Subject, Arc<Claims>), AuthError> {
        let epoch = meta.identity_epoch();
        let signature = token.rsplit('.').next().unwrap_or(token);
        let cached = {
            let g = self.verified.read().unwrap_or_else(|e| e.into_inner());
            (g.0 == epoch)
                .then(|| g.1.get(signature))
                .flatten()
                .filter(|v| &*v.registry == meta.name() && &*v.token == token)
                .map(|v| v.claims.clone())
        };
        let claims = match cached {
            Some(c) if now_ms / 1000 < c.exp => c,
            Some(_) => return Err(AuthError::InvalidToken("expired")),
            None => {
                let c = Arc::new(token::verify(
                    token,
                    &self.audience(meta),
                    now_ms / 1000,
                    |kid| self.signing_key(meta, kid),
                )?);
                let mut g = self.verified.write().unwrap_or_else(|e| e.into_inner());
                if g.0 != epoch || g.1.len() >= VERIFIED_MAX {
                    *g = (epoch, HashMap::new());
                }
                g.1.insert(
                    signature.into(),
                    VerifiedToken {
                        registry: meta.name().into(),
                        token: token.into(),
                        claims: c.clone(),
                    },
                );
                c
            }
        };
        if !token_use.accepts(claims.token_use) {
            return Err(AuthError::InvalidToken("wrong kind of token"));
        }
        let subject = self
            .resolve(meta, &claims.sub, Some(claims.generation), now_ms)
            .map_err(|e| match e {
                AuthError::Store(_) => e,
                _ => AuthError::InvalidToken("its subject was changed, disabled or deleted"),
            })?;
        Ok((subject, claims))
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;

fn tracing_warn(e: &AuthError) {
    // The auth crate has no logger of its own; stderr reaches the node's log.
    eprintln!("wharf-auth: {e}");
}
