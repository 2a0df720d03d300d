//! The on-disk contract of anklume Live OS.
//!
//! Builder, updater, first-boot wizard and agent all read and write the same
//! disks; every fact they must agree on (partition types and labels, the A/B
//! slot model, the ESP's layout with each slot's boot files, the boot-state
//! variables GRUB counts with, the slot manifest, the dm-verity parameters,
//! the boot facts the initrd hands to userspace)
//! lives here and nowhere else.
//! See `docs/DESIGN.md` §3 for the layout this encodes.

pub mod bootenv;
pub mod bootfiles;
pub mod bootstate;
pub mod bundle;
pub mod manifest;
pub mod partition;
pub mod pool;
pub mod slot;
pub mod slotcfg;
pub mod verity;

pub use slot::Slot;
