//! Finding the booted medium's ESP: slot PARTUUID → slot partition → its
//! disk (sysfs) → the partition of that disk with the ESP type (udev).

use std::path::{Path, PathBuf};

use anklume_contract::bootenv::BootEnv;
use anklume_contract::partition::{ESP_LABEL, ESP_TYPE};
use anyhow::{bail, Context, Result};

/// The booted medium's ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Esp {
    /// Its device node under the root (`<root>/dev/sda1`).
    pub device: PathBuf,
    /// Where the FAT starts in `device` (0 for a partition device).
    pub offset: u64,
    /// Kernel names: the ESP partition and its disk.
    pub name: String,
    pub disk: String,
    /// Why nothing may be written there (a CD, Ventoy, a read-only device).
    pub read_only: Option<String>,
    /// Where the kernel has it mounted, if it does (then the block is read
    /// and written through that mount, never under it).
    pub mounted_at: Option<PathBuf>,
}

impl Esp {
    /// `/dev/sda1` (the path as it is on the machine, without the root).
    pub fn display_name(&self, root: &Path) -> String {
        let rel = self.device.strip_prefix(root).unwrap_or(&self.device);
        format!("/{}", rel.display()).replace("//", "/")
    }
}

/// Where the ESP is, or why it cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    Esp(Esp),
    Unreachable(String),
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Find the ESP of the disk the booted slot is on (see the crate docs).
pub fn locate(root: &Path, env: &BootEnv) -> Result<Located> {
    let Some(partuuid) = env.partuuid.as_deref() else {
        return Ok(Located::Unreachable(
            "boot.env has no partuuid= (not booted from an anklume slot)".into(),
        ));
    };
    // Every stick written from one image has the same PARTUUIDs: the slot
    // partition is the device the initrd opened (boot.env's device=) when
    // that is still it; else (toram: device= is the RAM copy) the one
    // partition with that PARTUUID, and none when two have it.
    let holders = partitions_with_uuid(root, partuuid);
    let opened = env
        .device
        .as_deref()
        .filter(|_| !env.toram)
        .map(|d| root.join(d.trim_start_matches('/')));
    let by = root.join("dev/disk/by-partuuid");
    let by_link = [partuuid.to_lowercase(), partuuid.to_string()]
        .into_iter()
        .map(|u| by.join(u))
        .find(|p| p.exists());
    let name_of = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let link = match opened {
        Some(dev) => {
            let name = name_of(&dev);
            let linked = by_link.as_deref().and_then(name_of);
            match name {
                Some(n) if holders.contains(&n) || linked.as_ref() == Some(&n) => {
                    Some(root.join("dev").join(n))
                }
                _ => {
                    return Ok(Located::Unreachable(format!(
                        "{} (the device the booted slot was opened from) is gone or no longer has the slot's PARTUUID {partuuid}",
                        env.device.as_deref().unwrap_or_default()
                    )))
                }
            }
        }
        None if holders.len() > 1 => {
            return Ok(Located::Unreachable(format!(
                "{} partitions ({}) have the booted slot's PARTUUID {partuuid} (sticks written from the same image): which one booted is unknown",
                holders.len(),
                holders.join(", ")
            )))
        }
        None => by_link,
    };
    let Some(link) = link else {
        return Ok(Located::Unreachable(if env.toram {
            format!(
                "the boot medium was released (toram) and is not attached: no partition has the booted slot's PARTUUID {partuuid}"
            )
        } else {
            format!(
                "no partition has the booted slot's PARTUUID {partuuid} (the boot medium is gone)"
            )
        }));
    };
    let part_dev =
        std::fs::canonicalize(&link).with_context(|| format!("resolving {}", link.display()))?;
    let part = part_dev
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} names no device", link.display()))?
        .to_string();
    let sys_part = std::fs::canonicalize(root.join("sys/class/block").join(&part))
        .with_context(|| format!("{part} (the booted slot) is not in /sys/class/block"))?;
    if !sys_part.join("partition").exists() {
        bail!("{part} (the booted slot, PARTUUID {partuuid}) is not a partition of a disk");
    }
    let sys_disk = sys_part
        .parent()
        .context("a partition without a disk in sysfs")?
        .to_path_buf();
    let disk = sys_disk
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let mut esps = Vec::new();
    for entry in
        std::fs::read_dir(&sys_disk).with_context(|| format!("listing {}", sys_disk.display()))?
    {
        let p = entry?.path();
        if !p.join("partition").exists() {
            continue;
        }
        let Some(dev) = read_trim(&p.join("dev")) else {
            continue;
        };
        let udev = read_trim(&root.join(format!("run/udev/data/b{dev}"))).unwrap_or_default();
        let prop = |k: &str| {
            udev.lines()
                .find_map(|l| l.strip_prefix(&format!("E:{k}=")))
                .map(str::to_string)
        };
        if prop("ID_PART_ENTRY_TYPE").is_some_and(|t| t.eq_ignore_ascii_case(ESP_TYPE)) {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            let ours = prop("ID_PART_ENTRY_NAME").as_deref() == Some(ESP_LABEL);
            esps.push((ours, name.to_string(), dev));
        }
    }
    esps.sort();
    let (name, dev) = match esps.as_slice() {
        [] => bail!(
            "the boot disk {disk} has no partition of the ESP type in udev's data (booted slot {part})"
        ),
        [(_, one, dev)] => (one.clone(), dev.clone()),
        [.., (true, ours, dev)] if esps.iter().filter(|e| e.0).count() == 1 => {
            (ours.clone(), dev.clone())
        }
        _ => bail!(
            "the boot disk {disk} has {} ESPs and not exactly one labelled {ESP_LABEL}",
            esps.len()
        ),
    };
    let read_only = read_only_reason(root, &sys_disk, &disk, &name);
    let mounted_at = mount_point_of(root, &dev);
    Ok(Located::Esp(Esp {
        mounted_at,
        device: root.join("dev").join(&name),
        offset: 0,
        name,
        disk,
        read_only,
    }))
}

