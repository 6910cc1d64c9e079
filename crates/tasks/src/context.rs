//! Build contexts as archives: a local directory packed into a tar.gz the
//! way `docker build` sends one (its `.dockerignore` honoured, measured
//! before anything is written so an oversized context is refused before
//! its upload), and an archive unpacked into a run's directory with every
//! entry kept inside it and the bytes it may write bounded.
//!
//! `.dockerignore` follows moby's rules: a line is trimmed, `#` starts a
//! comment, `!` makes an exception; a pattern is cleaned (`/foo`, `./foo`
//! and `foo/` all mean `foo`) and matches a path or any of its parents;
//! `*` and `?` stop at `/`, `**` crosses directories; the last matching
//! line decides. The Dockerfile and `.dockerignore` itself are always sent
//! (the builder needs them whatever the file says).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ContextError {
    #[error(".dockerignore line {line}: {detail}")]
    Ignore { line: usize, detail: String },
    #[error("the build context is {size} bytes; the limit is {limit} bytes (list what the build does not need in .dockerignore)")]
    TooLarge { size: u64, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("build context {0}")]
    Source(String),
    #[error("reading the context archive: {0}")]
    Archive(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    exception: bool,
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

/// `pattern` as moby cleans it: no leading `/` or `./`, no trailing `/`,
/// `a//b` and `a/./b` collapsed.
fn clean(pattern: &str) -> String {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    parts.join("/")
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Result<IgnoreRules, ContextError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                return Err(ContextError::Ignore {
                    line: i + 1,
                    detail: format!("{line:?} names no path"),
                });
            }
            let glob: Glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ContextError::Ignore {
                    line: i + 1,
                    detail: e.kind().to_string(),
                })?;
            rules.push(Rule {
                matcher: glob.compile_matcher(),
                exception,
            });
        }
        Ok(IgnoreRules { rules })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            // A pattern matches the path or any directory above it.
            let mut hit = rule.matcher.is_match(path);
            let mut at = path;
            while !hit {
                match at.rfind('/') {
                    Some(i) => {
                        at = &at[..i];
                        hit = rule.matcher.is_match(at);
                    }
                    None => break,
                }
            }
            if hit {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }
}

/// What a local context holds once `.dockerignore` is applied.
#[derive(Debug, Default)]
pub struct Listing {
    /// Paths relative to the context, `/`-separated, in a stable order.
    pub entries: Vec<String>,
    /// Regular files' bytes.
    pub bytes: u64,
}

/// The entries of context `dir` that would be sent. `always` (the
/// Dockerfile's path in the context) is sent even when ignored.
pub fn list(dir: &Path, always: &str) -> Result<Listing, ContextError> {
    let ignore_file = dir.join(".dockerignore");
    let rules = match std::fs::read_to_string(&ignore_file) {
        Ok(text) => IgnoreRules::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(e) => return Err(io(&ignore_file)(e)),
    };
    let always = clean(always);
    let mut out = Listing::default();
    walk(dir, "", &rules, &always, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    rel: &str,
    rules: &IgnoreRules,
    always: &str,
    out: &mut Listing,
) -> Result<(), ContextError> {
    let here = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .map_err(io(&here))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io(&here))?;
    names.sort();
    for name in names {
        let name = name.to_string_lossy();
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let meta = std::fs::symlink_metadata(&full).map_err(io(&full))?;
        let kept = !rules.excludes(&path) || path == always || path == ".dockerignore";
        if meta.is_dir() {
            // An excluded directory may still hold an exception's files.
            if kept || rules.has_exceptions() || always.starts_with(&format!("{path}/")) {
                if kept {
                    out.entries.push(path.clone());
                }
                walk(root, &path, rules, always, out)?;
            }
        } else if kept {
            if meta.is_file() {
                out.bytes += meta.len();
            }
            out.entries.push(path);
        }
    }
    Ok(())
}

/// Pack `listing` of `dir` as a tar.gz into `to`. `progress` is told the
/// file bytes written so far.
pub fn pack(
    dir: &Path,
    listing: &Listing,
    to: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<(), ContextError> {
    let gz = flate2::write::GzEncoder::new(to, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    // A symlink is sent as a symlink, as the builder sends it.
    tar.follow_symlinks(false);
    let mut done = 0;
    for rel in &listing.entries {
        let full = dir.join(rel);
        tar.append_path_with_name(&full, rel).map_err(io(&full))?;
        if let Ok(m) = std::fs::symlink_metadata(&full) {
            if m.is_file() {
                done += m.len();
                progress(done);
            }
        }
    }
    let gz = tar.into_inner().map_err(io(dir))?;
    gz.finish().map_err(io(dir))?.flush().map_err(io(dir))?;
    Ok(())
}

/// `e` with its causes: tar's errors name the entry, their source why.
fn archive_error(e: std::io::Error) -> ContextError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    ContextError::Archive(text)
}

/// A reader that fails once more than `limit` bytes came through it.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "the unpacked context is over the limit of {} bytes",
                self.limit
            ))
        })?;
        Ok(n)
    }
}

