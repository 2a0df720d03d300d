//! `anklume-build`: turns a rootfs tree into the anklume Live OS image.
//!
//! Pipeline (DESIGN.md §3): mkosi rootfs → squashfs (mksquashfs) → dm-verity
//! tree (ours, [`verity`]) → slot image → ESP (FAT via `fatfs`, GRUB, boot
//! state, manifest) → hybrid ISO (xorriso, GPT fixed up with our own writer)
//! or raw GPT disk.
//!
//! Secure Boot ([`signing`]): with the user's key, the ESP starts
//! Microsoft-signed shim (which also carries our signature, for machines
//! whose db holds only the user's certificate), then Debian's signed GRUB,
//! which chainloads each slot's UKI signed with that key (`ukify` +
//! `sbsign`).
//!
//! Crate choices: `sha2` for hashing (SHA-NI accelerated); `fatfs` for the
//! ESP; `indicatif` for progress. Squashfs is written by `mksquashfs`
//! (multi-threaded, keeps xattrs) as DESIGN.md asks.
//!
//! The GPT is ours ([`gpt`]) rather than the `gpt` crate's: the image layout
//! is the on-disk contract we own, the hybrid ISO needs xorriso's table
//! patched *in place* (the crate rewrites the protective MBR, which holds
//! the BIOS boot code and the bootable entry), and the raw image needs
//! GRUB's MBR code and BIOS boot partition ([`biosboot`]) next to it.

pub mod biosboot;
pub mod bootfiles;
pub mod bundle;
pub mod cli;
pub use anklume_cmd as cmd;
pub mod esp;
pub mod gpt;
pub mod grub;
pub mod image;
pub mod iso;
pub mod progress;
pub mod raw;
pub mod rootfs;
pub mod signing;
pub mod slot;
pub mod verity;
pub mod verity_cli;
