//! Key layout. Every key of a registry starts with `registry \0`, and
//! repository names never contain NUL, so `registry \0 repo \0 rest` keys
//! keep one repository's entries contiguous and sorted byte-wise, which is
//! the lexical order the spec asks for in tag and catalog listings. The
//! blob index (`blobs`, by digest) and `requests` are the cluster's.

pub const CF_REPOS: &str = "repos";
pub const CF_MANIFESTS: &str = "manifests";
pub const CF_TAGS: &str = "tags";
pub const CF_DIGEST_TAGS: &str = "digest_tags";
pub const CF_REFERRERS: &str = "referrers";
pub const CF_BLOBS: &str = "blobs";
pub const CF_REPO_BLOBS: &str = "repo_blobs";
/// Consensus bookkeeping (applied log id, membership), written in the same
/// batch as the data it describes.
pub const CF_SYS: &str = "sys";
/// Identities, scope maps, tokens, signing keys, access settings; keys are
/// `kind-letter \0 name` (see the `AUTH_*` prefixes).
pub const CF_AUTH: &str = "auth";

/// Request ids recently applied and their answers (see `requests`).
pub const CF_REQUESTS: &str = "requests";

/// Registry records, by (lower-case) name: the cluster's.
pub const CF_REGISTRIES: &str = "registries";
/// `digest \0 registry` -> how many of the registry's repositories link
/// the blob: which registries' replica sets decide where a blob belongs.
pub const CF_BLOB_LINKS: &str = "blob_links";

/// Files regions are to delete: `region \0 digest` (see `gc`).
pub const CF_SWEEPS: &str = "sweeps";

/// The recycle bin of soft delete: `registry \0 repo \0 digest` (see
/// `lifecycle`).
pub const CF_DELETED: &str = "deleted";

/// Webhooks, their delivery log and queue, and the waits behind
/// `replicated` events (see `webhooks`).
pub const CF_WEBHOOKS: &str = "webhooks";
pub const CF_WEBHOOK_LOG: &str = "webhook_log";
pub const CF_WEBHOOK_QUEUE: &str = "webhook_queue";
pub const CF_IMAGE_WAITS: &str = "image_waits";
pub const CF_BLOB_WAITS: &str = "blob_waits";

/// Storage counters, GiB-days and operations per registry (see `usage`).
pub const CF_USAGE: &str = "usage";

/// Build task runs and their next number, and the queued or running
/// ones (see `tasks`).
pub const CF_RUNS: &str = "runs";
pub const CF_RUNS_ACTIVE: &str = "runs_active";

/// Stored tasks, and the base images their last runs were built from
/// (see `stored_tasks`).
pub const CF_TASKS: &str = "tasks";
pub const CF_TASK_BASES: &str = "task_bases";
/// A registry's task secrets, sealed with the cluster key.
pub const CF_RUN_SECRETS: &str = "run_secrets";

/// Linked blobs by holder count (see `holders`): derived from
/// `CF_BLOBS`, so left out of snapshots and rebuilt from it.
pub const CF_BLOB_HOLDERS: &str = "blob_holders";

/// Column families derived from the others: opened with them, never
/// sent in a snapshot.
pub const DERIVED_CFS: [&str; 1] = [CF_BLOB_HOLDERS];

/// Every column family; snapshots name them (see `snapshot`).
pub const ALL_CFS: [&str; 25] = [
    CF_REPOS,
    CF_MANIFESTS,
    CF_TAGS,
    CF_DIGEST_TAGS,
    CF_REFERRERS,
    CF_BLOBS,
    CF_REPO_BLOBS,
    CF_SYS,
    CF_AUTH,
    CF_REQUESTS,
    CF_REGISTRIES,
    CF_BLOB_LINKS,
    CF_SWEEPS,
    CF_DELETED,
    CF_WEBHOOKS,
    CF_WEBHOOK_LOG,
    CF_WEBHOOK_QUEUE,
    CF_IMAGE_WAITS,
    CF_BLOB_WAITS,
    CF_USAGE,
    CF_RUNS,
    CF_RUNS_ACTIVE,
    CF_TASKS,
    CF_TASK_BASES,
    CF_RUN_SECRETS,
];

/// Column families whose keys start with a registry's prefix.
pub const REGISTRY_SCOPED_CFS: [&str; 17] = [
    CF_REPOS,
    CF_MANIFESTS,
    CF_TAGS,
    CF_DIGEST_TAGS,
    CF_REFERRERS,
    CF_REPO_BLOBS,
    CF_AUTH,
    CF_DELETED,
    CF_WEBHOOKS,
    CF_WEBHOOK_LOG,
    CF_WEBHOOK_QUEUE,
    CF_USAGE,
    CF_RUNS,
    CF_RUNS_ACTIVE,
    CF_TASKS,
    CF_TASK_BASES,
    CF_RUN_SECRETS,
];

pub const AUTH_PRINCIPAL: &str = "p";
pub const AUTH_SCOPE_MAP: &str = "s";
pub const AUTH_TOKEN: &str = "t";
/// Signing keys, `k \0 <created_ms, 20 digits> \0 kid`: oldest first.
pub const AUTH_KEY: &str = "k";
pub const AUTH_ADMIN: &str = "admin";
pub const AUTH_ACCESS: &str = "access";

/// Column families whose keys start with a repository name.
pub const REPO_SCOPED_CFS: [&str; 5] = [
    CF_MANIFESTS,
    CF_TAGS,
    CF_DIGEST_TAGS,
    CF_REFERRERS,
    CF_REPO_BLOBS,
];

/// `registry \0` — the prefix of every key of one registry. Registry
/// names are alphanumerics, so they never contain NUL.
pub fn registry_prefix(registry: &str) -> Vec<u8> {
    let mut k = registry.as_bytes().to_vec();
    k.push(0);
    k
}

/// The last NUL-separated part of a key.
pub fn last_part(key: &[u8]) -> String {
    let start = key.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&key[start..]).into_owned()
}
