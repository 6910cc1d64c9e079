//! The Docker engine as an executor: `cmd` steps are `docker run` of the
//! step's image with its arguments, environment, entry point and working
//! directory (the run's context mounted at `/workspace`, where they start
//! unless the step says otherwise); `build` steps are `docker build` of
//! the run's context with BuildKit; `push` steps `docker push` each image.
//! Both output streams go into the run's log as they come, and a stopped
//! step (a canceled run, a timeout) removes its container.
//!
//! Credentials are the caller's: `config_dir` is the `DOCKER_CONFIG` the
//! CLI reads (the agent writes the run's registry token there), so one
//! run's credentials are never another's and never the host user's.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::build::{inside, is_remote, BuildArgs};
use crate::runner::{Attempt, Executor, LogSink};
use crate::spec::{Action, Step, TaskSpec};

pub struct Docker {
    /// The `docker` CLI.
    pub binary: PathBuf,
    /// `DOCKER_CONFIG` for the run's commands; none: the CLI's default.
    pub config_dir: Option<PathBuf>,
    /// Containers are named `<prefix>-<step>-<random>`, so an operator
    /// sees whose they are and a stop names exactly one.
    pub name_prefix: String,
    /// The run's context: what `build .` builds and `cmd` steps see at
    /// `/workspace`. None: the run has none (a `build` step then fails).
    pub workspace: Option<PathBuf>,
    /// Build with BuildKit (needs the CLI's buildx component: `--target`
    /// then skips the stages it does not need); the classic builder when
    /// false. `buildx_available` tells which this host has.
    pub buildkit: bool,
}

