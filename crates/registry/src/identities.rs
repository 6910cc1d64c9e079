//! A registry's identities: the rules behind the identity verbs (names,
//! password strength, which secret each kind of principal gets, role
//! scopes, scope-map rules, token password slots), each ending in one
//! identity command that states the change, applied to the identity as
//! it is when the command applies. Generated secrets are returned once,
//! to the caller that asked for them; only their hashes are proposed.

use wharf_auth::{secret, validate_pattern, Action, ADMIN_NAME};
use wharf_meta::{
    AccessSettings, AdminChange, Command, IdentityCommand, PrincipalChange, PrincipalKind,
    PrincipalRecord, Role, RoleAssignment, ScopeMapRecord, ScopeRule, SigningKeyRecord,
    TokenChange, TokenRecord,
};
use wharf_oci::ErrorCode;

use crate::{Handle, ServiceError, ServiceResult};

/// Signing keys kept after a rotation: the new one and its predecessor,
/// so tokens issued just before a rotation keep working until they expire.
pub const SIGNING_KEYS_KEPT: usize = 2;

/// A request that makes no sense (400 NAME_INVALID, as the identity
/// verbs have always answered).
fn bad(msg: impl Into<String>) -> ServiceError {
    ServiceError::Spec {
        code: ErrorCode::NameInvalid,
        message: msg.into(),
        status: Some(400),
    }
}

fn auth_bad(e: wharf_auth::AuthError) -> ServiceError {
    bad(e.to_string())
}

/// Hashing failed: the server's fault, not the request's.
fn internal(e: wharf_auth::AuthError) -> ServiceError {
    tracing::error!(error = %e, "hashing a secret");
    ServiceError::spec(ErrorCode::Internal, e.to_string())
}

/// Names of users, service principals, tokens and scope maps.
fn check_name(name: &str) -> ServiceResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(bad(format!(
            "{name:?}: names are 1-64 letters, digits, '-', '_', '.', '@'"
        )));
    }
    if name == ADMIN_NAME {
        return Err(bad("\"admin\" is the registry's admin account"));
    }
    Ok(())
}

/// The wire name of a principal kind.
pub fn kind_name(k: PrincipalKind) -> &'static str {
    match k {
        PrincipalKind::User => "user",
        PrincipalKind::ServicePrincipal => "service-principal",
    }
}

/// The wire name of a role.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Reader => "reader",
        Role::Contributor => "contributor",
        Role::Owner => "owner",
        Role::Delete => "delete",
    }
}

fn parse_role(s: &str) -> ServiceResult<Role> {
    Ok(match s {
        "reader" => Role::Reader,
        "contributor" => Role::Contributor,
        "owner" => Role::Owner,
        "delete" => Role::Delete,
        _ => {
            return Err(bad(format!(
                "role {s:?}: reader, contributor, owner or delete"
            )))
        }
    })
}

fn unknown(name: &str) -> ServiceError {
    ServiceError::Refused(wharf_meta::ApplyError::IdentityUnknown(name.to_string()))
}

impl Handle {
    async fn identity(&self, c: IdentityCommand) -> ServiceResult<u64> {
        // Tokens, scope maps and anonymous pull are limited by tier.
        self.write(self.service.gated(Command::Identity(Box::new(c))))
            .await
    }

    /// Create a user (`kind` "user", with `password`) or a service
    /// principal (a secret is generated); returns its kind and the
    /// generated secret.
    pub async fn create_principal(
        &self,
        name: &str,
        kind: &str,
        password: Option<String>,
        now_ms: u64,
    ) -> ServiceResult<(PrincipalKind, Option<String>)> {
        check_name(name)?;
        let (kind, secret_hash, shown) = match kind {
            "user" => {
                let pw = password.ok_or_else(|| bad("a user needs a password"))?;
                secret::check_password_strength(&pw).map_err(auth_bad)?;
                let hash = secret::hash_password(&pw).map_err(internal)?;
                (PrincipalKind::User, hash, None)
            }
            "service-principal" => {
                let s = secret::new_secret();
                (
                    PrincipalKind::ServicePrincipal,
                    secret::hash_secret(&s),
                    Some(s),
                )
            }
            k => return Err(bad(format!("kind {k:?}: user or service-principal"))),
        };
        self.identity(IdentityCommand::PutPrincipal {
            record: PrincipalRecord {
                name: name.to_string(),
                kind,
                secrets: vec![secret_hash],
                enabled: true,
                generation: secret::new_generation(),
                roles: vec![],
                created_ms: now_ms,
            },
            create: true,
        })
        .await?;
        Ok((kind, shown))
    }

