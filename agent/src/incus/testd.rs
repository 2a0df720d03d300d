//! A private `incusd` for tests and benchmarks: its own `INCUS_DIR` in a
//! temporary directory, started by the code that needs it, stopped (SIGTERM,
//! then SIGKILL) on [`TestDaemon::close`] or drop; then the mounts incusd
//! leaves under its directory (`shmounts`, `guestapi`) are detached and the
//! directory removed. Never touches the host's own Incus.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Client;

/// Where Debian's `incus-base` puts the daemon.
pub const INCUSD: &str = "/usr/libexec/incus/incusd";

#[derive(Debug)]
pub struct TestDaemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Start `incusd` with `INCUS_DIR=dir` (created; must be empty or new)
    /// and wait until its socket answers.
    pub fn start(dir: &Path) -> Result<TestDaemon> {
        anyhow::ensure!(
            Path::new(INCUSD).exists(),
            "{INCUSD} is missing: install incus from bookworm-backports (ci/setup-incus)"
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("incusd.log");
        let child = Command::new(INCUSD)
            .arg("--logfile")
            .arg(&log)
            .env("INCUS_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {INCUSD}"))?;
        let mut d = TestDaemon {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if d.socket().exists() && Client::connect(&d.socket()).is_ok() {
                return Ok(d);
            }
            if let Some(c) = d.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!(
                        "incusd exited ({st}) before answering; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "incusd did not answer on {} within 60 s",
                    d.socket().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("unix.socket")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.socket())?)
    }

    /// Stop the daemon: SIGTERM, up to 30 s, then SIGKILL.
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(c.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while c.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = kill(pid, Signal::SIGKILL);
                c.wait().context("reaping incusd")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.remove_dir()
    }

    /// Detach every mount below the daemon's directory, then remove it.
    fn remove_dir(&self) -> Result<()> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let mut points: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        // Deepest first.
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in &points {
            nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {} (left by incusd)", p.display()))?;
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
