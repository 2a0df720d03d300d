//! Which disks may hold the pool, and why the others may not.
//!
//! [`survey`] sorts every whole disk of an [`Inventory`] into
//! [`Candidate`]s and [`Excluded`] disks. A [`Candidate`] can only be made
//! here, and a [`crate::plan::Plan`] only holds a [`Candidate`]: no plan can
//! name the boot medium, a CD-ROM, a loop or zram device, a disk in use, or
//! the stick holding the seed volume.
//!
//! The boot medium is found by ancestry, by device number, never by a
//! name: from what holds `/` (through an overlay's `lowerdir`), the
//! `anklume-root` verity mapping, a Ventoy `ventoy` mapping, and the slot
//! the initrd recorded in `boot.env`, down through device-mapper and md
//! `slaves`, loop backing files and partitions, to the disks underneath.
//! This covers a USB stick or internal disk (slot partition → disk), a CD
//! (verity → loop → `sr0`), Ventoy (verity → loop → `dm` `ventoy` → stick)
//! and toram (verity → loop over a tmpfs file: the medium is still found
//! through the slot's PARTUUID while it stays plugged in).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{bail, Result};

use crate::inventory::{BlockDevice, DevType, Inventory};
use crate::size::Size;

/// The smallest disk offered for a pool.
pub const MIN_POOL_SIZE: Size = Size(2 << 30);

/// Mount points that belong to the running OS: a disk under them is the
/// boot medium, not merely "in use".
const OS_MOUNTS: &[&str] = &["/", "/usr", "/boot", "/boot/efi", "/efi"];

/// Device-mapper names of the boot medium: the verified root and the
/// mapping Ventoy makes of the ISO file on its stick.
const BOOT_DM_NAMES: &[&str] = &[anklume_contract::bootenv::VERITY_NAME, "ventoy"];

/// Why a disk is not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The medium this OS booted from; `via` is the chain that leads to it.
    BootMedium {
        via: String,
    },
    CdRom,
    Loop,
    Zram,
    /// device-mapper, md, RAM disk, nbd, floppy: not a disk of its own.
    Virtual {
        kind: &'static str,
    },
    /// Mounted, swap, or held by a mapping.
    InUse {
        what: String,
    },
    /// Holds the seed volume (the preseed's own stick).
    SeedVolume {
        volume: String,
    },
    ReadOnly,
    TooSmall {
        size: Size,
    },
    /// Neither a `/dev/disk/by-id` name nor a serial: nothing stable to
    /// name it by in a confirmation or a preseed.
    NoStableName,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::BootMedium { via } => write!(f, "the boot medium ({via})"),
            Exclusion::CdRom => write!(f, "CD/DVD drive"),
            Exclusion::Loop => write!(f, "loop device"),
            Exclusion::Zram => write!(f, "zram (compressed RAM)"),
            Exclusion::Virtual { kind } => write!(f, "{kind}"),
            Exclusion::InUse { what } => write!(f, "in use: {what}"),
            Exclusion::SeedVolume { volume } => {
                write!(f, "holds the seed volume {volume}")
            }
            Exclusion::ReadOnly => write!(f, "read-only"),
            Exclusion::TooSmall { size } => {
                write!(f, "too small ({size}; a pool needs {MIN_POOL_SIZE})")
            }
            Exclusion::NoStableName => {
                write!(f, "no /dev/disk/by-id name and no serial to name it by")
            }
        }
    }
}

/// A disk that is not offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// Kernel name (`sda`): the only name shown for it.
    pub name: String,
    pub reason: Exclusion,
    /// Not a drive of its own (loop, zram, device-mapper, md...): left out
    /// of the wizard's "not offered" list, where only drives matter.
    pub virtual_device: bool,
}

/// A disk that may hold the pool. Only [`survey`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    disk: BlockDevice,
    partitions: Vec<BlockDevice>,
}

impl Candidate {
    pub fn disk(&self) -> &BlockDevice {
        &self.disk
    }

    pub fn partitions(&self) -> &[BlockDevice] {
        &self.partitions
    }

