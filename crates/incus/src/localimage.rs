//! A container image made on this machine from its static busybox (Debian
//! `busybox-static`), never fetched from an image server: the Live OS's
//! bootstrap image (`anklume-base`, imported by the agent at first boot so
//! the first `infra.yml` applies offline) and the tests' image.
//!
//! Its init mounts `/run`, brings up `lo` and keeps asking the bridge's
//! DHCP for eth0's address (so the address `anklume apply` reserves is
//! really served); callers add `inittab` lines of their own.

use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{Context, Result};
use serde_json::json;

use crate::Client;

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The alias of the bootstrap image in the default project.
pub const BASE_ALIAS: &str = "anklume-base";

const INITTAB: &str = "\
::sysinit:/bin/mount -t tmpfs tmpfs /run
::sysinit:/bin/ip link set lo up
::respawn:/bin/udhcpc -f -i eth0 -s /usr/share/udhcpc/default.script
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

/// What goes into the image besides busybox.
#[derive(Debug, Clone)]
pub struct Recipe<'a> {
    /// Lines appended to the base `inittab`.
    pub extra_inittab: &'a str,
    /// `properties.description` of the image.
    pub description: &'a str,
}

impl Recipe<'static> {
    /// The Live OS's bootstrap image.
    pub const BASE: Recipe<'static> = Recipe {
        extra_inittab: "",
        description: "anklume base (busybox, made on this machine)",
    };
}

/// Build the image's tree in `work`: `metadata.yaml` and `rootfs/`.
pub fn build_tree(work: &Path, r: &Recipe) -> Result<()> {
    anyhow::ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static"
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
        std::fs::create_dir_all(root.join(d))
            .with_context(|| format!("creating {}", root.join(d).display()))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    let applets = Cmd::new(BUSYBOX).arg("--list").output_string()?;
    for a in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let link = root.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    let init = root.join("sbin/init");
    if !init.exists() {
        std::os::unix::fs::symlink("../bin/busybox", &init)?;
    }
    std::fs::write(
        root.join("etc/inittab"),
        format!("{INITTAB}{}", r.extra_inittab),
    )?;
    let script = root.join("usr/share/udhcpc/default.script");
    std::fs::write(&script, DHCP_SCRIPT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        work.join("metadata.yaml"),
        format!(
            "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: {}\n",
            r.description
        ),
    )?;
    Ok(())
}

/// `tar` of `members` of `work` into `out`, owned by root.
pub fn tar(work: &Path, out: &Path, members: &[&str]) -> Result<()> {
    Cmd::new("tar")
        .arg("-C")
        .arg(work)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(out)
        .args(members)
        .run()
}

/// Build the unified image tarball (metadata.yaml + rootfs/) in `work`.
pub fn build(work: &Path, r: &Recipe) -> Result<PathBuf> {
    build_tree(work, r)?;
    let tar_path = work.join("image.tar");
    tar(work, &tar_path, &["metadata.yaml", "rootfs"])?;
    Ok(tar_path)
}

/// Import a unified tarball into the default project as `alias`; returns
/// its fingerprint.
pub fn import_tar(c: &Client, tar: &Path, alias: &str) -> Result<String> {
    let data = std::fs::read(tar).with_context(|| format!("reading {}", tar.display()))?;
    let answer = c
        .post_bytes("/1.0/images", data.into())
        .with_context(|| format!("importing image {alias}"))?;
    name(c, answer, alias)
}

/// Name the image an import answered with `alias` in the default project.
pub fn name(c: &Client, answer: serde_json::Value, alias: &str) -> Result<String> {
    let fp = answer
        .get("fingerprint")
        .and_then(|v| v.as_str())
        .context("image import returned no fingerprint")?
        .to_string();
    c.post("/1.0/images/aliases", &json!({"name": alias, "target": fp}))
        .with_context(|| format!("naming image {fp} {alias}"))?;
    Ok(fp)
}

/// The bootstrap image: imported as [`BASE_ALIAS`] unless the default
/// project has that alias already. `Some(fingerprint)` when imported now.
pub fn ensure_base(c: &Client, work: &Path) -> Result<Option<String>> {
    let path = format!("/1.0/images/aliases/{BASE_ALIAS}");
    if c.get_opt::<serde_json::Value>(&path)
        .with_context(|| format!("looking for image {BASE_ALIAS}"))?
        .is_some()
    {
        return Ok(None);
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let imported = build(work, &Recipe::BASE).and_then(|tar| import_tar(c, &tar, BASE_ALIAS));
    // The build folder goes whether the import worked or not.
    std::fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    imported.map(Some)
}

/// Create a `dir` storage pool (in the daemon's own directory).
pub fn create_dir_pool(c: &Client, name: &str) -> Result<()> {
    c.post(
        "/1.0/storage-pools",
        &json!({"name": name, "driver": "dir"}),
    )
    .with_context(|| format!("creating storage pool {name}"))?;
    Ok(())
}

/// A `dir` storage pool named `name` unless one exists. `true` when made.
pub fn ensure_dir_pool(c: &Client, name: &str) -> Result<bool> {
    let path = format!("/1.0/storage-pools/{name}");
    if c.get_opt::<serde_json::Value>(&path)
        .with_context(|| format!("looking for storage pool {name}"))?
        .is_some()
    {
        return Ok(false);
    }
    create_dir_pool(c, name)?;
    Ok(true)
}
