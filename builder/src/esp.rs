//! The ESP's FAT file system: moved to the `anklume-esp` library so that the
//! agent (boot state) and the updater use the same code as the builder.

pub use anklume_esp::*;
