//! What a finished run built and from what: for each build step that
//! succeeded, the images it tagged and the base images of its Dockerfile
//! (the runtime one, of the stage built, and the others), with digests
//! read from this cluster's state for images it serves; and the block the
//! run's log ends with, as the cloud registry prints it.

use std::path::Path;

use wharf_meta::{BuiltImage, ImageRef, RunArtifacts, StepStatus};
use wharf_tasks::build::BuildArgs;
use wharf_tasks::{Action, TaskSpec};

use crate::state::App;

/// `host/repo:tag@digest` split as the engine splits it: the first part
/// is a host when it has a `.` or a `:` or is `localhost`; otherwise the
/// image is Docker Hub's (`library/` for a one-part name).
pub fn split(reference: &str) -> ImageRef {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (reference, None),
    };
    let (registry, path) = match rest.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), path.to_string())
        }
        _ => ("docker.io".to_string(), rest.to_string()),
    };
    let (repository, tag) = match path.rfind(':') {
        Some(i) => (path[..i].to_string(), Some(path[i + 1..].to_string())),
        None if digest.is_none() => (path, Some("latest".to_string())),
        None => (path, None),
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    ImageRef {
        registry,
        repository,
        tag,
        digest,
        cluster_registry: None,
    }
}

/// The registry of this cluster a host serves: `N.<registry_domain>` is
/// registry N (when it exists); a member node's address is the default
/// registry.
fn cluster_registry(app: &App, host: &str) -> Option<String> {
    if let Some(Ok(name)) = crate::tenant::registry_of_host(host, app.registry_domain.as_deref()) {
        let known = app.consensus.meta().registry_record(name.as_str());
        return matches!(known, Ok(Some(_))).then(|| name.as_str().to_string());
    }
    app.consensus
        .members()
        .iter()
        .any(|(_, n)| super::host_of(&n.http) == host)
        .then(|| wharf_meta::DEFAULT_REGISTRY.to_string())
}

/// `reference`, with the registry of this cluster serving it and its
/// digest there.
fn resolve(app: &App, reference: &str) -> ImageRef {
    let mut image = split(reference);
    image.cluster_registry = cluster_registry(app, &image.registry);
    if let (None, Some(registry), Some(tag)) = (&image.digest, &image.cluster_registry, &image.tag)
    {
        let meta = app.consensus.meta();
        if let Ok(Some(t)) = meta.registry(registry).tag(&image.repository, tag) {
            image.digest = Some(t.digest);
        }
    }
    image
}

/// The artifacts of a run whose steps ended as `statuses` (in the file's
/// order), built from `context` (its directory, when it had one).
pub fn collect(
    app: &App,
    spec: &TaskSpec,
    statuses: &[StepStatus],
    context: Option<&Path>,
    git_commit: Option<String>,
) -> RunArtifacts {
    let mut images = Vec::new();
    for (step, status) in spec.steps.iter().zip(statuses) {
        let (Action::Build(text), StepStatus::Succeeded) = (&step.action, status) else {
            continue;
        };
        let Ok(args) = BuildArgs::parse(text) else {
            continue;
        };
        let (runtime, buildtime) = context
            .and_then(|dir| bases(dir, &args))
            .unwrap_or((None, Vec::new()));
        for tag in &args.tags {
            images.push(BuiltImage {
                image: resolve(app, tag),
                runtime: runtime.as_ref().map(|r| resolve(app, r)),
                buildtime: buildtime.iter().map(|b| resolve(app, b)).collect(),
            });
        }
    }
    RunArtifacts { images, git_commit }
}

/// The base images of a build step's Dockerfile in `dir`.
fn bases(dir: &Path, args: &BuildArgs) -> Option<(Option<String>, Vec<String>)> {
    let root = dir.join(wharf_tasks::build::inside(&args.context).ok()?);
    let file =
        root.join(wharf_tasks::build::inside(args.file.as_deref().unwrap_or("Dockerfile")).ok()?);
    let text = std::fs::read_to_string(file).ok()?;
    let stages = wharf_tasks::dockerfile::stages(&text, &args.build_args).ok()?;
    wharf_tasks::dockerfile::dependencies(&stages, args.target.as_deref()).ok()
}

fn image_lines(out: &mut String, indent: &str, i: &ImageRef) {
    out.push_str(&format!("{indent}registry: {}\n", i.registry));
    out.push_str(&format!("{indent}repository: {}\n", i.repository));
    if let Some(t) = &i.tag {
        out.push_str(&format!("{indent}tag: {t}\n"));
    }
    if let Some(d) = &i.digest {
        out.push_str(&format!("{indent}digest: {d}\n"));
    }
}

