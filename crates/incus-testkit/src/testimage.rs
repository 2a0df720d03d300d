//! A tiny container image for tests and benchmarks, built locally from the
//! host's static busybox (Debian `busybox-static`): never a remote image
//! server.
//!
//! Its init brings up `lo`, asks the bridge's DHCP for eth0's address (so a
//! static IP set by `anklume apply` is really served), and answers `pong` on
//! TCP port 7777, which the isolation tests probe.

use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{Context, Result};
use serde_json::json;

use anklume_incus::Client;

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The port the image's `nc` answers on.
pub const PONG_PORT: u16 = 7777;

const INITTAB: &str = "\
::sysinit:/bin/mount -t tmpfs tmpfs /run
::sysinit:/bin/ip link set lo up
::respawn:/bin/udhcpc -f -i eth0 -s /usr/share/udhcpc/default.script
::respawn:/bin/nc -ll -p 7777 -e /bin/echo pong
";

const DHCP_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}"
    ;;
esac
exit 0
"#;

/// Build the image's tree in `work`: `metadata.yaml` and `rootfs/`.
fn build_tree(work: &Path) -> Result<()> {
    anyhow::ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (ci/setup-image)"
    );
    let root = work.join("rootfs");
    for d in [
        "bin",
        "sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "var",
        "usr/share/udhcpc",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    let applets = Cmd::new(BUSYBOX).arg("--list").output_string()?;
    for a in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let link = root.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init"))?;
    std::fs::write(root.join("etc/inittab"), INITTAB)?;
    let script = root.join("usr/share/udhcpc/default.script");
    std::fs::write(&script, DHCP_SCRIPT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        work.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: anklume test image\n",
    )?;
    Ok(())
}

/// `tar` of `members` of `work` into `out`, owned by root.
fn tar(work: &Path, out: &Path, members: &[&str]) -> Result<()> {
    Cmd::new("tar")
        .arg("-C")
        .arg(work)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(out)
        .args(members)
        .run()
}

/// Build the unified image tarball (metadata.yaml + rootfs/) in `work`.
pub fn build(work: &Path) -> Result<PathBuf> {
    build_tree(work)?;
    let tar_path = work.join("image.tar");
    tar(work, &tar_path, &["metadata.yaml", "rootfs"])?;
    Ok(tar_path)
}

/// Build the split image in `work`, as image servers publish them: a
/// metadata tarball (`metadata.yaml`) and the root filesystem as a
/// squashfs. Returns `(metadata, rootfs)`.
pub fn build_split(work: &Path) -> Result<(PathBuf, PathBuf)> {
    build_tree(work)?;
    let meta = work.join("meta.tar");
    tar(work, &meta, &["metadata.yaml"])?;
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
    let data = std::fs::read(&tar).with_context(|| format!("reading {}", tar.display()))?;
    let meta = c
        .post_bytes("/1.0/images", data.into())
        .context("importing the test image")?;
    name(c, meta, alias)
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
    name(c, answer, alias)
}

/// Name the image an import answered with `alias` in the default project.
fn name(c: &Client, answer: serde_json::Value, alias: &str) -> Result<String> {
    let fp = answer
        .get("fingerprint")
        .and_then(|v| v.as_str())
        .context("image import returned no fingerprint")?
        .to_string();
    c.post("/1.0/images/aliases", &json!({"name": alias, "target": fp}))
        .with_context(|| format!("naming image {fp} {alias}"))?;
    Ok(fp)
}

/// A `dir` storage pool (the daemon's own directory holds it).
pub fn create_dir_pool(c: &Client, name: &str) -> Result<()> {
    c.post(
        "/1.0/storage-pools",
        &json!({"name": name, "driver": "dir"}),
    )
    .with_context(|| format!("creating storage pool {name}"))?;
    Ok(())
}
