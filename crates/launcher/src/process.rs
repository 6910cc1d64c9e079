//! One child process: started with its output appended to a log file,
//! stopped with SIGTERM (then SIGKILL after a grace period), killed,
//! frozen and thawed, restarted with the same command line.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    exe: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    die_with_parent: bool,
    child: Option<Child>,
    paused: bool,
}

impl Process {
    /// A process to run `exe args`, its output appended to `log`; not
    /// started yet.
    pub fn new(exe: &Path, args: Vec<OsString>, log: PathBuf) -> Process {
        Process {
            exe: exe.to_path_buf(),
            args,
            env: Vec::new(),
            log,
            die_with_parent: false,
            child: None,
            paused: false,
        }
    }

    /// Set an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Have the kernel send SIGTERM to the process when its parent dies,
    /// so that no node outlives the launcher that started it.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Start it (again), unless it runs.
    pub fn spawn(&mut self) -> std::io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.die_with_parent {
            // SAFETY: prctl is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        self.child = Some(cmd.spawn()?);
        self.paused = false;
        Ok(())
    }

    /// Started and not known to have exited (or been killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, if it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(status)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// kill -9: nothing is flushed.
    pub fn kill(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then wait up to `grace` for it to exit (SIGKILL after
    /// that). Its exit status, or None if it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut child = self.child.take()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// SIGSTOP: frozen (a GC pause, a stuck VM).
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = self.child.is_some();
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_logs_is_stopped_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p/out.log");
        let mut p = Process::new(
            Path::new("/bin/sh"),
            vec!["-c".into(), "echo started $WHO; exec sleep 30".into()],
            log.clone(),
        )
        .env("WHO", "me");
        p.spawn().unwrap();
        assert!(p.running());
        let logged = |times: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("started me")
                .count()
                < times
            {
                assert!(Instant::now() < deadline, "no output in the log");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        logged(1);
        // SIGTERM ends sleep: an exit status, not a kill.
        assert!(p.terminate(Duration::from_secs(10)).is_some());
        assert!(!p.running());
        p.spawn().unwrap();
        logged(2);
        p.pause();
        assert!(p.paused());
        // A paused process is thawed before it is killed; the log holds
        // both runs, appended.
        p.kill();
        assert!(!p.running() && !p.paused());
        assert_eq!(p.tail(5).matches("started me").count(), 2);
    }

    #[test]
    fn an_exit_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Process::new(
            Path::new("/bin/sh"),
            vec!["-c".into(), "exit 3".into()],
            dir.path().join("log"),
        );
        p.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = p.exited() {
                break s;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(3));
    }
}
