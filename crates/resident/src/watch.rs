//! Watching `infra.yml` for changes: inotify through `nix`.
//!
//! Why `nix`'s inotify rather than the `notify` crate: the agent runs on
//! Linux only, watches one folder (or an `infra/` folder and its
//! subfolders), and debounces on its own terms; `nix` is already a
//! dependency, while `notify` would add its own event thread, channels and
//! debouncer crates for no gain here.
//!
//! The *folder* is watched, not the file: editors and `mv` replace a file
//! by renaming another one over it, which a watch on the file itself would
//! miss (its inode is gone).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// A watch on `infra.yml` (its folder) or on an `infra/` folder.
#[derive(Debug)]
pub struct Watcher {
    ino: Inotify,
    /// For a file: its name in the watched folder; `None` for a folder.
    name: Option<OsString>,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
}

impl Watcher {
    /// Watch `infra`: a file (whose folder must exist; the file may not yet)
    /// or a folder (with its subfolders, e.g. `domains/`).
    pub fn new(infra: &Path) -> Result<Watcher> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("inotify_init1")?;
        let (dirs, name): (Vec<PathBuf>, _) = if infra.is_dir() {
            let mut dirs = vec![infra.to_path_buf()];
            for e in
                std::fs::read_dir(infra).with_context(|| format!("listing {}", infra.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    dirs.push(p);
                }
            }
            (dirs, None)
        } else {
            let dir = match infra.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = infra
                .file_name()
                .with_context(|| format!("{} names no file", infra.display()))?;
            (vec![dir], Some(name.to_os_string()))
        };
        for d in &dirs {
            ino.add_watch(d, flags())
                .with_context(|| format!("watching {} (inotify)", d.display()))?;
        }
        Ok(Watcher { ino, name })
    }

    /// Pending events name our file (or, for a folder, a YAML file).
    fn drain(&self) -> Result<bool> {
        let mut hit = false;
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => return Ok(hit),
                Err(e) => return Err(e).context("reading inotify events"),
            };
            for ev in events {
                let Some(n) = ev.name else { continue };
                hit |= match &self.name {
                    Some(want) => &n == want,
                    None => {
                        let s = n.to_string_lossy();
                        s.ends_with(".yml") || s.ends_with(".yaml")
                    }
                };
            }
        }
    }

    /// Wait up to `timeout` for a change; true when one came.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.ino.as_fd(), PollFlags::POLLIN)];
            let n = match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e).context("poll on inotify"),
            };
            if n > 0 && self.drain()? {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
        }
    }

    /// After a change: wait until `quiet` passes without another one (an
    /// editor's save is several events; a `cp` is many writes), or `stop`.
    pub fn settle(&self, quiet: Duration, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::Relaxed) && self.wait(quiet)? {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_and_renames_of_the_file_only() {
        let d = tempfile::tempdir().unwrap();
        let infra = d.path().join("infra.yml");
        let w = Watcher::new(&infra).unwrap();
        assert!(!w.wait(Duration::from_millis(50)).unwrap());
        std::fs::write(d.path().join("other.yml"), "x").unwrap();
        assert!(!w.wait(Duration::from_millis(100)).unwrap(), "another file");
        std::fs::write(&infra, "a: 1\n").unwrap();
        assert!(
            w.wait(Duration::from_secs(5)).unwrap(),
            "created and written"
        );
        let stop = AtomicBool::new(false);
        w.settle(Duration::from_millis(100), &stop).unwrap();
        // An editor's save: a temp file renamed over it.
        let tmp = d.path().join(".infra.yml.swp");
        std::fs::write(&tmp, "a: 2\n").unwrap();
        std::fs::rename(&tmp, &infra).unwrap();
        assert!(w.wait(Duration::from_secs(5)).unwrap(), "renamed over");
        w.settle(Duration::from_millis(100), &stop).unwrap();
        assert!(!w.wait(Duration::from_millis(100)).unwrap(), "settled");
    }

    #[test]
    fn an_infra_folder_is_watched_with_its_subfolders() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("domains")).unwrap();
        let w = Watcher::new(d.path()).unwrap();
        std::fs::write(d.path().join("domains/README"), "x").unwrap();
        assert!(!w.wait(Duration::from_millis(100)).unwrap());
        std::fs::write(d.path().join("domains/pro.yml"), "x").unwrap();
        assert!(w.wait(Duration::from_secs(5)).unwrap());
        assert!(Watcher::new(&d.path().join("no/such/infra.yml")).is_err());
    }
}
