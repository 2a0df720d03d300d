//! `slot-<x>/slot.cfg`: the variables `grub.cfg` sources to boot slot x.
//!
//! The text is the builder's (`builder/src/grub.rs` `slot_cfg`), which this
//! crate may not depend on (a program's crate); both must move to
//! `anklume-contract` `bootfiles` as one function. The test pins the text.

use anklume_contract::Slot;

/// What `grub.cfg` needs to boot one slot.
#[derive(Debug, Clone)]
pub struct SlotBoot {
    pub slot: Slot,
    pub partuuid: String,
    pub root_hash: String,
    pub hash_offset: u64,
    pub version: String,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_as_the_builder_writes() {
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
