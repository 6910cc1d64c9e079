//! The state the scale examples measure: TAGS tags over TAGS/10
//! repositories (`scale/r000000`…), each tag its own manifest of the usual
//! size, as `bench/scale.py` pushes them through a cluster.

use wharf_meta::{BlobRef, Command, Envelope, MetaStore, PutManifest, DEFAULT_REGISTRY};

pub const TAGS_PER_REPO: usize = 10;
const CONFIG: &str = "sha256:00000000000000000000000000000000000000000000000000000000000000c0";
const LAYER: &str = "sha256:000000000000000000000000000000000000000000000000000000000000001a";

pub fn apply(s: &MetaStore, cmd: Command) {
    s.apply(&Envelope::new(DEFAULT_REGISTRY, cmd, 1), &[])
        .expect("apply");
}

fn blobs() -> Vec<BlobRef> {
    [(CONFIG, 300), (LAYER, 1 << 20)]
        .into_iter()
        .map(|(d, size)| BlobRef {
            digest: d.into(),
            size,
        })
        .collect()
}

/// A manifest of the usual size (~450 bytes) that differs per tag.
fn manifest(repo: usize, tag: usize) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CONFIG}","size":300}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{LAYER}","size":1048576}}],"annotations":{{"org.example.build":"{repo}-{tag}"}}}}"#
    )
    .into_bytes()
}

pub fn repo_name(r: usize) -> String {
    format!("scale/r{r:06}")
}

/// Push `tags` tags into `store`; returns the number of repositories.
pub fn fill(store: &MetaStore, tags: usize) -> usize {
    let repos = tags.div_ceil(TAGS_PER_REPO);
    for r in 0..repos {
        let repo = repo_name(r);
        apply(
            store,
            Command::LinkBlobs {
                repo: repo.clone(),
                region: "r1".into(),
                blobs: blobs(),
                now_ms: 1,
            },
        );
        for i in 0..TAGS_PER_REPO.min(tags - r * TAGS_PER_REPO) {
            let raw = manifest(r, i);
            // Apply takes the proposer's verified digest; any unique one will do.
            let digest = format!("sha256:{r:032x}{i:032x}");
            apply(
                store,
                Command::PutManifest(Box::new(PutManifest {
                    repo: repo.clone(),
                    digest,
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    raw,
                    tag: Some(format!("t{i}")),
                    blobs: blobs(),
                    children: vec![],
                    subject: None,
                    artifact_type: None,
                    annotations_json: None,
                    now_ms: 2,
                    new_links: vec![],
                    region: "r1".into(),
                    replica_regions: vec![],
                })),
            );
        }
        if r % 10_000 == 9_999 {
            eprintln!("filled {} tags", (r + 1) * TAGS_PER_REPO);
        }
    }
    repos
}