/// Whether `docker` has the buildx component BuildKit builds need.
pub async fn buildx_available(binary: &std::path::Path) -> bool {
    Command::new(binary)
        .args(["buildx", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Bytes read from a container's output per chunk.
const READ_CHUNK: usize = 16 << 10;

/// Where `cmd` steps see the run's context.
const WORKSPACE_MOUNT: &str = "/workspace";

fn failed(error: String) -> Attempt {
    Attempt {
        exit_code: None,
        error: Some(error),
    }
}

impl Docker {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        if let Some(dir) = &self.config_dir {
            c.env("DOCKER_CONFIG", dir);
        }
        c
    }

    /// `docker run` arguments for a `cmd` step.
    fn run_args(
        &self,
        step: &Step,
        spec: &TaskSpec,
        text: &str,
        name: &str,
    ) -> Result<Vec<String>, String> {
        let words = shlex::split(text).ok_or_else(|| format!("unbalanced quotes in {text:?}"))?;
        let Some((image, args)) = words.split_first() else {
            return Err("the step names no image".into());
        };
        let mut out: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
        for e in spec.env.iter().chain(&step.env) {
            out.push("--env".into());
            out.push(format!("{}={}", e.name, e.value));
        }
        if let Some(ep) = &step.entry_point {
            out.push("--entrypoint".into());
            out.push(ep.clone());
        }
        if let Some(ws) = &self.workspace {
            out.push("--volume".into());
            out.push(format!("{}:{WORKSPACE_MOUNT}", ws.display()));
        }
        match (&step.working_directory, &self.workspace) {
            (Some(dir), _) => {
                out.push("--workdir".into());
                out.push(dir.clone());
            }
            (None, Some(_)) => {
                out.push("--workdir".into());
                out.push(WORKSPACE_MOUNT.into());
            }
            (None, None) => {}
        }
        out.push(image.clone());
        out.extend(args.iter().cloned());
        Ok(out)
    }

    /// `docker build` arguments for a `build` step: the context and `-f`
    /// are paths inside the run's context (or a URL the builder fetches).
    fn build_args(&self, text: &str) -> Result<Vec<String>, String> {
        let b = BuildArgs::parse(text).map_err(|e| e.to_string())?;
        let mut out: Vec<String> = vec!["build".into()];
        if self.buildkit {
            out.push("--progress=plain".into());
        }
        let context = if is_remote(&b.context) {
            b.context.clone()
        } else {
            let Some(ws) = &self.workspace else {
                return Err("this run has no build context (give one after the task file)".into());
            };
            let dir = ws.join(inside(&b.context).map_err(|e| e.to_string())?);
            if let Some(f) = &b.file {
                // `docker build -f` is relative to where it runs, the
                // task file's to the context.
                out.push("--file".into());
                out.push(
                    dir.join(inside(f).map_err(|e| e.to_string())?)
                        .display()
                        .to_string(),
                );
            }
            dir.display().to_string()
        };
        if is_remote(&b.context) {
            if let Some(f) = &b.file {
                out.push("--file".into());
                out.push(f.clone());
            }
        }
        for t in &b.tags {
            out.push("--tag".into());
            out.push(t.clone());
        }
        for (k, v) in &b.build_args {
            out.push("--build-arg".into());
            out.push(format!("{k}={v}"));
        }
        if let Some(t) = &b.target {
            out.push("--target".into());
            out.push(t.clone());
        }
        if let Some(p) = &b.platform {
            out.push("--platform".into());
            out.push(p.clone());
        }
        if b.no_cache {
            out.push("--no-cache".into());
        }
        out.push(context);
        Ok(out)
    }

    /// Where a classic build that failed stopped, as a line for the log:
    /// the instruction and its line in the Dockerfile.
    fn failed_instruction(&self, text: &str, steps: &StepTracker) -> Option<String> {
        let step = steps.seen.lock().ok()?.1?;
        let b = BuildArgs::parse(text).ok()?;
        let ws = self.workspace.as_ref()?;
        let dir = ws.join(inside(&b.context).ok()?);
        let file = b.file.as_deref().unwrap_or("Dockerfile");
        let dockerfile = std::fs::read_to_string(dir.join(inside(file).ok()?)).ok()?;
        let (line, instruction) = crate::dockerfile::instruction_at(&dockerfile, step)?;
        Some(format!(
            "The build failed at {file} line {line}: {instruction}\n"
        ))
    }

    /// Remove container `name` (it may not exist yet, or any more).
    async fn remove(&self, name: &str) {
        let _ = self
            .command()
            .args(["rm", "--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    /// Run the CLI with `args` until it exits or `stop`, its output into
    /// `log`. Stopped, the CLI is killed and `container` (when the command
    /// made one) removed: killing `docker run` leaves its container.
    async fn logged(
        &self,
        args: &[String],
        log: &dyn LogSink,
        stop: &CancellationToken,
        container: Option<&str>,
    ) -> Attempt {
        let mut child = match self
            .command()
            .env("DOCKER_BUILDKIT", if self.buildkit { "1" } else { "0" })
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("starting {}: {e}", self.binary.display())),
        };
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return failed("docker's output was not captured".into());
        };
        let streams = async { tokio::join!(pump(out, log), pump(err, log)) };
        let waited = async {
            streams.await;
            child.wait().await
        };
        tokio::select! {
            status = waited => match status {
                // `docker run` exits with the container's code; 125 to 127
                // are its own (the image would not pull, the command is not
                // there) and its message is in the log.
                Ok(s) => Attempt { exit_code: s.code(), error: None },
                Err(e) => failed(format!("waiting for docker: {e}")),
            },
            _ = stop.cancelled() => {
                if let Some(name) = container {
                    self.remove(name).await;
                }
                failed("stopped".into())
            }
        }
    }
}

/// A build's log, passed on, watching for the classic builder's
/// `Step n/m : INSTRUCTION` lines: the last one is where a failed build
/// stopped. (BuildKit names the Dockerfile's line itself.)
struct StepTracker<'a> {
    inner: &'a dyn LogSink,
    /// The unfinished last line, and the last step number seen.
    seen: std::sync::Mutex<(Vec<u8>, Option<usize>)>,
}

/// Longest partial line kept while looking for step lines.
const STEP_LINE_MAX: usize = 4096;

impl LogSink for StepTracker<'_> {
    fn write(&self, bytes: &[u8]) {
        self.inner.write(bytes);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (partial, last) = &mut *seen;
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(partial);
                if let Some(n) = line
                    .strip_prefix("Step ")
                    .and_then(|r| r.split_once('/'))
                    .and_then(|(n, _)| n.parse().ok())
                {
                    *last = Some(n);
                }
                partial.clear();
            } else if partial.len() < STEP_LINE_MAX {
                partial.push(b);
            }
        }
    }
}

