//! Private by default: every denial a user relies on, against real
//! `wharf serve` processes — anonymous access, roles, repository-scoped
//! tokens, the Docker token flow, revocation, key rotation, the admin
//! account, brute-force slowing, and secrets never stored in clear.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::Cluster;
use common::registry::{error_code, header, Reg, OCI_MANIFEST};
use common::{owner_env, run, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path());
    (dir, n)
}

/// `wharf <args> --endpoint <node> -o json` as the owner.
fn wharf(n: &Node, args: &[&str]) -> Value {
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .args(args)
        .args(["--endpoint", &n.url(""), "-o", "json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn user(n: &Node, name: &str, password: &str, role: &str, scope: &str) {
    common::create_user(n, name, password, role, scope)
}

/// An access token from the token endpoint (GET with Basic credentials).
async fn token(n: &Node, login: (&str, &str), scopes: &[&str]) -> reqwest::Response {
    let mut q: Vec<(&str, &str)> = vec![("service", "wharf")];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    reqwest::Client::new()
        .get(n.url("/auth/token"))
        .query(&q)
        .basic_auth(login.0, Some(login.1))
        .send()
        .await
        .unwrap()
}

async fn token_string(n: &Node, login: (&str, &str), scopes: &[&str]) -> String {
    let r = token(n, login, scopes).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn bearer(n: &Node, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, n.url(path))
        .bearer_auth(token)
}

/// The status of a request made with a Bearer token.
async fn bearer_status(n: &Node, method: Method, path: &str, token: &str) -> StatusCode {
    bearer(n, method, path, token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn push_image(reg: &Reg, repo: &str, tag: &str) -> Vec<u8> {
    let m = reg.image(repo, &[tag.as_bytes()]).await;
    assert_eq!(
        reg.put_manifest(repo, tag, OCI_MANIFEST, &m).await.status(),
        201
    );
    m
}

// No credentials: every registry endpoint answers 401 with a Bearer
// challenge naming the realm, service and scope the client needs.
#[tokio::test]
async fn anonymous_push_and_pull_are_refused_with_a_challenge() {
    let (_d, n) = node();
    push_image(&Reg::new(&n.addr()), "team/app", "v1").await;
    let anon = Reg::anonymous(&n.addr());
    let r = anon.get("/v2/").await;
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"http://{}/auth/token\",service=\"wharf\"",
            n.addr()
        )),
        "{challenge}"
    );
    let r = anon.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("scope=\"repository:team/app:pull\""));
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = anon
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("scope=\"repository:team/app:pull,push\""));
    assert_eq!(anon.get("/v2/_catalog").await.status(), 401);
    assert_eq!(anon.get("/api/v1/repositories").await.status(), 401);
    // Wrong password: 401 as well, for Basic and at the token endpoint.
    let wrong = Reg::with_login(&n.addr(), common::OWNER, "not the password");
    assert_eq!(wrong.get("/v2/").await.status(), 401);
    assert_eq!(
        token(&n, (common::OWNER, "not the password"), &[])
            .await
            .status(),
        401
    );
    // Health and metrics stay open for probes.
    assert_eq!(anon.get("/healthz").await.status(), 200);
}