/// The base images that are also outputs of the same run: a base-image
/// trigger on them would make every build trigger the next.
pub fn loops(a: &RunArtifacts) -> Vec<String> {
    let key = |i: &ImageRef| {
        (
            i.cluster_registry.clone(),
            i.repository.clone(),
            i.tag.clone(),
        )
    };
    let outputs: Vec<_> = a.images.iter().map(|b| key(&b.image)).collect();
    let mut out: Vec<String> = a
        .images
        .iter()
        .flat_map(|b| b.runtime.iter().chain(&b.buildtime))
        .filter(|i| i.cluster_registry.is_some() && outputs.contains(&key(i)))
        .map(|i| format!("{}:{}", i.repository, i.tag.as_deref().unwrap_or("")))
        .collect();
    out.dedup();
    out
}

/// The dependency block a build's log ends with.
pub fn block(a: &RunArtifacts) -> String {
    if a.images.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for l in loops(a) {
        out.push_str(&format!(
            "\n{l} is both a base image and an output of this build: \
             it is not watched for base-image updates (each build would trigger the next)\n"
        ));
    }
    out.push_str("\nThe following dependencies were found:\n");
    for b in &a.images {
        out.push_str("- image:\n");
        image_lines(&mut out, "    ", &b.image);
        if let Some(r) = &b.runtime {
            out.push_str("  runtime-dependency:\n");
            image_lines(&mut out, "    ", r);
        }
        if !b.buildtime.is_empty() {
            out.push_str("  buildtime-dependency:\n");
        }
        for d in &b.buildtime {
            out.push_str("  - ");
            let mut lines = String::new();
            image_lines(&mut lines, "", d);
            out.push_str(&lines.trim_end().replace('\n', "\n    "));
            out.push('\n');
        }
        if let Some(c) = &a.git_commit {
            out.push_str(&format!("  git:\n    git-head-revision: {c}\n"));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_the_engine_splits_them() {
        let i = split("127.0.0.1:7301/tools/busybox:v1");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_deref()),
            ("127.0.0.1:7301", "tools/busybox", Some("v1"))
        );
        let i = split("busybox");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        let i = split("localhost/app@sha256:ab");
        assert_eq!(
            (
                i.registry.as_str(),
                i.repository.as_str(),
                i.tag,
                i.digest.as_deref()
            ),
            ("localhost", "app", None, Some("sha256:ab"))
        );
    }

    #[test]
    fn the_block_names_each_image_with_its_dependencies() {
        let image = |repo: &str, tag: &str, d: &str| ImageRef {
            registry: "r.example:7301".into(),
            repository: repo.into(),
            tag: Some(tag.into()),
            digest: Some(format!("sha256:{d}")),
            cluster_registry: Some("default".into()),
        };
        let a = RunArtifacts {
            images: vec![BuiltImage {
                image: image("app", "ca1", "11"),
                runtime: Some(image("base", "v1", "22")),
                buildtime: vec![image("sdk", "v2", "33")],
            }],
            git_commit: Some("abc123".into()),
        };
        assert_eq!(
            block(&a),
            "\nThe following dependencies were found:\n\
             - image:\n    registry: r.example:7301\n    repository: app\n    tag: ca1\n    digest: sha256:11\n\
             \x20 runtime-dependency:\n    registry: r.example:7301\n    repository: base\n    tag: v1\n    digest: sha256:22\n\
             \x20 buildtime-dependency:\n  - registry: r.example:7301\n    repository: sdk\n    tag: v2\n    digest: sha256:33\n\
             \x20 git:\n    git-head-revision: abc123\n\n"
        );
        assert_eq!(
            block(&RunArtifacts::default()),
            "",
            "nothing built, no block"
        );
    }

    #[test]
    fn an_output_that_is_its_own_base_is_named_as_a_loop() {
        let image = |repo: &str| ImageRef {
            registry: "r:1".into(),
            repository: repo.into(),
            tag: Some("v1".into()),
            digest: None,
            cluster_registry: Some("default".into()),
        };
        let a = RunArtifacts {
            images: vec![BuiltImage {
                image: image("base"),
                runtime: Some(image("base")),
                buildtime: vec![image("sdk")],
            }],
            git_commit: None,
        };
        assert_eq!(loops(&a), ["base:v1"]);
        assert!(block(&a).contains("base:v1 is both a base image and an output"));
    }
}
