//! A tampered copy of an image: bytes flipped inside the data of a file
//! every boot reads, located through the slot's squashfs (backhand).

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use backhand::{FilesystemReader, InnerNode, SquashfsFileReader};

/// Files read by every boot, most specific first (PID 1, then its library).
const TARGETS: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared",
];

/// Where the tamper landed.
#[derive(Debug)]
pub struct Tampered {
    pub file: String,
    /// Absolute byte offset in the image.
    pub offset: u64,
}

/// Copy `image` to `out` and flip 16 bytes in the first data block of one
/// of [`TARGETS`] inside the squashfs starting at `slot_offset`.
pub fn tamper(image: &Path, out: &Path, slot_offset: u64) -> Result<Tampered> {
    std::fs::copy(image, out)
        .with_context(|| format!("copying {} to {}", image.display(), out.display()))?;
    let f = File::open(out)?;
    let fs = FilesystemReader::from_reader_with_offset(BufReader::new(f), slot_offset)
        .context("reading the slot's squashfs")?;
    for target in TARGETS {
        for node in fs.files() {
            let path = node.fullpath.to_string_lossy();
            if !path.starts_with(target) {
                continue;
            }
            if let InnerNode::File(file) = &node.inner {
                let (start, sizes) = match file {
                    SquashfsFileReader::Basic(b) => (u64::from(b.blocks_start), &b.block_sizes),
                    SquashfsFileReader::Extended(e) => (e.blocks_start, &e.block_sizes),
                };
                let Some(first) = sizes.first() else { continue };
                let len = u64::from(first.size());
                if len < 64 {
                    continue;
                }
                let offset = slot_offset + start + len / 2;
                let w = OpenOptions::new().read(true).write(true).open(out)?;
                let mut buf = [0u8; 16];
                w.read_exact_at(&mut buf, offset)?;
                for b in &mut buf {
                    *b ^= 0xa5;
                }
                w.write_all_at(&buf, offset)?;
                w.sync_all()?;
                return Ok(Tampered {
                    file: path.into_owned(),
                    offset,
                });
            }
        }
    }
    bail!("none of {TARGETS:?} has a data block in the slot's squashfs")
}
