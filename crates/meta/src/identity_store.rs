//! Applying identity commands and reading identities back.

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;

use crate::command::Response;
use crate::error::{ApplyError, StoreError};
use crate::identity::*;
use crate::keys::*;
use crate::repo::Registry;
use crate::store::{decode, encode};

fn refuse(e: ApplyError) -> Result<Response, StoreError> {
    Ok(Response::Refused(e))
}

impl Registry<'_> {
    fn key_of(&self, kind: &str, name: &str) -> Vec<u8> {
        self.key(&[kind, name])
    }

    fn signing_key_key(&self, k: &SigningKeyRecord) -> Vec<u8> {
        self.key(&[AUTH_KEY, &format!("{:020}", k.created_ms), &k.kid])
    }

    pub(crate) fn apply_identity(
        &self,
        batch: &mut WriteBatch,
        cmd: &IdentityCommand,
    ) -> Result<Response, StoreError> {
        match cmd {
            IdentityCommand::Bootstrap { owner, signing_key } => {
                self.bootstrap_identities(batch, owner, signing_key)?;
                Ok(Response::Ok)
            }
            IdentityCommand::PutPrincipal { record, create } => {
                let k = self.key_of(AUTH_PRINCIPAL, &record.name);
                let exists = self.exists(CF_AUTH, &k)?;
                if *create
                    && (exists || self.exists(CF_AUTH, &self.key_of(AUTH_TOKEN, &record.name))?)
                {
                    return refuse(ApplyError::IdentityExists(record.name.clone()));
                }
                if !*create && !exists {
                    return refuse(ApplyError::IdentityUnknown(record.name.clone()));
                }
                self.put_auth(batch, &k, record);
                Ok(Response::Ok)
            }
            IdentityCommand::DeletePrincipal { name } => {
                self.delete_auth(batch, &self.key_of(AUTH_PRINCIPAL, name))
            }
            IdentityCommand::SetRole {
                principal,
                assignment,
                grant,
            } => {
                let k = self.key_of(AUTH_PRINCIPAL, principal);
                let Some(mut p) = self.get::<PrincipalRecord>(CF_AUTH, &k)? else {
                    return refuse(ApplyError::IdentityUnknown(principal.clone()));
                };
                let present = p.roles.iter().position(|a| a == assignment);
                match (grant, present) {
                    (true, None) => {
                        p.roles.push(assignment.clone());
                        p.roles.sort();
                    }
                    (false, Some(i)) => {
                        p.roles.remove(i);
                    }
                    _ => return Ok(Response::Changed(0)),
                }
                self.put_auth(batch, &k, &p);
                Ok(Response::Changed(1))
            }
            IdentityCommand::PutScopeMap { record, create } => {
                let k = self.key_of(AUTH_SCOPE_MAP, &record.name);
                let existing = self.get::<ScopeMapRecord>(CF_AUTH, &k)?;
                match (&existing, *create) {
                    (Some(_), true) => {
                        return refuse(ApplyError::IdentityExists(record.name.clone()))
                    }
                    (None, false) => {
                        return refuse(ApplyError::IdentityUnknown(record.name.clone()))
                    }
                    _ => {}
                }
                // An update states the rules and description; when the map
                // was created is the state's, not the proposer's.
                let mut record = record.clone();
                if let Some(old) = existing {
                    record.created_ms = old.created_ms;
                }
                self.put_auth(batch, &k, &record);
                Ok(Response::Ok)
            }
            IdentityCommand::DeleteScopeMap { name } => {
                if let Some(t) = self.tokens()?.into_iter().find(|t| &t.scope_map == name) {
                    return refuse(ApplyError::ScopeMapInUse(name.clone(), t.name));
                }
                self.delete_auth(batch, &self.key_of(AUTH_SCOPE_MAP, name))
            }
            IdentityCommand::PutToken { record, create } => {
                let k = self.key_of(AUTH_TOKEN, &record.name);
                let exists = self.exists(CF_AUTH, &k)?;
                if *create
                    && (exists
                        || self.exists(CF_AUTH, &self.key_of(AUTH_PRINCIPAL, &record.name))?)
                {
                    return refuse(ApplyError::IdentityExists(record.name.clone()));
                }
                if !*create && !exists {
                    return refuse(ApplyError::IdentityUnknown(record.name.clone()));
                }
                if !self.exists(CF_AUTH, &self.key_of(AUTH_SCOPE_MAP, &record.scope_map))? {
                    return refuse(ApplyError::IdentityUnknown(format!(
                        "scope map {}",
                        record.scope_map
                    )));
                }
                self.put_auth(batch, &k, record);
                Ok(Response::Ok)
            }
            IdentityCommand::DeleteToken { name } => {
                self.delete_auth(batch, &self.key_of(AUTH_TOKEN, name))
            }
            IdentityCommand::RotateSigningKey { key: new, keep } => {
                let mut keys = self.signing_keys()?;
                keys.insert(0, new.clone());
                for old in keys.iter().skip((*keep).max(1)) {
                    batch.delete_cf(self.cf(CF_AUTH), self.signing_key_key(old));
                }
                self.put_auth(batch, &self.signing_key_key(new), new);
                Ok(Response::Ok)
            }
            IdentityCommand::SetAdmin(a) => {
                self.put_auth(batch, &self.key(&[AUTH_ADMIN]), a);
                Ok(Response::Ok)
            }
            IdentityCommand::SetAccess(a) => {
                self.put_auth(batch, &self.key(&[AUTH_ACCESS]), a);
                Ok(Response::Ok)
            }
            IdentityCommand::UpdatePrincipal { name, change } => {
                let k = self.key_of(AUTH_PRINCIPAL, name);
                let Some(mut p) = self.get::<PrincipalRecord>(CF_AUTH, &k)? else {
                    return refuse(ApplyError::IdentityUnknown(name.clone()));
                };
                if let Some(e) = change.enabled {
                    p.enabled = e;
                }
                if let Some(s) = &change.secrets {
                    p.secrets = s.clone();
                }
                p.generation += 1;
                self.put_auth(batch, &k, &p);
                Ok(Response::Ok)
            }
            IdentityCommand::UpdateToken { name, change } => {
                let k = self.key_of(AUTH_TOKEN, name);
                let Some(mut t) = self.get::<TokenRecord>(CF_AUTH, &k)? else {
                    return refuse(ApplyError::IdentityUnknown(name.clone()));
                };
                if let Some(m) = &change.scope_map {
                    if !self.exists(CF_AUTH, &self.key_of(AUTH_SCOPE_MAP, m))? {
                        return refuse(ApplyError::IdentityUnknown(format!("scope map {m}")));
                    }
                    t.scope_map = m.clone();
                }
                if let Some(e) = change.enabled {
                    t.enabled = e;
                }
                if let Some(x) = change.expiry_ms {
                    t.expiry_ms = x;
                }
                if let Some((slot, hash)) = &change.secret {
                    match t.secrets.get_mut(usize::from(slot.saturating_sub(1))) {
                        Some(s) if (1..=2).contains(slot) => *s = Some(hash.clone()),
                        _ => {
                            return refuse(ApplyError::IdentityUnknown(format!("password {slot}")))
                        }
                    }
                }
                t.generation += 1;
                self.put_auth(batch, &k, &t);
                Ok(Response::Ok)
            }
            IdentityCommand::UpdateAdmin(change) => {
                let mut a = self.admin()?;
                if let Some(e) = change.enabled {
                    a.enabled = e;
                }
                for (slot, sealed) in &change.set_passwords {
                    if let Some(s) = a.sealed_passwords.get_mut(usize::from(*slot)) {
                        *s = sealed.clone();
                    }
                }
                for (slot, sealed) in &change.fill_empty {
                    if let Some(s) = a.sealed_passwords.get_mut(usize::from(*slot)) {
                        if s.is_empty() {
                            *s = sealed.clone();
                        }
                    }
                }
                a.generation += 1;
                self.put_auth(batch, &self.key(&[AUTH_ADMIN]), &a);
                Ok(Response::Ok)
            }
        }
    }

    /// The first owner and signing key, each only if none exists yet.
    pub(crate) fn bootstrap_identities(
        &self,
        batch: &mut WriteBatch,
        owner: &PrincipalRecord,
        signing_key: &SigningKeyRecord,
    ) -> Result<(), StoreError> {
        if self
            .list_auth::<PrincipalRecord>(AUTH_PRINCIPAL)?
            .is_empty()
        {
            self.put_auth(batch, &self.key_of(AUTH_PRINCIPAL, &owner.name), owner);
        }
        if self.signing_keys()?.is_empty() {
            self.put_auth(batch, &self.signing_key_key(signing_key), signing_key);
        }
        Ok(())
    }

    fn put_auth<T: serde::Serialize>(&self, batch: &mut WriteBatch, k: &[u8], v: &T) {
        batch.put_cf(self.cf(CF_AUTH), k, encode(v));
    }

    fn delete_auth(&self, batch: &mut WriteBatch, k: &[u8]) -> Result<Response, StoreError> {
        if !self.exists(CF_AUTH, k)? {
            return refuse(ApplyError::IdentityUnknown(last_part(k)));
        }
        batch.delete_cf(self.cf(CF_AUTH), k);
        Ok(Response::Removed(1))
    }

    fn list_auth<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, StoreError> {
        let prefix = self.key_of(kind, "");
        self.scan(CF_AUTH, &prefix, None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(CF_AUTH, v))
            .collect()
    }

    // ---- queries --------------------------------------------------------

    pub fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.get(CF_AUTH, &self.key_of(AUTH_PRINCIPAL, name))
    }

    /// Every user and service principal, by name.
    pub fn principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.list_auth(AUTH_PRINCIPAL)
    }

    pub fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRecord>, StoreError> {
        self.get(CF_AUTH, &self.key_of(AUTH_SCOPE_MAP, name))
    }

    pub fn scope_maps(&self) -> Result<Vec<ScopeMapRecord>, StoreError> {
        self.list_auth(AUTH_SCOPE_MAP)
    }

    pub fn token(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(CF_AUTH, &self.key_of(AUTH_TOKEN, name))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.list_auth(AUTH_TOKEN)
    }

    /// Signing keys, newest (the one to sign with) first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut keys: Vec<SigningKeyRecord> = self.list_auth(AUTH_KEY)?;
        keys.reverse();
        Ok(keys)
    }

    pub fn admin(&self) -> Result<AdminRecord, StoreError> {
        Ok(self
            .get(CF_AUTH, &self.key(&[AUTH_ADMIN]))?
            .unwrap_or_default())
    }

    pub fn access_settings(&self) -> Result<AccessSettings, StoreError> {
        Ok(self
            .get(CF_AUTH, &self.key(&[AUTH_ACCESS]))?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Envelope};
    use crate::{MetaStore, DEFAULT_REGISTRY};

    fn user(name: &str) -> PrincipalRecord {
        PrincipalRecord {
            name: name.into(),
            kind: PrincipalKind::User,
            secrets: vec!["hash".into()],
            enabled: true,
            generation: 1,
            roles: vec![],
            created_ms: 1,
        }
    }

    fn key_rec(kid: &str, at: u64) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            sealed: vec![1, 2, 3],
            created_ms: at,
        }
    }

    fn apply(s: &MetaStore, c: IdentityCommand) -> Response {
        let env = Envelope::new(DEFAULT_REGISTRY, Command::Identity(Box::new(c)), 1);
        s.apply(&env, &[]).unwrap()
    }

    #[test]
    fn bootstrap_applies_once_and_names_are_unique_across_users_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let boot = |name: &str, kid: &str| IdentityCommand::Bootstrap {
            owner: user(name),
            signing_key: key_rec(kid, 1),
        };
        assert_eq!(apply(&s, boot("first", "k1")), Response::Ok);
        assert_eq!(apply(&s, boot("second", "k2")), Response::Ok);
        let names: Vec<_> = s
            .registry(DEFAULT_REGISTRY)
            .principals()
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, vec!["first"]);
        assert_eq!(
            s.registry(DEFAULT_REGISTRY).signing_keys().unwrap()[0].kid,
            "k1"
        );

        let put = |name: &str| IdentityCommand::PutPrincipal {
            record: user(name),
            create: true,
        };
        assert!(matches!(
            apply(&s, put("first")),
            Response::Refused(ApplyError::IdentityExists(_))
        ));
        apply(
            &s,
            IdentityCommand::PutScopeMap {
                record: ScopeMapRecord {
                    name: "m".into(),
                    description: String::new(),
                    rules: vec![],
                    created_ms: 1,
                },
                create: true,
            },
        );
        let token = |name: &str, map: &str| IdentityCommand::PutToken {
            record: TokenRecord {
                name: name.into(),
                scope_map: map.into(),
                enabled: true,
                expiry_ms: None,
                secrets: [None, None],
                generation: 1,
                created_ms: 1,
            },
            create: true,
        };
        assert!(matches!(
            apply(&s, token("first", "m")),
            Response::Refused(ApplyError::IdentityExists(_))
        ));
        assert!(matches!(
            apply(&s, token("ci", "nope")),
            Response::Refused(ApplyError::IdentityUnknown(_))
        ));
        assert_eq!(apply(&s, token("ci", "m")), Response::Ok);
        assert!(matches!(
            apply(&s, IdentityCommand::DeleteScopeMap { name: "m".into() }),
            Response::Refused(ApplyError::ScopeMapInUse(_, _))
        ));
    }

    #[test]
    fn roles_are_granted_once_and_rotation_keeps_the_newest_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        apply(
            &s,
            IdentityCommand::PutPrincipal {
                record: user("u"),
                create: true,
            },
        );
        let a = RoleAssignment {
            scope: "team/*".into(),
            role: Role::Reader,
        };
        let set = |grant| IdentityCommand::SetRole {
            principal: "u".into(),
            assignment: a.clone(),
            grant,
        };
        assert_eq!(apply(&s, set(true)), Response::Changed(1));
        assert_eq!(apply(&s, set(true)), Response::Changed(0));
        assert_eq!(
            s.registry(DEFAULT_REGISTRY)
                .principal("u")
                .unwrap()
                .unwrap()
                .roles,
            vec![a.clone()]
        );
        assert_eq!(apply(&s, set(false)), Response::Changed(1));
        assert_eq!(apply(&s, set(false)), Response::Changed(0));
        assert!(s
            .registry(DEFAULT_REGISTRY)
            .principal("u")
            .unwrap()
            .unwrap()
            .roles
            .is_empty());

        for (i, kid) in ["a", "b", "c"].iter().enumerate() {
            apply(
                &s,
                IdentityCommand::RotateSigningKey {
                    key: key_rec(kid, 10 + i as u64),
                    keep: 2,
                },
            );
        }
        let kids: Vec<_> = s
            .registry(DEFAULT_REGISTRY)
            .signing_keys()
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(kids, vec!["c", "b"]);
    }

    #[test]
    fn updates_apply_to_the_principal_as_it_is_then() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let mut u = user("u");
        u.roles = vec![RoleAssignment {
            scope: String::new(),
            role: Role::Owner,
        }];
        apply(
            &s,
            IdentityCommand::PutPrincipal {
                record: u,
                create: true,
            },
        );
        // An update proposed by someone who read the role, applied after
        // the revocation: it states only what it changes.
        let revoke = IdentityCommand::SetRole {
            principal: "u".into(),
            assignment: RoleAssignment {
                scope: String::new(),
                role: Role::Owner,
            },
            grant: false,
        };
        assert_eq!(apply(&s, revoke), Response::Changed(1));
        let update = |enabled| IdentityCommand::UpdatePrincipal {
            name: "u".into(),
            change: PrincipalChange {
                enabled: Some(enabled),
                secrets: None,
            },
        };
        assert_eq!(apply(&s, update(false)), Response::Ok);
        let p = s
            .registry(DEFAULT_REGISTRY)
            .principal("u")
            .unwrap()
            .unwrap();
        assert!(p.roles.is_empty(), "the revocation holds");
        assert!(!p.enabled);
        assert_eq!(p.generation, 2, "a change retires older tokens");
        assert_eq!(p.secrets, vec!["hash".to_string()], "untouched");
        assert!(matches!(
            apply(
                &s,
                IdentityCommand::UpdatePrincipal {
                    name: "nobody".into(),
                    change: PrincipalChange::default(),
                }
            ),
            Response::Refused(ApplyError::IdentityUnknown(_))
        ));
    }
}
