//! `wharf run` against a real node with its task agent on and the real
//! Docker engine: an image pushed to Wharf is pulled by the agent with the
//! requester's rights and run, its output printed by the CLI; a failing
//! command, a multi-step file with a failing step, a cancel, and an agent
//! killed mid-run (its run taken back and run again) end as they should.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{have, owner_env, run, Node, OWNER, OWNER_PASSWORD};

fn engine() -> bool {
    let daemon = Command::new("docker").arg("info").output();
    if !daemon.is_ok_and(|o| o.status.success()) || !have("busybox") {
        eprintln!("SKIPPED: needs a Docker daemon and busybox-static");
        return false;
    }
    true
}

/// A node whose agent runs tasks, leases short so a lost agent shows soon.
fn agent_node(dir: &Path) -> Node {
    let config = dir.join("wharf.toml");
    std::fs::write(&config, "[tasks]\nagent = true\nlease_s = 6\n").unwrap();
    Node::start_with(dir, &["--config", config.to_str().unwrap()])
}

/// Push a busybox image to `addr` as `repo:v1` through the engine.
fn push_busybox(dir: &Path, addr: &str, repo: &str) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let busybox = run(Command::new("sh").args(["-c", "command -v busybox"]));
    std::fs::copy(busybox.trim(), root.join("bin/busybox")).unwrap();
    for tool in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let image = format!("{addr}/{repo}:v1");
    let config = dir.join("docker-config");
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &config);
        c
    };
    run(docker().arg("import").arg(&tar).arg(&image));
    let login = docker()
        .args(["login", addr, "-u", OWNER, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(OWNER_PASSWORD.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(login.success(), "docker login");
    run(docker().args(["push", &image]));
    // Gone from the engine: the agent must pull it from Wharf.
    run(docker().args(["rmi", "-f", &image]));
}

fn wharf(n: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .envs(owner_env())
        .args(args)
        .args(["--endpoint", &n.url("")])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_json(n: &Node, id: &str) -> serde_json::Value {
    let out = run(&mut common::curl_owner(
        &n.url(&format!("/api/v1/runs/{id}")),
    ));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn runs_an_image_from_the_registry_and_ends_as_its_steps_did() {
    if !engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = agent_node(dir.path());
    push_busybox(dir.path(), &n.addr(), "tools/busybox");

    // The cloud CLI's hello-world example, with wharf for az acr.
    let o = wharf(
        &n,
        &[
            "run",
            "--cmd",
            "$Registry/tools/busybox:v1 echo hello from $ID",
            "/dev/null",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Queued a run with ID: "))
        .unwrap_or_else(|| panic!("no run id: {out}"))
        .to_string();
    assert!(out.contains(&format!("hello from {id}")), "{out}");
    assert!(
        out.contains(&format!("Run ID: {id} was successful after")),
        "{out}"
    );
    let r = run_json(&n, &id);
    assert_eq!(r["status"], "Succeeded");
    assert_eq!(r["steps"][0]["exit_code"], 0);

    // A failing command: exit status 1, the step and its code named.
    let o = wharf(
        &n,
        &[
            "run",
            "--cmd",
            "$Registry/tools/busybox:v1 sh -c 'echo bad; exit 4'",
            "/dev/null",
        ],
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("bad") && out.contains("ended Failed") && out.contains("(exit code 4)"),
        "{out}"
    );

    // A multi-step file: a value from --set, a failing step failing the
    // run with the later steps skipped; ignoreErrors lets it go on.
    let file = dir.path().join("task.yaml");
    let task = "steps:
  - id: greet
    cmd: $Registry/tools/busybox:v1 echo hi {{.Values.who}}
  - id: break
    cmd: $Registry/tools/busybox:v1 sh -c 'exit 2'
  - id: after
    cmd: $Registry/tools/busybox:v1 echo after the break
";
    std::fs::write(&file, task).unwrap();
    let f = file.to_str().unwrap();
    let o = wharf(
        &n,
        &[
            "run",
            "-f",
            f,
            "--set",
            "who=there",
            "-o",
            "json",
            "/dev/null",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["Succeeded", "Failed", "Skipped"]);
    std::fs::write(
        &file,
        task.replace("'exit 2'\n", "'exit 2'\n    ignoreErrors: true\n"),
    )
    .unwrap();
    let o = wharf(&n, &["run", "-f", f, "--set", "who=there", "/dev/null"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("hi there") && out.contains("after the break"),
        "{out}"
    );

    // A secret from the registry's store: rendered into the step,
    // masked in the log, never listed.
    let mut set = Command::new(env!("CARGO_BIN_EXE_wharf"));
    set.envs(owner_env())
        .args(["secret", "set", "-n", "db-password", "--value-stdin"])
        .args(["--endpoint", &n.url("")]);
    common::run_with_stdin(&mut set, "hunter2-xyz");
    let listed = text(&wharf(&n, &["secret", "list"]));
    assert!(
        listed.contains("db-password") && !listed.contains("hunter2"),
        "{listed}"
    );
    std::fs::write(
        &file,
        "secrets:\n  - id: pw\n    secret: db-password\nsteps:\n  - cmd: $Registry/tools/busybox:v1 echo the password is {{.Secrets.pw}}\n",
    )
    .unwrap();
    let o = wharf(&n, &["run", "-f", f, "/dev/null"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("the password is ***"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    std::fs::write(
        &file,
        "secrets:\n  - id: pw\n    secret: nope\nsteps:\n  - cmd: $Registry/tools/busybox:v1 echo {{.Secrets.pw}}\n",
    )
    .unwrap();
    let o = wharf(&n, &["run", "-f", f, "/dev/null"]);
    assert!(
        text(&o).contains("wharf secret set -n nope"),
        "{}",
        text(&o)
    );
    std::fs::write(&file, task).unwrap();

    // Bad input is refused before anything is queued.
    let o = wharf(&n, &["run", "-f", f, "/dev/null"]);
    assert!(text(&o).contains("--set who="), "{}", text(&o));
    let o = wharf(&n, &["run", "--cmd", "x", "no/such/dir"]);
    assert!(
        text(&o).contains("neither a directory nor a URL"),
        "{}",
        text(&o)
    );
    let o = wharf(&n, &["run", "--cmd", "x", "ftp://example.com/src"]);
    assert!(
        text(&o).contains("not a context this registry fetches"),
        "{}",
        text(&o)
    );
    let o = wharf(
        &n,
        &["run", "--registry", "nosuchreg", "--cmd", "x", "/dev/null"],
    );
    assert!(text(&o).contains("nosuchreg"), "{}", text(&o));
}

/// Wait for `id`'s container of node 1 to run; true once it does.
fn container_running(run_id: &str) -> bool {
    let out = Command::new("docker")
        .args(["ps", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name=^wharf-n1-{run_id}-"))
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_canceled_run_stops_and_a_killed_agents_run_is_run_again() {
    if !engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut n = agent_node(dir.path());
    push_busybox(dir.path(), &n.addr(), "tools/sleeper");
    let queue = |n: &Node| {
        let o = wharf(
            n,
            &[
                "run",
                "--no-wait",
                "-o",
                "json",
                "--cmd",
                "$Registry/tools/sleeper:v1 busybox sleep 300",
                "/dev/null",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["id"].as_str().unwrap().to_string()
    };

    // Cancel: the container goes, the run ends Canceled.
    let id = queue(&n);
    wait_for(60, "the run's container", || container_running(&id));
    run(common::curl_owner(&n.url(&format!("/api/v1/runs/{id}/cancel"))).args(["-X", "POST"]));
    wait_for(30, "the cancel", || {
        run_json(&n, &id)["status"] == "Canceled"
    });
    wait_for(30, "the container's removal", || !container_running(&id));

    // kill -9 of the agent mid-run: restarted, it removes its leftover
    // container; the expiry (6 s lease) queues the run again and the
    // agent runs it a second time, visibly.
    let id = queue(&n);
    wait_for(60, "the run's container", || container_running(&id));
    n.kill9();
    n.restart();
    wait_for(60, "a second attempt", || {
        let r = run_json(&n, &id);
        r["attempts"] == 2 && r["status"] == "Running"
    });
    let r = run_json(&n, &id);
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("stopped renewing"),
        "{r}"
    );
    wait_for(60, "the second attempt's container", || {
        container_running(&id)
    });
    run(common::curl_owner(&n.url(&format!("/api/v1/runs/{id}/cancel"))).args(["-X", "POST"]));
    wait_for(30, "the cancel", || {
        run_json(&n, &id)["status"] == "Canceled"
    });
    wait_for(30, "no container left", || !container_running(&id));
    let _ = Command::new("docker")
        .args(["rmi", "-f", &format!("{}/tools/sleeper:v1", n.addr())])
        .output();
}

/// `docker` with the test's own config (logged in to `addrs`).
fn docker_logged_in(dir: &Path, addrs: &[String]) -> impl Fn() -> Command {
    let config = dir.join("docker-config");
    for addr in addrs {
        let mut login = Command::new("docker");
        login
            .env("DOCKER_CONFIG", &config)
            .args(["login", addr, "-u", OWNER, "--password-stdin"]);
        common::run_with_stdin(&mut login, OWNER_PASSWORD);
    }
    move || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &config);
        c
    }
}

const MULTI_STAGE: &str = r#"ARG REGISTRY
FROM ${REGISTRY}/tools/busybox:v1 AS build
ARG GREETING=hello
ARG TOKEN
RUN echo "token $TOKEN"
COPY . /ctx
RUN test ! -e /ctx/secret.txt && echo "$GREETING from the build stage" > /built.txt
RUN /bin/busybox cat /ctx/message.txt >> /built.txt
FROM ${REGISTRY}/tools/busybox:v1 AS runtime
COPY --from=build /built.txt /built.txt
CMD ["/bin/busybox", "cat", "/built.txt"]
FROM runtime AS debug
RUN echo never built with --target runtime && false
"#;

/// A multi-stage Dockerfile (FROM an image in Wharf; RUN, COPY, ARG,
/// --target, .dockerignore) built by `wharf build` from a local directory
/// and from a git repository over file://, pushed, then
/// pulled with docker from every region and run; a failing instruction
/// named; a context over the limit refused before its upload.
#[test]
fn wharf_build_builds_from_a_directory_and_from_git_and_every_region_serves_it() {
    if !engine() || !have("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster::Cluster::start(
        dir.path(),
        3,
        "[tasks]\nagent = true\nlease_s = 6\nmax_context_mib = 1\n",
    );
    let n = &cluster.nodes[0];
    push_busybox(dir.path(), &n.addr(), "tools/busybox");

    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), MULTI_STAGE).unwrap();
    std::fs::write(ctx.join("message.txt"), "a message from the context\n").unwrap();
    std::fs::write(ctx.join("secret.txt"), "not for the image\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    let registry_arg = format!("REGISTRY={}", n.addr());
    let build = |tag: &str, context: &str| {
        wharf(
            n,
            &[
                "build",
                "-t",
                tag,
                "-t",
                "app:latest",
                "--build-arg",
                &registry_arg,
                "--build-arg",
                "GREETING=hi",
                "--secret-build-arg",
                "TOKEN=s3cr3t-build-value",
                "--target",
                "runtime",
                context,
            ],
        )
    };
    let o = build("app:{{.Run.ID}}", ctx.to_str().unwrap());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Queued a run with ID: "))
        .unwrap_or_else(|| panic!("no run id: {out}"))
        .to_string();
    assert!(
        out.contains("The following dependencies were found:"),
        "{out}"
    );
    assert!(out.contains(&format!("tag: {id}")), "{out}");
    assert!(out.contains("runtime-dependency:\n    registry: "), "{out}");
    assert!(out.contains("repository: tools/busybox"), "{out}");
    assert!(
        out.contains(&format!("Run ID: {id} was successful after")),
        "{out}"
    );
    assert!(
        out.contains("token ***") && !out.contains("s3cr3t-build-value"),
        "the secret build arg is masked: {out}"
    );
    assert!(
        !out.contains("never built"),
        "--target skipped the debug stage: {out}"
    );
    let r = run_json(n, &id);
    let built = &r["images"][0];
    assert_eq!(built["image"]["repository"], "app");
    let digest = built["image"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{r}");
    assert!(
        built["runtime"]["digest"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:"),
        "the base image's digest is recorded: {r}"
    );

    // Pulled and run from every region.
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let docker = docker_logged_in(dir.path(), &addrs);
    for addr in &addrs {
        let image = format!("{addr}/app:{id}");
        let ran = run(docker().args(["run", "--rm", &image]));
        assert_eq!(
            ran, "hi from the build stage\na message from the context\n",
            "{addr}"
        );
        let _ = docker().args(["rmi", "-f", &image]).output();
    }

    // From git: a bare repository over file://.
    let work = dir.path().join("git-work");
    std::fs::create_dir_all(&work).unwrap();
    run(Command::new("cp").arg("-r").arg(ctx.join(".")).arg(&work));
    std::fs::write(work.join("message.txt"), "a message from git\n").unwrap();
    let git = |args: &[&str], at: &Path| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .arg("-C")
            .arg(at)
            .args(args))
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "-A"], &work);
    git(&["commit", "-q", "-m", "context"], &work);
    let commit = git(&["rev-parse", "HEAD"], &work).trim().to_string();
    let bare = dir.path().join("srv/app.git");
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare));
    let url = format!("file://{}#main", bare.display());
    let o = build("app:git", &url);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("git-head-revision: {commit}")),
        "{out}"
    );
    let ran = run(docker().args(["run", "--rm", &format!("{}/app:git", addrs[1])]));
    assert_eq!(ran, "hi from the build stage\na message from git\n");

    // A failing instruction is shown; the run fails; no image is pushed.
    std::fs::write(
        ctx.join("Dockerfile"),
        MULTI_STAGE.replace("AS runtime\n", "AS runtime\nRUN exit 7\n"),
    )
    .unwrap();
    let o = build("app:broken", ctx.to_str().unwrap());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("RUN exit 7"),
        "the instruction is named: {out}"
    );
    assert!(
        out.contains("ended Failed") && out.contains("build"),
        "{out}"
    );

    // Over the limit: refused before anything is uploaded, naming it.
    std::fs::write(ctx.join("big.bin"), vec![7u8; 2 << 20]).unwrap();
    let o = build("app:big", ctx.to_str().unwrap());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("the cluster's limit is 1048576 bytes"),
        "{out}"
    );
    assert!(!out.contains("Queued"), "{out}");

    // The first build's log outlives its agent: kept in the registry, it
    // is served by the other regions once that node is gone.
    let agent = r["agent"].as_u64().unwrap() as usize - 1;
    let mut cluster = cluster;
    cluster.nodes[agent].kill9();
    let other = &cluster.nodes[(agent + 1) % 3];
    let url = other.url(&format!("/api/v1/runs/{id}/log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = run(&mut common::curl_owner(&url));
        if log.contains("The following dependencies were found") {
            let agent_line = format!("Run ID: {id} on node {}", agent + 1);
            assert!(log.contains(&agent_line), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log is not served without its agent: {log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The runs of `task`, newest first, as `wharf task list-runs` gives them.
fn task_runs(n: &Node, task: &str) -> Vec<serde_json::Value> {
    let o = wharf(n, &["task", "list-runs", "-n", task, "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
}

/// Wait for a run of `task` queued by `trigger` to end; the run.
fn ended_run(n: &Node, task: &str, trigger: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let found = task_runs(n, task).into_iter().find(|r| {
            r["trigger"] == trigger && r["status"] != "Queued" && r["status"] != "Running"
        });
        if let Some(r) = found {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no {trigger} run of {task} ended within {secs} s: {:?}",
            task_runs(n, task)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stored tasks and their triggers on one agent node: a build task from a
/// git repository runs on demand and records its base image; pushing a
/// new base image queues it at once (no polling); a signed commit hook
/// builds the commit it names (a bad signature is refused); a timer fires.
#[test]
fn tasks_run_on_demand_when_their_base_moves_on_a_commit_and_on_a_timer() {
    if !engine() || !have("git") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = agent_node(dir.path());
    push_busybox(dir.path(), &n.addr(), "tools/busybox");

    // A timer first: it fires at the next minute, while the rest runs.
    let o = wharf(
        &n,
        &[
            "task",
            "create",
            "-n",
            "tick",
            "-c",
            "/dev/null",
            "--cmd",
            "$Registry/tools/busybox:v1 echo tick",
            "--schedule",
            "* * * * *",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let timer_from = Instant::now();

    let work = dir.path().join("src");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("Dockerfile"),
        "ARG REGISTRY\nFROM ${REGISTRY}/tools/busybox:v1\nCOPY message.txt /message.txt\n\
         CMD [\"/bin/busybox\", \"cat\", \"/message.txt\"]\n",
    )
    .unwrap();
    std::fs::write(work.join("message.txt"), "first\n").unwrap();
    let git = |args: &[&str], at: &Path| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .arg("-C")
            .arg(at)
            .args(args))
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "-A"], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    let bare = dir.path().join("app.git");
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare));
    git(&["remote", "add", "origin", bare.to_str().unwrap()], &work);
    let context = format!("file://{}#main", bare.display());
    let registry_arg = format!("REGISTRY={}", n.addr());
    let o = wharf(
        &n,
        &[
            "task",
            "create",
            "-n",
            "web",
            "-t",
            "web:{{.Run.ID}}",
            "-t",
            "web:latest",
            "--arg",
            &registry_arg,
            "-c",
            &context,
            "--commit-trigger-enabled",
            "true",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let (hook, secret) = (field("Commit hook: "), field("Hook secret: "));
    // The same repository polled, for servers without hooks.
    let o = wharf(
        &n,
        &[
            "task",
            "create",
            "-n",
            "polled",
            "-t",
            "polled:{{.Run.ID}}",
            "--arg",
            &registry_arg,
            "-c",
            &context,
            "--poll-interval",
            "10",
            "--base-image-trigger-enabled",
            "false",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // On demand.
    let o = wharf(&n, &["task", "run", "-n", "web"]);
    assert!(o.status.success(), "{}", text(&o));
    let show = text(&wharf(&n, &["task", "show", "-n", "web"]));
    assert!(show.contains("watching tools/busybox:v1"), "{show}");

    // The base image moves: the task runs again, at once.
    push_busybox(&dir.path().join("again"), &n.addr(), "tools/busybox");
    let r = ended_run(&n, "web", "image_update", 60);
    assert_eq!(r["status"], "Succeeded", "{r}");

    // A commit hook: refused unsigned, built at the commit it names.
    // The polled task's first poll is its baseline: seen before the new
    // commit is pushed, or that commit would be the baseline.
    let first = git(&["rev-parse", "HEAD"], &work).trim().to_string();
    wait_for(60, "the polled task's first poll", || {
        text(&wharf(&n, &["task", "show", "-n", "polled"]))
            .contains(&format!("last commit seen: {first}"))
    });
    std::fs::write(work.join("message.txt"), "second\n").unwrap();
    git(&["commit", "-q", "-am", "second"], &work);
    git(&["push", "-q", "origin", "main"], &work);
    let commit = git(&["rev-parse", "HEAD"], &work).trim().to_string();
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
    let post = |signature: &str| {
        run(Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-H"])
            .arg(format!("x-hub-signature-256: {signature}"))
            .args(["--data-binary", &body])
            .arg(n.url(&hook)))
    };
    assert_eq!(post("sha256=00"), "401");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(post(&signature), "202");
    let r = ended_run(&n, "web", "commit", 90);
    assert_eq!(r["status"], "Succeeded", "{r}");
    assert_eq!(r["git_commit"], commit.as_str(), "{r}");
    let image = r["images"][0]["image"]["tag"].as_str().unwrap().to_string();
    let docker = docker_logged_in(dir.path(), &[n.addr()]);
    let ran = run(docker().args(["run", "--rm", &format!("{}/web:{image}", n.addr())]));
    assert_eq!(ran, "second\n");
    // The poll saw the new commit too (its first poll was the baseline).
    let r = ended_run(&n, "polled", "commit", 60);
    assert_eq!(r["status"], "Succeeded", "{r}");
    assert_eq!(r["git_commit"], commit.as_str(), "{r}");
    assert_eq!(
        task_runs(&n, "polled").len(),
        1,
        "one run: the new commit's"
    );

    // The timer fired within its minute (and the tick of the leader).
    let left = Duration::from_secs(80).saturating_sub(timer_from.elapsed());
    let r = ended_run(&n, "tick", "timer", left.as_secs().max(1));
    assert_eq!(r["status"], "Succeeded", "{r}");

    // Runs list with the columns the cloud CLI has.
    let o = wharf(&n, &["task", "list-runs"]);
    let table = text(&o);
    assert!(
        table.starts_with("RUN ID") && table.contains("TRIGGER") && table.contains("image_update"),
        "{table}"
    );
}

/// A static and CGI HTTP server (Python's) over `root`: `git http-backend`
/// at `/cgi-bin/git/<repo>`, and files as they are.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_server(root: &Path, repos: &Path) -> HttpServer {
    let cgi = root.join("cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    let script = cgi.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport GIT_PROJECT_ROOT={}\nexport GIT_HTTP_EXPORT_ALL=1\nexec git http-backend\n",
            repos.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = common::free_port();
    // `have_fork = False`: CGI scripts run as this user (forking, the
    // handler would switch a root server to `nobody`, who cannot read the
    // test's private directory).
    let server = "import http.server, sys\n\
        class H(http.server.CGIHTTPRequestHandler):\n    have_fork = False\n\
        http.server.test(HandlerClass=H, port=int(sys.argv[1]), bind='127.0.0.1')\n";
    let child = Command::new("python3")
        .args(["-c", server])
        .arg(port.to_string())
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTP server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    HttpServer { child, port }
}

/// `wharf build` from a git repository served by `git http-backend` (at a
/// tag, from a subdirectory) and from a tar.gz URL.
#[test]
fn wharf_build_fetches_git_over_http_and_a_tarball() {
    if !engine() || !have("git") || !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = agent_node(dir.path());
    push_busybox(dir.path(), &n.addr(), "tools/busybox");
    let src = dir.path().join("src");
    let web = src.join("web");
    std::fs::create_dir_all(&web).unwrap();
    let dockerfile = format!(
        "FROM {}/tools/busybox:v1\nCOPY message.txt /message.txt\nCMD [\"/bin/busybox\", \"cat\", \"/message.txt\"]\n",
        n.addr()
    );
    std::fs::write(web.join("Dockerfile"), &dockerfile).unwrap();
    std::fs::write(web.join("message.txt"), "from a tag over http\n").unwrap();
    let git = |args: &[&str], at: &Path| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .arg("-C")
            .arg(at)
            .args(args))
    };
    git(&["init", "-q", "-b", "main"], &src);
    git(&["add", "-A"], &src);
    git(&["commit", "-q", "-m", "v1"], &src);
    git(&["tag", "v1"], &src);
    // A later commit on main: the tag must still build the first.
    std::fs::write(web.join("message.txt"), "from main\n").unwrap();
    git(&["commit", "-q", "-am", "later"], &src);
    let served = dir.path().join("www");
    let repos = dir.path().join("repos");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&src)
        .arg(repos.join("app.git")));
    // The tarball: the web directory as it is now.
    run(Command::new("tar")
        .arg("-C")
        .arg(&web)
        .arg("-czf")
        .arg(served.join("web.tar.gz"))
        .arg("."));
    let server = http_server(&served, &repos);
    let docker = docker_logged_in(dir.path(), &[n.addr()]);
    let cases = [
        (
            format!(
                "http://127.0.0.1:{}/cgi-bin/git/app.git#v1:web",
                server.port
            ),
            "over-http",
            "from a tag over http\n",
        ),
        (
            format!("http://127.0.0.1:{}/web.tar.gz", server.port),
            "tarball",
            "from main\n",
        ),
    ];
    for (context, tag, message) in cases {
        let image = format!("app:{tag}");
        let o = wharf(&n, &["build", "-t", &image, &context]);
        let out = text(&o);
        assert!(o.status.success(), "{context}: {out}");
        let ran = run(docker().args(["run", "--rm", &format!("{}/{image}", n.addr())]));
        assert_eq!(ran, message, "{context}");
    }
}