// Roles: a reader pulls but may not push or delete (403 DENIED), through
// Basic auth and through the token flow; the catalog shows only what the
// caller may see; revoking a role takes effect at once.
#[tokio::test]
async fn readers_are_denied_writes_and_see_only_their_repositories() {
    let (_d, n) = node();
    let owner = Reg::new(&n.addr());
    push_image(&owner, "team/app", "v1").await;
    push_image(&owner, "other/app", "v1").await;
    user(&n, "rita", "rita reads a lot", "reader", "team/*");
    let rita = Reg::with_login(&n.addr(), "rita", "rita reads a lot");
    assert_eq!(rita.get("/v2/team/app/manifests/v1").await.status(), 200);
    assert_eq!(rita.get("/v2/other/app/manifests/v1").await.status(), 403);
    let r = rita
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    let r = rita
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let cat: Value = rita.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(cat["repositories"], json!(["team/app"]));
    let cat: Value = owner.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(cat["repositories"], json!(["other/app", "team/app"]));

    // The token flow grants only what the role allows; the push is denied.
    let resp: Value = token(
        &n,
        ("rita", "rita reads a lot"),
        &["repository:team/app:pull,push"],
    )
    .await
    .json()
    .await
    .unwrap();
    let t = resp["token"].as_str().unwrap();
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/team/app/manifests/v1", t).await,
        200
    );
    let r = bearer(&n, Method::POST, "/v2/team/app/blobs/uploads/", t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A token for team/app says nothing about other repositories.
    let r = bearer(&n, Method::GET, "/v2/other/app/manifests/v1", t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A contributor pushes; revoking the role stops it at once.
    user(&n, "carl", "carl contributes", "contributor", "team/app");
    let carl = Reg::with_login(&n.addr(), "carl", "carl contributes");
    push_image(&carl, "team/app", "v2").await;
    assert_eq!(
        carl.req(Method::DELETE, "/v2/team/app/manifests/v2")
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "contributors may not delete"
    );
    let carl_token = token_string(
        &n,
        ("carl", "carl contributes"),
        &["repository:team/app:pull"],
    )
    .await;
    wharf(
        &n,
        &[
            "role",
            "remove",
            "--principal",
            "carl",
            "--role",
            "contributor",
            "--scope",
            "team/app",
        ],
    );
    assert_eq!(carl.get("/v2/team/app/manifests/v1").await.status(), 403);
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/team/app/manifests/v1", &carl_token).await,
        403
    );
    // Identity management is for owners.
    let r = rita.get("/api/v1/users").await;
    assert_eq!(r.status(), 403);
}

// Repository-scoped tokens: a scope map limits them to their repositories
// and actions; disabled, expired and deleted tokens stop working, and so
// do their access tokens.
// `repository list` answers a page at a time (`n`, `last`, a `Link` to the
// next page, as the catalog does), never every repository in one call; a
// reader's pages hold only what it may see; the CLI follows the pages.
#[tokio::test]
async fn repository_list_pages_and_shows_only_what_the_caller_may_see() {
    let (_d, n) = node();
    let owner = Reg::new(&n.addr());
    for repo in ["a/one", "team/app", "team/db", "team/web", "z/last"] {
        push_image(&owner, repo, "v1").await;
    }
    push_image(&owner, "team/app", "v2").await;
    user(&n, "rita", "rita reads a lot", "reader", "team/*");
    let rita = Reg::with_login(&n.addr(), "rita", "rita reads a lot");

    // Follow the Link headers as a client would, `n` rows at most each.
    async fn all_pages(reg: &Reg, first: &str, n: usize) -> (Vec<Value>, usize) {
        let (mut rows, mut pages, mut next) = (Vec::new(), 0, Some(first.to_string()));
        while let Some(path) = next.take() {
            let r = reg.get(&path).await;
            assert_eq!(r.status(), 200, "{path}");
            next = r.headers().get("link").map(|l| {
                let l = l.to_str().unwrap();
                assert!(l.ends_with("; rel=\"next\""), "{l}");
                l[1..l.find('>').unwrap()].to_string()
            });
            let page: Vec<Value> = r.json().await.unwrap();
            assert!(page.len() <= n, "{path}: {page:?}");
            rows.extend(page);
            pages += 1;
            assert!(pages < 20, "pagination does not end");
        }
        (rows, pages)
    }
    let names = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (rows, pages) = all_pages(&owner, "/api/v1/repositories?n=2", 2).await;
    assert_eq!(
        names(&rows),
        ["a/one", "team/app", "team/db", "team/web", "z/last"]
    );
    assert_eq!(pages, 3);
    assert_eq!(rows[1]["tag_count"], 2);
    assert_eq!(rows[1]["manifest_count"], 2);
    let (rows, _) = all_pages(&rita, "/api/v1/repositories?n=1", 1).await;
    assert_eq!(names(&rows), ["team/app", "team/db", "team/web"]);
    let r = owner.get("/api/v1/repositories?n=many").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "PAGINATION_NUMBER_INVALID");

    let listed = wharf(&n, &["repository", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 5);
    let top = wharf(&n, &["repository", "list", "--top", "2"]);
    assert_eq!(names(top.as_array().unwrap()), ["a/one", "team/app"]);
}