    /// Enable or disable a principal, set a user's password or regenerate
    /// a service principal's secret (returned). Any change bumps its
    /// generation, retiring the tokens issued before it.
    pub async fn update_principal(
        &self,
        name: &str,
        enabled: Option<bool>,
        password: Option<String>,
        regenerate: bool,
    ) -> ServiceResult<Option<String>> {
        // The kind never changes, so reading it here decides nothing that
        // an update applied in between could change.
        let kind = self
            .meta()
            .principal(name)?
            .ok_or_else(|| unknown(name))?
            .kind;
        let mut change = PrincipalChange {
            enabled,
            secrets: None,
        };
        let mut shown = None;
        if let Some(pw) = password {
            if kind != PrincipalKind::User {
                return Err(bad(
                    "service principals get generated secrets: use regenerate",
                ));
            }
            secret::check_password_strength(&pw).map_err(auth_bad)?;
            change.secrets = Some(vec![secret::hash_password(&pw).map_err(internal)?]);
        }
        if regenerate {
            if kind != PrincipalKind::ServicePrincipal {
                return Err(bad("users choose their password: use password"));
            }
            let s = secret::new_secret();
            change.secrets = Some(vec![secret::hash_secret(&s)]);
            shown = Some(s);
        }
        self.identity(IdentityCommand::UpdatePrincipal {
            name: name.to_string(),
            change,
        })
        .await?;
        Ok(shown)
    }

