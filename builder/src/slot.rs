//! A slot image: the squashfs of the rootfs followed, at the next 4 KiB
//! boundary, by its dm-verity superblock and hash tree.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::manifest::SlotManifest;
use anklume_contract::verity::{hash_offset, BLOCK_SIZE};
use anklume_contract::Slot;

use crate::bootfiles::BootFiles;
use crate::cmd::Cmd;
use crate::progress::Progress;
use crate::verity::{self, FormatOptions, Params};

/// Squashfs compressor. GRUB no longer reads the slot (it loads the kernel
/// and initrd from the slot's folder on the ESP), so the slot need not be
/// xz, the one compressor GRUB's squash4 and the kernel share: zstd
/// (the trixie kernel has `CONFIG_SQUASHFS_ZSTD=y`), at a level measured in
/// docs/live-os.md: much faster to write than xz, and faster to read.
pub const COMPRESSOR: &[&str] = &["-comp", "zstd", "-Xcompression-level", "3"];

/// Paths of the rootfs kept out of the slot (mksquashfs `-wildcards`
/// patterns, relative to the tree's root): the kernel and initrd images and
/// their links. They boot from the slot's folder on the ESP, recorded with
/// their SHA-256 in the manifest; a copy in the slot would be 45 MB that
/// nothing reads. The kernel's modules (`/usr/lib/modules/<release>`), its
/// config and System.map stay in the slot.
pub const EXCLUDED: &[&str] = &[
    "boot/vmlinuz*",
    "boot/initrd.img*",
    "vmlinuz*",
    "initrd.img*",
];

/// Write `rootfs` as a squashfs to `out` (reproducible with `SOURCE_DATE_EPOCH`).
pub fn mksquashfs(rootfs: &Path, out: &Path, epoch: u64) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Cmd::new("mksquashfs")
        .arg(rootfs)
        .arg(out)
        .args(["-noappend", "-xattrs", "-no-progress", "-quiet"])
        .args(COMPRESSOR)
        .args(["-processors", &threads.to_string()])
        // -e takes every argument after it: last.
        .args(["-wildcards", "-e"])
        .args(EXCLUDED)
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

/// Append the verity tree to the squashfs in `image`; returns its manifest
/// (which records `boot`, the slot's kernel and initrd).
pub fn seal(
    image: &Path,
    slot: Slot,
    version: &str,
    boot: &BootFiles,
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
        kernel_version: boot.kernel_version.clone(),
        data_size,
        hash_offset: offset,
        data_blocks,
        salt: verity::hex(&formatted.params.salt),
        root_hash: verity::hex(&formatted.root_hash),
        boot_files: boot.entries(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mksquashfs and unsquashfs (squashfs-tools) come from ci/setup-image;
    /// without them this fails, it does not skip.
    #[test]
    fn the_slot_is_zstd_and_leaves_the_boot_images_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let boot = root.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/modules/6.12.9-amd64")).unwrap();
        for f in [
            "vmlinuz-6.12.9-amd64",
            "initrd.img-6.12.9-amd64",
            "config-6.12.9-amd64",
        ] {
            std::fs::write(boot.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("vmlinuz-6.12.9-amd64", boot.join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("boot/initrd.img-6.12.9-amd64", root.join("initrd.img"))
            .unwrap();
        std::fs::write(root.join("usr/initrd.img-notes"), "kept").unwrap();
        let img = d.path().join("slot.img");
        mksquashfs(&root, &img, 1_700_000_000).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("unsquashfs")
                .args(args)
                .arg(&img)
                .output()
                .expect("unsquashfs (squashfs-tools) must be installed: ci/setup-image");
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let list = run(&["-l", "-d", ""]);
        let paths: Vec<&str> = list.lines().map(str::trim).collect();
        for kept in [
            "/boot/config-6.12.9-amd64",
            "/usr/lib/modules/6.12.9-amd64",
            "/usr/initrd.img-notes",
        ] {
            assert!(paths.contains(&kept), "{kept} missing from {paths:?}");
        }
        for gone in [
            "/boot/vmlinuz",
            "/boot/vmlinuz-6.12.9-amd64",
            "/boot/initrd.img-6.12.9-amd64",
            "/initrd.img",
        ] {
            assert!(!paths.contains(&gone), "{gone} is in the slot: {paths:?}");
        }
        let sb = run(&["-s"]);
        assert!(sb.contains("Compression zstd"), "{sb}");
    }
}
