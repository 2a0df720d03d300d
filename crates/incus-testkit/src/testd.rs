//! A private `incusd` for tests and benchmarks, started by the code that
//! needs it: its own `INCUS_DIR` and its own network namespace, so its
//! bridges, its dnsmasq and the `inet anklume` ruleset live apart from the
//! host's network (no test traffic can leave the machine, and the host's
//! firewall is never touched). Never touches the host's own Incus.
//!
//! The daemon runs in a private mount namespace whose `/sys` is mounted from
//! the new network namespace (Incus reads `/sys/class/net`), with the
//! host's cgroup tree bound back under `/sys/fs/cgroup` (containers need
//! it). [`TestDaemon::close`] (or drop) shuts the instances and the daemon
//! down (SIGPWR, then SIGKILL), kills what is left in the namespace,
//! deletes it and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anklume_cmd::Cmd;
use anyhow::{bail, Context, Result};

use anklume_incus::Client;

/// Where Debian's `incus-base` puts the daemon.
pub const INCUSD: &str = "/usr/libexec/incus/incusd";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Run in a new mount namespace: keep the cgroup tree, enter the network
/// namespace, mount its sysfs, bind the cgroups back, start incusd.
const LAUNCH: &str = r#"set -e
mount --rbind /sys/fs/cgroup "$1"
exec nsenter --net="$2" sh -c 'mount -t sysfs sysfs /sys && mount --rbind "$1" /sys/fs/cgroup && exec env INCUS_DIR="$3" "$4" --logfile "$5"' sh "$1" "$2" "$3" "$4" "$5"
"#;

#[derive(Debug)]
pub struct TestDaemon {
    dir: PathBuf,
    netns: String,
    scratch: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Start `incusd` with `INCUS_DIR=dir` (created; must be empty or new)
    /// in a new network namespace, and wait until its socket answers.
    pub fn start(dir: &Path) -> Result<TestDaemon> {
        anyhow::ensure!(
            Path::new(INCUSD).exists(),
            "{INCUSD} is missing: install incus from bookworm-backports (ci/setup-image)"
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let netns = format!(
            "anklume-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = PathBuf::from("/run/anklume-testd").join(&netns);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        Cmd::new("ip").args(["netns", "add", &netns]).run()?;
        let mut d = TestDaemon {
            dir: dir.clone(),
            netns: netns.clone(),
            scratch: scratch.clone(),
            child: None,
        };
        Cmd::new("ip")
            .args(["-n", &netns, "link", "set", "lo", "up"])
            .run()?;
        let log = dir.join("incusd.log");
        let child = Cmd::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", LAUNCH, "sh"])
            .arg(&scratch)
            .arg(d.netns_path())
            .arg(&dir)
            .arg(INCUSD)
            .arg(&log)
            .spawn(Stdio::null(), Stdio::null())
            .context("starting incusd (unshare)")?;
        d.child = Some(child);
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

    /// `/run/netns/NAME` of the daemon's network namespace.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
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

    /// Stop the instances and the daemon: SIGPWR (incusd shuts its
    /// instances down and exits), up to 60 s, then SIGKILL.
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
        let _ = kill(pid, Signal::SIGPWR);
        let start = Instant::now();
        while c.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = kill(pid, Signal::SIGKILL);
                c.wait().context("reaping incusd")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // What incusd left in its namespace (dnsmasq, forkproxy, monitors).
        let pids = Cmd::new("ip")
            .args(["netns", "pids", &self.netns])
            .output_string()
            .unwrap_or_default();
        for p in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        Cmd::new("ip").args(["netns", "del", &self.netns]).run()?;
        let _ = std::fs::remove_dir(&self.scratch);
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
