use super::*;
use std::net::Ipv4Addr;
use wharf_meta::{
    Command, Envelope, MetaStore, ScopeMapRecord, ScopeRule, TokenRecord, DEFAULT_REGISTRY,
};

fn apply(m: &Registry<'_>, c: IdentityCommand) {
    let env = Envelope::new(m.name(), Command::Identity(Box::new(c)), 1);
    let r = m.store().apply(&env, &[]).unwrap();
    assert!(!matches!(r, wharf_meta::Response::Refused(_)), "{r:?}");
}

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn setup() -> (tempfile::TempDir, MetaStore, Authority) {
    let dir = tempfile::tempdir().unwrap();
    let m = MetaStore::open(dir.path()).unwrap();
    let a = Authority::new(AuthConfig::default(), ClusterKey::generate());
    apply(
        &m.registry(DEFAULT_REGISTRY),
        a.bootstrap_command("owner", "owner password 1", 1000)
            .unwrap(),
    );
    (dir, m, a)
}

#[test]
fn owner_logs_in_gets_a_token_and_loses_it_when_deleted() {
    let (_d, store, a) = setup();
    let m = store.registry(DEFAULT_REGISTRY);
    let now = 10_000_000;
    let s = a.login(&m, "owner", "owner password 1", SRC, now).unwrap();
    assert!(s.is_registry_owner());
    assert!(matches!(
        a.login(&m, "owner", "wrong", SRC, now),
        Err(AuthError::BadCredentials)
    ));
    assert!(matches!(
        a.login(&m, "nobody", "owner password 1", SRC, now),
        Err(AuthError::BadCredentials)
    ));
    let (t, ttl) = a.issue(&m, &s, vec![], TokenUse::Access, now).unwrap();
    assert_eq!(ttl, 3 * 3600);
    let (again, _) = a.verify(&m, &t, TokenUse::Access, now).unwrap();
    assert_eq!(again.name(), "owner");
    assert!(a.verify(&m, &t, TokenUse::Refresh, now).is_err());
    assert!(a
        .verify(&m, &t, TokenUse::Access, now + ttl * 1000)
        .is_err());

    // A node with another cluster key cannot verify (nor issue).
    let stranger = Authority::new(AuthConfig::default(), ClusterKey::generate());
    assert!(stranger.verify(&m, &t, TokenUse::Access, now).is_err());

    apply(
        &m,
        IdentityCommand::DeletePrincipal {
            name: "owner".into(),
        },
    );
    assert!(a.verify(&m, &t, TokenUse::Access, now).is_err());
    // The cached basic credential does not outlive the user either.
    assert!(a.login(&m, "owner", "owner password 1", SRC, now).is_err());
}

#[test]
fn tokens_stop_working_when_disabled_expired_or_regenerated() {
    let (_d, store, a) = setup();
    let m = store.registry(DEFAULT_REGISTRY);
    apply(
        &m,
        IdentityCommand::PutScopeMap {
            record: ScopeMapRecord {
                name: "read-a".into(),
                description: String::new(),
                rules: vec![ScopeRule {
                    repository: "a".into(),
                    actions: vec!["content/read".into()],
                }],
                created_ms: 0,
            },
            create: true,
        },
    );
    let pw = secret::new_secret();
    let mut rec = TokenRecord {
        name: "ci".into(),
        scope_map: "read-a".into(),
        enabled: true,
        expiry_ms: Some(50_000),
        secrets: [Some(secret::hash_secret(&pw)), None],
        generation: 1,
        created_ms: 0,
    };
    apply(
        &m,
        IdentityCommand::PutToken {
            record: rec.clone(),
            create: true,
        },
    );
    let s = a.login(&m, "ci", &pw, SRC, 1000).unwrap();
    let (t, _) = a.issue(&m, &s, vec![], TokenUse::Access, 1000).unwrap();
    assert!(matches!(
        a.login(&m, "ci", &pw, SRC, 60_000),
        Err(AuthError::Expired(_))
    ));

    rec.enabled = false;
    rec.generation = 2;
    apply(
        &m,
        IdentityCommand::PutToken {
            record: rec.clone(),
            create: false,
        },
    );
    assert!(matches!(
        a.login(&m, "ci", &pw, SRC, 1000),
        Err(AuthError::Disabled(_))
    ));
    assert!(a.verify(&m, &t, TokenUse::Access, 1000).is_err());
}

