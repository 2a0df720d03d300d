//! The dm-verity hash tree: the pure computation lives in the
//! `anklume-verity` library (shared with the updater, which recomputes the
//! tree while it writes a slot); re-exported here under its old path.

pub use anklume_verity::*;