    pub fn size(&self) -> Size {
        Size(self.disk.size_bytes)
    }

    /// The preferred `/dev/disk/by-id` name: a bus name carrying model and
    /// serial (`ata-`, `nvme-`, `usb-`, `virtio-`...) before `wwn-`/`eui.`.
    pub fn by_id(&self) -> Option<&str> {
        self.disk
            .by_id
            .iter()
            .min_by_key(|n| {
                (
                    n.starts_with("wwn-")
                        || n.starts_with("nvme-eui.")
                        || n.starts_with("nvme-nvme."),
                    n.len(),
                    n.as_str(),
                )
            })
            .map(String::as_str)
    }

    /// The path every write goes through: the by-id link when there is
    /// one, else `/dev/<name>`.
    pub fn path(&self) -> String {
        match self.by_id() {
            Some(n) => format!("/dev/disk/by-id/{n}"),
            None => format!("/dev/{}", self.disk.name),
        }
    }

    /// How the disk is named to a person: its by-id name, else its serial.
    pub fn label(&self) -> String {
        match (self.by_id(), &self.disk.serial) {
            (Some(n), _) => n.to_string(),
            (None, Some(s)) => format!("serial {s}"),
            (None, None) => self.disk.name.clone(),
        }
    }

    /// No partition table, no partitions, no signature: nothing to lose.
    pub fn is_blank(&self) -> bool {
        self.disk.part_table.is_none() && self.disk.fs_type.is_none() && self.partitions.is_empty()
    }

    /// What is on the disk, for the confirmation and the plan.
    pub fn contents(&self) -> String {
        if self.is_blank() {
            return "blank (no partition table, no signature)".into();
        }
        let mut parts = Vec::new();
        if let Some(t) = &self.disk.part_table {
            parts.push(format!("{t} partition table"));
        }
        if let Some(t) = &self.disk.fs_type {
            parts.push(format!("{t} signature on the whole disk"));
        }
        for p in &self.partitions {
            let mut s = format!("{} {}", p.name, Size(p.size_bytes));
            if let Some(t) = &p.fs_type {
                s.push_str(&format!(" {t}"));
            }
            if let Some(l) = &p.fs_label {
                s.push_str(&format!(" {l:?}"));
            }
            parts.push(s);
        }
        parts.join(", ")
    }

    /// One line for a menu: name, model, size, serial, contents.
    pub fn summary(&self) -> String {
        let d = &self.disk;
        let mut s = format!("{} — {}", self.label(), self.size());
        if let Some(m) = &d.model {
            s.push_str(&format!(", {m}"));
        }
        if let Some(sn) = &d.serial {
            s.push_str(&format!(", serial {sn}"));
        }
        s.push_str(if d.rotational {
            ", rotational"
        } else {
            ", solid-state"
        });
        if d.removable {
            s.push_str(", removable");
        }
        s.push_str(&format!("; {}", self.contents()));
        s
    }

    /// Does `typed` name this disk? Its by-id name (with or without
    /// `/dev/disk/by-id/`) or its serial, exactly (surrounding blanks
    /// ignored).
    pub fn is_named_by(&self, typed: &str) -> bool {
        let t = typed.trim();
        if t.is_empty() {
            return false;
        }
        let t_id = t.strip_prefix("/dev/disk/by-id/").unwrap_or(t);
        self.disk.by_id.iter().any(|n| n == t_id) || self.disk.serial.as_deref() == Some(t)
    }

    /// The confirmation a non-blank disk needs before it is wiped.
    pub fn consent(&self, typed: &str) -> Result<WipeConsent> {
        if self.is_named_by(typed) {
            Ok(WipeConsent {
                dev: self.disk.dev,
                named_as: typed.trim().to_string(),
            })
        } else {
            bail!(
                "{:?} does not name {}: type its /dev/disk/by-id name{} to wipe it",
                typed.trim(),
                self.label(),
                if self.disk.serial.is_some() {
                    " or its serial"
                } else {
                    ""
                }
            )
        }
    }
}

