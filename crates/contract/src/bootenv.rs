//! The boot facts the initrd hands to userspace.
//!
//! The initrd's `anklume-root.sh` (`mkosi/debian/mkosi.extra/usr/lib/anklume/initrd/`) writes
//! [`BOOT_ENV`] once it has set up the verified root: `key=value` lines with
//! the keys of [`BootEnv`]. The dm-verity mapping it opens is
//! [`VERITY_NAME`]. Everything in userspace that needs these facts (status,
//! the updater, the agent) reads them through this module.

use std::path::Path;

use serde::Serialize;

use crate::Slot;

/// Where the initrd writes the boot facts.
pub const BOOT_ENV: &str = "/run/anklume/boot.env";

/// Name of the dm-verity mapping of the running slot
/// (`/dev/mapper/anklume-root`).
pub const VERITY_NAME: &str = "anklume-root";

/// The facts of this boot, as the initrd wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootEnv {
    /// The slot that was booted (`slot=a`); `None` when missing or not a
    /// slot name.
    pub slot: Option<Slot>,
    /// `version=`: the OS version of that slot.
    pub version: Option<String>,
    /// `partuuid=`: the slot partition's PARTUUID.
    pub partuuid: Option<String>,
    /// `roothash=`: the dm-verity root hash the kernel command line gave.
    pub roothash: Option<String>,
    /// `device=`: the block device the slot was opened from.
    pub device: Option<String>,
    /// `toram=1`: the slot was copied to RAM and the medium released.
    pub toram: bool,
    /// `persist=`: the persist partition's device, when one is mounted.
    pub persist: Option<String>,
    /// `medium=`: what the slot was found on: `disk`, `cd` (through a loop
    /// device over the CD) or `ventoy` (the ISO file on a Ventoy stick:
    /// never a persist partition, the system runs volatile); `None` from an
    /// initrd that does not say.
    pub medium: Option<String>,
}

impl BootEnv {
    /// Parse `key=value` lines (unknown keys and other lines are ignored;
    /// empty values count as absent).
    pub fn parse(text: &str) -> BootEnv {
        let mut b = BootEnv::default();
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            let v = v.trim();
            let opt = || (!v.is_empty()).then(|| v.to_string());
            match k.trim() {
                "slot" => b.slot = v.parse().ok(),
                "version" => b.version = opt(),
                "partuuid" => b.partuuid = opt(),
                "roothash" => b.roothash = opt(),
                "device" => b.device = opt(),
                "toram" => b.toram = v == "1",
                "persist" => b.persist = opt(),
                "medium" => b.medium = opt(),
                _ => {}
            }
        }
        b
    }

    /// Read `path`; `Ok(None)` when it does not exist (not a Live OS boot).
    pub fn read(path: &Path) -> std::io::Result<Option<BootEnv>> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(BootEnv::parse(&t))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_initrd_writes() {
        let b = BootEnv::parse(
            "slot=b\nversion=0.1.0\npartuuid=1234\nroothash=abcd\ndevice=/dev/vda3\ntoram=1\npersist=\nnoise\nother=x\n",
        );
        assert_eq!(b.slot, Some(Slot::B));
        assert_eq!(b.version.as_deref(), Some("0.1.0"));
        assert_eq!(b.roothash.as_deref(), Some("abcd"));
        assert_eq!(b.device.as_deref(), Some("/dev/vda3"));
        assert!(b.toram);
        assert_eq!(b.persist, None);
        assert_eq!(b.medium, None);
        assert_eq!(
            BootEnv::parse("medium=ventoy\n").medium.as_deref(),
            Some("ventoy")
        );
        assert_eq!(BootEnv::parse("slot=c\ntoram=0").slot, None);
        assert!(!BootEnv::parse("toram=0").toram);
    }

    #[test]
    fn a_missing_file_is_not_a_live_os_boot() {
        let d = std::env::temp_dir().join("anklume-no-such-boot-env");
        assert_eq!(BootEnv::read(&d).unwrap(), None);
    }
}
