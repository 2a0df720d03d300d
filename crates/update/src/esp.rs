//! The ESP as the updater sees it (a mounted FAT, or a plain directory in
//! tests): the boot state in `grubenv` and each slot's folder
//! ([`anklume_contract::bootfiles`]). Every file is replaced atomically
//! (temporary file, fsync, rename, fsync of the folder).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use anklume_contract::bootfiles::{self, GRUBENV, INITRD, KERNEL, MANIFEST, SLOT_CFG};
use anklume_contract::bootstate::{decode_envblk, encode_envblk, BootState};
use anklume_contract::manifest::SlotManifest;
use anklume_contract::Slot;

/// The files of a slot's folder, `slot.cfg` first: the order they are
/// removed in (a folder without `slot.cfg` is empty to GRUB).
const SLOT_FILES: [&str; 4] = [SLOT_CFG, MANIFEST, INITRD, KERNEL];

/// A mounted ESP.
#[derive(Debug, Clone)]
pub struct Esp {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Replace `path` with `data`: `.<name>.tmp` beside it, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no folder", path.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

impl Esp {
    pub fn new(root: impl Into<PathBuf>) -> Esp {
        Esp { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn slot_file(&self, s: Slot, name: &str) -> PathBuf {
        self.path(&bootfiles::slot_file(s, name))
    }

    /// The boot state and every variable of the block (others are kept).
    pub fn read_state(&self) -> Result<(BootState, BTreeMap<String, String>)> {
        let p = self.path(GRUBENV);
        let blk =
            std::fs::read(&p).with_context(|| format!("reading the boot state {}", p.display()))?;
        let vars = decode_envblk(&blk).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        let st = BootState::from_vars(&vars).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        Ok((st, vars))
    }

    /// Write `st`, keeping the block's other variables.
    pub fn write_state(&self, st: &BootState) -> Result<()> {
        let (_, mut vars) = self.read_state()?;
        vars.extend(st.to_vars());
        let blk = encode_envblk(&vars).map_err(|e| anyhow!(e))?;
        write_atomic(&self.path(GRUBENV), &blk)
    }

    pub fn has_slot_cfg(&self, s: Slot) -> bool {
        self.slot_file(s, SLOT_CFG).is_file()
    }

    /// Whether any file of the slot's folder (or a leftover temporary) exists.
    pub fn has_any_file(&self, s: Slot) -> Result<bool> {
        let dir = self.path(&bootfiles::slot_dir(s));
        match std::fs::read_dir(&dir) {
            Ok(mut d) => Ok(d.next().is_some()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
        }
    }

    /// The slot's manifest, if its folder has one.
    pub fn slot_manifest(&self, s: Slot) -> Result<Option<SlotManifest>> {
        let p = self.slot_file(s, MANIFEST);
        match std::fs::read_to_string(&p) {
            Ok(t) => SlotManifest::from_json(&t)
                .map(Some)
                .map_err(|e| anyhow!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Write one file of a slot's folder (creating the folder).
    pub fn write_slot_file(&self, s: Slot, name: &str, data: &[u8]) -> Result<()> {
        let dir = self.path(&bootfiles::slot_dir(s));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(name), data)
    }

    /// Empty a slot's folder: `slot.cfg` first (from then on GRUB sees an
    /// empty slot), then the rest and any leftover temporary file.
    pub fn clear_slot(&self, s: Slot) -> Result<()> {
        let dir = self.path(&bootfiles::slot_dir(s));
        if !dir.exists() {
            return Ok(());
        }
        for name in SLOT_FILES {
            let p = dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
            }
            if name == SLOT_CFG {
                sync_dir(&dir)?;
            }
        }
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        sync_dir(&dir)
    }

    /// Bytes the slot's folder holds now (freed when it is rewritten).
    pub fn slot_bytes(&self, s: Slot) -> u64 {
        let dir = self.path(&bootfiles::slot_dir(s));
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Free bytes on the ESP's file system.
    pub fn free_bytes(&self) -> Result<u64> {
        let v = nix::sys::statvfs::statvfs(&self.root)
            .with_context(|| format!("statvfs {}", self.root.display()))?;
        Ok(v.blocks_available() as u64 * v.fragment_size() as u64)
    }
}

/// The slot GRUB boots next with this state and this ESP: the same rules
/// as `grub.cfg` (builder `grub.rs`): the primary slot, unless it is out of
/// tries and never marked good; a slot without `slot.cfg` is empty and
/// slot A boots.
pub fn would_boot(st: &BootState, esp: &Esp) -> Slot {
    let p = st.primary;
    let pick = if !st.is_good(p) && st.tries(p) == Some(0) {
        p.other()
    } else {
        p
    };
    if esp.has_slot_cfg(pick) {
        pick
    } else {
        Slot::A
    }
}
