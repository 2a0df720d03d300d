//! GPT partition types and labels of an anklume medium.
//!
//! Our partitions are found by type GUID *and* PARTLABEL (or PARTUUID),
//! never by a filesystem label that anyone can forge on another disk.
//! Type GUIDs follow the UAPI Discoverable Partitions Specification where
//! one fits.

use crate::Slot;

/// EFI System Partition (UEFI spec).
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// An OS slot holds the root filesystem (squashfs) and its appended verity
/// tree: the DPS "Root Partition (x86-64)" type.
pub const SLOT_TYPE_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The persist partition (machine identity, SSH host keys, network config,
/// pool pointer): "Linux filesystem data", so that no generator auto-mounts
/// it somewhere we did not choose.
pub const PERSIST_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// GRUB's BIOS boot partition (for `--format raw` BIOS boots from GPT).
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";

/// PARTLABEL of the ESP.
pub const ESP_LABEL: &str = "anklume-esp";
/// PARTLABEL of the persist partition.
pub const PERSIST_LABEL: &str = "anklume-persist";

/// PARTLABEL of an OS slot.
pub fn slot_label(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "anklume-slot-a",
        Slot::B => "anklume-slot-b",
    }
}

/// The slot a PARTLABEL names, if it names one.
pub fn slot_from_label(label: &str) -> Option<Slot> {
    [Slot::A, Slot::B]
        .into_iter()
        .find(|s| slot_label(*s) == label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_labels_round_trip_and_differ() {
        assert_eq!(slot_from_label(slot_label(Slot::A)), Some(Slot::A));
        assert_eq!(slot_from_label(slot_label(Slot::B)), Some(Slot::B));
        assert_ne!(slot_label(Slot::A), slot_label(Slot::B));
        assert_eq!(slot_from_label(ESP_LABEL), None);
    }

    #[test]
    fn type_guids_are_well_formed_and_distinct() {
        let all = [ESP_TYPE, SLOT_TYPE_X86_64, PERSIST_TYPE, BIOS_BOOT_TYPE];
        for g in all {
            let groups: Vec<usize> = g.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{g}");
            assert!(g.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
