//! Who may do what: roles on scopes for principals, scope maps for
//! repository-scoped tokens, and the Docker scope strings clients ask for.

use wharf_meta::{
    AccessSettings, PrincipalRecord, Role, RoleAssignment, ScopeMapRecord, TokenRecord,
};

use crate::error::AuthError;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests and blobs (scope-map action content/read).
    Pull,
    /// Upload blobs, put manifests (content/write).
    Push,
    /// Delete manifests, tags, blobs, repositories (content/delete).
    Delete,
    /// List tags, manifests, repositories (metadata/read).
    MetadataRead,
    /// Change repository attributes (metadata/write).
    MetadataWrite,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Pull,
        Action::Push,
        Action::Delete,
        Action::MetadataRead,
        Action::MetadataWrite,
    ];

    /// The scope-map name of the action.
    pub fn scope_map_name(self) -> &'static str {
        match self {
            Action::Pull => "content/read",
            Action::Push => "content/write",
            Action::Delete => "content/delete",
            Action::MetadataRead => "metadata/read",
            Action::MetadataWrite => "metadata/write",
        }
    }

    pub fn from_scope_map_name(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.scope_map_name() == s)
    }

    /// The Docker token-spec action for repository access, if any.
    pub fn docker_name(self) -> Option<&'static str> {
        match self {
            Action::Pull => Some("pull"),
            Action::Push => Some("push"),
            Action::Delete => Some("delete"),
            Action::MetadataRead | Action::MetadataWrite => None,
        }
    }

    pub fn from_docker_name(s: &str) -> Vec<Action> {
        match s {
            "pull" => vec![Action::Pull, Action::MetadataRead],
            "push" => vec![Action::Push],
            "delete" => vec![Action::Delete],
            "*" => Action::ALL.to_vec(),
            _ => vec![],
        }
    }
}

fn role_allows(role: Role, action: Action) -> bool {
    match role {
        Role::Owner => true,
        Role::Contributor => action != Action::Delete,
        Role::Reader => matches!(action, Action::Pull | Action::MetadataRead),
        Role::Delete => action == Action::Delete,
    }
}

/// "" or "*": every repository; "team/*": every repository under team/;
/// anything else: that repository.
pub fn scope_matches(pattern: &str, repo: &str) -> bool {
    match pattern {
        "" | "*" => true,
        p => match p.strip_suffix("/*") {
            Some(prefix) => {
                repo.len() > prefix.len() + 1
                    && repo.starts_with(prefix)
                    && repo.as_bytes()[prefix.len()] == b'/'
            }
            None => p == repo,
        },
    }
}

/// Check a role scope or scope-map repository pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), AuthError> {
    let name = pattern.strip_suffix("/*").unwrap_or(pattern);
    if pattern.is_empty() || pattern == "*" || wharf_oci::validate_repository(name).is_ok() {
        return Ok(());
    }
    Err(AuthError::BadRequest(format!(
        "{pattern:?} is not a repository name, \"prefix/*\" or \"*\""
    )))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Subject {
    Principal(PrincipalRecord),
    Token {
        token: TokenRecord,
        map: ScopeMapRecord,
    },
    /// The registry's admin account: owner of everything while enabled.
    Admin {
        generation: u64,
    },
    Anonymous,
}

pub const ADMIN_NAME: &str = "admin";

impl Subject {
    pub fn name(&self) -> &str {
        match self {
            Subject::Principal(p) => &p.name,
            Subject::Token { token, .. } => &token.name,
            Subject::Admin { .. } => ADMIN_NAME,
            Subject::Anonymous => "",
        }
    }

    pub fn generation(&self) -> u64 {
        match self {
            Subject::Principal(p) => p.generation,
            Subject::Token { token, .. } => token.generation,
            Subject::Admin { generation } => *generation,
            Subject::Anonymous => 0,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Subject::Anonymous)
    }

    /// May the caller do `action` on repository `repo`?
    pub fn may(&self, repo: &str, action: Action, access: &AccessSettings) -> bool {
        match self {
            Subject::Principal(p) => p
                .roles
                .iter()
                .any(|a| scope_matches(&a.scope, repo) && role_allows(a.role, action)),
            Subject::Token { map, .. } => map.rules.iter().any(|r| {
                scope_matches(&r.repository, repo)
                    && r.actions.iter().any(|a| a == action.scope_map_name())
            }),
            Subject::Admin { .. } => true,
            Subject::Anonymous => {
                access.anonymous_pull && matches!(action, Action::Pull | Action::MetadataRead)
            }
        }
    }

    /// May the caller see that `repo` exists (catalog, repository list)?
    pub fn may_see(&self, repo: &str, access: &AccessSettings) -> bool {
        [Action::Pull, Action::MetadataRead, Action::Push]
            .into_iter()
            .any(|a| self.may(repo, a, access))
    }

