//! A slot's boot files: the kernel and initrd of the rootfs, placed in the
//! slot's folder on the ESP (and on the ISO, in its ISO 9660 tree at the
//! same paths) with the slot's manifest and `slot.cfg`
//! ([`anklume_contract::bootfiles`]).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::bootfiles::{self, INITRD, KERNEL, MANIFEST, SLOT_CFG, UKI};
use anklume_contract::manifest::{BootFile, SlotManifest};
use anklume_contract::Slot;

use crate::rootfs;

/// The kernel and initrd of one OS version.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// Kernel release (`uname -r`), whose modules the rootfs holds.
    pub kernel_version: String,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
}

impl BootFiles {
    /// `/boot/vmlinuz-<release>` and `/boot/initrd.img-<release>` of the
    /// kernel `/boot/vmlinuz` points to.
    pub fn from_rootfs(rootfs: &Path) -> Result<BootFiles> {
        let kernel_version = rootfs::kernel_version(rootfs)?;
        let read = |name: String| {
            let p = rootfs.join("boot").join(name);
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let kernel = read(format!("vmlinuz-{kernel_version}"))?;
        let initrd = read(format!("initrd.img-{kernel_version}"))?;
        ensure!(
            !kernel.is_empty() && !initrd.is_empty(),
            "the kernel or initrd of {kernel_version} in {} is empty",
            rootfs.display()
        );
        Ok(BootFiles {
            kernel_version,
            kernel,
            initrd,
        })
    }

    /// The files GRUB loads, in [`bootfiles::LOADED`] order.
    pub fn loaded(&self) -> [(&'static str, &[u8]); 2] {
        [(KERNEL, &self.kernel), (INITRD, &self.initrd)]
    }

    /// What the slot's manifest records about them.
    pub fn entries(&self) -> Vec<BootFile> {
        self.loaded()
            .iter()
            .map(|(name, data)| entry(name, data))
            .collect()
    }

    /// Bytes of the kernel and initrd together.
    pub fn size(&self) -> u64 {
        (self.kernel.len() + self.initrd.len()) as u64
    }
}

/// The manifest entry of one boot file.
pub fn entry(name: &str, data: &[u8]) -> BootFile {
    BootFile {
        name: name.to_string(),
        size: data.len() as u64,
        sha256: crate::verity::hex(&Sha256::digest(data)),
    }
}

/// The files of slot `slot`'s folder, as paths relative to the root of the
/// ESP (or ISO 9660 tree), in the order they must be written: boot files
/// (kernel, initrd, then the signed UKI if any), manifest, and `slot.cfg`
/// last (without it GRUB treats the slot as empty).
pub fn slot_folder<'a>(
    slot: Slot,
    boot: &'a BootFiles,
    uki: Option<&'a [u8]>,
    manifest_json: &'a str,
    slot_cfg: &'a str,
) -> Vec<(String, &'a [u8])> {
    let mut v: Vec<(String, &[u8])> = boot
        .loaded()
        .iter()
        .map(|(name, data)| (bootfiles::slot_file(slot, name), *data))
        .collect();
    if let Some(uki) = uki {
        v.push((bootfiles::slot_file(slot, UKI), uki));
    }
    v.push((
        bootfiles::slot_file(slot, MANIFEST),
        manifest_json.as_bytes(),
    ));
    v.push((bootfiles::slot_file(slot, SLOT_CFG), slot_cfg.as_bytes()));
    v
}

/// Check boot files read back from a medium against the slot's manifest;
/// `read` gets a file name of the slot's folder.
pub fn check(manifest: &SlotManifest, mut read: impl FnMut(&str) -> Result<Vec<u8>>) -> Result<()> {
    let names: Vec<&str> = manifest
        .boot_files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    ensure!(
        bootfiles::valid_boot_files(&names),
        "the manifest lists boot files {names:?}, expected {:?} (+ {:?} when signed)",
        bootfiles::LOADED,
        bootfiles::SIGNED
    );
    for f in &manifest.boot_files {
        let data = read(&f.name).with_context(|| format!("reading boot file {}", f.name))?;
        let sha = crate::verity::hex(&Sha256::digest(&data));
        ensure!(
            data.len() as u64 == f.size && sha == f.sha256,
            "boot file {}: {} bytes, SHA-256 {sha}; the manifest says {} bytes, {}",
            f.name,
            data.len(),
            f.size,
            f.sha256
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        let boot = dir.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::create_dir_all(dir.join("lib/modules/6.12.9-amd64")).unwrap();
        std::fs::write(boot.join("vmlinuz-6.12.9-amd64"), b"kernel").unwrap();
        std::fs::write(boot.join("initrd.img-6.12.9-amd64"), b"initrd!").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.12.9-amd64", boot.join("vmlinuz")).unwrap();
    }

    #[test]
    fn takes_the_kernel_the_rootfs_links_and_records_its_hashes() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let b = BootFiles::from_rootfs(d.path()).unwrap();
        assert_eq!(b.kernel_version, "6.12.9-amd64");
        assert_eq!(b.size(), 13);
        let e = b.entries();
        assert_eq!(e[0].name, KERNEL);
        assert_eq!(e[1].name, INITRD);
        assert_eq!(e[1].size, 7);
        // sha256sum of "kernel"
        assert_eq!(
            e[0].sha256,
            "6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c"
        );
        let files = slot_folder(Slot::B, &b, None, "{}\n", "set x=1\n");
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "EFI/anklume/slot-b/vmlinuz",
                "EFI/anklume/slot-b/initrd.img",
                "EFI/anklume/slot-b/manifest.json",
                "EFI/anklume/slot-b/slot.cfg",
            ]
        );
        assert_eq!(files[1].1, b"initrd!");
        // A signed build's UKI comes after the initrd, before the manifest.
        let signed = slot_folder(Slot::B, &b, Some(b"uki"), "{}\n", "set x=1\n");
        assert_eq!(signed[2].0, "EFI/anklume/slot-b/anklume.efi");
        assert_eq!(signed[2].1, b"uki");
        assert_eq!(signed.last().unwrap().0, "EFI/anklume/slot-b/slot.cfg");
    }

    #[test]
    fn a_rootfs_without_an_initrd_is_refused() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        std::fs::remove_file(d.path().join("boot/initrd.img-6.12.9-amd64")).unwrap();
        let err = format!("{:#}", BootFiles::from_rootfs(d.path()).unwrap_err());
        assert!(err.contains("no initrd"), "{err}");
    }

    #[test]
    fn check_finds_a_changed_boot_file() {
        let b = BootFiles {
            kernel_version: "x".into(),
            kernel: b"kernel".to_vec(),
            initrd: b"initrd".to_vec(),
        };
        let m = SlotManifest {
            version: "0.1.0".into(),
            kernel_version: "x".into(),
            data_size: 0,
            hash_offset: 0,
            data_blocks: 0,
            salt: String::new(),
            root_hash: String::new(),
            boot_files: b.entries(),
        };
        let good = |n: &str| {
            Ok(if n == KERNEL {
                b.kernel.clone()
            } else {
                b.initrd.clone()
            })
        };
        check(&m, good).unwrap();
        let bad = |n: &str| {
            Ok(if n == KERNEL {
                b"kernel".to_vec()
            } else {
                b"initrD".to_vec()
            })
        };
        let err = check(&m, bad).unwrap_err().to_string();
        assert!(err.contains("boot file initrd.img"), "{err}");
        let mut short = m.clone();
        short.boot_files.pop();
        assert!(check(&short, good).is_err());
    }
}
