//! The rootfs tree, built by mkosi from `mkosi/<distro>/`.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::cmd::Cmd;

/// Our binaries installed into the image (`/usr/bin`).
pub const BINARIES: &[&str] = &[
    "anklume",
    "anklume-build",
    "anklume-firstboot",
    "anklume-update",
];

/// Run mkosi; returns the rootfs directory. `bin_dir` holds our release
/// binaries, installed through an extra tree.
pub fn build(mkosi_dir: &Path, work: &Path, bin_dir: Option<&Path>, epoch: u64) -> Result<PathBuf> {
    ensure!(
        mkosi_dir.join("mkosi.conf").is_file(),
        "{} has no mkosi.conf",
        mkosi_dir.display()
    );
    // mkosi resolves relative paths against its -C directory: pass absolute ones.
    let work =
        &std::path::absolute(work).with_context(|| format!("resolving {}", work.display()))?;
    let out = work.join("mkosi-out");
    let cache = work.join("mkosi-packages");
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&cache)?;
    let mut cmd = Cmd::new("mkosi")
        .arg("-C")
        .arg(mkosi_dir)
        .arg("--output-dir")
        .arg(&out)
        .arg("--package-cache-dir")
        .arg(&cache)
        .arg("--source-date-epoch")
        .arg(epoch.to_string());
    if let Some(bins) = bin_dir {
        let extra = work.join("extra-tree");
        let dest = extra.join("usr/bin");
        std::fs::create_dir_all(&dest)?;
        for b in BINARIES {
            let src = bins.join(b);
            ensure!(
                src.is_file(),
                "{} is missing: build the workspace first (cargo build --release)",
                src.display()
            );
            std::fs::copy(&src, dest.join(b))
                .with_context(|| format!("copying {} into the extra tree", src.display()))?;
        }
        cmd = cmd.arg("--extra-tree").arg(&extra);
    }
    cmd.args(["-f", "build"])
        .run()
        .context("building the rootfs with mkosi")?;
    let rootfs = out.join("rootfs");
    ensure!(rootfs.is_dir(), "mkosi produced no {}", rootfs.display());
    Ok(rootfs)
}

/// The kernel release in the tree (the one `/boot/vmlinuz` points to).
pub fn kernel_version(rootfs: &Path) -> Result<String> {
    let link = std::fs::read_link(rootfs.join("boot/vmlinuz")).with_context(|| {
        format!(
            "{}/boot/vmlinuz is not a symlink to the kernel",
            rootfs.display()
        )
    })?;
    let name = link.to_string_lossy();
    let v = name
        .strip_prefix("vmlinuz-")
        .with_context(|| format!("unexpected kernel name {name}"))?;
    ensure!(
        rootfs
            .join("boot")
            .join(format!("initrd.img-{v}"))
            .is_file(),
        "no initrd for kernel {v} in the rootfs"
    );
    ensure!(
        rootfs.join("lib/modules").join(v).is_dir(),
        "no modules for kernel {v}"
    );
    Ok(v.to_string())
}
