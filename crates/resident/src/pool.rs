//! The data pool's mount point.
//!
//! Until the pool pointer (persist partition) says otherwise, the pool's
//! file system is mounted at [`POOL_DIR`] and anklume's own folder on it
//! (the `anklume` subvolume or dataset) holds `infra.yml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use anklume_contract::pool::{INFRA_ON_POOL, POOL_DIR};

/// The default `infra.yml`: on the pool.
pub fn default_infra(pool: &Path) -> PathBuf {
    pool.join(INFRA_ON_POOL)
}

/// One mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount at `dir` (the last one wins), from the mountinfo at `mountinfo`.
pub fn mounted_at(mountinfo: &Path, dir: &Path) -> Result<Option<MountEntry>> {
    let text = std::fs::read_to_string(mountinfo)
        .with_context(|| format!("reading {}", mountinfo.display()))?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = PathBuf::from(unescape(pre.split_whitespace().nth(4)?));
            let mut p = post.split_whitespace();
            let fstype = p.next()?.to_string();
            let source = unescape(p.next()?);
            (mp == dir).then_some(MountEntry {
                mount_point: mp,
                fstype,
                source,
            })
        })
        .next_back())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_mount_point_in_the_real_mountinfo() {
        let mi = Path::new("/proc/self/mountinfo");
        let proc_ = mounted_at(mi, Path::new("/proc")).unwrap().unwrap();
        assert_eq!(proc_.fstype, "proc");
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(mounted_at(mi, tmp.path()).unwrap(), None);
        assert!(mounted_at(Path::new("/nonexistent/mountinfo"), tmp.path()).is_err());
    }

    #[test]
    fn escaped_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = tmp.path().join("mountinfo");
        std::fs::write(
            &mi,
            "40 22 0:50 / /var/lib/anklume/my\\040pool rw - btrfs /dev/mapper/anklume-pool rw\n",
        )
        .unwrap();
        let m = mounted_at(&mi, Path::new("/var/lib/anklume/my pool"))
            .unwrap()
            .unwrap();
        assert_eq!(m.source, "/dev/mapper/anklume-pool");
        assert_eq!(m.fstype, "btrfs");
    }
}