/// Copy `from` into `log` until it ends.
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, log: &dyn LogSink) {
    let mut buf = vec![0u8; READ_CHUNK];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        log.write(&buf[..n]);
    }
}

#[async_trait]
impl Executor for Docker {
    async fn run(
        &self,
        step: &Step,
        spec: &TaskSpec,
        log: &dyn LogSink,
        stop: CancellationToken,
    ) -> Attempt {
        match &step.action {
            Action::Cmd(text) => {
                let name = format!(
                    "{}-{}-{:08x}",
                    self.name_prefix,
                    step.id
                        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"),
                    rand::random::<u32>()
                );
                match self.run_args(step, spec, text, &name) {
                    Ok(args) => self.logged(&args, log, &stop, Some(&name)).await,
                    Err(e) => failed(e),
                }
            }
            Action::Build(text) => match self.build_args(text) {
                Ok(args) => {
                    let steps = StepTracker {
                        inner: log,
                        seen: std::sync::Mutex::new((Vec::new(), None)),
                    };
                    let a = self.logged(&args, &steps, &stop, None).await;
                    if a.exit_code.is_some_and(|c| c != 0) {
                        if let Some(at) = self.failed_instruction(text, &steps) {
                            log.write(at.as_bytes());
                        }
                    }
                    a
                }
                Err(e) => failed(e),
            },
            Action::Push(images) => {
                for image in images {
                    log.write(format!("Pushing {image}\n").as_bytes());
                    let args = ["push".to_string(), image.clone()];
                    let a = self.logged(&args, log, &stop, None).await;
                    if a.exit_code != Some(0) {
                        return a;
                    }
                }
                Attempt {
                    exit_code: Some(0),
                    error: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn have(cmd: &str) -> bool {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// A busybox image imported into the engine (nothing can be pulled
    /// here), or None when this machine has no engine or no busybox.
    fn busybox_image() -> Option<(String, tempfile::TempDir)> {
        let daemon = std::process::Command::new("docker").arg("info").output();
        if !daemon.is_ok_and(|o| o.status.success()) || !have("busybox") {
            eprintln!("SKIPPED: needs a Docker daemon and busybox-static");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = std::process::Command::new("sh")
            .args(["-c", "command -v busybox"])
            .output()
            .unwrap();
        let path = String::from_utf8(busybox.stdout).unwrap();
        std::fs::copy(path.trim(), root.join("bin/busybox")).unwrap();
        for tool in ["sh", "echo", "sleep", "env", "pwd"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        let tar = dir.path().join("root.tar");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        let image = format!("wharf-tasks-test/busybox:{:08x}", rand::random::<u32>());
        let ok = std::process::Command::new("docker")
            .arg("import")
            .arg(&tar)
            .arg(&image)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "docker import");
        Some((image, dir))
    }

    fn remove_image(image: &str) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", image])
            .output();
    }

    fn docker() -> Docker {
        Docker {
            binary: "docker".into(),
            config_dir: None,
            name_prefix: "wharf-tasks-test".into(),
            workspace: None,
            buildkit: false,
        }
    }

    #[tokio::test]
    async fn a_cmd_step_runs_in_a_container_with_its_env_and_exit_code() {
        let Some((image, _dir)) = busybox_image() else {
            return;
        };
        let file = format!(
            "env: [\"GREETING=hello\"]\nsteps:\n  - id: greet\n    cmd: {image} sh -c 'echo $GREETING $WHO from $(pwd); echo oops >&2; exit 3'\n    env: [\"WHO=wharf\"]\n    workingDirectory: /bin\n"
        );
        let spec = TaskSpec::parse(&file).unwrap();
        let log = crate::runner::MemoryLog::default();
        let a = docker()
            .run(&spec.steps[0], &spec, &log, CancellationToken::new())
            .await;
        remove_image(&image);
        let text = log.text();
        assert_eq!(a.exit_code, Some(3), "{text}");
        assert!(text.contains("hello wharf from /bin"), "{text}");
        assert!(text.contains("oops"), "stderr too: {text}");
    }

    #[tokio::test]
    async fn a_stopped_step_leaves_no_container_behind() {
        let Some((image, _dir)) = busybox_image() else {
            return;
        };
        let file = format!("steps:\n  - id: sleeper\n    cmd: {image} sleep 300\n");
        let spec = TaskSpec::parse(&file).unwrap();
        let log = Arc::new(crate::runner::MemoryLog::default());
        let stop = CancellationToken::new();
        let d = Arc::new(docker());
        let task = {
            let (d, spec, log, stop) = (d.clone(), spec.clone(), log.clone(), stop.clone());
            tokio::spawn(async move { d.run(&spec.steps[0], &spec, log.as_ref(), stop).await })
        };
        // Running: its container is listed.
        let listed = || {
            let out = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    "name=wharf-tasks-test-sleeper",
                    "--format",
                    "{{.Image}}",
                ])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().contains(&image)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listed() {
            assert!(Instant::now() < deadline, "the container never started");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let t = Instant::now();
        stop.cancel();
        let a = task.await.unwrap();
        assert_eq!(a.exit_code, None);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "stopped promptly, not after 300 s"
        );
        assert!(!listed(), "the container was removed");
        remove_image(&image);
    }

    struct Quiet;

    #[async_trait]
    impl crate::runner::Reporter for Quiet {
        async fn renew(&self) -> crate::runner::Renewal {
            crate::runner::Renewal::Continue
        }
        async fn step(&self, _: usize, _: crate::plan::StepState, _: Option<i32>) {}
    }

    #[tokio::test]
    async fn a_multi_step_file_runs_through_the_engine_with_its_secret_masked() {
        let Some((image, _dir)) = busybox_image() else {
            return;
        };
        let file = format!(
            "steps:\n  - id: one\n    cmd: {image} echo token s3cr3t-value\n  - id: two\n    cmd: {image} sh -c 'exit 1'\n    ignoreErrors: true\n  - id: three\n    cmd: {image} echo done\n"
        );
        let spec = Arc::new(TaskSpec::parse(&file).unwrap());
        let log = Arc::new(crate::runner::Masking::new(
            ["s3cr3t-value"],
            crate::runner::MemoryLog::default(),
        ));
        let end = crate::runner::execute(
            spec,
            Arc::new(docker()),
            Arc::new(Quiet),
            log.clone(),
            crate::runner::Limits {
                run_timeout: Duration::from_secs(120),
                renew_every: Duration::from_secs(10),
            },
        )
        .await;
        remove_image(&image);
        log.finish();
        let text = log.inner.text();
        assert_eq!(end, crate::runner::RunEnd::Succeeded, "{text}");
        assert!(
            text.contains("token ***") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert!(text.contains("step two: failed: exited with 1"), "{text}");
        assert!(text.contains("done"), "{text}");
    }

    #[tokio::test]
    async fn a_build_step_without_a_context_says_so() {
        let spec = TaskSpec::parse("steps:\n  - build: -t app .\n").unwrap();
        let log = crate::runner::MemoryLog::default();
        let a = docker()
            .run(&spec.steps[0], &spec, &log, CancellationToken::new())
            .await;
        assert!(a.error.unwrap().contains("this run has no build context"));
    }

    #[test]
    fn build_paths_are_the_contexts_and_stay_in_it() {
        let d = Docker {
            workspace: Some("/runs/ca1".into()),
            buildkit: true,
            ..docker()
        };
        let args = d
            .build_args("-t reg/app:v1 -f docker/Dockerfile --build-arg A=1 --target run src")
            .unwrap();
        assert_eq!(
            args.join(" "),
            "build --progress=plain --file /runs/ca1/src/docker/Dockerfile \
             --tag reg/app:v1 --build-arg A=1 --target run /runs/ca1/src"
        );
        let err = d.build_args("-t app -f ../../etc/passwd .").unwrap_err();
        assert!(err.contains("not a path inside the build context"), "{err}");
        let err = d.build_args("-t app /").unwrap_err();
        assert!(err.contains("not a path inside the build context"), "{err}");
    }
}
