//! A slot's boot parameters as GRUB and the signed UKI take them: the
//! `slot-<x>/slot.cfg` text that `grub.cfg` sources, GRUB's kernel command
//! line, and the command line signed into a UKI. `slot.cfg` is written by
//! the builder for slot A and by the updater for the inactive slot: one
//! renderer.

use crate::manifest::SlotManifest;
use crate::Slot;

/// What grub.cfg needs to boot one slot.
#[derive(Debug, Clone)]
pub struct SlotBoot {
    pub slot: Slot,
    pub partuuid: String,
    pub root_hash: String,
    pub hash_offset: u64,
    pub version: String,
}

/// `slot-<x>/slot.cfg`: variables `grub.cfg` sources before booting slot x.
/// Written by the builder (slot A) and the updater (the inactive slot),
/// last of the slot's folder ([`crate::bootfiles`]).
pub fn slot_cfg(b: &SlotBoot) -> String {
    format!(
        "# anklume slot {s}: written by anklume-build/anklume-update; do not edit.\n\
         set anklume_version=\"{v}\"\n\
         set anklume_partuuid={u}\n\
         set anklume_roothash={h}\n\
         set anklume_hashoffset={o}\n",
        s = b.slot,
        v = b.version,
        u = b.partuuid.to_lowercase(),
        h = b.root_hash,
        o = b.hash_offset
    )
}

/// What every anklume kernel command line starts with.
pub const CMDLINE_BASE: &str = "root=anklume ro console=tty0 console=ttyS0,115200";

/// The kernel command line of a slot, in GRUB's variables (`slot.cfg`'s):
/// [`CMDLINE_BASE`], then the slot, its PARTUUID and its verity values.
/// `grub.cfg` passes it as is.
pub const CMDLINE: &str = "root=anklume ro console=tty0 console=ttyS0,115200 anklume.slot=$anklume_boot anklume.partuuid=$anklume_partuuid anklume.roothash=$anklume_roothash anklume.hashoffset=$anklume_hashoffset anklume.version=$anklume_version";

/// What a UKI adds to its command line: its command line cannot depend on
/// whether GRUB counted the try, so a failed boot always reboots (the next
/// try, or the other slot, comes).
pub const UKI_ON_FAIL: &str = "panic=10 anklume.onfail=reboot";

/// The command line signed into the UKI of the slot image `m`.
///
/// It names no slot and no partition, only the image: its verity root
/// hash, hash offset and version. The initrd finds the slot partition
/// (GPT type and name) whose verity tree at the hash offset gives that
/// root hash (from the superblock's salt and the top hash block), so one
/// signed UKI boots the image from slot A or B of any medium: the release
/// signs it once and the updater writes it as it comes in the bundle.
/// Finding the partition this way is no trust decision: dm-verity then
/// checks every block against the signed root hash.
pub fn uki_cmdline(m: &SlotManifest) -> String {
    format!(
        "{CMDLINE_BASE} anklume.roothash={} anklume.hashoffset={} anklume.version={} {UKI_ON_FAIL}",
        m.root_hash, m.hash_offset, m.version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_cfg_text_is_pinned() {
        let c = slot_cfg(&SlotBoot {
            slot: Slot::B,
            partuuid: "ABCD-EF".into(),
            root_hash: "12".repeat(32),
            hash_offset: 4096,
            version: "0.2.0".into(),
        });
        let want = format!(
            "# anklume slot b: written by anklume-build/anklume-update; do not edit.\n\
             set anklume_version=\"0.2.0\"\nset anklume_partuuid=abcd-ef\n\
             set anklume_roothash={}\nset anklume_hashoffset=4096\n",
            "12".repeat(32)
        );
        assert_eq!(c, want);
    }

    #[test]
    fn the_uki_command_line_names_the_image_not_a_partition() {
        let m = SlotManifest {
            version: "0.2.0".into(),
            kernel_version: "6.12.9-amd64".into(),
            data_size: 1000,
            hash_offset: 4096,
            data_blocks: 1,
            salt: "ab".repeat(32),
            root_hash: "12".repeat(32),
            boot_files: Vec::new(),
        };
        let line = uki_cmdline(&m);
        assert_eq!(
            line,
            format!(
                "root=anklume ro console=tty0 console=ttyS0,115200 anklume.roothash={} anklume.hashoffset=4096 anklume.version=0.2.0 panic=10 anklume.onfail=reboot",
                "12".repeat(32)
            )
        );
        assert!(!line.contains("anklume.slot=") && !line.contains("anklume.partuuid="));
        assert!(CMDLINE.starts_with(&format!("{CMDLINE_BASE} ")));
    }
}