/// Proof that the person (or the preseed) named this disk for wiping.
/// Only [`Candidate::consent`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipeConsent {
    dev: crate::inventory::DevNum,
    named_as: String,
}

impl WipeConsent {
    /// Was it given for this disk?
    pub fn covers(&self, c: &Candidate) -> bool {
        self.dev == c.disk.dev
    }

    pub fn named_as(&self) -> &str {
        &self.named_as
    }
}

/// The disks of a machine, sorted.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
}

impl Survey {
    pub fn excluded_reason(&self, name: &str) -> Option<&Exclusion> {
        self.excluded
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.reason)
    }
}

/// Sort the whole disks of `inv` into candidates and exclusions.
pub fn survey(inv: &Inventory) -> Survey {
    let boot = boot_medium(inv);
    let in_use = in_use(inv);
    let mut seeds = BTreeMap::new();
    for v in crate::seed::seed_volumes(inv) {
        for (disk, _) in disks_under(inv, v, String::new()) {
            seeds.entry(disk).or_insert_with(|| v.name.clone());
        }
    }
    let mut s = Survey::default();
    for d in inv.devices.iter().filter(|d| d.devtype == DevType::Disk) {
        let reason = if let Some(via) = boot.get(&d.name) {
            Some(Exclusion::BootMedium { via: via.clone() })
        } else if let Some(r) = by_kind(d) {
            Some(r)
        } else if let Some(what) = in_use.get(&d.name) {
            Some(Exclusion::InUse { what: what.clone() })
        } else if let Some(volume) = seeds.get(&d.name) {
            Some(Exclusion::SeedVolume {
                volume: volume.clone(),
            })
        } else if d.read_only {
            Some(Exclusion::ReadOnly)
        } else if Size(d.size_bytes) < MIN_POOL_SIZE {
            Some(Exclusion::TooSmall {
                size: Size(d.size_bytes),
            })
        } else if d.by_id.is_empty() && d.serial.as_deref().is_none_or(str::is_empty) {
            Some(Exclusion::NoStableName)
        } else {
            None
        };
        match reason {
            Some(reason) => s.excluded.push(Excluded {
                name: d.name.clone(),
                reason,
                virtual_device: !matches!(by_kind(d), None | Some(Exclusion::CdRom)),
            }),
            None => s.candidates.push(Candidate {
                disk: d.clone(),
                partitions: inv.partitions_of(&d.name).cloned().collect(),
            }),
        }
    }
    s
}

fn by_kind(d: &BlockDevice) -> Option<Exclusion> {
    let n = d.name.as_str();
    let major = d.dev.major;
    Some(if d.cdrom || n.starts_with("sr") || major == 11 {
        Exclusion::CdRom
    } else if n.starts_with("loop") || major == 7 {
        Exclusion::Loop
    } else if n.starts_with("zram") {
        Exclusion::Zram
    } else if n.starts_with("dm-") || d.dm_name.is_some() {
        Exclusion::Virtual {
            kind: "device-mapper device",
        }
    } else if n.starts_with("md") {
        Exclusion::Virtual {
            kind: "software RAID (md)",
        }
    } else if n.starts_with("ram") || major == 1 {
        Exclusion::Virtual { kind: "RAM disk" }
    } else if n.starts_with("nbd") {
        Exclusion::Virtual {
            kind: "network block device",
        }
    } else if n.starts_with("fd") || major == 2 {
        Exclusion::Virtual {
            kind: "floppy drive",
        }
    } else {
        return None;
    })
}

/// The disks under `start`, each with the chain that reaches it.
fn disks_under(inv: &Inventory, start: &BlockDevice, via: String) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(start, via)];
    while let Some((d, via)) = stack.pop() {
        if !seen.insert(d.name.clone()) {
            continue;
        }
        let step = |next: &BlockDevice| format!("{via} → {}", next.name);
        let mut below = Vec::new();
        if let Some(p) = d.parent.as_deref().and_then(|p| inv.device(p)) {
            below.push(p);
        }
        below.extend(d.slaves.iter().filter_map(|s| inv.device(s)));
        if let Some(b) = d
            .loop_backing
            .as_ref()
            .and_then(|b| b.dev)
            .and_then(|dev| inv.by_dev(dev))
        {
            below.push(b);
        }
        if d.devtype == DevType::Disk {
            out.push((d.name.clone(), via.clone()));
        }
        for b in below {
            stack.push((b, step(b)));
        }
    }
    out
}