/// Unpack a tar or tar.gz from `from` into `dest`, writing at most
/// `limit` bytes of archive. Entries that would land outside `dest`
/// (absolute paths, `..`, through a symlink) are refused.
pub fn unpack(from: impl Read, dest: &Path, limit: u64) -> Result<(), ContextError> {
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut head = std::io::BufReader::new(from);
    let gzipped = {
        use std::io::BufRead;
        let peek = head.fill_buf().map_err(io(dest))?;
        peek.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(head))
    } else {
        Box::new(head)
    };
    let bounded = Bounded {
        inner: reader,
        left: limit,
        limit,
    };
    let mut archive = tar::Archive::new(bounded);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(archive_error)?;
    for entry in entries {
        let mut entry = entry.map_err(archive_error)?;
        // `unpack_in` refuses a path outside `dest` and writing through a
        // symlink that leads out of it.
        let inside = entry.unpack_in(dest).map_err(archive_error)?;
        if !inside {
            let path = entry.path().map(|p| p.display().to_string());
            return Err(ContextError::Archive(format!(
                "entry {} points outside the context",
                path.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Where a run's context comes from, as its record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An archive the client uploaded: the OCI artifact (manifest digest)
    /// in `repository` of the run's registry whose one layer it is.
    Upload { repository: String, digest: String },
    /// `URL#ref:subdir`: a repository any `git clone` reaches, at `ref`
    /// (its default branch when empty), built from `subdir`.
    Git {
        url: String,
        reference: Option<String>,
        subdir: Option<String>,
    },
    /// A tar or tar.gz at an http(s) URL.
    Archive { url: String },
}

/// The scheme of an uploaded context in a run's record.
pub const UPLOAD_SCHEME: &str = "oci://";

impl Source {
    pub fn parse(text: &str) -> Result<Source, ContextError> {
        let bad = |why: &str| ContextError::Source(format!("{text:?}: {why}"));
        if let Some(rest) = text.strip_prefix(UPLOAD_SCHEME) {
            let (repository, digest) = rest
                .split_once('@')
                .ok_or_else(|| bad("an upload is oci://REPOSITORY@DIGEST"))?;
            return Ok(Source::Upload {
                repository: repository.to_string(),
                digest: digest.to_string(),
            });
        }
        let (url, fragment) = match text.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (text, None),
        };
        let path = url.split(['?']).next().unwrap_or(url);
        let archive = [".tar.gz", ".tgz", ".tar"]
            .iter()
            .any(|e| path.ends_with(e));
        let http = url.starts_with("http://") || url.starts_with("https://");
        if archive && http {
            if fragment.is_some() {
                return Err(bad("an archive URL takes no #ref:subdir"));
            }
            return Ok(Source::Archive {
                url: url.to_string(),
            });
        }
        let git = http
            || ["file://", "git://", "ssh://", "git@"]
                .iter()
                .any(|p| url.starts_with(p));
        if !git {
            return Err(bad(
                "not a context this registry fetches: give a local directory, \
                 a git URL (http(s)://, file://, git://, ssh://, git@; URL#ref:subdir) \
                 or a tar.gz URL",
            ));
        }
        let (reference, subdir) = match fragment.map(|f| f.split_once(':').unwrap_or((f, ""))) {
            Some((r, d)) => (
                (!r.is_empty()).then(|| r.to_string()),
                (!d.is_empty()).then(|| d.to_string()),
            ),
            None => (None, None),
        };
        if let Some(r) = &reference {
            // Passed to git as an argument: never an option.
            if r.starts_with('-') || r.contains("..") || r.chars().any(char::is_whitespace) {
                return Err(bad("the ref is not a branch, tag or commit name"));
            }
        }
        if let Some(d) = &subdir {
            crate::build::inside(d).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(Source::Git {
            url: url.to_string(),
            reference,
            subdir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).unwrap()
    }

    #[test]
    fn dockerignore_patterns_match_as_moby_matches_them() {
        let r = rules(
            "# build output\n/target\nnode_modules/\n*.log\n**/*.tmp\n!keep.log\ndocs/*/draft\n",
        );
        for p in [
            "target",
            "target/debug/app",
            "node_modules/x/y.js",
            "a.log",
            "x/y/z.tmp",
            "z.tmp",
            "docs/v1/draft",
        ] {
            assert!(r.excludes(p), "{p} excluded");
        }
        for p in [
            "keep.log",
            "src/a.log",
            "src/main.rs",
            "docs/v1/v2/draft",
            "targets",
        ] {
            assert!(!r.excludes(p), "{p} kept");
        }
        // The last matching line decides.
        let r = rules("!important.txt\n*.txt\n");
        assert!(r.excludes("important.txt"));
        let r = rules("secrets\n!secrets/public.pem\n");
        assert!(r.excludes("secrets/private.pem"));
        assert!(!r.excludes("secrets/public.pem"));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let err = IgnoreRules::parse("ok\n\n[unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(".dockerignore line 3:"), "{err}");
        let err = IgnoreRules::parse("!\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    fn tree(dir: &Path, files: &[(&str, &str)]) {
        for (path, body) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
    }

    #[test]
    fn a_packed_context_unpacks_to_what_dockerignore_lets_through() {
        let src = tempfile::tempdir().unwrap();
        tree(
            src.path(),
            &[
                ("Dockerfile", "FROM base\n"),
                (
                    ".dockerignore",
                    "secrets\n!secrets/public.pem\n*.log\nDockerfile\n",
                ),
                ("src/main.sh", "echo hi\n"),
                ("build.log", "noise"),
                ("secrets/private.pem", "KEY"),
                ("secrets/public.pem", "CERT"),
            ],
        );
        std::os::unix::fs::symlink("src/main.sh", src.path().join("entry")).unwrap();
        let listing = list(src.path(), "./Dockerfile").unwrap();
        assert_eq!(
            listing.entries,
            [
                ".dockerignore",
                "Dockerfile",
                "entry",
                "secrets/public.pem",
                "src",
                "src/main.sh"
            ]
        );
        let mut archive = Vec::new();
        let mut seen = 0;
        pack(src.path(), &listing, &mut archive, |n| seen = n).unwrap();
        assert_eq!(seen, listing.bytes);
        let dest = tempfile::tempdir().unwrap();
        unpack(&archive[..], dest.path(), 1 << 20).unwrap();
        let read = |p: &str| std::fs::read_to_string(dest.path().join(p)).ok();
        assert_eq!(read("src/main.sh").as_deref(), Some("echo hi\n"));
        assert_eq!(
            read("entry").as_deref(),
            Some("echo hi\n"),
            "the symlink kept"
        );
        assert_eq!(read("secrets/public.pem").as_deref(), Some("CERT"));
        assert_eq!(read("secrets/private.pem"), None);
        assert_eq!(read("build.log"), None);
        assert_eq!(
            read("Dockerfile").as_deref(),
            Some("FROM base\n"),
            "always sent"
        );
    }

    #[test]
    fn an_archive_cannot_write_outside_the_run_or_past_its_limit() {
        // An entry named ../escape, written by hand (tar::Builder refuses).
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = b"../escape";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        let mut raw = header.as_bytes().to_vec();
        raw.extend_from_slice(b"evil");
        raw.resize(1024 + 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ctx");
        let err = unpack(&raw[..], &dest, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
        assert!(!dir.path().join("escape").exists());

        let src = tempfile::tempdir().unwrap();
        tree(src.path(), &[("big", &"x".repeat(100_000))]);
        let listing = list(src.path(), "Dockerfile").unwrap();
        let mut archive = Vec::new();
        pack(src.path(), &listing, &mut archive, |_| {}).unwrap();
        let err = unpack(&archive[..], &dir.path().join("small"), 10_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the limit of 10000 bytes"), "{err}");
    }

    #[test]
    fn a_context_names_an_upload_a_git_repository_or_an_archive() {
        assert_eq!(
            Source::parse("oci://wharf-build-contexts@sha256:ab").unwrap(),
            Source::Upload {
                repository: "wharf-build-contexts".into(),
                digest: "sha256:ab".into()
            }
        );
        assert_eq!(
            Source::parse("https://git.example.com/app.git#v1.2:services/web").unwrap(),
            Source::Git {
                url: "https://git.example.com/app.git".into(),
                reference: Some("v1.2".into()),
                subdir: Some("services/web".into()),
            }
        );
        assert_eq!(
            Source::parse("file:///srv/git/app.git").unwrap(),
            Source::Git {
                url: "file:///srv/git/app.git".into(),
                reference: None,
                subdir: None
            }
        );
        assert_eq!(
            Source::parse("https://example.com/src.tar.gz").unwrap(),
            Source::Archive {
                url: "https://example.com/src.tar.gz".into()
            }
        );
        for (text, want) in [
            ("ftp://x/y", "not a context this registry fetches"),
            (
                "https://x/a.git#--upload-pack=evil",
                "not a branch, tag or commit",
            ),
            ("https://x/a.git#main:../../etc", "not a path inside"),
            ("https://x/a.tgz#main", "takes no #ref"),
        ] {
            let err = Source::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