    /// Delete a principal; `caller` (the one asking) cannot delete itself.
    pub async fn delete_principal(&self, name: &str, caller: &str) -> ServiceResult<()> {
        if name == caller {
            return Err(bad("an owner cannot delete itself"));
        }
        self.identity(IdentityCommand::DeletePrincipal {
            name: name.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Grant or revoke `role` on `scope` ("" or "*": the registry);
    /// whether anything changed.
    pub async fn set_role(
        &self,
        principal: &str,
        scope: &str,
        role: &str,
        grant: bool,
    ) -> ServiceResult<bool> {
        validate_pattern(scope).map_err(auth_bad)?;
        let scope = if scope == "*" { "" } else { scope };
        let changed = self
            .identity(IdentityCommand::SetRole {
                principal: principal.to_string(),
                assignment: RoleAssignment {
                    scope: scope.to_string(),
                    role: parse_role(role)?,
                },
                grant,
            })
            .await?;
        Ok(changed > 0)
    }

    /// Create (or, with `create` false, replace) a scope map of rules
    /// (repository pattern, actions); returns it as stored.
    pub async fn put_scope_map(
        &self,
        name: &str,
        description: &str,
        rules: Vec<(String, Vec<String>)>,
        create: bool,
        now_ms: u64,
    ) -> ServiceResult<ScopeMapRecord> {
        check_name(name)?;
        if rules.is_empty() {
            return Err(bad("a scope map needs at least one rule"));
        }
        for (repository, actions) in &rules {
            validate_pattern(repository).map_err(auth_bad)?;
            if let Some(a) = actions
                .iter()
                .find(|a| Action::from_scope_map_name(a).is_none())
            {
                return Err(bad(format!(
                    "action {a:?}: content/read, content/write, content/delete, metadata/read or metadata/write"
                )));
            }
        }
        let record = ScopeMapRecord {
            name: name.to_string(),
            description: description.to_string(),
            rules: rules
                .into_iter()
                .map(|(repository, actions)| ScopeRule {
                    repository,
                    actions,
                })
                .collect(),
            // A replaced map keeps its creation time.
            created_ms: self
                .meta()
                .scope_map(name)?
                .map_or(now_ms, |m| m.created_ms),
        };
        self.identity(IdentityCommand::PutScopeMap {
            record: record.clone(),
            create,
        })
        .await?;
        Ok(record)
    }

    pub async fn delete_scope_map(&self, name: &str) -> ServiceResult<()> {
        self.identity(IdentityCommand::DeleteScopeMap {
            name: name.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Create a repository-scoped token; returns it with its two
    /// generated passwords.
    pub async fn create_token(
        &self,
        name: &str,
        scope_map: &str,
        expiry_ms: Option<u64>,
        enabled: bool,
        now_ms: u64,
    ) -> ServiceResult<(TokenRecord, [String; 2])> {
        check_name(name)?;
        let passwords = [secret::new_secret(), secret::new_secret()];
        let record = TokenRecord {
            name: name.to_string(),
            scope_map: scope_map.to_string(),
            enabled,
            expiry_ms,
            secrets: passwords.each_ref().map(|p| Some(secret::hash_secret(p))),
            generation: secret::new_generation(),
            created_ms: now_ms,
        };
        self.identity(IdentityCommand::PutToken {
            record: record.clone(),
            create: true,
        })
        .await?;
        Ok((record, passwords))
    }

    /// Change a token (`expiry_ms` Some(0) removes its expiry; `regenerate`
    /// names password slot 1 or 2); returns it as it is now and the
    /// regenerated password with its slot.
    pub async fn update_token(
        &self,
        name: &str,
        enabled: Option<bool>,
        scope_map: Option<String>,
        expiry_ms: Option<u64>,
        regenerate: Option<u8>,
    ) -> ServiceResult<(TokenRecord, Option<(u8, String)>)> {
        let mut change = TokenChange {
            enabled,
            scope_map,
            expiry_ms: expiry_ms.map(|x| (x > 0).then_some(x)),
            secret: None,
        };
        let mut shown = None;
        if let Some(slot) = regenerate {
            if !(1..=2).contains(&slot) {
                return Err(bad("regenerate password 1 or 2"));
            }
            let s = secret::new_secret();
            change.secret = Some((slot, secret::hash_secret(&s)));
            shown = Some((slot, s));
        }
        self.identity(IdentityCommand::UpdateToken {
            name: name.to_string(),
            change,
        })
        .await?;
        // Applied here before the write returned: the token as it is now.
        let token = self.meta().token(name)?.ok_or_else(|| unknown(name))?;
        Ok((token, shown))
    }

    pub async fn delete_token(&self, name: &str) -> ServiceResult<()> {
        self.identity(IdentityCommand::DeleteToken {
            name: name.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Apply a change to the admin account (built by the authority, which
    /// seals the passwords it generates with the cluster key).
    pub async fn update_admin(&self, change: AdminChange) -> ServiceResult<()> {
        self.identity(IdentityCommand::UpdateAdmin(change)).await?;
        Ok(())
    }

    /// Sign new tokens with `key`; the previous key still verifies.
    pub async fn rotate_signing_key(&self, key: SigningKeyRecord) -> ServiceResult<()> {
        self.identity(IdentityCommand::RotateSigningKey {
            key,
            keep: SIGNING_KEYS_KEPT,
        })
        .await?;
        Ok(())
    }

    pub async fn set_access(&self, anonymous_pull: bool) -> ServiceResult<()> {
        self.identity(IdentityCommand::SetAccess(AccessSettings {
            anonymous_pull,
        }))
        .await?;
        Ok(())
    }
}

/// Whether `renew` names a password slot of the admin account (1, 2).
pub fn check_admin_slot(renew: Option<u8>) -> ServiceResult<()> {
    if renew.is_some_and(|n| !(1..=2).contains(&n)) {
        return Err(bad("renew password 1 or 2"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles_are_checked_before_anything_is_proposed() {
        assert!(check_name("ci-bot@team.one").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name(ADMIN_NAME).is_err(), "admin is reserved");
        for r in ["reader", "contributor", "owner", "delete"] {
            assert_eq!(role_name(parse_role(r).unwrap()), r);
        }
        assert!(parse_role("superuser").is_err());
        assert!(check_admin_slot(Some(3)).is_err());
        assert!(check_admin_slot(Some(2)).is_ok());
    }
}
