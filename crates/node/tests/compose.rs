//! deploy/compose on the Docker engine: images built FROM scratch by
//! `deploy/compose/build.sh` (this build's binary), three regions of two
//! nodes, each region with its own SeaweedFS on a network of its own, one
//! `docker-compose up`. docker pushes to one region and pulls from another;
//! with one node of every region killed, pulls go on in every region.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{have, run, run_with_stdin};

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose")
}

/// `docker-compose` under a project name of this run's own.
struct Project {
    name: String,
}

impl Project {
    fn cmd(&self) -> Command {
        let mut c = Command::new("docker-compose");
        // docker-compose gives up on the engine after 60 s per call; a busy
        // two-core CI machine has taken longer than that to create six
        // containers (CI of stop 31), which failed the test without any
        // fault of Wharf's.
        c.current_dir(compose_dir())
            .env("COMPOSE_HTTP_TIMEOUT", "300")
            .env("DOCKER_CLIENT_TIMEOUT", "300")
            .args(["-p", &self.name]);
        c
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.cmd().args(["down", "-v", "-t", "2"]).output();
    }
}

fn ready(port: u16) -> bool {
    Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/readyz"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

fn owner_password() -> String {
    let env = std::fs::read_to_string(compose_dir().join(".env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix("WHARF_BOOTSTRAP_PASSWORD="))
        .expect("build.sh writes the owner's password")
        .to_string()
}

fn docker_login(port: u16, password: &str) {
    run_with_stdin(
        Command::new("docker").args([
            "login",
            "-u",
            "owner",
            "--password-stdin",
            &format!("localhost:{port}"),
        ]),
        password,
    );
}

#[test]
fn three_regions_of_two_nodes_push_pull_and_survive_one_node_per_region() {
    let daemon = Command::new("docker").arg("info").output();
    if !daemon.is_ok_and(|o| o.status.success()) || !have("docker-compose") || !have("busybox") {
        eprintln!("SKIPPED: needs a Docker daemon, docker-compose and busybox-static");
        return;
    }
    let project = Project {
        name: format!("wharftest{:06x}", rand::random::<u32>() & 0xffffff),
    };
    run(Command::new(compose_dir().join("build.sh")).arg(env!("CARGO_BIN_EXE_wharf")));
    // `up -d` converges on the declared state, so a second try after an
    // engine timeout finishes what the first began rather than duplicating it.
    if project
        .cmd()
        .args(["up", "-d"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        run(project.cmd().args(["up", "-d"]));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(5001..=5006).all(ready) {
        if Instant::now() > deadline {
            let logs = project.cmd().args(["logs", "--tail=20"]).output().unwrap();
            panic!(
                "the compose cluster did not become ready:\n{}",
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let password = owner_password();

    // An image of its own (nothing can be pulled here): a layer of random
    // bytes imported into the engine.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("payload.bin"),
        common::random_bytes(2 << 20),
    )
    .unwrap();
    let tar = dir.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar)
        .arg("payload.bin"));
    let tag = format!("{}/hello:v1", project.name);
    let pushed = format!("localhost:5001/{tag}");
    run(Command::new("docker").arg("import").arg(&tar).arg(&pushed));
    docker_login(5001, &password);
    run(Command::new("docker").args(["push", &pushed]));
    let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &pushed]));
    run(Command::new("docker").args(["rmi", "-f", &pushed]));

    // Pulled from another region, the same image.
    let pull = |port: u16| {
        let image = format!("localhost:{port}/{tag}");
        docker_login(port, &password);
        run(Command::new("docker").args(["pull", &image]));
        let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &image]));
        run(Command::new("docker").args(["rmi", "-f", &image]));
        assert_eq!(got, id, "pulled through port {port}");
    };
    pull(5004);

    // One node of every region killed: every region still serves pulls
    // through the node it has left.
    for node in ["wharf-us-1", "wharf-eu-1", "wharf-ap-1"] {
        run(project.cmd().args(["kill", node]));
    }
    for port in [5002, 5004, 5006] {
        pull(port);
    }
}
