//! `slot-<x>/slot.cfg`: the variables `grub.cfg` sources to boot slot x,
//! rendered by the contract's one renderer (the builder uses the same).

pub use anklume_contract::slotcfg::{slot_cfg, SlotBoot};