#[tokio::test]
async fn scoped_tokens_hold_to_their_scope_map_and_expire() {
    let (_d, n) = node();
    let owner = Reg::new(&n.addr());
    push_image(&owner, "a", "v1").await;
    push_image(&owner, "b", "v1").await;
    wharf(
        &n,
        &[
            "scope-map",
            "create",
            "pull-a",
            "--repository",
            "a=content/read,metadata/read",
        ],
    );
    let created = wharf(&n, &["token", "create", "ci", "--scope-map", "pull-a"]);
    let p1 = created["password1"].as_str().unwrap().to_string();
    let p2 = created["password2"].as_str().unwrap().to_string();
    let ci = Reg::with_login(&n.addr(), "ci", &p1);
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 200);
    assert_eq!(
        Reg::with_login(&n.addr(), "ci", &p2)
            .get("/v2/a/tags/list")
            .await
            .status(),
        200
    );
    assert_eq!(ci.get("/v2/b/manifests/v1").await.status(), 403);
    let r = ci
        .req(Method::POST, "/v2/a/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "content/read does not allow a push");
    let t = token_string(&n, ("ci", &p1), &["repository:a:pull", "repository:b:pull"]).await;
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/b/manifests/v1", &t).await,
        403
    );
    // The listing shows the token without its secrets.
    let listed = wharf(&n, &["token", "list"]);
    assert_eq!(listed[0]["name"], "ci");
    assert!(!listed.to_string().contains(&p1));

    // Regenerating password 1 retires it; password 2 keeps working.
    let regen = wharf(&n, &["token", "update", "ci", "--regenerate", "1"]);
    let p1_new = regen["password1"].as_str().unwrap().to_string();
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 401);
    let ci = Reg::with_login(&n.addr(), "ci", &p1_new);
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 200);
    let t = token_string(&n, ("ci", &p1_new), &["repository:a:pull"]).await;

    // Disabled: basic credentials and the access token stop working.
    wharf(&n, &["token", "update", "ci", "--enabled", "false"]);
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 401);
    let r = bearer(&n, Method::GET, "/v2/a/manifests/v1", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("invalid_token"));
    wharf(&n, &["token", "update", "ci", "--enabled", "true"]);
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 200);

    // Expired: a token whose expiry has passed is refused. (Its expiry is
    // moved into the past rather than waited for: a test that races a
    // short expiry fails on a loaded machine.)
    let expiring = reqwest::Client::new()
        .post(n.url("/api/v1/tokens"))
        .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
        .json(&json!({"name": "brief", "scope_map": "pull-a",
            "expiry_ms": common_now_ms() + 3_600_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(expiring.status(), 201);
    let brief: Value = expiring.json().await.unwrap();
    let brief = Reg::with_login(&n.addr(), "brief", brief["password1"].as_str().unwrap());
    assert_eq!(brief.get("/v2/a/manifests/v1").await.status(), 200);
    let r = reqwest::Client::new()
        .patch(n.url("/api/v1/tokens/brief"))
        .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
        .json(&json!({"expiry_ms": common_now_ms() - 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(brief.get("/v2/a/manifests/v1").await.status(), 401);

    // Deleted: gone everywhere; the scope map can then be deleted.
    wharf(&n, &["token", "delete", "ci"]);
    assert_eq!(ci.get("/v2/a/manifests/v1").await.status(), 401);
    wharf(&n, &["token", "delete", "brief"]);
    wharf(&n, &["scope-map", "delete", "pull-a"]);
}

fn common_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// Tokens that were not signed by this registry, or were altered, or whose
// user is gone, are refused.
#[tokio::test]
async fn foreign_tampered_and_orphaned_tokens_are_refused() {
    let (_d, n) = node();
    let (_d2, stranger) = node();
    push_image(&Reg::new(&n.addr()), "app", "v1").await;
    user(&n, "dora", "dora deploys stuff", "reader", "*");

    // Same user name and password on another registry: another key.
    user(&stranger, "dora", "dora deploys stuff", "reader", "*");
    let foreign = token_string(
        &stranger,
        ("dora", "dora deploys stuff"),
        &["repository:app:pull"],
    )
    .await;
    let r = bearer(&n, Method::GET, "/v2/app/manifests/v1", &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Tampering: claims for another repository under the old signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let t = token_string(
        &n,
        ("dora", "dora deploys stuff"),
        &["repository:nothing:pull"],
    )
    .await;
    let parts: Vec<&str> = t.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["access"][0]["name"] = json!("app");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let r = bearer(&n, Method::GET, "/v2/app/manifests/v1", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/app/manifests/v1", "garbage").await,
        401
    );

    // A deleted user's token dies with the user.
    let t = token_string(&n, ("dora", "dora deploys stuff"), &["repository:app:pull"]).await;
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/app/manifests/v1", &t).await,
        200
    );
    wharf(&n, &["user", "delete", "dora"]);
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/app/manifests/v1", &t).await,
        401
    );
    // Re-creating the name does not revive old tokens either.
    user(&n, "dora", "dora is back again", "reader", "*");
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/app/manifests/v1", &t).await,
        401,
        "a re-created user is a new principal"
    );
}

// The admin account is off by default; enabled it works with either of
// its passwords, renewing one retires it, disabling stops its tokens.
#[tokio::test]
async fn the_admin_account_is_off_until_enabled() {
    let (_d, n) = node();
    let shown = wharf(&n, &["credential", "show"]);
    assert_eq!(shown["enabled"], false);
    let try_admin = |pw: String| {
        let n = n.url("/v2/");
        async move {
            reqwest::Client::new()
                .get(n)
                .basic_auth("admin", Some(pw))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(try_admin(String::new()).await, 401);
    let on = wharf(&n, &["credential", "enable"]);
    assert_eq!(on["enabled"], true);
    let pws: Vec<String> = on["passwords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(pws.len(), 2);
    assert_eq!(try_admin(pws[0].clone()).await, 200);
    assert_eq!(try_admin(pws[1].clone()).await, 200);
    let t = token_string(&n, ("admin", &pws[1]), &["repository:x:pull,push"]).await;
    let renewed = wharf(&n, &["credential", "renew", "--password-name", "1"]);
    assert_ne!(renewed["passwords"][0], json!(pws[0]));
    assert_eq!(renewed["passwords"][1], json!(pws[1]));
    assert_eq!(try_admin(pws[0].clone()).await, 401);
    wharf(&n, &["credential", "disable"]);
    assert_eq!(try_admin(pws[1].clone()).await, 401);
    assert_eq!(bearer_status(&n, Method::GET, "/v2/", &t).await, 401);
}

// Guessing passwords is slowed: after the burst of failures, the name and
// the source address are refused (429) even with the right password.
#[tokio::test]
async fn brute_force_is_slowed_per_name_and_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[auth]\nlogin_burst = 3\nlogin_refill_ms = 60000\n").unwrap();
    let n = Node::start_with(dir.path(), &["--config", cfg.to_str().unwrap()]);
    for _ in 0..3 {
        let r = Reg::with_login(&n.addr(), common::OWNER, "guess")
            .get("/v2/")
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = Reg::new(&n.addr()).get("/v2/").await;
    assert_eq!(
        r.status(),
        429,
        "the right password is refused while locked"
    );
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    let r = token(&n, (common::OWNER, common::OWNER_PASSWORD), &[]).await;
    assert_eq!(r.status(), 429, "the token endpoint shares the limiter");
    // The same source trying another name is refused too.
    let r = Reg::with_login(&n.addr(), "someone", "else")
        .get("/v2/")
        .await;
    assert_eq!(r.status(), 429);
    // Operators see it in the metrics.
    let metrics = Reg::anonymous(&n.addr())
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wharf_auth_failures_total 3"), "{metrics}");
    assert!(
        metrics.contains("wharf_auth_throttled_total 3"),
        "{metrics}"
    );
}

// Users change passwords, service principals rotate secrets, refresh
// tokens (docker login's identity token) follow: each change retires
// what came before. Anonymous pull opens pulls only.
#[tokio::test]
async fn credentials_rotate_and_anonymous_pull_is_opt_in() {
    let (_d, n) = node();
    push_image(&Reg::new(&n.addr()), "pub/app", "v1").await;
    user(&n, "paul", "paul's first password", "reader", "*");

    // docker login: POST grant_type=password with access_type=offline.
    let form = [
        ("grant_type", "password"),
        ("service", "wharf"),
        ("client_id", "docker"),
        ("access_type", "offline"),
        ("username", "paul"),
        ("password", "paul's first password"),
        ("scope", "repository:pub/app:pull"),
    ];
    let resp: Value = reqwest::Client::new()
        .post(n.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = resp["refresh_token"].as_str().unwrap().to_string();
    let exchange = |refresh: String| {
        let url = n.url("/auth/token");
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("service", "wharf"),
                    ("refresh_token", refresh.as_str()),
                    ("scope", "repository:pub/app:pull"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = exchange(refresh.clone()).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        bearer(
            &n,
            Method::GET,
            "/v2/pub/app/manifests/v1",
            t["token"].as_str().unwrap()
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    // An access token is not a refresh token, nor the reverse.
    assert_eq!(
        exchange(t["token"].as_str().unwrap().into()).await.status(),
        401
    );
    assert_eq!(bearer_status(&n, Method::GET, "/v2/", &refresh).await, 401);
    run(std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .env("WHARF_NEW_PASSWORD", "paul's second password")
        .args(["user", "update", "paul", "--endpoint", &n.url("")]));
    assert_eq!(exchange(refresh).await.status(), 401);
    assert_eq!(
        Reg::with_login(&n.addr(), "paul", "paul's first password")
            .get("/v2/")
            .await
            .status(),
        401
    );

    // Service principals: a generated secret, regenerated on demand.
    let sp = wharf(
        &n,
        &["user", "create", "builder", "--kind", "service-principal"],
    );
    let s1 = sp["secret"].as_str().unwrap().to_string();
    wharf(
        &n,
        &[
            "role",
            "assign",
            "--principal",
            "builder",
            "--role",
            "contributor",
        ],
    );
    push_image(&Reg::with_login(&n.addr(), "builder", &s1), "ci/app", "v1").await;
    let again = wharf(&n, &["user", "update", "builder", "--regenerate"]);
    let s2 = again["secret"].as_str().unwrap().to_string();
    assert_eq!(
        Reg::with_login(&n.addr(), "builder", &s1)
            .get("/v2/")
            .await
            .status(),
        401
    );
    assert_eq!(
        Reg::with_login(&n.addr(), "builder", &s2)
            .get("/v2/")
            .await
            .status(),
        200
    );

    // Short passwords are refused with a reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .env("WHARF_NEW_PASSWORD", "short")
        .args(["user", "create", "tiny", "--endpoint", &n.url("")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));

    // Anonymous pull: off by default, then pulls (only) without credentials.
    let anon = Reg::anonymous(&n.addr());
    assert_eq!(anon.get("/v2/pub/app/manifests/v1").await.status(), 401);
    wharf(&n, &["access", "set", "--anonymous-pull"]);
    assert_eq!(anon.get("/v2/pub/app/manifests/v1").await.status(), 200);
    let r = anon
        .req(Method::POST, "/v2/pub/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Anonymous clients of the token flow get a pull-only token.
    let r = reqwest::Client::new()
        .get(n.url("/auth/token"))
        .query(&[
            ("service", "wharf"),
            ("scope", "repository:pub/app:pull,push"),
        ])
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let t = t["token"].as_str().unwrap();
    assert_eq!(
        bearer_status(&n, Method::GET, "/v2/pub/app/manifests/v1", t).await,
        200
    );
}

/// Every file under `dir`, searched for `needle`.
fn found_in(dir: &Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = found_in(&p, needle) {
                return Some(f);
            }
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Some(p);
            }
        }
    }
    None
}

// Secrets never reach the disk in clear: not the passwords of users, not
// generated token passwords, not the admin passwords (in the Raft log, the
// metadata store or its snapshots). Signing keys are sealed, so a token
// verifies only with the cluster key.
#[tokio::test]
async fn secrets_are_not_stored_in_clear_and_signing_keys_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path());
    let pw = "a very distinctive password 42";
    user(&n, "sam", pw, "reader", "*");
    wharf(
        &n,
        &["scope-map", "create", "m", "--repository", "*=content/read"],
    );
    let tok = wharf(&n, &["token", "create", "t1", "--scope-map", "m"]);
    let admin = wharf(&n, &["credential", "enable"]);
    let before = token_string(&n, ("sam", pw), &["repository:x:pull"]).await;

    // Stop so everything is flushed to files, then search them.
    n.stop();
    let data = dir.path().join("data");
    for secret in [
        pw.to_string(),
        common::OWNER_PASSWORD.to_string(),
        tok["password1"].as_str().unwrap().to_string(),
        admin["passwords"][0].as_str().unwrap().to_string(),
    ] {
        assert_eq!(
            found_in(&data, secret.as_bytes()),
            None,
            "{secret:?} on disk"
        );
    }
    n.restart();

    // One rotation keeps the previous key verifying; a second drops it.
    wharf(&n, &["signing-key", "rotate"]);
    let r = bearer(&n, Method::GET, "/v2/", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = token_string(&n, ("sam", pw), &[]).await;
    assert_ne!(before.split('.').next(), after.split('.').next(), "new kid");
    wharf(&n, &["signing-key", "rotate"]);
    let r = bearer(&n, Method::GET, "/v2/", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = bearer(&n, Method::GET, "/v2/", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// Across regions: a token issued in one region is verified locally in the
// others; a user deleted in one region is refused in every region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_in_every_region_and_revocation_reaches_all() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, "");
    push_image(&Reg::new(&c.nodes[1].addr()), "geo/app", "v1").await;
    user(&c.nodes[0], "gina", "gina travels far", "reader", "geo/*");
    let t = token_string(
        &c.nodes[2],
        ("gina", "gina travels far"),
        &["repository:geo/app:pull"],
    )
    .await;
    for n in &c.nodes {
        let r = bearer(n, Method::GET, "/v2/geo/app/manifests/v1", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "region {}", n.addr());
    }
    wharf(&c.nodes[1], &["user", "delete", "gina"]);
    for n in &c.nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let s = bearer_status(n, Method::GET, "/v2/geo/app/manifests/v1", &t).await;
            if s == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {s} in {}",
                n.addr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// A cross-repository mount through the token flow: the challenge asks for
// pull on the source as well as push on the target (as the reference
// registry does), so a client that follows it gets a token that mounts,
// instead of one that silently turns the mount into an upload.
#[tokio::test]
async fn a_mount_challenge_asks_for_pull_on_the_source_too() {
    let (_d, n) = node();
    let owner = Reg::new(&n.addr());
    let d = owner.blob("src/lib", b"a layer to share").await;
    let path = format!("/v2/dst/app/blobs/uploads/?mount={d}&from=src/lib");
    let r = Reg::anonymous(&n.addr())
        .req(Method::POST, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.contains(r#"scope="repository:dst/app:pull,push repository:src/lib:pull""#),
        "{challenge}"
    );
    // Follow it as a client does: one scope parameter per scope.
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    let scopes: Vec<&str> = scope.split(' ').collect();
    let owner_login = (common::OWNER, common::OWNER_PASSWORD);
    let t = token_string(&n, owner_login, &scopes).await;
    let r = bearer(&n, Method::POST, &path, &t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "mounted");
    assert_eq!(header(&r, "location"), format!("/v2/dst/app/blobs/{d}"));

    // A token for the target alone, while its subject could pull the
    // source: told to fetch one with the source's scope.
    let narrow = token_string(&n, owner_login, &["repository:dst/other:pull,push"]).await;
    let other = format!("/v2/dst/other/blobs/uploads/?mount={d}&from=src/lib");
    let r = bearer(&n, Method::POST, &other, &narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let challenge = header(&r, "www-authenticate");
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert!(challenge.contains("repository:src/lib:pull"), "{challenge}");

    // Someone who may not pull the source learns nothing about it: the
    // mount is a plain upload.
    user(&n, "pusher", "a long password!", "contributor", "dst/*");
    let t = token_string(
        &n,
        ("pusher", "a long password!"),
        &["repository:dst/third:pull,push", "repository:src/lib:pull"],
    )
    .await;
    let third = format!("/v2/dst/third/blobs/uploads/?mount={d}&from=src/lib");
    let r = bearer(&n, Method::POST, &third, &t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}
