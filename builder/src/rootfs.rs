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

/// Where the image keeps the update keys it trusts (the updater's
/// default; inside the verity-protected slot).
pub const UPDATE_KEYS_DIR: &str = "usr/share/anklume/update-keys";

/// What goes into the tree besides mkosi's definition: our release
/// binaries and the public update keys the OS trusts, through an extra tree.
#[derive(Debug, Clone, Default)]
pub struct Extra<'a> {
    pub bin_dir: Option<&'a Path>,
    pub update_keys: &'a [PathBuf],
}

/// Run mkosi; returns the rootfs directory.
pub fn build(
    mkosi_dir: &Path,
    work: &Path,
    extra_files: &Extra<'_>,
    epoch: u64,
) -> Result<PathBuf> {
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
    if let Some(extra) = stage_extra(work, extra_files)? {
        cmd = cmd.arg("--extra-tree").arg(extra);
    }
    cmd.args(["-f", "build"])
        .run()
        .context("building the rootfs with mkosi")?;
    let rootfs = out.join("rootfs");
    ensure!(rootfs.is_dir(), "mkosi produced no {}", rootfs.display());
    Ok(rootfs)
}

/// Lay out `work/extra-tree` (made afresh) from `e`; `None` when there is
/// nothing to add. Update keys are checked to be public keys.
fn stage_extra(work: &Path, extra_files: &Extra<'_>) -> Result<Option<PathBuf>> {
    let extra = work.join("extra-tree");
    if extra.exists() {
        std::fs::remove_dir_all(&extra)
            .with_context(|| format!("removing the previous {}", extra.display()))?;
    }
    if let Some(bins) = extra_files.bin_dir {
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
    }
    if !extra_files.update_keys.is_empty() {
        let dest = extra.join(UPDATE_KEYS_DIR);
        std::fs::create_dir_all(&dest)?;
        for k in extra_files.update_keys {
            let name = k
                .file_name()
                .with_context(|| format!("{}: not a file", k.display()))?
                .to_string_lossy()
                .into_owned();
            ensure!(
                name.ends_with(".pub"),
                "update key {}: a public key file NAME.pub (`anklume-update --new-key` makes one)",
                k.display()
            );
            let text = std::fs::read_to_string(k)
                .with_context(|| format!("reading the update key {}", k.display()))?;
            anklume_contract::bundle::PublicKey::parse(&name, &text)
                .map_err(|e| anyhow::anyhow!("update key {}: {e}", k.display()))?;
            std::fs::write(dest.join(&name), text)
                .with_context(|| format!("copying {} into the extra tree", k.display()))?;
        }
    }
    Ok(extra.exists().then_some(extra))
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

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "5f0e4b7d0c1a2e3f4a5b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7\n";

    #[test]
    fn update_keys_are_checked_and_staged_where_the_updater_reads_them() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        assert_eq!(stage_extra(&work, &Extra::default()).unwrap(), None);

        let good = t.path().join("release.pub");
        std::fs::write(&good, PUB).unwrap();
        let keys = [good.clone()];
        let e = Extra {
            bin_dir: None,
            update_keys: &keys,
        };
        let dir = stage_extra(&work, &e).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(UPDATE_KEYS_DIR).join("release.pub")).unwrap(),
            PUB
        );

        // The private half, or something that is not a key: refused, named.
        let private = t.path().join("release.key");
        std::fs::write(&private, b"\x30\x51").unwrap();
        let keys = [private];
        let err = stage_extra(
            &work,
            &Extra {
                bin_dir: None,
                update_keys: &keys,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("release.key") && err.contains("NAME.pub"),
            "{err}"
        );
        let junk = t.path().join("junk.pub");
        std::fs::write(&junk, "not hex\n").unwrap();
        let keys = [junk];
        let err = format!(
            "{:#}",
            stage_extra(
                &work,
                &Extra {
                    bin_dir: None,
                    update_keys: &keys
                }
            )
            .unwrap_err()
        );
        assert!(err.contains("junk.pub"), "{err}");
        // A run without keys does not keep the last run's.
        assert_eq!(stage_extra(&work, &Extra::default()).unwrap(), None);
    }
}
