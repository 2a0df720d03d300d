//! `anklume-build bundle`: the update bundle of the last image build (slot
//! A of the work directory, sealed with its verity tree, and the slot's
//! kernel, initrd and, from a signed build, its signed UKI), signed with
//! the user's ed25519 update key. The
//! format and its checks are `anklume-update-lib`'s (docs/update.md).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use anklume_contract::bootfiles::{INITRD, KERNEL, UKI};
use anklume_contract::manifest::SlotManifest;

/// Where a build leaves slot A's manifest (as on the ESP: kernel, initrd
/// and, on a signed build, the UKI) for `bundle`.
pub const SLOT_MANIFEST: &str = "slot-a.manifest.json";
/// Slot A's sealed image in the work directory.
pub const SLOT_IMAGE: &str = "slot-a.img";
/// A signed build's UKI in the work directory: it names the image, not a
/// partition, so the bundle carries it as it is and an update writes it
/// into the other slot's folder (Secure Boot machines boot only UKIs).
pub const SLOT_UKI: &str = "slot-a.anklume.efi";

#[derive(Debug)]
pub struct BundleOptions {
    pub work_dir: PathBuf,
    pub rootfs: PathBuf,
    pub key: PathBuf,
    pub min_version: String,
    pub data_schema: u32,
    /// Default: `out/anklume-<version>.bundle`.
    pub out: Option<PathBuf>,
}

/// Write the bundle; returns where, and the slot's manifest.
pub fn write(o: &BundleOptions) -> Result<(PathBuf, SlotManifest)> {
    let manifest_path = o.work_dir.join(SLOT_MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "reading {} (run `anklume-build image` with this --work-dir first)",
            manifest_path.display()
        )
    })?;
    let slot = SlotManifest::from_json(&text).map_err(anyhow::Error::msg)?;
    let image = o.work_dir.join(SLOT_IMAGE);
    let boot = |name: &str| {
        o.rootfs
            .join("boot")
            .join(format!("{name}-{}", slot.kernel_version))
    };
    let mut files = Vec::new();
    for f in &slot.boot_files {
        let (path, whose) = match f.name.as_str() {
            KERNEL => (boot("vmlinuz"), "--rootfs must be the tree of that build"),
            INITRD => (
                boot("initrd.img"),
                "--rootfs must be the tree of that build",
            ),
            UKI => (
                o.work_dir.join(SLOT_UKI),
                "the signed build left no UKI in its --work-dir",
            ),
            other => anyhow::bail!("{}: unknown boot file {other}", manifest_path.display()),
        };
        ensure!(path.is_file(), "{} is missing: {whose}", path.display());
        files.push(path);
    }
    let key = anklume_update::keys::load_signing_key(&o.key)?;
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("out/anklume-{}.bundle", slot.version)));
    let input =
        anklume_update::make::from_sealed(&image, slot, files, &o.min_version, o.data_schema)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let m = anklume_update::make::write_bundle(&input, &key, &out)?;
    Ok((out, m.slot))
}

/// The manifest `bundle` reads, written by the image build next to the
/// sealed slot (atomically).
pub fn save_manifest(work_dir: &Path, m: &SlotManifest) -> Result<()> {
    let p = work_dir.join(SLOT_MANIFEST);
    let tmp = work_dir.join(format!(".{SLOT_MANIFEST}.tmp"));
    std::fs::write(&tmp, m.to_json()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anklume_contract::Slot;

    /// A tiny build: a rootfs tree, its sealed slot A and manifest, as
    /// `anklume-build image` leaves them in the work directory.
    fn tiny_build(dir: &Path) -> (PathBuf, SlotManifest) {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("boot")).unwrap();
        std::fs::create_dir_all(rootfs.join("lib/modules/6.12.9-amd64")).unwrap();
        std::fs::write(rootfs.join("boot/vmlinuz-6.12.9-amd64"), b"kernel").unwrap();
        std::fs::write(rootfs.join("boot/initrd.img-6.12.9-amd64"), b"initrd").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.12.9-amd64", rootfs.join("boot/vmlinuz")).unwrap();
        std::fs::write(rootfs.join("lib/hello"), vec![7u8; 100_000]).unwrap();
        let boot = crate::bootfiles::BootFiles::from_rootfs(&rootfs).unwrap();
        let img = dir.join(SLOT_IMAGE);
        crate::slot::mksquashfs(&rootfs, &img, 1_700_000_000).unwrap();
        let p = crate::progress::Progress::new(true);
        let m = crate::slot::seal(&img, Slot::A, "0.2.0", &boot, 1_700_000_000, &p).unwrap();
        save_manifest(dir, &m).unwrap();
        (rootfs, m)
    }

    #[test]
    fn bundles_the_last_build_and_the_updater_accepts_it() {
        let d = tempfile::tempdir().unwrap();
        let (rootfs, m) = tiny_build(d.path());
        let keys = d.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(d.path().join("k2")).unwrap();
        let public = anklume_update::keys::generate(&keys, "release").unwrap();
        let opts = |out: PathBuf| BundleOptions {
            work_dir: d.path().to_path_buf(),
            rootfs: rootfs.clone(),
            key: keys.join("release.key"),
            min_version: "0.1.0".into(),
            data_schema: 1,
            out: Some(out),
        };
        let out = d.path().join("out/x.bundle");
        let (written, slot) = write(&opts(out.clone())).unwrap();
        assert_eq!(written, out);
        assert_eq!(slot.root_hash, m.root_hash);
        let src = anklume_update::FileSource::open(&out).unwrap();
        let b =
            anklume_update::OpenBundle::open(Box::new(src), std::slice::from_ref(&public)).unwrap();
        assert_eq!(b.manifest.slot.root_hash, m.root_hash);
        assert_eq!(b.manifest.min_version, "0.1.0");
        // Another key's bundle is refused by the same trust.
        let other = anklume_update::keys::generate(&d.path().join("k2"), "other").unwrap();
        let src = anklume_update::FileSource::open(&out).unwrap();
        assert!(anklume_update::OpenBundle::open(Box::new(src), &[other]).is_err());
        // A signed build: its UKI (from the work directory) is the third
        // boot file; gone, the bundle is refused by name.
        let mut signed = m.clone();
        signed
            .boot_files
            .push(crate::bootfiles::entry(UKI, b"signed uki"));
        save_manifest(d.path(), &signed).unwrap();
        std::fs::write(d.path().join(SLOT_UKI), b"signed uki").unwrap();
        let (written, _) = write(&opts(d.path().join("out/signed.bundle"))).unwrap();
        let src = anklume_update::FileSource::open(&written).unwrap();
        let b =
            anklume_update::OpenBundle::open(Box::new(src), std::slice::from_ref(&public)).unwrap();
        assert_eq!(b.boot_files.len(), 3);
        assert_eq!(b.boot_files[2], b"signed uki");
        std::fs::remove_file(d.path().join(SLOT_UKI)).unwrap();
        let err = write(&opts(d.path().join("out/signed.bundle"))).unwrap_err();
        assert!(format!("{err:#}").contains("left no UKI"), "{err:#}");
        save_manifest(d.path(), &m).unwrap();
        // A rootfs of another build (no such kernel) is refused by name.
        std::fs::remove_file(rootfs.join("boot/initrd.img-6.12.9-amd64")).unwrap();
        let err = write(&opts(out)).unwrap_err();
        assert!(
            format!("{err:#}").contains("initrd.img-6.12.9-amd64 is missing"),
            "{err:#}"
        );
    }
}