/// Kernel names of the partitions whose PARTUUID (udev's data) is `uuid`.
fn partitions_with_uuid(root: &Path, uuid: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/block")) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.join("partition").exists() {
            continue;
        }
        let Some(dev) = read_trim(&p.join("dev")) else {
            continue;
        };
        let udev = read_trim(&root.join(format!("run/udev/data/b{dev}"))).unwrap_or_default();
        let has = udev
            .lines()
            .filter_map(|l| l.strip_prefix("E:ID_PART_ENTRY_UUID="))
            .any(|u| u.eq_ignore_ascii_case(uuid));
        if has {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// Where the device `dev` (`8:1`) is mounted, per `<root>/proc/self/mountinfo`
/// (the first mount; none when the file is absent, as on a fake tree).
fn mount_point_of(root: &Path, dev: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let majmin = f.nth(2)?;
        let mp = f.nth(1)?;
        (majmin == dev).then(|| root.join(mp.trim_start_matches('/').replace("\\040", " ")))
    })
}

/// Why the ESP `name` of `disk` must not be written, if so.
fn read_only_reason(root: &Path, sys_disk: &Path, disk: &str, name: &str) -> Option<String> {
    let ro = |p: &Path| read_trim(&p.join("ro")).as_deref() == Some("1");
    let backing = read_trim(&sys_disk.join("loop/backing_file"));
    let ventoy = backing.as_deref().is_some_and(|b| {
        b == "/dev/mapper/ventoy"
            || b.strip_prefix("/dev/")
                .and_then(|dm| read_trim(&root.join("sys/class/block").join(dm).join("dm/name")))
                .as_deref()
                == Some("ventoy")
    });
    if ventoy {
        return Some(format!(
            "booted from an ISO file under Ventoy ({disk} over {}): the ISO's ESP is not written",
            backing.unwrap_or_default()
        ));
    }
    if disk.starts_with("sr") || backing.as_deref().is_some_and(|b| b.starts_with("/dev/sr")) {
        return Some(format!(
            "booted from a CD/DVD ({disk}{}): read-only",
            backing.map(|b| format!(" over {b}")).unwrap_or_default()
        ));
    }
    if ro(sys_disk) || ro(&sys_disk.join(name)) {
        return Some(format!(
            "the boot medium {disk}{} is read-only",
            backing
                .map(|b| format!(" (a loop device over {b})"))
                .unwrap_or_default()
        ));
    }
    None
}
