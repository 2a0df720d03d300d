//! A slot image: the squashfs of the rootfs followed, at the next 4 KiB
//! boundary, by its dm-verity superblock and hash tree.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::manifest::SlotManifest;
use anklume_contract::verity::{hash_offset, BLOCK_SIZE};
use anklume_contract::Slot;

use crate::cmd::Cmd;
use crate::progress::Progress;
use crate::verity::{self, FormatOptions, Params};

/// Squashfs compressor. GRUB reads the kernel and initrd from the squashfs,
/// and GRUB 2.12's squash4 module reads zlib, lzo and xz only (no zstd), so
/// the slot is xz.
pub const COMPRESSOR: &[&str] = &["-comp", "xz"];

/// Write `rootfs` as a squashfs to `out` (reproducible with `SOURCE_DATE_EPOCH`).
pub fn mksquashfs(rootfs: &Path, out: &Path, epoch: u64) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Cmd::new("mksquashfs")
        .arg(rootfs)
        .arg(out)
        .args(["-noappend", "-xattrs", "-no-progress", "-quiet"])
        .args(COMPRESSOR)
        .args(["-processors", &threads.to_string()])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()
        .with_context(|| format!("writing the squashfs of {}", rootfs.display()))
}

/// Salt and UUID derived from the build inputs (determinism, DESIGN.md §3).
pub fn derived_params(version: &str, epoch: u64, slot: Slot, data_blocks: u64) -> Params {
    let d = |what: &str| {
        Sha256::new()
            .chain_update(format!("anklume verity {what}\0{version}\0{epoch}\0{slot}"))
            .finalize()
    };
    let uuid = verity::as_uuid_v4(d("uuid")[..16].try_into().expect("16 bytes"));
    Params {
        data_blocks,
        salt: d("salt").to_vec(),
        uuid,
    }
}

/// Append the verity tree to the squashfs in `image`; returns its manifest.
pub fn seal(
    image: &Path,
    slot: Slot,
    version: &str,
    kernel_version: &str,
    epoch: u64,
    progress: &Progress,
) -> Result<SlotManifest> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let data_size = f.metadata()?.len();
    let offset = hash_offset(data_size);
    // Zero-pad the squashfs to the block boundary: verity covers whole blocks.
    f.set_len(offset)
        .with_context(|| format!("padding {}", image.display()))?;
    let data_blocks = offset / BLOCK_SIZE;
    let params = derived_params(version, epoch, slot, data_blocks);
    let bar = progress.bytes("verity", offset);
    let formatted = verity::format(
        &f,
        &f,
        &FormatOptions {
            params,
            hash_offset: offset,
            data_offset: 0,
            threads: 0,
        },
        &|n| bar.inc(n),
    )
    .with_context(|| format!("computing the verity tree of {}", image.display()))?;
    bar.finish();
    f.sync_all()?;
    Ok(SlotManifest {
        version: version.to_string(),
        kernel_version: kernel_version.to_string(),
        data_size,
        hash_offset: offset,
        data_blocks,
        salt: verity::hex(&formatted.params.salt),
        root_hash: verity::hex(&formatted.root_hash),
    })
}
