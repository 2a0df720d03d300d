//! `anklume-build`: turns a rootfs tree into the anklume Live OS image.
//!
//! Pipeline (DESIGN.md §3): mkosi rootfs → squashfs (mksquashfs) → dm-verity
//! tree (ours, [`verity`]) → slot image → ESP (FAT via `fatfs`, GRUB, boot
//! state, manifest) → hybrid ISO (xorriso, GPT fixed up with our own writer)
//! or raw GPT disk.
//!
//! Crate choices: `sha2` for hashing (SHA-NI accelerated); `fatfs` for the
//! ESP; `indicatif` for progress. Squashfs is written by `mksquashfs`
//! (multi-threaded, keeps xattrs) as DESIGN.md asks.

pub mod cli;
pub mod cmd;
pub mod esp;
pub mod gpt;
pub mod grub;
pub mod image;
pub mod iso;
pub mod progress;
pub mod rootfs;
pub mod slot;
pub mod verity;
pub mod verity_cli;
