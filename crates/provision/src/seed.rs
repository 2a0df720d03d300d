//! The seed volume: where a user puts a preseed without any tool.
//!
//! A small FAT or ISO 9660 volume labelled `ANKLUME-SEED` (a second CD, an
//! ISO image attached to a VM) or `ANKLUMESEED` (FAT labels have at most 11
//! characters: a USB stick formatted by any OS) holding [`SEED_FILE`] at
//! its root.
//! It is found by its filesystem label in udev's data (the same data that
//! makes `/dev/disk/by-label/ANKLUME-SEED`), mounted read-only (`ro`,
//! `nodev`, `nosuid`, `noexec`) through [`SeedMount`], read, and unmounted.
//! A label only ever *reads* a preseed: it never decides which disk is
//! written, the preseed's selector and `wipe` do.

use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{bail, Context, Result};

use crate::inventory::{BlockDevice, Inventory};
use crate::preseed::{Preseed, SEED_FILE};

/// The filesystem label of a seed volume.
pub const SEED_LABEL: &str = "ANKLUME-SEED";
/// The same, within FAT's 11 characters.
pub const SEED_LABEL_FAT: &str = "ANKLUMESEED";

/// Filesystems a seed volume may have.
pub const SEED_FSTYPES: &str = "vfat,iso9660";

/// Where the seed volume is mounted while it is read.
pub const SEED_MOUNT_DIR: &str = "/run/anklume/seed";

/// A filesystem of this type and label is a seed volume (label compared
/// without case: FAT labels are upper-case, some tools write them
/// otherwise).
pub fn is_seed(fs_type: Option<&str>, label: Option<&str>) -> bool {
    label.is_some_and(|l| {
        l.eq_ignore_ascii_case(SEED_LABEL) || l.eq_ignore_ascii_case(SEED_LABEL_FAT)
    }) && fs_type.is_some_and(|t| matches!(t, "vfat" | "iso9660"))
}

/// The seed volumes of the machine.
pub fn seed_volumes(inv: &Inventory) -> Vec<&BlockDevice> {
    inv.devices
        .iter()
        .filter(|d| is_seed(d.fs_type.as_deref(), d.fs_label.as_deref()))
        .collect()
}

/// The one seed volume, `None` when there is none; two are an error (which
/// one to trust?).
pub fn find_seed(inv: &Inventory) -> Result<Option<&BlockDevice>> {
    match seed_volumes(inv).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "{} volumes are labelled {SEED_LABEL} ({}): leave only one plugged in",
            many.len(),
            many.iter()
                .map(|d| format!("/dev/{}", d.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A read-only mount of a seed volume; unmounted by [`SeedMount::close`]
/// (or, best effort, when dropped).
#[derive(Debug)]
pub struct SeedMount(anklume_cmd::mount::Mounted);

impl SeedMount {
    /// The mount command: read-only, no devices, no set-uid, no programs,
    /// only the filesystem types in `fstypes` (a comma list).
    pub fn command(source: &Path, dir: &Path, fstypes: &str, as_loop: bool) -> Cmd {
        let mut opts = String::from("ro,nodev,nosuid,noexec");
        if as_loop {
            opts.push_str(",loop");
        }
        Cmd::new("mount")
            .args(["-t", fstypes, "-o", &opts])
            .arg(source)
            .arg(dir)
    }

    /// Mount `source` (a block device; an image file with `as_loop`)
    /// read-only on `dir`, created if needed; `fstypes` is
    /// [`SEED_FSTYPES`] but for tests.
    pub fn mount(source: &Path, dir: &Path, fstypes: &str, as_loop: bool) -> Result<SeedMount> {
        anklume_cmd::mount::Mounted::run(
            Self::command(source, dir, fstypes, as_loop),
            dir,
            &format!("the seed volume {}", source.display()),
        )
        .map(SeedMount)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Unmount; an error says the volume is still mounted.
    pub fn close(self) -> Result<()> {
        self.0.close()
    }
}

/// Read the preseed from the root `dir` of a mounted seed volume.
pub fn read_seed(dir: &Path, origin: &str) -> Result<Preseed> {
    let file = dir.join(SEED_FILE);
    if !file.exists() {
        bail!("the seed volume {origin} has no {SEED_FILE} at its root");
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Preseed::parse(&text, &format!("{origin}:/{SEED_FILE}"), dir)
}

/// Find, mount, read and unmount the seed volume. `Ok(None)`: there is none.
pub fn load_seed(inv: &Inventory, mount_dir: &Path) -> Result<Option<Preseed>> {
    let Some(dev) = find_seed(inv)? else {
        return Ok(None);
    };
    let source = PathBuf::from(format!("/dev/{}", dev.name));
    let m = SeedMount::mount(&source, mount_dir, SEED_FSTYPES, false)?;
    let read = read_seed(m.path(), &source.display().to_string());
    m.close()?;
    read.map(Some)
}

#[cfg(test)]
mod tests;
