//! The tests' container image: the Live OS's busybox image
//! (`anklume_incus::localimage`) whose init also answers `pong` on TCP port
//! 7777, which the isolation tests probe. Never a remote image server.

use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{Context, Result};

use anklume_incus::localimage::{self, Recipe};
use anklume_incus::Client;

pub use anklume_incus::localimage::{create_dir_pool, BUSYBOX};

/// The port the image's `nc` answers on.
pub const PONG_PORT: u16 = 7777;

const RECIPE: Recipe<'static> = Recipe {
    extra_inittab: "::respawn:/bin/nc -ll -p 7777 -e /bin/echo pong\n",
    description: "anklume test image",
};

/// Build the unified image tarball (metadata.yaml + rootfs/) in `work`.
pub fn build(work: &Path) -> Result<PathBuf> {
    localimage::build(work, &RECIPE)
}

/// Build the split image in `work`, as image servers publish them: a
/// metadata tarball (`metadata.yaml`) and the root filesystem as a
/// squashfs. Returns `(metadata, rootfs)`.
pub fn build_split(work: &Path) -> Result<(PathBuf, PathBuf)> {
    localimage::build_tree(work, &RECIPE)?;
    let meta = work.join("meta.tar");
    localimage::tar(work, &meta, &["metadata.yaml"])?;
    let rootfs = work.join("rootfs.squashfs");
    Cmd::new("mksquashfs")
        .arg(work.join("rootfs"))
        .arg(&rootfs)
        .args(["-noappend", "-all-root", "-no-progress", "-quiet"])
        .run()?;
    Ok((meta, rootfs))
}

/// Build the unified image and import it into the default project as
/// `alias`; returns its fingerprint.
pub fn import(c: &Client, work: &Path, alias: &str) -> Result<String> {
    let tar = build(work)?;
    localimage::import_tar(c, &tar, alias).context("importing the test image")
}

/// Build the split image and import it into the default project as
/// `alias` (a multipart upload, as `incus image import META ROOTFS`);
/// returns its fingerprint.
pub fn import_split(c: &Client, work: &Path, alias: &str) -> Result<String> {
    let (meta, rootfs) = build_split(work)?;
    let m = std::fs::read(&meta).with_context(|| format!("reading {}", meta.display()))?;
    let r = std::fs::read(&rootfs).with_context(|| format!("reading {}", rootfs.display()))?;
    let answer = c
        .post_multipart(
            "/1.0/images",
            &[
                ("metadata", "meta.tar", &m),
                ("rootfs", "rootfs.squashfs", &r),
            ],
        )
        .context("importing the split test image")?;
    localimage::name(c, answer, alias)
}