#[test]
fn admin_is_off_by_default_and_works_with_either_password_when_on() {
    let (_d, store, a) = setup();
    let m = store.registry(DEFAULT_REGISTRY);
    assert!(a.login(&m, ADMIN_NAME, "", SRC, 0).is_err());
    let (mut rec, pws) = a.new_admin_passwords(&m.admin().unwrap(), &[0, 1]);
    apply(&m, IdentityCommand::SetAdmin(rec.clone()));
    assert_eq!(a.admin_passwords(&m.admin().unwrap()).unwrap(), pws);
    assert!(matches!(
        a.login(&m, ADMIN_NAME, &pws[0], SRC, 0),
        Err(AuthError::Disabled(_))
    ));
    rec.enabled = true;
    apply(&m, IdentityCommand::SetAdmin(rec));
    assert!(a
        .login(&m, ADMIN_NAME, &pws[0], SRC, 0)
        .unwrap()
        .is_registry_owner());
    assert!(a.login(&m, ADMIN_NAME, &pws[1], SRC, 0).is_ok());
}

#[test]
fn a_token_of_one_registry_is_refused_by_another() {
    let (_d, store, a) = setup();
    let record = wharf_meta::RegistryRecord {
        name: "teamone".into(),
        sku: wharf_meta::Sku::Standard,
        created_ms: 1,
        replicas: vec![],
        policies: Default::default(),
        network: Default::default(),
        storage_limit: None,
    };
    // The same owner name and password in both registries.
    let create = a
        .create_registry_command(record, "owner", "owner password 1", 1000)
        .unwrap();
    let env = Envelope::new(DEFAULT_REGISTRY, Command::Registry(create), 1);
    assert_eq!(store.apply(&env, &[]).unwrap(), wharf_meta::Response::Ok);
    let default = store.registry(DEFAULT_REGISTRY);
    let one = store.registry("teamone");
    let now = 10_000_000;
    let s = a
        .login(&default, "owner", "owner password 1", SRC, now)
        .unwrap();
    let (t, _) = a
        .issue(&default, &s, vec![], TokenUse::Access, now)
        .unwrap();
    assert!(a.verify(&default, &t, TokenUse::Access, now).is_ok());
    assert!(
        a.verify(&one, &t, TokenUse::Access, now).is_err(),
        "signed by another registry's key, for another audience"
    );
    let s1 = a
        .login(&one, "owner", "owner password 1", SRC, now)
        .unwrap();
    let (t1, _) = a.issue(&one, &s1, vec![], TokenUse::Access, now).unwrap();
    assert!(a.verify(&one, &t1, TokenUse::Access, now).is_ok());
    assert!(a.verify(&default, &t1, TokenUse::Access, now).is_err());
    // A password of one registry's user does not log in to another.
    assert!(a
        .login(&one, "nobody-here", "owner password 1", SRC, now)
        .is_err());
}

#[test]
fn a_cached_tokens_signature_does_not_vouch_for_other_claims() {
    let (_d, store, a) = setup();
    let m = store.registry(DEFAULT_REGISTRY);
    let now = 10_000_000;
    let s = a.login(&m, "owner", "owner password 1", SRC, now).unwrap();
    let (first, _) = a.issue(&m, &s, vec![], TokenUse::Access, now).unwrap();
    let (second, _) = a
        .issue(&m, &s, vec![], TokenUse::Access, now + 5_000)
        .unwrap();
    assert_ne!(first, second);
    // The first token is verified, so remembered by its signature.
    assert!(a.verify(&m, &first, TokenUse::Access, now).is_ok());
    // The second token's header and claims under the first's signature.
    let signature = first.rsplit('.').next().unwrap();
    let claims_end = second.rfind('.').unwrap();
    let forged = format!("{}.{signature}", &second[..claims_end]);
    assert!(matches!(
        a.verify(&m, &forged, TokenUse::Access, now),
        Err(AuthError::InvalidToken("bad signature"))
    ));
    assert!(a.verify(&m, &first, TokenUse::Access, now).is_ok());
    assert!(a.verify(&m, &second, TokenUse::Access, now).is_ok());
}

#[test]
fn a_console_session_stands_in_for_an_access_token_and_nothing_more() {
    let (_d, store, a) = setup();
    let m = store.registry(DEFAULT_REGISTRY);
    let now = 10_000_000;
    let s = a.login(&m, "owner", "owner password 1", SRC, now).unwrap();
    let (session, ttl) = a.issue(&m, &s, vec![], TokenUse::Session, now).unwrap();
    assert_eq!(ttl, 8 * 3600, "a working day, not an access token's hours");
    let (_, claims) = a.verify(&m, &session, TokenUse::Access, now).unwrap();
    assert_eq!(
        claims.token_use,
        TokenUse::Session,
        "the node knows what it holds"
    );
    assert!(a.verify(&m, &session, TokenUse::Session, now).is_ok());
    assert!(
        a.verify(&m, &session, TokenUse::Refresh, now).is_err(),
        "a session is not exchanged for tokens"
    );
    assert!(a
        .verify(&m, &session, TokenUse::Access, now + ttl * 1000)
        .is_err());
    // An access token is no session (the console's cookie asks for one).
    let (access, _) = a.issue(&m, &s, vec![], TokenUse::Access, now).unwrap();
    assert!(a.verify(&m, &access, TokenUse::Session, now).is_err());
}
