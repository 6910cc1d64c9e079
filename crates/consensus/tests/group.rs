//! Real Raft groups over real gRPC sockets, in one process.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use wharf_consensus::{Consensus, ConsensusConfig, Peer, RaftTimings};
use wharf_meta::{BlobRef, Command, Envelope, Response, DEFAULT_REGISTRY};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fast() -> RaftTimings {
    RaftTimings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        snapshot_after_entries: 20,
        logs_kept_after_snapshot: 5,
        ..RaftTimings::default()
    }
}

fn peers(n: u64) -> Vec<Peer> {
    (1..=n)
        .map(|id| {
            let port = free_port();
            Peer {
                id,
                region: format!("r{id}"),
                grpc: format!("127.0.0.1:{port}"),
                http: String::new(),
            }
        })
        .collect()
}

async fn start(dir: &std::path::Path, me: &Peer, all: &[Peer]) -> Arc<Consensus> {
    Consensus::start(
        ConsensusConfig {
            fenced_until_ms: None,
            node_id: me.id,
            region: me.region.clone(),
            data_dir: dir.join(format!("n{}", me.id)),
            grpc_listen: me.grpc.parse().unwrap(),
            advertise: me.clone(),
            initial_members: all.to_vec(),
            bootstrap: me.id == 1,
            timings: fast(),
            write_timeout_ms: 10_000,
            peer_overrides: Default::default(),
            peer_tls: None,
        },
        tonic::service::Routes::default(),
    )
    .await
    .unwrap()
}

fn link(repo: &str, i: u64) -> Envelope {
    let cmd = Command::LinkBlobs {
        repo: repo.into(),
        region: "r1".into(),
        blobs: vec![BlobRef {
            digest: format!("sha256:{:064x}", i),
            size: i,
        }],
        now_ms: i,
    };
    Envelope::new(DEFAULT_REGISTRY, cmd, i).with_request_id(format!("{repo}-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_survives_restart_and_compacts_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let all = peers(1);
    let node = start(dir.path(), &all[0], &all).await;
    for i in 1..=50 {
        assert_eq!(node.write(link("a", i)).await.unwrap(), Response::Ok);
    }
    node.read_barrier().await.unwrap();
    node.shutdown().await;
    drop(node);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let node = start(dir.path(), &all[0], &all).await;
    node.read_barrier().await.unwrap();
    for i in 1..=50 {
        let digest = format!("sha256:{:064x}", i);
        assert!(
            node.meta()
                .registry(DEFAULT_REGISTRY)
                .linked_blob("a", &digest)
                .unwrap()
                .is_some(),
            "blob {i} lost"
        );
    }
    assert!(
        dir.path().join("n1/snapshots/current.meta").exists(),
        "a snapshot was built"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_followers_are_forwarded_and_read_index_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let all = peers(3);
    let mut nodes = Vec::new();
    for p in &all {
        nodes.push(start(dir.path(), p, &all).await);
    }
    // Every node can write; each write is visible on every node after a
    // read barrier there.
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.write(link("shared", i as u64 + 1)).await.unwrap(),
            Response::Ok
        );
    }
    for n in &nodes {
        n.read_barrier().await.unwrap();
        for i in 1..=3u64 {
            let digest = format!("sha256:{:064x}", i);
            assert!(n
                .meta()
                .registry(DEFAULT_REGISTRY)
                .linked_blob("shared", &digest)
                .unwrap()
                .is_some());
        }
    }
    let leaders: Vec<_> = nodes.iter().map(|n| n.status().leader).collect();
    assert!(
        leaders.iter().all(|l| l.is_some() && *l == leaders[0]),
        "{leaders:?}"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

fn tag_command(id: &str, cmd: Command) -> Envelope {
    Envelope::new(DEFAULT_REGISTRY, cmd, 1).with_request_id(id)
}

fn put_tag(digest: &str) -> Command {
    Command::PutManifest(Box::new(wharf_meta::PutManifest {
        repo: "app".into(),
        digest: digest.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        raw: b"{}".to_vec(),
        tag: Some("latest".into()),
        blobs: vec![],
        children: vec![],
        subject: None,
        artifact_type: None,
        annotations_json: None,
        now_ms: 1,
        new_links: vec![],
        region: "r1".into(),
        replica_regions: vec![],
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_its_request_id_after_a_leader_change_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let all = peers(3);
    let mut nodes = Vec::new();
    for p in &all {
        nodes.push(start(dir.path(), p, &all).await);
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    let first = nodes[1]
        .write(tag_command("push-1", put_tag(&digest)))
        .await
        .unwrap();
    let delete = Command::DeleteTag {
        repo: "app".into(),
        tag: "latest".into(),
    };
    assert_eq!(
        nodes[2]
            .write(tag_command("delete-1", delete.clone()))
            .await
            .unwrap(),
        Response::Removed(1)
    );
    // The leader goes away; the others elect a new one.
    let old_leader = nodes[0].status().leader.unwrap();
    let at = nodes
        .iter()
        .position(|n| n.node_id() == old_leader)
        .unwrap();
    let gone = nodes.remove(at);
    gone.shutdown().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while nodes[0].status().leader.is_none_or(|l| l == old_leader) {
        assert!(std::time::Instant::now() < deadline, "no new leader");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The push, retried with its id through the new leader's group,
    // answers as the first time and does not bring the deleted tag back;
    // the delete retried answers as it did, not "tag unknown".
    for n in &nodes {
        assert_eq!(
            n.write(tag_command("push-1", put_tag(&digest)))
                .await
                .unwrap(),
            first
        );
        assert_eq!(
            n.write(tag_command("delete-1", delete.clone()))
                .await
                .unwrap(),
            Response::Removed(1)
        );
    }
    for n in &nodes {
        n.read_barrier().await.unwrap();
        let reg = n.meta().registry(DEFAULT_REGISTRY);
        assert!(reg.tag("app", "latest").unwrap().is_none());
        assert!(reg.manifest("app", &digest).unwrap().is_some());
    }
    // A new id is a new write.
    nodes[0]
        .write(tag_command("push-2", put_tag(&digest)))
        .await
        .unwrap();
    nodes[1].read_barrier().await.unwrap();
    assert!(nodes[1]
        .meta()
        .registry(DEFAULT_REGISTRY)
        .tag("app", "latest")
        .unwrap()
        .is_some());
    for n in &nodes {
        n.shutdown().await;
    }
}
