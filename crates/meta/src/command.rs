use serde::{Deserialize, Serialize};

use crate::error::ApplyError;
use crate::identity::IdentityCommand;

/// A blob named by digest string and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// Store a manifest in a repository, optionally pointing a tag at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutManifest {
    pub repo: String,
    pub digest: String,
    pub media_type: String,
    /// Exactly the bytes the client sent.
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    pub tag: Option<String>,
    /// Blobs the manifest references (config and layers); each must be linked
    /// in the repository when the command is applied.
    pub blobs: Vec<BlobRef>,
    /// Child manifests of an index; each must exist in the repository.
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    /// The manifest's annotations as JSON text, for the referrers API.
    pub annotations_json: Option<String>,
    pub now_ms: u64,
    /// Blobs uploaded to the proposing node (verified and held in `region`)
    /// that the repository does not link yet: linked by this same command,
    /// so a push costs one proposal, not one per layer.
    #[serde(default)]
    pub new_links: Vec<BlobRef>,
    #[serde(default)]
    pub region: String,
    /// The regions the registry's blobs belong in (computed by the
    /// proposer from the membership): where `replicated` events come from.
    #[serde(default)]
    pub replica_regions: Vec<String>,
}

/// Every change to registry metadata. Time and region are carried in the
/// command so that apply is a pure function of (state, command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Boxed: it is much larger than the other commands.
    PutManifest(Box<PutManifest>),
    /// Remove a manifest and every tag pointing at it.
    DeleteManifest {
        repo: String,
        digest: String,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    /// Record that `region` holds verified copies of `blobs` and link them
    /// into `repo` (an upload completed, or a cross-repository mount).
    LinkBlobs {
        repo: String,
        region: String,
        blobs: Vec<BlobRef>,
        now_ms: u64,
    },
    /// `region` now holds verified copies of `blobs` (the mover or an
    /// on-demand fetch finished). Blobs the index does not know are ignored.
    BlobsReplicated {
        region: String,
        blobs: Vec<BlobRef>,
    },
    /// Remove a blob's link from a repository (DELETE /v2/<name>/blobs/<digest>).
    UnlinkBlob {
        repo: String,
        digest: String,
    },
    /// Remove a repository with all its manifests, tags and blob links.
    DeleteRepository {
        repo: String,
    },
    /// Users, roles, tokens, signing keys, access settings.
    Identity(Box<IdentityCommand>),
    /// `region` left the cluster (or rejoins with an empty store): it holds
    /// no blob any more as far as the index is concerned, so the mover
    /// copies everything into it again and nobody fetches from it.
    ForgetRegion {
        region: String,
    },
    /// Create, change or delete a registry (cluster-wide: the envelope's
    /// registry is not the one addressed).
    Registry(crate::tenancy::RegistryCommand),
    /// Garbage collection: marks, sweeps, a region's deleted files.
    Gc(crate::gc::GcCommand),
    /// Change the locks of a repository, a tag or a manifest: only the
    /// flags `change` names.
    UpdateAttributes {
        repo: String,
        target: crate::locks::LockTarget,
        change: crate::locks::AttributeChange,
    },
    /// Retention, the recycle bin's purge, restores.
    Lifecycle(crate::lifecycle::LifecycleCommand),
    /// A region's scrub: a corrupt copy found, progress.
    Scrub(crate::scrub::ScrubCommand),
    /// Webhooks and their delivery log.
    Webhook(crate::webhooks::WebhookCommand),
    /// Usage the state machine is told of (operations served).
    Usage(crate::usage::UsageCommand),
    /// A region's once-per-region roles (mover, sweeper, scrub): leases.
    Role(crate::roles::RoleCommand),
    /// Build task runs: the queue, agents' leases, their reports.
    Run(crate::tasks::RunCommand),
    /// Stored tasks, their timers and triggers.
    Task(crate::stored_tasks::TaskCommand),
    /// `cmd`, if the registry's tier (as it is when applied) allows it
    /// under `tiers` (see `tiers`).
    Gated {
        tiers: Box<crate::tiers::TierTable>,
        cmd: Box<Command>,
    },
}

impl Command {
    /// The command itself, out of any `Gated` wrapper (what it changes,
    /// once its tier allowed it).
    pub fn ungated(&self) -> &Command {
        match self {
            Command::Gated { cmd, .. } => cmd.ungated(),
            c => c,
        }
    }

    /// Whether applying it may disable a repository's reads (readers keep
    /// the read-locked repositories in memory, see `read_locks`).
    pub fn may_lock_repository_reads(&self) -> bool {
        matches!(
            self.ungated(),
            Command::UpdateAttributes {
                target: crate::locks::LockTarget::Repository,
                ..
            }
        )
    }

    /// Whether applying it may change identities or registries (readers
    /// cache views of those by the store's identity epoch).
    pub fn changes_identities(&self) -> bool {
        match self {
            Command::Identity(_) | Command::Registry(_) => true,
            Command::Gated { cmd, .. } => cmd.changes_identities(),
            _ => false,
        }
    }
}

/// The client request behind a command, as events report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The request's id (`X-Request-Id`, or the one the node gave it).
    pub id: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// The meaning of commands this release writes. Bump it when a command's
/// meaning (not its shape) changes, so apply can tell old from new.
pub const COMMAND_VERSION: u32 = 2;

/// What a Raft log entry carries: a command, the registry it addresses,
/// and what makes it apply once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `COMMAND_VERSION` of the proposer (1: migrated from release 0.1).
    pub version: u32,
    /// Unique per logical write: a repeat is answered with the first
    /// answer and changes nothing (see `requests`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// The registry the command addresses (lower case); cluster-wide
    /// commands (blob copies, regions) ignore it.
    pub registry: String,
    /// The proposer's clock: the state machine's only notion of time,
    /// which expires remembered request ids.
    #[serde(default)]
    pub at_ms: u64,
    pub cmd: Command,
    /// The client request it came from (events report it); absent in
    /// entries of releases before webhooks.
    #[serde(default)]
    pub origin: Option<Origin>,
}

impl Envelope {
    pub fn new(registry: &str, cmd: Command, at_ms: u64) -> Envelope {
        Envelope {
            version: COMMAND_VERSION,
            request_id: None,
            registry: registry.to_string(),
            at_ms,
            cmd,
            origin: None,
        }
    }

    pub fn with_origin(mut self, origin: Option<Origin>) -> Envelope {
        self.origin = origin;
        self
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Envelope {
        self.request_id = Some(id.into());
        self
    }

    /// A command of a release 0.1 log entry: it addressed the only
    /// registry there was, now the default one.
    pub fn from_release_0_1(cmd: crate::CommandV01) -> Envelope {
        Envelope {
            version: 1,
            request_id: None,
            registry: crate::DEFAULT_REGISTRY.to_string(),
            at_ms: 0,
            cmd: cmd.into(),
            origin: None,
        }
    }
}

/// The result of applying one command, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    /// Number of items removed (manifests, tags) by a delete.
    Removed(u64),
    Refused(ApplyError),
    /// Number of items a change changed (0: it was already so).
    Changed(u64),
    /// A GC sweep: links removed, and the blobs that lost their last link.
    Freed {
        links: u64,
        blobs: Vec<crate::gc::FreedBlob>,
    },
}

impl Response {
    pub fn into_result(self) -> Result<u64, ApplyError> {
        match self {
            Response::Ok => Ok(0),
            Response::Removed(n) | Response::Changed(n) => Ok(n),
            Response::Freed { links, .. } => Ok(links),
            Response::Refused(e) => Err(e),
        }
    }
}
