//! kill -9 during a stream of pushes, restart, and check that every
//! acknowledged blob and manifest reads back byte-exact, that no partial
//! blob is ever visible, and that interrupted uploads are cleaned up.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::registry::{Reg, OCI_MANIFEST};
use common::{random_bytes, sha256, Node};
use reqwest::{Method, StatusCode};

#[derive(Default)]
struct Acked {
    /// digest -> bytes, for blobs whose upload was answered 201.
    blobs: BTreeMap<String, (String, Vec<u8>)>,
    /// repo:tag -> manifest bytes, for manifests answered 201.
    manifests: BTreeMap<(String, String), Vec<u8>>,
}

/// Monolithic upload; true when acknowledged with 201.
async fn upload(reg: &Reg, repo: &str, digest: &str, bytes: Vec<u8>) -> bool {
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        )
        .body(bytes)
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == StatusCode::CREATED)
}

/// Push images until the node goes away; record only what was acknowledged.
async fn pusher(reg: Arc<Reg>, worker: usize, round: usize, acked: Arc<Mutex<Acked>>) {
    let repo = format!("crash/w{worker}");
    for i in 0.. {
        let size = 1 + (rand::random::<usize>() % (768 << 10));
        let layer = random_bytes(size);
        let d = sha256(&layer);
        if !upload(&reg, &repo, &d, layer.clone()).await {
            return;
        }
        acked
            .lock()
            .unwrap()
            .blobs
            .insert(d.clone(), (repo.clone(), layer.clone()));
        let config = format!(r#"{{"worker":{worker},"round":{round},"i":{i}}}"#);
        let cd = sha256(config.as_bytes());
        if !upload(&reg, &repo, &cd, config.clone().into_bytes()).await {
            return;
        }
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}]
        })
        .to_string()
        .into_bytes();
        let tag = format!("r{round}-{i}");
        let r = reg
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => {
                acked
                    .lock()
                    .unwrap()
                    .manifests
                    .insert((repo.clone(), tag), m);
            }
            _ => return,
        }
    }
}

fn assert_no_partial_blob_is_visible(data: &std::path::Path) {
    let root = data.join("blobs/blobs/sha256");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return;
    };
    for d in dirs {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            assert_eq!(
                sha256(&bytes),
                format!("sha256:{}", f.file_name().to_string_lossy()),
                "a stored blob does not match its name"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_push_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path());
    let acked = Arc::new(Mutex::new(Acked::default()));
    for round in 0..3 {
        let reg = Arc::new(Reg::new(&node.addr()));
        let tasks: Vec<_> = (0..4)
            .map(|w| tokio::spawn(pusher(reg.clone(), w, round, acked.clone())))
            .collect();
        // Kill once pushes are being acknowledged (however slow the
        // machine), then a little later each round so the kill lands at a
        // different point of the pushes.
        let before = acked.lock().unwrap().manifests.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().manifests.len() < before + 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no push acknowledged in 120 s:\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200 * round as u64)).await;
        node.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        node.restart();

        let reg = Reg::new(&node.addr());
        let snapshot: Vec<_> = acked
            .lock()
            .unwrap()
            .manifests
            .clone()
            .into_iter()
            .collect();
        assert!(
            !snapshot.is_empty(),
            "round {round}: nothing was pushed before the kill"
        );
        for ((repo, tag), bytes) in snapshot {
            let r = reg.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(r.status(), StatusCode::OK, "acknowledged {repo}:{tag} lost");
            assert_eq!(
                r.bytes().await.unwrap().to_vec(),
                bytes,
                "{repo}:{tag} changed"
            );
        }
        let blobs: Vec<_> = acked.lock().unwrap().blobs.clone().into_iter().collect();
        for (digest, (repo, bytes)) in blobs {
            let r = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "acknowledged blob {digest} lost"
            );
            assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
        }
        assert_no_partial_blob_is_visible(&dir.path().join("data"));
        // Monolithic uploads cut by the kill can never be resumed: gone.
        let uploads = std::fs::read_dir(dir.path().join("data/blobs/uploads"))
            .unwrap()
            .count();
        assert_eq!(
            uploads, 0,
            "interrupted monolithic uploads were not cleaned up"
        );
    }
    let total = acked.lock().unwrap().manifests.len();
    eprintln!("verified {total} acknowledged manifests across 3 kill -9 cycles");
}
