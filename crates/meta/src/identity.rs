//! Identity records: who may use the registry. They live in the replicated
//! state like every other metadata, so every node in every region can
//! authenticate and authorize locally. Secrets are stored only as hashes
//! (or sealed with the cluster key); the hashing and sealing happen in the
//! auth crate before a command is proposed, so apply stays deterministic.

use serde::{Deserialize, Serialize};

/// What kind of principal a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// A person, with one password (argon2 hash).
    User,
    /// A service principal: an app id with up to two generated secrets.
    ServicePrincipal,
}

/// A built-in role, granted at registry scope or on repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Pull, and read metadata.
    Reader,
    /// Push and pull, read and write metadata.
    Contributor,
    /// Everything, including deletes and assigning roles.
    Owner,
    /// Delete manifests, tags, blobs and repositories (alone: no pull).
    Delete,
}

/// A role granted on a scope: "" is the whole registry, "name" one
/// repository, "prefix/*" every repository under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleAssignment {
    pub scope: String,
    pub role: Role,
}

/// A user or service principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    pub name: String,
    pub kind: PrincipalKind,
    /// Secret hashes (PHC strings); users have one, service principals up
    /// to two so that a secret can be rotated without downtime.
    pub secrets: Vec<String>,
    pub enabled: bool,
    /// Bumped whenever a secret changes or the principal is disabled:
    /// access tokens carry it, so older tokens stop verifying everywhere.
    pub generation: u64,
    pub roles: Vec<RoleAssignment>,
    pub created_ms: u64,
}

/// One repository pattern of a scope map and the actions it allows
/// (content/read, content/write, content/delete, metadata/read,
/// metadata/write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRule {
    pub repository: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeMapRecord {
    pub name: String,
    pub description: String,
    pub rules: Vec<ScopeRule>,
    pub created_ms: u64,
}

/// A repository-scoped token: a username with up to two generated
/// passwords, whose rights are those of its scope map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub scope_map: String,
    pub enabled: bool,
    /// Milliseconds since the epoch after which the token is refused.
    pub expiry_ms: Option<u64>,
    /// Password hashes, slots 1 and 2 (None: not generated).
    pub secrets: [Option<String>; 2],
    pub generation: u64,
    pub created_ms: u64,
}

/// A key that signs access tokens, sealed with the cluster key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    pub created_ms: u64,
}

/// The registry's admin account: off by default, two passwords, sealed
/// (not hashed) because `wharf credential show` must display them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AdminRecord {
    pub enabled: bool,
    pub sealed_passwords: [Vec<u8>; 2],
    pub generation: u64,
}

/// Registry-wide access settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AccessSettings {
    /// Unauthenticated clients may pull every repository.
    pub anonymous_pull: bool,
}

/// Changes to identities. Refusals (name taken, unknown name) are
/// deterministic answers like every other command's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityCommand {
    /// Create the first owner and the first signing key of a new registry.
    /// Each part applies only if nothing of its kind exists yet, so every
    /// node may propose it at first start and exactly one wins.
    Bootstrap {
        owner: PrincipalRecord,
        signing_key: SigningKeyRecord,
    },
    /// Create (`create` = true, refused when the name exists) or replace
    /// (refused when it does not) a principal.
    PutPrincipal {
        record: PrincipalRecord,
        create: bool,
    },
    DeletePrincipal {
        name: String,
    },
    /// Grant (`grant` = true) or revoke a role.
    SetRole {
        principal: String,
        assignment: RoleAssignment,
        grant: bool,
    },
    PutScopeMap {
        record: ScopeMapRecord,
        create: bool,
    },
    /// Refused while a token uses the scope map.
    DeleteScopeMap {
        name: String,
    },
    /// Refused when the scope map does not exist.
    PutToken {
        record: TokenRecord,
        create: bool,
    },
    DeleteToken {
        name: String,
    },
    /// Add a signing key, making it the one new tokens are signed with;
    /// keys beyond the newest `keep` are dropped (their tokens stop verifying).
    RotateSigningKey {
        key: SigningKeyRecord,
        keep: usize,
    },
    SetAdmin(AdminRecord),
    SetAccess(AccessSettings),
    /// Change a principal as it is when applied, never by a whole record
    /// read earlier (which would undo what applied in between, such as a
    /// revoked role). Any change bumps its generation.
    UpdatePrincipal {
        name: String,
        change: PrincipalChange,
    },
    /// Change a token as it is when applied; any change bumps its generation.
    UpdateToken {
        name: String,
        change: TokenChange,
    },
    /// Change the admin account as it is when applied.
    UpdateAdmin(AdminChange),
}

/// What an update of a principal changes; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PrincipalChange {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replace every secret hash (a new password, a regenerated secret).
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
}

/// What an update of a token changes; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TokenChange {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Refused when the scope map does not exist when applied.
    #[serde(default)]
    pub scope_map: Option<String>,
    /// `Some(None)` removes the expiry.
    #[serde(default)]
    pub expiry_ms: Option<Option<u64>>,
    /// A new hash for password slot 1 or 2.
    #[serde(default)]
    pub secret: Option<(u8, String)>,
}

/// What an update of the admin account changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AdminChange {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Sealed passwords for slots 0 and 1, replacing what is there.
    #[serde(default)]
    pub set_passwords: Vec<(u8, Vec<u8>)>,
    /// Sealed passwords for slots that are still empty when applied (the
    /// first enable generates both).
    #[serde(default)]
    pub fill_empty: Vec<(u8, Vec<u8>)>,
}
