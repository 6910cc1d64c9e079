//! A `build` step's arguments, the `docker build` flags the cloud
//! registry's task files and `az acr build` take, read into what an
//! executor needs; and the check that refuses a task whose output is one
//! of its own base images (each build would trigger the next).

use std::collections::BTreeMap;

use crate::error::SpecError;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildArgs {
    /// `-t`/`--tag`: the images the build produces.
    pub tags: Vec<String>,
    /// `-f`/`--file`, relative to the context; `Dockerfile` when absent.
    pub file: Option<String>,
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build.
    pub target: Option<String>,
    /// `--platform`: `linux/amd64`.
    pub platform: Option<String>,
    pub no_cache: bool,
    /// The context: `.` (the run's), a subdirectory, or a URL.
    pub context: String,
}

fn bad(detail: impl Into<String>) -> SpecError {
    SpecError::Build(detail.into())
}

impl BuildArgs {
    /// Read `args` as a shell would split them (quotes and escapes).
    pub fn parse(args: &str) -> Result<BuildArgs, SpecError> {
        let words =
            shlex::split(args).ok_or_else(|| bad(format!("unbalanced quotes in {args:?}")))?;
        let mut out = BuildArgs::default();
        let mut context = None;
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (word.clone(), None),
            };
            let takes_value = matches!(
                flag.as_str(),
                "-t" | "--tag" | "-f" | "--file" | "--build-arg" | "--target" | "--platform"
            );
            let value = if takes_value {
                match inline {
                    Some(v) => v,
                    None => words
                        .next()
                        .ok_or_else(|| bad(format!("{flag} needs a value")))?,
                }
            } else {
                String::new()
            };
            match flag.as_str() {
                "-t" | "--tag" => out.tags.push(value),
                "-f" | "--file" => out.file = Some(value),
                "--build-arg" => {
                    let Some((k, v)) = value.split_once('=') else {
                        return Err(bad(format!("--build-arg {value} is not NAME=value")));
                    };
                    out.build_args.insert(k.to_string(), v.to_string());
                }
                "--target" => out.target = Some(value),
                "--platform" => out.platform = Some(value),
                "--no-cache" => out.no_cache = true,
                // Every base image is pulled anyway.
                "--pull" => {}
                f if f.starts_with('-') && f.len() > 1 => {
                    return Err(bad(format!(
                        "{f} is not a build flag this registry takes \
                         (-t, -f, --build-arg, --target, --platform, --no-cache, --pull)"
                    )))
                }
                _ if context.is_some() => {
                    return Err(bad(format!(
                        "two contexts: {:?} and {word:?}",
                        context.unwrap_or_default()
                    )))
                }
                _ => context = Some(word),
            }
        }
        out.context = context.ok_or_else(|| bad("no context (the last argument, such as `.`)"))?;
        if out.tags.iter().any(|t| t.is_empty()) {
            return Err(bad("an empty -t"));
        }
        Ok(out)
    }
}

/// Whether a build context names a remote source the builder fetches
/// itself rather than a directory of the run's.
pub fn is_remote(context: &str) -> bool {
    ["http://", "https://", "git://", "git@", "ssh://"]
        .iter()
        .any(|p| context.starts_with(p))
}

/// `path` as a path inside the run's directory: relative, and never
/// climbing out of it (a build must not read the agent's own files).
pub fn inside(path: &str) -> Result<&std::path::Path, SpecError> {
    let p = std::path::Path::new(path);
    let climbs = p.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if climbs {
        return Err(bad(format!(
            "{path:?} is not a path inside the build context (relative, without ..)"
        )));
    }
    Ok(p)
}

/// `image` with `:latest` when it names neither a tag nor a digest.
pub fn with_tag(image: &str) -> String {
    let name_end = image.rfind('/').map_or(0, |i| i + 1);
    let last = &image[name_end..];
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The first of `outputs` that is also one of `bases`: a task building it
/// would trigger itself with every build.
pub fn feeds_itself(outputs: &[String], bases: &[String]) -> Option<String> {
    let bases: Vec<String> = bases.iter().map(|b| with_tag(b)).collect();
    outputs
        .iter()
        .map(|o| with_tag(o))
        .find(|o| bases.contains(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_of_a_build_step_are_read_as_a_shell_splits_them() {
        let b = BuildArgs::parse(
            "-t reg/app:cf1 --tag=reg/app:latest -f docker/Dockerfile.prod \
             --build-arg 'GREETING=hello world' --build-arg=V=2 --target runtime \
             --platform linux/amd64 --no-cache --pull ./src",
        )
        .unwrap();
        assert_eq!(b.tags, ["reg/app:cf1", "reg/app:latest"]);
        assert_eq!(b.file.as_deref(), Some("docker/Dockerfile.prod"));
        assert_eq!(b.build_args["GREETING"], "hello world");
        assert_eq!(b.build_args["V"], "2");
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(b.platform.as_deref(), Some("linux/amd64"));
        assert!(b.no_cache);
        assert_eq!(b.context, "./src");
    }

    #[test]
    fn bad_build_arguments_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("-t app:v1", "no context"),
            ("-t", "-t needs a value"),
            ("--squash .", "--squash is not a build flag"),
            ("--build-arg X .", "--build-arg X is not NAME=value"),
            (". other", "two contexts"),
            ("-t 'app .", "unbalanced quotes"),
        ];
        for (args, want) in cases {
            let got = BuildArgs::parse(args).unwrap_err().to_string();
            assert!(got.contains(want), "{args:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn an_output_that_is_a_base_image_is_found_whatever_the_default_tag() {
        let bases = vec![
            "localhost:5000/base".to_string(),
            "localhost:5000/sdk:v2".to_string(),
        ];
        assert_eq!(
            feeds_itself(&["localhost:5000/base:latest".into()], &bases),
            Some("localhost:5000/base:latest".into())
        );
        assert_eq!(
            feeds_itself(&["localhost:5000/sdk:v3".into()], &bases),
            None
        );
        assert_eq!(with_tag("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(with_tag("app@sha256:ab"), "app@sha256:ab");
    }

    #[test]
    fn paths_stay_inside_the_context() {
        assert!(inside(".").is_ok());
        assert!(inside("src/app").is_ok());
        assert!(inside("./docker/Dockerfile").is_ok());
        for p in ["/etc", "../up", "src/../../up"] {
            let err = inside(p).unwrap_err().to_string();
            assert!(
                err.contains("not a path inside the build context"),
                "{p}: {err}"
            );
        }
        assert!(is_remote("https://example.com/repo.git#main"));
        assert!(!is_remote("./https"));
    }
}
