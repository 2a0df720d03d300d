//! The A/B updater's library: `anklume-update` and `anklume update` are
//! thin CLIs over it.
//!
//! - [`open`]: a bundle ([`anklume_contract::bundle`]) is opened and checked
//!   (signature by a trusted key, layout, block index, boot files) before
//!   anything is written; [`source`] reads it by ranges and counts bytes,
//!   from a file or over HTTP(S) ([`http`], resuming cut connections).
//! - [`mod@update`]: version rules, space, a delta [`delta::plan`], then the
//!   crash-safe write order (see that module) with [`mod@write`] recomputing the
//!   verity tree while the image is written.
//! - [`ops`]: status, mark-good, rollback on the boot state; [`esp`]: the
//!   ESP's files, replaced atomically; [`system`]: the running machine.
//! - [`make`]: making a bundle (tests; `anklume-build bundle`); [`keys`].
//!
//! Crates: `ring` for ed25519 and SHA-256 (the contract's choice; its SHA-256
//! uses the CPU's SHA extensions), `anklume-verity` for the tree, `nix` for
//! statvfs.

pub mod cli;
pub mod delta;
pub mod esp;
pub mod grow;
pub mod http;
pub mod keys;
pub mod make;
pub mod open;
pub mod ops;
pub mod slotcfg;
pub mod source;
pub mod system;
pub mod trust;
pub mod update;
pub mod write;

pub use http::HttpSource;
pub use open::OpenBundle;
pub use source::{FileSource, Source};
pub use system::System;
pub use update::{update, Report, Step, UpdateOptions};
