//! Where the boot files live: the ESP's layout, one folder per slot.
//!
//! Each slot's kernel and initrd live *beside* the slot, on the ESP (GRUB
//! loads them from there; the slot's squashfs is never read by GRUB), and on
//! the hybrid ISO also in its ISO 9660 tree at the same paths. Paths are
//! relative to the root of that file system, `/`-separated:
//!
//! | path | content |
//! |---|---|
//! | `EFI/BOOT/BOOTX64.EFI` | GRUB EFI; on a signed build, shim (signed by Microsoft and by the build's key) |
//! | `EFI/BOOT/grubx64.efi` | signed build: Debian's signed GRUB, which shim starts |
//! | `EFI/BOOT/mmx64.efi` | signed build: MokManager (enrols the build's certificate as a MOK) |
//! | `EFI/BOOT/grub.cfg` | signed build: what Debian's GRUB reads first (finds the ESP, hands over to ours) |
//! | `EFI/anklume/grub.cfg` | boot selection (the same for every slot) |
//! | `EFI/anklume/anklume-sb.der` | signed build: the certificate the UKIs are signed with (for MokManager) |
//! | `EFI/anklume/grubenv` | boot state ([`crate::bootstate`]) |
//! | `EFI/anklume/slot-<x>/vmlinuz` | slot x's kernel |
//! | `EFI/anklume/slot-<x>/initrd.img` | slot x's initrd |
//! | `EFI/anklume/slot-<x>/anklume.efi` | signed build: slot x's UKI (kernel + initrd + command line with the root hash), signed |
//! | `EFI/anklume/slot-<x>/manifest.json` | slot x's manifest ([`crate::manifest`]), with the SHA-256 of the boot files above |
//! | `EFI/anklume/slot-<x>/slot.cfg` | what `grub.cfg` sources to boot slot x (PARTUUID, root hash, hash offset, version) |
//!
//! With Secure Boot on (GRUB's `$lockdown`), `grub.cfg` only chainloads the
//! slot's signed UKI: shim checks its signature, and the UKI's own command
//! line (with the verity root hash) and initrd are inside what is signed.
//! Without Secure Boot, and on BIOS, GRUB loads `vmlinuz` + `initrd.img`
//! with the command line built from `slot.cfg`.
//!
//! Writing a slot's folder (the builder for slot A, the updater for the
//! inactive slot): boot files and manifest first, `slot.cfg` **last**.
//! `grub.cfg` treats a slot without `slot.cfg` as empty (it boots slot A),
//! so a folder whose write was cut short is never booted.

use crate::Slot;

/// Our folder on the ESP.
pub const ESP_DIR: &str = "EFI/anklume";
/// The removable-media boot path UEFI firmware starts.
pub const EFI_BOOT: &str = "EFI/BOOT/BOOTX64.EFI";
/// The boot selection script.
pub const GRUB_CFG: &str = "EFI/anklume/grub.cfg";
/// Signed build: shim's second stage (Debian's signed GRUB).
pub const SHIM_NEXT: &str = "EFI/BOOT/grubx64.efi";
/// Signed build: MokManager, which shim and `grub.cfg` start.
pub const MOK_MANAGER: &str = "EFI/BOOT/mmx64.efi";
/// Signed build: the config Debian's signed GRUB reads (from its own folder).
pub const SIGNED_GRUB_CFG: &str = "EFI/BOOT/grub.cfg";
/// Signed build: the signing certificate (DER), for MokManager's
/// "Enroll key from disk".
pub const SB_CERT: &str = "EFI/anklume/anklume-sb.der";
/// The GRUB environment block holding the boot state.
pub const GRUBENV: &str = "EFI/anklume/grubenv";

/// File names inside a slot's folder.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const MANIFEST: &str = "manifest.json";
pub const SLOT_CFG: &str = "slot.cfg";
/// Signed build: the slot's signed unified kernel image.
pub const UKI: &str = "anklume.efi";

/// The files GRUB loads to boot a slot, recorded with their SHA-256 in the
/// slot's manifest, in this order.
pub const LOADED: [&str; 2] = [KERNEL, INITRD];
/// What a signed build adds after [`LOADED`].
pub const SIGNED: [&str; 1] = [UKI];

/// Whether `names` (a manifest's boot files, in order) is a valid list:
/// [`LOADED`], optionally followed by [`SIGNED`].
pub fn valid_boot_files(names: &[&str]) -> bool {
    names == LOADED
        || (names.len() == LOADED.len() + SIGNED.len()
            && names[..2] == LOADED
            && names[2..] == SIGNED)
}

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
        assert!(valid_boot_files(&LOADED));
        assert!(valid_boot_files(&[KERNEL, INITRD, UKI]));
        for bad in [
            &[KERNEL][..],
            &[INITRD, KERNEL],
            &[KERNEL, INITRD, UKI, UKI],
            &[UKI, KERNEL, INITRD],
        ] {
            assert!(!valid_boot_files(bad), "{bad:?}");
        }
        // Names GRUB and FAT take as they are: no spaces, no upper case
        // (FAT would store a short name with a different case).
        for n in [KERNEL, INITRD, MANIFEST, SLOT_CFG, UKI] {
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-'));
        }
    }
}
