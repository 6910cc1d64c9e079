//! A node on an object store, over real sockets: what clients see when
//! the store goes away and comes back, and blob GETs answered by redirect
//! so the bytes flow from the store.

mod common;

use std::time::Duration;

use common::registry::{error_code, header, Reg};
use common::{sha256, Node};
use reqwest::{Method, StatusCode};
use wharf_launcher::s3::ObjectStore;
use wharf_netem::{Link, LinkSpec};

fn server() -> ObjectStore {
    wharf_launcher::s3::from_env()
        .unwrap_or_else(|| ObjectStore::seaweedfs().expect("an S3 server for the tests"))
}

/// A node whose region keeps its blobs in a fresh bucket reached at
/// `endpoint`, with `extra` TOML in its `[storage]`.
fn node_on(dir: &std::path::Path, s3: &ObjectStore, endpoint: &str, extra: &str) -> Node {
    let bucket = wharf_launcher::s3::SHARED_BUCKET;
    s3.create_bucket(bucket).unwrap();
    let prefix = format!("node-{:08x}/", rand::random::<u32>());
    std::fs::create_dir_all(dir).unwrap();
    let credentials = s3.credentials_file(dir).unwrap();
    let config = dir.join("s3.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
             prefix = \"{prefix}\"\ncredentials_file = \"{}\"\nretry_timeout_s = 2\nmax_retries = 2\n{extra}",
            credentials.display()
        ),
    )
    .unwrap();
    Node::start_with(dir, &["--config", config.to_str().unwrap()])
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status_of(url: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_never_a_stored_blob_and_the_node_recovers_by_itself() {
    let s3 = server();
    // The node reaches the store through a link the test can cut.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via = listener.local_addr().unwrap();
    let upstream = s3.endpoint.trim_start_matches("http://").to_string();
    let link = Link::start(listener, upstream, LinkSpec::default());
    let dir = tempfile::tempdir().unwrap();
    let n = node_on(dir.path(), &s3, &format!("http://{via}"), "");
    let reg = Reg::new(&n.addr());
    let before = reg.blob("app", b"stored before the outage").await;

    link.cut();
    let bytes = b"pushed during the outage".to_vec();
    let d = sha256(&bytes);
    let r = reg
        .req(Method::POST, &format!("/v2/app/blobs/uploads/?digest={d}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    let r = reg.get(&format!("/v2/app/blobs/{before}")).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a read fails, it does not 404"
    );
    // The node says so to a load balancer and to monitoring.
    wait_for("/readyz reports the store", Duration::from_secs(20), || {
        status_of(&n.url("/readyz")) == 503
    })
    .await;
    let metrics = common::run(&mut common::curl_owner(&n.url("/metrics")));
    assert!(metrics.contains("wharf_blob_store_up 0"), "{metrics}");
    assert!(
        !metrics.contains("wharf_blob_store_errors_total 0\n"),
        "{metrics}"
    );

    link.heal();
    wait_for("ready again", Duration::from_secs(20), || {
        status_of(&n.url("/readyz")) == 200
    })
    .await;
    assert_eq!(reg.blob("app", &bytes).await, d);
    let r = reg.get(&format!("/v2/app/blobs/{before}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], b"stored before the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_the_store_and_clients_follow() {
    let s3 = server();
    let dir = tempfile::tempdir().unwrap();
    let n = node_on(dir.path(), &s3, &s3.endpoint, "redirect = true\n");
    let reg = Reg::new(&n.addr());
    let layer = common::random_bytes(3 << 20);
    let manifest = reg.image("redirected/app", &[&layer]).await;
    let r = reg
        .put_manifest(
            "redirected/app",
            "latest",
            common::registry::OCI_MANIFEST,
            &manifest,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let d = sha256(&layer);

    let r = reg.get(&format!("/v2/redirected/app/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = header(&r, "location");
    assert!(location.starts_with(&s3.endpoint), "{location}");
    assert!(
        location.contains("X-Amz-Signature="),
        "a presigned URL: {location}"
    );
    // The URL alone (no registry credentials) gets the bytes.
    let got = reqwest::get(&location).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(sha256(&got.bytes().await.unwrap()), d);
    // Manifests are still the node's to serve.
    let r = reg
        .req(Method::GET, "/v2/redirected/app/manifests/latest")
        .header("accept", common::registry::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);

    // A real client follows the redirect and gets a byte-exact image.
    if common::have("skopeo") {
        let out = dir.path().join("pulled");
        common::run(
            common::skopeo()
                .args([
                    "copy",
                    "--src-tls-verify=false",
                    "--src-creds",
                    &common::owner_creds(),
                ])
                .arg(format!("docker://{}/redirected/app:latest", n.addr()))
                .arg(format!("dir:{}", out.display())),
        );
        assert_eq!(
            std::fs::read(out.join(&d[7..])).unwrap(),
            layer,
            "skopeo pulled the layer through the redirect"
        );
    }
    let metrics = common::run(&mut common::curl_owner(&n.url("/metrics")));
    assert!(
        !metrics.contains("wharf_blob_redirects_total 0\n"),
        "redirects are counted: {metrics}"
    );
}
