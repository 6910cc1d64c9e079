//! What a build is made from: the `FROM` lines of a Dockerfile, read the
//! way the builder reads them (line continuations, comments, the `escape`
//! directive, `ARG`s declared before the first `FROM` with their defaults
//! and `--build-arg` values, `--platform=`, `AS name`), so that a run can
//! record the base images it was built from (the base-image trigger) and
//! refuse a task that would trigger itself, before anything is built.
//!
//! Only what decides the base images is read; every other instruction is
//! the builder's business, and its errors come from the builder with their
//! line. A malformed `FROM` is refused here, with its line.

use std::collections::BTreeMap;

use thiserror::Error;

/// Dockerfiles larger than this are not read (the builder's own limit is
/// larger, but a base image is named in the first lines).
pub const DOCKERFILE_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The image reference, variables substituted.
    pub image: String,
    /// `AS name`, lower-cased as the builder matches it.
    pub name: Option<String>,
    pub platform: Option<String>,
    /// The 1-based line the `FROM` starts on.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DockerfileError {
    #[error("the Dockerfile is {0} bytes; the limit is {DOCKERFILE_MAX_BYTES}")]
    TooLarge(usize),
    #[error("the Dockerfile has no FROM instruction")]
    NoFrom,
    #[error("Dockerfile line {line}: {detail}")]
    Line { line: usize, detail: String },
    #[error("the Dockerfile has no stage named {target:?} (its named stages: {named:?})")]
    Target { target: String, named: Vec<String> },
}

/// One logical instruction: its keyword (upper case), the rest, its line.
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

impl Instruction {
    fn new(text: &str, line: usize) -> Instruction {
        let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
            line,
        }
    }
}

/// Join continued lines and drop comments and blank lines.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut current: Option<(String, usize)> = None;
    let mut directives_done = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        // Parser directives (`# escape=``) come first, before anything else.
        if !directives_done && current.is_none() {
            if let Some(d) = trimmed.strip_prefix('#') {
                if let Some((k, v)) = d.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("escape") {
                        escape = v.trim().chars().next().unwrap_or('\\');
                        continue;
                    }
                }
            }
            directives_done = true;
        }
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let (mut text_so_far, start) = current.take().unwrap_or((String::new(), line));
        if !text_so_far.is_empty() {
            text_so_far.push(' ');
        }
        text_so_far.push_str(body.trim());
        if continues {
            current = Some((text_so_far, start));
            continue;
        }
        out.push(Instruction::new(&text_so_far, start));
    }
    // A continuation on the last line ends the file's last instruction.
    if let Some((text_so_far, start)) = current {
        out.push(Instruction::new(&text_so_far, start));
    }
    out
}

/// The `n`th instruction (1-based, as the classic builder numbers its
/// `Step n/m`): its first line and its text.
pub fn instruction_at(text: &str, n: usize) -> Option<(usize, String)> {
    let ins = instructions(text).into_iter().nth(n.checked_sub(1)?)?;
    let text = if ins.args.is_empty() {
        ins.keyword
    } else {
        format!("{} {}", ins.keyword, ins.args)
    };
    Some((ins.line, text))
}

