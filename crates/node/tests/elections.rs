//! Elections across regions: a region cut off from the others and coming
//! back deposes nobody (pre-vote), and a leader cut off is replaced once,
//! its return moving nothing further. Three regions of real processes,
//! their peer links through the WAN emulator, cut and healed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::registry::{Reg, OCI_MANIFEST};
use serde_json::Value;
use wharf_launcher::{Cluster, Plan};
use wharf_netem::LinkSpec;

/// Long enough for several elections of these timings (a round waits
/// `max + rand(min..=max)`: 1.5-2 s), had the cut-off node campaigned.
const CUT_FOR: Duration = Duration::from_secs(7);

async fn start(dir: &Path) -> Cluster {
    let mut plan = Plan::new(Path::new(env!("CARGO_BIN_EXE_wharf")), dir, 3)
        .env("WHARF_BOOTSTRAP_PASSWORD", common::OWNER_PASSWORD)
        .tune(|_, c| {
            c.raft.heartbeat_ms = 100;
            c.raft.election_timeout_min_ms = 500;
            c.raft.election_timeout_max_ms = 1000;
            Ok(())
        });
    plan.links = Some(LinkSpec::default());
    let mut cluster = Cluster::start(plan).unwrap();
    cluster
        .wait_all_ready(Duration::from_secs(60))
        .await
        .unwrap();
    cluster
}

/// Node `i`'s view of the group (`/api/v1/status`).
async fn status(cluster: &Cluster, i: usize) -> Value {
    cluster
        .http()
        .get(cluster.nodes[i].url("/api/v1/status"))
        .basic_auth(common::OWNER, Some(common::OWNER_PASSWORD))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// (leader index, term) once every node in `among` names the same leader
/// in the same term.
async fn agreed(cluster: &Cluster, among: &[usize]) -> (usize, u64) {
    agreed_on_other(cluster, among, None).await
}

/// `agreed`, on a leader other than `not`.
async fn agreed_on_other(cluster: &Cluster, among: &[usize], not: Option<usize>) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for &i in among {
            let s = status(cluster, i).await;
            views.push((s["leader"].as_u64(), s["term"].as_u64().unwrap()));
        }
        if let Some((Some(leader), term)) = views.first().copied() {
            if views.iter().all(|v| *v == (Some(leader), term)) {
                let index = cluster
                    .nodes
                    .iter()
                    .position(|n| n.id == leader)
                    .expect("the leader is a member");
                if not != Some(index) {
                    return (index, term);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodes {among:?} never agreed on a leader: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Push a small image through node `i`; true once acknowledged.
async fn push(cluster: &Cluster, i: usize, tag: &str) -> bool {
    let reg = Reg::new(&format!("127.0.0.1:{}", cluster.nodes[i].http));
    let body = reg.image("elections/probe", &[tag.as_bytes()]).await;
    reg.put_manifest("elections/probe", tag, OCI_MANIFEST, &body)
        .await
        .status()
        == 201
}

/// After a heal: a push through every region is acknowledged, and a
/// while later every node still names `expected` (leader, term).
async fn writes_go_on_and_nobody_campaigns(cluster: &Cluster, expected: (usize, u64)) {
    for i in 0..3 {
        assert!(
            push(cluster, i, &format!("after-{i}")).await,
            "push via {i}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(agreed(cluster, &[0, 1, 2]).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_back_from_a_partition_deposes_no_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let (leader, term) = agreed(&cluster, &[0, 1, 2]).await;
    let away = (leader + 1) % 3;

    cluster.isolate(away);
    tokio::time::sleep(CUT_FOR).await;
    // Cut off for several election timeouts, it asked and was told no:
    // its term never moved (without pre-vote it rises on every timeout).
    let s = status(&cluster, away).await;
    assert_eq!(
        s["term"].as_u64(),
        Some(term),
        "the cut-off region raised its term: {s}"
    );
    assert!(
        push(&cluster, leader, "during").await,
        "the majority writes"
    );

    cluster.heal();
    // The leader's next append is accepted as it comes: the returning
    // region follows it again, in the same term.
    let after = agreed(&cluster, &[0, 1, 2]).await;
    assert_eq!(
        after,
        (leader, term),
        "healing the partition moved the leader"
    );
    writes_go_on_and_nobody_campaigns(&cluster, (leader, term)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_once_and_its_return_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let (old, term) = agreed(&cluster, &[0, 1, 2]).await;
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    cluster.isolate(old);
    // The two others stop hearing from it, agree by pre-vote, and elect.
    let (new, new_term) = agreed_on_other(&cluster, &rest, Some(old)).await;
    assert!(new_term > term);
    assert!(push(&cluster, new, "during").await, "the majority writes");
    tokio::time::sleep(CUT_FOR).await;
    assert_eq!(
        agreed(&cluster, &rest).await,
        (new, new_term),
        "the majority's leader held while the old one was away"
    );

    cluster.heal();
    // The old leader meets the newer term and follows; no election.
    assert_eq!(agreed(&cluster, &[0, 1, 2]).await, (new, new_term));
    writes_go_on_and_nobody_campaigns(&cluster, (new, new_term)).await;
}