/// The block devices a mount rests on: its own device, or for an overlay
/// the mounts holding its layers.
fn mount_devices<'a>(
    inv: &'a Inventory,
    target: &str,
    depth: u32,
) -> Vec<(&'a BlockDevice, String)> {
    let Some(m) = inv.mounts.iter().rev().find(|m| m.target == target) else {
        return Vec::new();
    };
    if let Some(d) = inv.by_dev(m.dev) {
        return vec![(d, format!("{} on {}", d.name, m.target))];
    }
    if depth > 4 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for opt in m.options.split(',') {
        let Some((k, v)) = opt.split_once('=') else {
            continue;
        };
        if !matches!(k, "lowerdir" | "upperdir" | "lowerdir+") {
            continue;
        }
        for dir in v.split(':').filter(|d| !d.is_empty()) {
            if let Some(holder) = holding_mount(inv, dir) {
                out.extend(mount_devices(inv, &holder, depth + 1));
            }
        }
    }
    out
}

/// The mount point of the filesystem holding `path` (longest prefix).
fn holding_mount(inv: &Inventory, path: &str) -> Option<String> {
    inv.mounts
        .iter()
        .map(|m| m.target.as_str())
        .filter(|t| {
            *t == "/" || path == *t || path.strip_prefix(t).is_some_and(|r| r.starts_with('/'))
        })
        .max_by_key(|t| t.len())
        .map(str::to_string)
}

/// Disk name → how it was found to be the boot medium.
fn boot_medium(inv: &Inventory) -> BTreeMap<String, String> {
    let mut starts: Vec<(&BlockDevice, String)> = Vec::new();
    for t in OS_MOUNTS {
        for (d, via) in mount_devices(inv, t, 0) {
            starts.push((d, format!("holds {t}: {via}")));
        }
    }
    for d in &inv.devices {
        if let Some(n) = d.dm_name.as_deref().filter(|n| BOOT_DM_NAMES.contains(n)) {
            starts.push((d, format!("/dev/mapper/{n}: {}", d.name)));
        }
    }
    if let Some(d) = inv.boot.device.as_deref().and_then(|p| inv.by_path(p)) {
        starts.push((d, format!("boot.env device: {}", d.name)));
    }
    if let Some(d) = inv
        .boot
        .partuuid
        .as_deref()
        .and_then(|u| inv.by_partuuid(u))
    {
        starts.push((d, format!("booted slot partition: {}", d.name)));
    }
    let mut out = BTreeMap::new();
    for (d, via) in starts {
        for (disk, chain) in disks_under(inv, d, via) {
            out.entry(disk).or_insert(chain);
        }
    }
    out
}

/// Disk name → what uses it (a mount, a swap, a mapping on top).
fn in_use(inv: &Inventory) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |d: &BlockDevice, what: String| {
        for (disk, _) in disks_under(inv, d, String::new()) {
            out.entry(disk).or_insert_with(|| what.clone());
        }
    };
    for m in &inv.mounts {
        if let Some(d) = inv.by_dev(m.dev) {
            add(d, format!("{} mounted on {}", d.name, m.target));
        }
    }
    for s in &inv.swaps {
        if let Some(d) = inv.by_path(s) {
            add(d, format!("{} is active swap", d.name));
        }
    }
    for holder in inv.devices.iter().filter(|d| !d.slaves.is_empty()) {
        for s in holder.slaves.iter().filter_map(|s| inv.device(s)) {
            let what = match &holder.dm_name {
                Some(n) => format!("{} held by {} ({n})", s.name, holder.name),
                None => format!("{} held by {}", s.name, holder.name),
            };
            add(s, what);
        }
    }
    out
}

#[cfg(test)]
mod tests;