/// `$NAME`, `${NAME}`, `${NAME:-default}` from `vars`; unknown ones are
/// empty, as the builder makes them.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                out.push_str(&rest[at..]);
                return out;
            };
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match vars.get(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => out.push_str(default.unwrap_or("")),
            }
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else if let Some(v) = vars.get(&after[..len]) {
                out.push_str(v);
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Every stage of `dockerfile`, with `build_args` (`--build-arg`) over the
/// defaults of the `ARG`s declared before the first `FROM`.
pub fn stages(
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<Vec<Stage>, DockerfileError> {
    if dockerfile.len() > DOCKERFILE_MAX_BYTES {
        return Err(DockerfileError::TooLarge(dockerfile.len()));
    }
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut stages = Vec::new();
    for ins in instructions(dockerfile) {
        let bad = |detail: String| DockerfileError::Line {
            line: ins.line,
            detail,
        };
        match ins.keyword.as_str() {
            // Only the ARGs before the first FROM are in scope of FROM.
            "ARG" if stages.is_empty() => {
                for decl in ins.args.split_whitespace() {
                    let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
                    let value = build_args
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| default.trim_matches('"').to_string());
                    vars.insert(name.to_string(), value);
                }
            }
            "FROM" => {
                let mut platform = None;
                let mut words = Vec::new();
                for w in ins.args.split_whitespace() {
                    if let Some(p) = w.strip_prefix("--platform=") {
                        platform = Some(substitute(p, &vars));
                    } else if w.starts_with("--") {
                        return Err(bad(format!("FROM does not take {w}")));
                    } else {
                        words.push(w);
                    }
                }
                let (image, name) = match words.as_slice() {
                    [image] => (image, None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (image, Some(name.to_ascii_lowercase()))
                    }
                    [] => return Err(bad("FROM needs an image".into())),
                    _ => {
                        return Err(bad(format!(
                            "FROM takes an image and optionally AS name, not {:?}",
                            ins.args
                        )))
                    }
                };
                let image = substitute(image, &vars);
                if image.is_empty() {
                    return Err(bad(format!(
                        "FROM {} names no image once its variables are substituted \
                         (pass them with --build-arg)",
                        words[0]
                    )));
                }
                stages.push(Stage {
                    image,
                    name,
                    platform,
                    line: ins.line,
                });
            }
            _ if stages.is_empty() && !ins.keyword.is_empty() && ins.keyword != "ARG" => {
                return Err(bad(format!(
                    "{} before the first FROM (only ARG may come first)",
                    ins.keyword
                )));
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::NoFrom);
    }
    Ok(stages)
}

/// The images the build pulls: every stage's image that is not an earlier
/// stage's name, nor `scratch`, each once, in order.
pub fn base_images(stages: &[Stage]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let is_stage = stages[..i]
            .iter()
            .any(|p| p.name.as_deref() == Some(s.image.to_ascii_lowercase().as_str()));
        if is_stage || s.image == "scratch" || out.contains(&s.image) {
            continue;
        }
        out.push(s.image.clone());
    }
    out
}

/// What a build of `target` (the last stage when none) depends on: the
/// image its final stage starts from (`runtime`; none for `scratch`),
/// following stage names back to an image, and every other base image
/// pulled on the way (`buildtime`). An unknown target is an error naming
/// the stages there are.
pub fn dependencies(
    stages: &[Stage],
    target: Option<&str>,
) -> Result<(Option<String>, Vec<String>), DockerfileError> {
    let Some(last) = stages.len().checked_sub(1) else {
        return Err(DockerfileError::NoFrom);
    };
    let end = match target {
        None => last,
        Some(t) => {
            let t = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| DockerfileError::Target {
                    target: t,
                    named: stages.iter().filter_map(|s| s.name.clone()).collect(),
                })?
        }
    };
    // A stage's image names an earlier stage when that stage's name is it.
    let mut at = end;
    let runtime = loop {
        let image = stages[at].image.to_ascii_lowercase();
        match stages[..at]
            .iter()
            .rposition(|p| p.name.as_deref() == Some(image.as_str()))
        {
            Some(earlier) => at = earlier,
            None if stages[at].image == "scratch" => break None,
            None => break Some(stages[at].image.clone()),
        }
    };
    let buildtime = base_images(&stages[..=end])
        .into_iter()
        .filter(|b| Some(b) != runtime.as_ref())
        .collect();
    Ok((runtime, buildtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG REGISTRY=localhost:5000
ARG BASE_TAG="v1"

FROM --platform=$BUILDPLATFORM ${REGISTRY}/base:${BASE_TAG} AS build
ARG VERSION
RUN make \
    VERSION=$VERSION
COPY . /src

from build As Test
RUN make test

FROM ${REGISTRY}/runtime:${RUNTIME_TAG:-stable}
COPY --from=build /out /app
"#;

    #[test]
    fn a_multi_stage_file_names_its_bases_with_arguments_and_defaults() {
        let s = stages(MULTI, &args(&[])).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].image, "localhost:5000/base:v1");
        assert_eq!((s[0].name.as_deref(), s[0].line), (Some("build"), 5));
        assert_eq!(
            s[0].platform.as_deref(),
            Some(""),
            "unknown variables are empty"
        );
        assert_eq!(
            (s[1].image.as_str(), s[1].name.as_deref()),
            ("build", Some("test"))
        );
        assert_eq!(s[2].image, "localhost:5000/runtime:stable");
        assert_eq!(
            base_images(&s),
            ["localhost:5000/base:v1", "localhost:5000/runtime:stable"]
        );
        // --build-arg overrides a declared ARG's default; one no ARG
        // declares before the first FROM does not reach FROM.
        let given = args(&[("BASE_TAG", "v2"), ("RUNTIME_TAG", "edge")]);
        let s = stages(MULTI, &given).unwrap();
        assert_eq!(
            base_images(&s),
            ["localhost:5000/base:v2", "localhost:5000/runtime:stable"]
        );
        let declared = format!("ARG RUNTIME_TAG\n{MULTI}");
        let s = stages(&declared, &given).unwrap();
        assert_eq!(s[2].image, "localhost:5000/runtime:edge");
    }

    #[test]
    fn continuations_comments_and_the_escape_directive_are_read_as_the_builder_does() {
        let text =
            "# escape=`\nFROM `\n  base:v1 `\n  AS one\n# FROM commented:out\nFROM scratch\n";
        let s = stages(text, &args(&[])).unwrap();
        assert_eq!(s[0].image, "base:v1");
        assert_eq!((s[0].name.as_deref(), s[0].line), (Some("one"), 2));
        assert_eq!(base_images(&s), ["base:v1"], "scratch is no image");
    }

    #[test]
    fn a_bad_from_is_refused_with_its_line() {
        let cases: &[(&str, &str)] = &[
            ("FROM\n", "line 1: FROM needs an image"),
            ("\n\nFROM a b c\n", "line 3: FROM takes an image"),
            ("FROM --pull a\n", "line 1: FROM does not take --pull"),
            ("FROM $NOPE\n", "line 1: FROM $NOPE names no image"),
            ("RUN x\nFROM a\n", "line 1: RUN before the first FROM"),
            ("# only a comment\n", "no FROM instruction"),
        ];
        for (text, want) in cases {
            let got = stages(text, &args(&[])).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn the_runtime_base_follows_stage_names_and_the_rest_are_buildtime() {
        let s = stages(MULTI, &args(&[])).unwrap();
        let (runtime, buildtime) = dependencies(&s, None).unwrap();
        assert_eq!(runtime.as_deref(), Some("localhost:5000/runtime:stable"));
        assert_eq!(buildtime, ["localhost:5000/base:v1"]);
        // `test` is `FROM build`, which is the base image: built for
        // `--target test`, the runtime stage is never reached.
        let (runtime, buildtime) = dependencies(&s, Some("Test")).unwrap();
        assert_eq!(runtime.as_deref(), Some("localhost:5000/base:v1"));
        assert!(buildtime.is_empty(), "{buildtime:?}");
        let err = dependencies(&s, Some("nope")).unwrap_err().to_string();
        assert!(err.contains("no stage named \"nope\""), "{err}");
        assert!(err.contains("[\"build\", \"test\"]"), "{err}");
        let s = stages(
            "FROM base:v1 AS b\nFROM scratch\nCOPY --from=b /x /x\n",
            &args(&[]),
        )
        .unwrap();
        assert_eq!(
            dependencies(&s, None).unwrap(),
            (None, vec!["base:v1".to_string()])
        );
    }

    #[test]
    fn the_builders_step_numbers_name_their_lines() {
        let text = "ARG X=1\n# comment\nFROM base AS b\nRUN echo a \\\n  b\n\nrun exit 3\n";
        assert_eq!(instruction_at(text, 1), Some((1, "ARG X=1".into())));
        assert_eq!(instruction_at(text, 3), Some((4, "RUN echo a b".into())));
        assert_eq!(instruction_at(text, 4), Some((7, "RUN exit 3".into())));
        assert_eq!(instruction_at(text, 5), None);
        assert_eq!(instruction_at(text, 0), None);
    }
}
