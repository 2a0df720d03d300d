//! Where the boot files live: the ESP's layout, one folder per slot.
//!
//! Each slot's kernel and initrd live *beside* the slot, on the ESP (GRUB
//! loads them from there; the slot's squashfs is never read by GRUB), and on
//! the hybrid ISO also in its ISO 9660 tree at the same paths. Paths are
//! relative to the root of that file system, `/`-separated:
//!
//! | path | content |
//! |---|---|
//! | `EFI/BOOT/BOOTX64.EFI` | GRUB EFI |
//! | `EFI/anklume/grub.cfg` | boot selection (the same for every slot) |
//! | `EFI/anklume/grubenv` | boot state ([`crate::bootstate`]) |
//! | `EFI/anklume/slot-<x>/vmlinuz` | slot x's kernel |
//! | `EFI/anklume/slot-<x>/initrd.img` | slot x's initrd |
//! | `EFI/anklume/slot-<x>/manifest.json` | slot x's manifest ([`crate::manifest`]), with the SHA-256 of the two files above |
//! | `EFI/anklume/slot-<x>/slot.cfg` | what `grub.cfg` sources to boot slot x (PARTUUID, root hash, hash offset, version) |
//!
//! Writing a slot's folder (the builder for slot A, the updater for the
//! inactive slot): kernel, initrd and manifest first, `slot.cfg` **last**.
//! `grub.cfg` treats a slot without `slot.cfg` as empty (it boots slot A),
//! so a folder whose write was cut short is never booted.

use crate::Slot;

/// Our folder on the ESP.
pub const ESP_DIR: &str = "EFI/anklume";
/// The removable-media boot path UEFI firmware starts.
pub const EFI_BOOT: &str = "EFI/BOOT/BOOTX64.EFI";
/// The boot selection script.
pub const GRUB_CFG: &str = "EFI/anklume/grub.cfg";
/// The GRUB environment block holding the boot state.
pub const GRUBENV: &str = "EFI/anklume/grubenv";

/// File names inside a slot's folder.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const MANIFEST: &str = "manifest.json";
pub const SLOT_CFG: &str = "slot.cfg";

/// The files GRUB loads to boot a slot, recorded with their SHA-256 in the
/// slot's manifest, in this order.
pub const LOADED: [&str; 2] = [KERNEL, INITRD];

/// A slot's folder: `EFI/anklume/slot-a`.
pub fn slot_dir(s: Slot) -> String {
    format!("{ESP_DIR}/slot-{s}")
}

/// One file of a slot's folder: `EFI/anklume/slot-a/vmlinuz`.
pub fn slot_file(s: Slot, name: &str) -> String {
    format!("{}/{name}", slot_dir(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_has_its_own_folder_under_ours() {
        assert_eq!(slot_file(Slot::A, KERNEL), "EFI/anklume/slot-a/vmlinuz");
        assert_eq!(slot_file(Slot::B, SLOT_CFG), "EFI/anklume/slot-b/slot.cfg");
        assert_ne!(slot_dir(Slot::A), slot_dir(Slot::B));
        for p in [GRUB_CFG, GRUBENV, &slot_dir(Slot::A)] {
            assert!(p.starts_with(&format!("{ESP_DIR}/")), "{p}");
        }
        // Names GRUB and FAT take as they are: no spaces, no upper case
        // (FAT would store a short name with a different case).
        for n in [KERNEL, INITRD, MANIFEST, SLOT_CFG] {
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-'));
        }
    }
}
