//! The web console, as a browser and an attacker meet it: a session only
//! through the login, every change guarded by the session's CSRF token,
//! pages that show a reader no delete button, and — in headless Chromium
//! driven over WebDriver — the pages an operator uses: find a repository,
//! open an image and see where each layer is, watch a region drop out and
//! catch up without reloading, delete a tag and see skopeo agree.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, REGIONS};
use common::{
    have, oci_layout, owner_creds, random_bytes, run, skopeo, wharf_json, Node, OWNER_PASSWORD,
};
use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn push(dir: &Path, node: &Node, image: &str, files: &[(&str, &[u8])]) {
    let tag = image.rsplit(':').next().unwrap();
    common::skopeo_push(&oci_layout(dir, tag, files), tag, &node.addr(), image);
}

/// `repo:tag` as an OCI index of a linux/amd64 and a linux/arm64 image.
async fn push_index(node: &Node, repo: &str, tag: &str) {
    let reg = common::registry::Reg::new(&node.addr());
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let layer = format!("the {arch} layer").into_bytes();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": common::registry::OCI_MANIFEST,
            "config": {"mediaType": common::registry::OCI_CONFIG,
                       "digest": reg.blob(repo, config.as_bytes()).await, "size": config.len()},
            "layers": [{"mediaType": common::registry::OCI_LAYER,
                        "digest": reg.blob(repo, &layer).await, "size": layer.len()}],
        })
        .to_string();
        let digest = common::sha256(manifest.as_bytes());
        let r = reg
            .put_manifest(
                repo,
                &digest,
                common::registry::OCI_MANIFEST,
                manifest.as_bytes(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        children.push(json!({"mediaType": common::registry::OCI_MANIFEST, "digest": digest,
                             "size": manifest.len(), "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = json!({"schemaVersion": 2, "mediaType": common::registry::OCI_INDEX, "manifests": children})
        .to_string();
    let r = reg
        .put_manifest(repo, tag, common::registry::OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

fn tags_by_skopeo(node: &Node, repo: &str) -> Vec<String> {
    let out = run(skopeo()
        .args(["list-tags", "--tls-verify=false", "--creds", &owner_creds()])
        .arg(format!("docker://{}/{repo}", node.addr())));
    let v: Value = serde_json::from_str(&out).unwrap();
    v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// A signed-in browser of the HTTP kind: the session cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn login(node: &Node, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(node.url("/console/api/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn session(node: &Node, user: &str, password: &str) -> Session {
    let resp = login(node, user, password).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    Session {
        cookie: set.split(';').next().unwrap().to_string(),
        csrf: body["csrf"].as_str().unwrap().to_string(),
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_need_the_login_and_changes_need_the_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n"));
    push(dir.path(), &node, "console/app:v1", &[("a.txt", b"one")]);
    common::create_user(&node, "rita", "rita reads a lot", "reader", "*");
    let http = no_redirects();

    // No session: the console sends the browser to its login page, which
    // is served with a policy that forbids foreign scripts and framing.
    let r = http.get(node.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = http.get(node.url("/console/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let r = http.get(node.url("/")).send().await.unwrap();
    assert_eq!(
        r.headers()["location"],
        "/console/",
        "the root links the console"
    );

    // A wrong password is refused and sets nothing.
    let r = login(&node, "owner", "not the password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());

    // The session cookie: HttpOnly, SameSite=Strict, not Secure over HTTP.
    let r = login(&node, "owner", OWNER_PASSWORD).await;
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
    let owner = session(&node, "owner", OWNER_PASSWORD).await;
    let r = http
        .get(node.url("/console/"))
        .header("cookie", &owner.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("/console/assets/app.js"));
    let r = http
        .get(node.url("/api/v1/repositories"))
        .header("cookie", &owner.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the cookie reads the management API"
    );

    // A change with the cookie alone (what a forged cross-site form sends)
    // is refused, as is one with another session's token.
    let rita = session(&node, "rita", "rita reads a lot").await;
    let delete = |s: &Session, csrf: Option<&str>| {
        let mut r = http
            .delete(node.url("/api/v1/images?image=console/app:v1"))
            .header("cookie", &s.cookie);
        if let Some(c) = csrf {
            r = r.header("x-wharf-csrf", c);
        }
        r.send()
    };
    let r = delete(&owner, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("x-wharf-csrf"));
    assert_eq!(
        delete(&owner, Some(&rita.csrf)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(tags_by_skopeo(&node, "console/app"), ["v1"]);

    // A reader's page offers no delete, and a forged delete (with the
    // reader's own CSRF token) is refused by the server.
    let perms: Value = http
        .get(node.url("/console/api/permissions?repository=console/app"))
        .header("cookie", &rita.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(perms["pull"], true);
    assert_eq!(perms["delete"], false);
    assert_eq!(
        delete(&rita, Some(&rita.csrf)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(tags_by_skopeo(&node, "console/app"), ["v1"]);

    // An access token planted in the cookie is not a session.
    let access: Value = reqwest::Client::new()
        .get(node.url("/auth/token?service=wharf&scope=repository:console/app:pull"))
        .basic_auth("owner", Some(OWNER_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let planted = format!("wharf_session={}", access["token"].as_str().unwrap());
    let r = http
        .get(node.url("/console/api/session"))
        .header("cookie", &planted)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // With its own token the owner's change goes through.
    let r = delete(&owner, Some(&owner.csrf)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(tags_by_skopeo(&node, "console/app").is_empty());

    // Signing out clears the cookie.
    let r = http
        .post(node.url("/console/api/logout"))
        .header("cookie", &owner.cookie)
        .header("x-wharf-csrf", &owner.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

// ---- in a browser ---------------------------------------------------------

/// chromedriver on a free port, killed with the test: with the browser
/// it started, which a failed test never closes (they share a process
/// group of their own).
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals that process group,
        // the one `process_group(0)` made for chromedriver.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    use std::os::unix::process::CommandExt;
    let port = common::free_port();
    let child = Command::new("chromedriver")
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,800"]}),
    );
    let c =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless Chromium");
    // Screenshots at 1280×800 of page: the window is that plus its frame.
    let frame = c
        .execute("return window.outerHeight - window.innerHeight;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or(0);
    c.set_window_size(1280, 800 + frame as u32).await.unwrap();
    c
}

/// Screenshots of each page, kept as test artifacts (not committed).
fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Click the first element `css` matches (it must be there).
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
        .click()
        .await
        .unwrap();
}

/// Open `path` of `node` in the browser.
async fn go(b: &Client, node: &Node, path: &str) {
    b.goto(&node.url(path)).await.unwrap();
}

async fn click_when_there(c: &Client, css: &str) {
    wait_for(c, css).await.click().await.unwrap();
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
}

/// Wait until `check` holds of the text of `css`.
async fn wait_text(c: &Client, css: &str, secs: u64, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if check(&t) {
                    return t;
                }
            }
        }
        if Instant::now() > deadline {
            let page = c.source().await.unwrap_or_default();
            panic!("{css} never showed what was expected; the page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn sign_in(c: &Client, node: &Node, user: &str, password: &str) {
    c.goto(&node.url("/console/")).await.unwrap();
    // Without a session the console is the login page.
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    wait_for(c, "input[name=username]")
        .await
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click(c, "button[type=submit]").await;
    wait_text(c, "#user", 30, |t| t == user).await;
}

// Behind a TLS-terminating proxy the node serves plain HTTP; the proxy it
// trusts says the browser came over TLS, and the cookie is Secure.
#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "trusted_proxies = [\"127.0.0.1/32\"]\n").unwrap();
    let node = Node::start_with(&dir.path().join("n"), &["--config", cfg.to_str().unwrap()]);
    let r = reqwest::Client::new()
        .post(node.url("/console/api/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": "owner", "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_an_image_watches_replication_and_deletes_a_tag_in_the_browser() {
    if !have("chromium") || !have("chromedriver") {
        eprintln!("SKIPPED: needs chromium and chromium-driver (make deps-test installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, "");
    let big = random_bytes(3 << 20);
    push(
        dir.path(),
        &c.nodes[0],
        "console/app:v1",
        &[("big.bin", &big)],
    );
    push(
        dir.path(),
        &c.nodes[0],
        "console/app:v2",
        &[("v2.txt", b"two")],
    );
    push_index(&c.nodes[0], "console/app", "multi").await;
    common::create_user(&c.nodes[0], "rita", "rita reads a lot", "reader", "*");
    let driver = chromedriver();
    let b = browser(&driver).await;

    // Log in, find the repository by searching.
    go(&b, &c.nodes[0], "/console/login").await;
    wait_for(&b, "input[name=username]").await;
    shot(&b, "login").await;
    sign_in(&b, &c.nodes[0], "owner", OWNER_PASSWORD).await;
    let search = wait_for(&b, "input[type=search]").await;
    wait_for(&b, "a[data-repo='console/app']").await;
    search.send_keys("console/a").await.unwrap();
    shot(&b, "repositories").await;
    click_when_there(&b, "a[data-repo='console/app']").await;

    // Its tags, then one image: its layers and the regions holding each.
    wait_for(&b, "tr[data-tag='v1']").await;
    wait_for(&b, "tr[data-tag='v2']").await;
    wait_text(&b, "tr[data-tag='v1'] td:nth-child(4)", 30, |t| {
        t.contains("amd64") || t.contains('/')
    })
    .await;
    shot(&b, "tags").await;
    // A multi-platform index: its platforms in the list and on its page.
    wait_text(&b, "tr[data-tag='multi'] td:nth-child(4)", 30, |t| {
        t == "linux/amd64, linux/arm64"
    })
    .await;
    click(&b, "tr[data-tag='multi'] a").await;
    wait_text(&b, "#content", 30, |t| {
        t.contains("Platforms") && t.contains("linux/arm64") && t.contains("OCI index")
    })
    .await;
    shot(&b, "index").await;
    b.back().await.unwrap();
    wait_for(&b, "tr[data-tag='v1']").await;
    click(&b, "tr[data-tag='v1'] a").await;
    wait_for(&b, "tr[data-layer]").await;
    // The mover copies every layer everywhere; the page shows it on reload.
    let all_regions = |t: &str| REGIONS.iter().all(|r| t.contains(r));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = b
            .find_all(Locator::Css("tr[data-layer] td.regions"))
            .await
            .unwrap();
        let mut texts = Vec::new();
        for r in &rows {
            texts.push(r.text().await.unwrap());
        }
        if !texts.is_empty() && texts.iter().all(|t| all_regions(t)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "layers never held everywhere: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.refresh().await.unwrap();
        wait_for(&b, "tr[data-layer]").await;
    }
    shot(&b, "image").await;
    click(&b, "button[data-tab=where]").await;
    wait_for(&b, &format!(".card[data-region='{}']", REGIONS[2])).await;
    shot(&b, "image-regions").await;
    // The manifest and config as JSON, and the (empty) referrers.
    click(&b, "button[data-tab=manifest]").await;
    wait_text(&b, "#panel pre.json", 30, |t| {
        t.contains("\"schemaVersion\": 2")
    })
    .await;
    click(&b, "button[data-tab=config]").await;
    wait_text(&b, "#panel", 30, |t| t.contains("linux/amd64")).await;
    click(&b, "button[data-tab=referrers]").await;
    wait_text(&b, "#panel", 30, |t| t.contains("No referrers")).await;
    // Keyboard: "/" jumps to the search box.
    go(&b, &c.nodes[0], "/console/#/repositories").await;
    wait_for(&b, "a[data-repo]").await;
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("/")
        .await
        .unwrap();
    let focused = b.active_element().await.unwrap();
    assert_eq!(
        focused.attr("type").await.unwrap().as_deref(),
        Some("search")
    );

    // The replication page follows a region going down and catching up by
    // itself: the marker set in the page survives (no reload).
    go(&b, &c.nodes[0], "/console/#/replication").await;
    let third = format!("#live .card[data-region='{}']", REGIONS[2]);
    wait_text(&b, &third, 30, |t| t.contains("ok")).await;
    b.execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();
    c.nodes[2].kill9();
    wait_text(&b, &third, 30, |t| t.contains("down")).await;
    let more = random_bytes(2 << 20);
    push(
        dir.path(),
        &c.nodes[0],
        "console/app:v3",
        &[("more.bin", &more)],
    );
    // Watch the image pushed meanwhile: it is not in the region that is down.
    wait_for(&b, "input[name=watch]")
        .await
        .send_keys("console/app:v3")
        .await
        .unwrap();
    click(&b, "form button[type=submit]").await;
    let watched = format!("#watched .card[data-region='{}']", REGIONS[2]);
    wait_text(&b, &watched, 30, |t| t.contains("copying")).await;
    wait_text(
        &b,
        &format!("#watched .card[data-region='{}']", REGIONS[0]),
        30,
        |t| t.contains("complete"),
    )
    .await;
    shot(&b, "replication-region-down").await;
    b.execute(
        "document.getElementById('watched').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    shot(&b, "replication-watch").await;
    c.nodes[2].restart();
    wait_text(&b, &format!("{third} .to-copy"), 120, |t| t == "nothing").await;
    wait_text(&b, &third, 30, |t| t.contains("ok")).await;
    wait_text(&b, &watched, 60, |t| {
        t.contains("complete") && t.contains("100%")
    })
    .await;
    let same_page = b
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_page,
        Value::Bool(true),
        "the page updated without a reload"
    );
    shot(&b, "replication").await;

    // Registries (an operator's page).
    go(&b, &c.nodes[0], "/console/#/registries").await;
    wait_text(&b, ".card[data-registry='default']", 30, |t| {
        t.contains("Size:") && t.contains("of 500 GiB") && !t.contains("undefined")
    })
    .await;
    shot(&b, "registries").await;

    // A token made in the console: its password shown once, and it works.
    wharf_json(
        &c.nodes[0].url(""),
        &[
            "scope-map",
            "create",
            "ci-pull",
            "--repository",
            "console/app=content/read,metadata/read",
        ],
    );
    go(&b, &c.nodes[0], "/console/#/tokens").await;
    wait_text(&b, "tr[data-user='rita']", 30, |t| t.contains("reader")).await;
    wait_for(&b, "input[name=token-name]")
        .await
        .send_keys("ci-reader")
        .await
        .unwrap();
    click(&b, "form button[type=submit]").await;
    let secret = wait_for(&b, "dialog[open] code.secret")
        .await
        .text()
        .await
        .unwrap();
    assert!(secret.len() >= 32, "a generated password: {secret:?}");
    shot(&b, "token-created").await;
    click(&b, "dialog[open] button.primary").await;
    wait_for(&b, "tr[data-token='ci-reader']").await;
    assert!(
        b.find_all(Locator::Css("code.secret"))
            .await
            .unwrap()
            .is_empty(),
        "the password is not shown again"
    );
    shot(&b, "tokens").await;
    let listed = run(skopeo()
        .args(["list-tags", "--tls-verify=false", "--creds"])
        .arg(format!("ci-reader:{secret}"))
        .arg(format!("docker://{}/console/app", c.nodes[1].addr())));
    assert!(listed.contains("v1"), "the console's token pulls: {listed}");

    // A webhook's delivery log (its endpoint refuses), and a redelivery.
    let dead = format!("http://127.0.0.1:{}/hook", common::free_port());
    wharf_json(
        &c.nodes[0].url(""),
        &[
            "webhook",
            "create",
            "--name",
            "cihook",
            "--uri",
            &dead,
            "--actions",
            "push",
        ],
    );
    push(
        dir.path(),
        &c.nodes[0],
        "console/app:v4",
        &[("v4.txt", b"four")],
    );
    go(&b, &c.nodes[0], "/console/#/webhooks").await;
    click_when_there(&b, "tr[data-webhook='cihook'] a").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(row) = b.find(Locator::Css("tr[data-event]")).await {
            if !row.text().await.unwrap().contains("—") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no delivery attempt in the log");
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.refresh().await.unwrap();
    }
    shot(&b, "webhook-log").await;
    click(&b, "tr[data-event] button").await;
    wait_text(&b, ".toast", 20, |t| t.contains("Redelivery queued")).await;

    // Garbage collection: a dry run reports and changes nothing.
    go(&b, &c.nodes[0], "/console/#/gc").await;
    wait_for(&b, "h1").await;
    b.find(Locator::XPath("//button[text()='Dry run']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = b
            .execute(
                "return [...document.querySelectorAll('.toast')].map(t => t.textContent);",
                vec![],
            )
            .await
            .unwrap();
        if said
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().starts_with("Would free"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dry run reported nothing: {said}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(&b, "gc").await;

    // Delete a tag through the console, after a confirmation naming it.
    go(&b, &c.nodes[0], "/console/#/repository/console%2Fapp").await;
    click_when_there(&b, "button[data-delete='v2']").await;
    let confirm = wait_for(&b, "dialog[open] button[data-confirm]").await;
    let dialog = b
        .find(Locator::Css("dialog[open]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dialog.contains("console/app:v2"),
        "the confirmation names the tag: {dialog}"
    );
    confirm.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tags_by_skopeo(&c.nodes[1], "console/app").contains(&"v2".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the tag deleted in the console is still listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tags_by_skopeo(&c.nodes[0], "console/app").contains(&"v1".to_string()));

    // Lock the whole repository, then unlock it.
    click(&b, "button[data-repo-lock]").await;
    wait_text(&b, "#content .toolbar", 20, |t| t.contains("write-locked")).await;
    let shown = wharf_json(
        &c.nodes[1].url(""),
        &["repository", "show", "--repository", "console/app"],
    );
    assert_eq!(shown[0]["attributes"]["write_enabled"], false, "{shown}");
    click(&b, "button[data-repo-lock]").await;
    wait_text(&b, "button[data-repo-lock]", 20, |t| t == "Lock repository").await;

    // Delete a whole repository, after a confirmation naming it.
    push(
        dir.path(),
        &c.nodes[0],
        "console/tmp:t1",
        &[("tmp.txt", b"tmp")],
    );
    go(&b, &c.nodes[0], "/console/#/repository/console%2Ftmp").await;
    click_when_there(&b, "button[data-repo-delete]").await;
    let dialog = wait_for(&b, "dialog[open]").await.text().await.unwrap();
    assert!(dialog.contains("console/tmp"), "{dialog}");
    click(&b, "dialog[open] button[data-confirm]").await;
    wait_for(&b, "a[data-repo='console/app']").await;
    let repos = wharf_json(&c.nodes[2].url(""), &["repository", "list"]);
    assert!(!repos.to_string().contains("console/tmp"), "{repos}");

    // A reader sees the tags but no delete button.
    click(&b, ".who button").await;
    wait_for(&b, "input[name=username]").await;
    sign_in(&b, &c.nodes[0], "rita", "rita reads a lot").await;
    go(&b, &c.nodes[0], "/console/#/repository/console%2Fapp").await;
    wait_for(&b, "tr[data-tag='v1']").await;
    assert!(b
        .find_all(Locator::Css("button[data-delete]"))
        .await
        .unwrap()
        .is_empty());
    b.close().await.unwrap();
}
