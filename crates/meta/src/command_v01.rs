//! Release 0.1's commands, frozen as it wrote them. Its Raft log entries
//! are bincode, which is positional: decoding them with today's `Command`
//! breaks as soon as a field is added to any command (a field with a
//! serde default is still expected by bincode). These types keep 0.1's
//! exact shape, so an upgraded node reads its old log whatever the current
//! commands become; `Command::from` turns each into today's.

use serde::{Deserialize, Serialize};

use crate::command::{BlobRef, Command, PutManifest};
use crate::identity::IdentityCommand;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutManifestV01 {
    pub repo: String,
    pub digest: String,
    pub media_type: String,
    pub raw: Vec<u8>,
    pub tag: Option<String>,
    pub blobs: Vec<BlobRef>,
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations_json: Option<String>,
    pub now_ms: u64,
    pub new_links: Vec<BlobRef>,
    pub region: String,
}

/// The variants in 0.1's order (bincode numbers them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandV01 {
    PutManifest(Box<PutManifestV01>),
    DeleteManifest {
        repo: String,
        digest: String,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    LinkBlobs {
        repo: String,
        region: String,
        blobs: Vec<BlobRef>,
        now_ms: u64,
    },
    BlobsReplicated {
        region: String,
        blobs: Vec<BlobRef>,
    },
    UnlinkBlob {
        repo: String,
        digest: String,
    },
    DeleteRepository {
        repo: String,
    },
    Identity(Box<IdentityCommand>),
    ForgetRegion {
        region: String,
    },
}

impl From<CommandV01> for Command {
    fn from(c: CommandV01) -> Command {
        match c {
            CommandV01::PutManifest(p) => {
                let p = *p;
                Command::PutManifest(Box::new(PutManifest {
                    repo: p.repo,
                    digest: p.digest,
                    media_type: p.media_type,
                    raw: p.raw,
                    tag: p.tag,
                    blobs: p.blobs,
                    children: p.children,
                    subject: p.subject,
                    artifact_type: p.artifact_type,
                    annotations_json: p.annotations_json,
                    now_ms: p.now_ms,
                    new_links: p.new_links,
                    region: p.region,
                    // Written before webhooks: no `replicated` events.
                    replica_regions: Vec::new(),
                }))
            }
            CommandV01::DeleteManifest { repo, digest } => Command::DeleteManifest { repo, digest },
            CommandV01::DeleteTag { repo, tag } => Command::DeleteTag { repo, tag },
            CommandV01::LinkBlobs {
                repo,
                region,
                blobs,
                now_ms,
            } => Command::LinkBlobs {
                repo,
                region,
                blobs,
                now_ms,
            },
            CommandV01::BlobsReplicated { region, blobs } => {
                Command::BlobsReplicated { region, blobs }
            }
            CommandV01::UnlinkBlob { repo, digest } => Command::UnlinkBlob { repo, digest },
            CommandV01::DeleteRepository { repo } => Command::DeleteRepository { repo },
            CommandV01::Identity(c) => Command::Identity(c),
            CommandV01::ForgetRegion { region } => Command::ForgetRegion { region },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0.1 push as 0.1's bincode wrote it decodes, and becomes today's
    /// command (which has more fields than 0.1's).
    #[test]
    fn release_0_1_bincode_decodes_whatever_todays_commands_hold() {
        let old = CommandV01::PutManifest(Box::new(PutManifestV01 {
            repo: "app".into(),
            digest: "sha256:abc".into(),
            media_type: "m".into(),
            raw: vec![1, 2],
            tag: Some("v1".into()),
            blobs: vec![],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: None,
            now_ms: 7,
            new_links: vec![],
            region: "us-east".into(),
        }));
        let bytes = bincode::serialize(&old).unwrap();
        let back: CommandV01 = bincode::deserialize(&bytes).unwrap();
        let Command::PutManifest(p) = Command::from(back) else {
            panic!("not a push")
        };
        assert_eq!(
            (p.repo.as_str(), p.tag.as_deref(), p.now_ms),
            ("app", Some("v1"), 7)
        );
        // Today's command cannot read it: why the frozen type exists.
        assert!(bincode::deserialize::<Command>(&bytes).is_err());
    }
}
