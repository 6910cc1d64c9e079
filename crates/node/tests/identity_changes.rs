//! Identity changes state what they change and apply to the record as it
//! is when applied: an update that read a user before a role was revoked
//! cannot bring the role back, and answers say whether anything changed.

mod common;

use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn new(node: &Node) -> Admin {
        Admin {
            base: node.url("/api/v1"),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::CREATED,
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap()
    }

    async fn roles_of(&self, user: &str) -> Vec<Value> {
        let users = self.call(Method::GET, "/users", None).await;
        let row = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == user)
            .unwrap_or_else(|| panic!("{user} in {users}"))
            .clone();
        row["roles"].as_array().unwrap().clone()
    }
}

/// A node, its admin API as the owner, and a user `name`.
async fn node_with_user(name: &str) -> (tempfile::TempDir, Node, Admin) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let admin = Admin::new(&node);
    let password = format!("{name}'s long password");
    admin
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": name, "password": password})),
        )
        .await;
    (dir, node, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_role_stays_revoked_whatever_updates_run_meanwhile() {
    let (_dir, _node, admin) = node_with_user("bob").await;
    for round in 0..30 {
        let scope = format!("team{round}/*");
        admin
            .call(
                Method::POST,
                "/roles",
                Some(json!({"principal": "bob", "role": "reader", "scope": scope})),
            )
            .await;
        // Updates of bob race the revocation: each reads nothing and
        // states only its own change, so none can restore the role.
        let updates = (0..4).map(|i| {
            let enabled = json!({"enabled": i % 2 == 0 || i == 3});
            admin.call(Method::PATCH, "/users/bob", Some(enabled))
        });
        let revoke_path = format!(
            "/roles?principal=bob&role=reader&scope={}",
            scope.replace('/', "%2F").replace('*', "%2A")
        );
        let revoke = admin.call(Method::DELETE, &revoke_path, None);
        let (_, answers) = tokio::join!(revoke, futures::future::join_all(updates));
        assert_eq!(answers.len(), 4);
        let roles = admin.roles_of("bob").await;
        assert!(
            !roles.iter().any(|r| r["scope"] == scope),
            "round {round}: the revoked role came back: {roles:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_answers_say_whether_anything_changed() {
    let (_dir, _node, admin) = node_with_user("carol").await;
    let grant = json!({"principal": "carol", "role": "contributor", "scope": "app"});
    let first = admin
        .call(Method::POST, "/roles", Some(grant.clone()))
        .await;
    assert_eq!(first["changed"], true, "{first}");
    let again = admin.call(Method::POST, "/roles", Some(grant)).await;
    assert_eq!(again["changed"], false, "granted twice: {again}");
    let path = "/roles?principal=carol&role=contributor&scope=app";
    let revoked = admin.call(Method::DELETE, path, None).await;
    assert_eq!(revoked["changed"], true, "{revoked}");
    let twice = admin.call(Method::DELETE, path, None).await;
    assert_eq!(twice["changed"], false, "revoked twice: {twice}");
}