    /// Registry-wide administration: identities, roles, tokens, keys,
    /// replication, access settings. Owners at registry scope and the admin.
    pub fn is_registry_owner(&self) -> bool {
        match self {
            Subject::Principal(p) => p.roles.contains(&RoleAssignment {
                scope: String::new(),
                role: Role::Owner,
            }),
            Subject::Admin { .. } => true,
            _ => false,
        }
    }
}

/// A parsed Docker scope: `repository:<name>:<actions>`, or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ScopeRequest {
    /// Parse one scope; the actions are the part after the last colon, so
    /// names with a port (`host:5000/app`) survive.
    pub fn parse(s: &str) -> Option<ScopeRequest> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(ScopeRequest {
            kind: kind.into(),
            name: name.into(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The subset of the requested actions the caller holds.
    pub fn granted(&self, who: &Subject, access: &AccessSettings) -> Vec<String> {
        match self.kind.as_str() {
            "repository" | "repository(plugin)" => self
                .actions
                .iter()
                .filter(|a| {
                    let needed = Action::from_docker_name(a);
                    !needed.is_empty() && needed.iter().any(|n| who.may(&self.name, *n, access))
                })
                .cloned()
                .collect(),
            "registry" if self.name == "catalog" && !who.is_anonymous() => {
                self.actions.iter().filter(|a| *a == "*").cloned().collect()
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_meta::{PrincipalKind, ScopeRule};

    fn user(roles: &[(&str, Role)]) -> Subject {
        Subject::Principal(PrincipalRecord {
            name: "u".into(),
            kind: PrincipalKind::User,
            secrets: vec![],
            enabled: true,
            generation: 1,
            roles: roles
                .iter()
                .map(|(s, r)| RoleAssignment {
                    scope: s.to_string(),
                    role: *r,
                })
                .collect(),
            created_ms: 0,
        })
    }

    #[test]
    fn roles_grant_their_actions_on_their_scopes_only() {
        let none = AccessSettings::default();
        let reader = user(&[("team/*", Role::Reader)]);
        assert!(reader.may("team/app", Action::Pull, &none));
        assert!(!reader.may("team/app", Action::Push, &none));
        assert!(!reader.may("teamster/app", Action::Pull, &none));
        assert!(!reader.may("team", Action::Pull, &none));
        let contrib = user(&[("app", Role::Contributor)]);
        assert!(contrib.may("app", Action::Push, &none));
        assert!(!contrib.may("app", Action::Delete, &none));
        assert!(!contrib.may("app2", Action::Pull, &none));
        let deleter = user(&[("", Role::Delete)]);
        assert!(deleter.may("x", Action::Delete, &none));
        assert!(!deleter.may("x", Action::Pull, &none));
        let owner = user(&[("", Role::Owner)]);
        assert!(owner.is_registry_owner() && owner.may("any/thing", Action::Delete, &none));
        assert!(!user(&[("app", Role::Owner)]).is_registry_owner());
    }

    #[test]
    fn tokens_follow_their_scope_map_and_anonymous_pull_is_opt_in() {
        let none = AccessSettings::default();
        let t = Subject::Token {
            token: TokenRecord {
                name: "ci".into(),
                scope_map: "m".into(),
                enabled: true,
                expiry_ms: None,
                secrets: [None, None],
                generation: 1,
                created_ms: 0,
            },
            map: ScopeMapRecord {
                name: "m".into(),
                description: String::new(),
                rules: vec![ScopeRule {
                    repository: "a".into(),
                    actions: vec!["content/read".into(), "metadata/read".into()],
                }],
                created_ms: 0,
            },
        };
        assert!(t.may("a", Action::Pull, &none));
        assert!(!t.may("a", Action::Push, &none));
        assert!(!t.may("b", Action::Pull, &none));
        assert!(!Subject::Anonymous.may("a", Action::Pull, &none));
        let open = AccessSettings {
            anonymous_pull: true,
        };
        assert!(Subject::Anonymous.may("a", Action::Pull, &open));
        assert!(!Subject::Anonymous.may("a", Action::Push, &open));
    }

    #[test]
    fn docker_scopes_parse_and_grant_the_held_subset() {
        let s = ScopeRequest::parse("repository:localhost:5000/app:pull,push").unwrap();
        assert_eq!(s.name, "localhost:5000/app");
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert!(ScopeRequest::parse("garbage").is_none());
        let reader = user(&[("app", Role::Reader)]);
        let none = AccessSettings::default();
        let s = ScopeRequest::parse("repository:app:pull,push,delete").unwrap();
        assert_eq!(s.granted(&reader, &none), vec!["pull"]);
        let cat = ScopeRequest::parse("registry:catalog:*").unwrap();
        assert_eq!(cat.granted(&reader, &none), vec!["*"]);
        assert!(cat.granted(&Subject::Anonymous, &none).is_empty());
    }

    #[test]
    fn patterns_are_checked() {
        assert!(validate_pattern("team/*").is_ok());
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("app").is_ok());
        assert!(validate_pattern("Bad Name").is_err());
    }
}
