//! A slot's boot parameters as GRUB and the signed UKI take them: the
//! `slot-<x>/slot.cfg` text that `grub.cfg` sources, and the kernel command
//! line (the same template, filled in for a UKI). Written by the builder
//! for slot A and by the updater for the inactive slot: one renderer.

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

/// The kernel command line of a slot, in GRUB's variables (`slot.cfg`'s).
/// `grub.cfg` passes it as is; a signed UKI carries it with the values of
/// one slot filled in ([`kernel_cmdline`]).
pub const CMDLINE: &str = "root=anklume ro console=tty0 console=ttyS0,115200 anklume.slot=$anklume_boot anklume.partuuid=$anklume_partuuid anklume.roothash=$anklume_roothash anklume.hashoffset=$anklume_hashoffset anklume.version=$anklume_version";

/// What a UKI adds to [`CMDLINE`]: its command line cannot depend on
/// whether GRUB counted the try, so a failed boot always reboots (the next
/// try, or the other slot, comes).
pub const UKI_ON_FAIL: &str = "panic=10 anklume.onfail=reboot";

/// The command line signed into slot `b`'s UKI: [`CMDLINE`] with `b`'s
/// values, then [`UKI_ON_FAIL`].
pub fn kernel_cmdline(b: &SlotBoot) -> String {
    let line = CMDLINE
        .replace("$anklume_boot", &b.slot.to_string())
        .replace("$anklume_partuuid", &b.partuuid.to_lowercase())
        .replace("$anklume_roothash", &b.root_hash)
        .replace("$anklume_hashoffset", &b.hash_offset.to_string())
        .replace("$anklume_version", &b.version);
    format!("{line} {UKI_ON_FAIL}")
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
}
