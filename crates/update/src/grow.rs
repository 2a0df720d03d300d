//! A stick written from the ISO with `dd` holds the ISO's partitions only
//! (ISO 9660, ESP, slot A) and its backup GPT where the ISO ended; the rest
//! of the stick is unused. Before its first update, slot B and the persist
//! partition are made there:
//!
//! 1. the plan ([`plan`]): slot B (at least [`SLOT_B_MIN`], and never
//!    smaller than the image to install) and persist ([`PERSIST_SIZE`]),
//!    1 MiB-aligned, after the last partition, a MiB left at the end of
//!    the disk for the backup GPT; no room is an error that says how much
//!    is missing; a partition udev has not named yet is an error too.
//!    Nothing is written until the plan holds.
//! 2. [`apply`]: the first MiB of persist is zeroed while it is still
//!    free space (stale bytes from an earlier use of the stick could look
//!    like a filesystem; the initrd formats a blank persist at the next
//!    boot); `sgdisk` moves the backup GPT to the end of the disk and adds
//!    both partitions (one run, one table write: `-e -n -t -c`); the
//!    MBR's bootable dummy entry (the ISO's, for firmware that wants an
//!    active partition) is put back and its boot code checked unchanged;
//!    the kernel is told about the partitions it does not have yet
//!    (`partx --add`: the disk is in use, a full re-read would be
//!    refused). A failure after sgdisk says so: the table is complete,
//!    a reboot makes the kernel read it. The ISO 9660 filesystem and slot
//!    A are never written (slot B may start over the ISO's old backup GPT,
//!    which nothing reads any more).
//!
//! The caller has already refused CDs, Ventoy and read-only media (the
//! same checks as the boot state's, [`anklume_bootstate::locate`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use anklume_cmd::Cmd;
use anklume_contract::partition::{slot_label, PERSIST_LABEL, PERSIST_TYPE, SLOT_TYPE_X86_64};
use anklume_contract::Slot;

/// Slot B is made at least this large (room for later, larger releases).
pub const SLOT_B_MIN: u64 = 1 << 30;
/// The persist partition's size (as the raw image's default).
pub const PERSIST_SIZE: u64 = 256 << 20;
const MIB: u64 = 1 << 20;
/// Kept free at the end of the disk for the backup GPT (the ISO's table
/// has 248 entries: 63 sectors; a MiB leaves room for any table size).
const BACKUP_GPT_SECTORS: u64 = MIB / 512;

/// One partition as the kernel sees it (512-byte sectors) and udev names
/// it (empty: udev has not said yet).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
    pub label: String,
    /// Kernel name (`sda4`).
    pub name: String,
    pub partuuid: String,
}

/// A disk's partitions and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The disk's device node (or an image file).
    pub disk: PathBuf,
    /// The disk's size in 512-byte sectors.
    pub sectors: u64,
    /// Bytes per logical sector (sgdisk counts in these).
    pub sector_bytes: u64,
    pub parts: Vec<Part>,
}

impl Table {
    /// The disk `name` (kernel name, e.g. `sda`) as sysfs and udev's data
    /// under `root` describe it.
    pub fn from_sysfs(root: &Path, name: &str) -> Result<Table> {
        let sys = root.join("sys/class/block").join(name);
        let num = |p: &Path, f: &str| -> Result<u64> {
            let t = std::fs::read_to_string(p.join(f))
                .with_context(|| format!("reading {}", p.join(f).display()))?;
            t.trim()
                .parse()
                .with_context(|| format!("{}: not a number", p.join(f).display()))
        };
        let mut parts = Vec::new();
        for e in std::fs::read_dir(&sys).with_context(|| format!("listing {}", sys.display()))? {
            let p = e?.path();
            if !p.join("partition").exists() {
                continue;
            }
            let dev = std::fs::read_to_string(p.join("dev")).unwrap_or_default();
            let udev = std::fs::read_to_string(root.join(format!("run/udev/data/b{}", dev.trim())))
                .unwrap_or_default();
            let prop = |k: &str| {
                udev.lines()
                    .find_map(|l| l.strip_prefix(&format!("E:{k}=")))
                    .unwrap_or("")
                    .to_string()
            };
            parts.push(Part {
                number: u32::try_from(num(&p, "partition")?)?,
                start: num(&p, "start")?,
                sectors: num(&p, "size")?,
                label: prop("ID_PART_ENTRY_NAME"),
                name: e_name(&p),
                partuuid: prop("ID_PART_ENTRY_UUID"),
            });
        }
        parts.sort_by_key(|p| p.number);
        Ok(Table {
            disk: root.join("dev").join(name),
            sectors: num(&sys, "size")?,
            sector_bytes: num(&sys.join("queue"), "logical_block_size").unwrap_or(512),
            parts,
        })
    }
}

fn e_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What [`apply`] will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub disk: PathBuf,
    /// Partition numbers, first sector and size in sectors.
    pub slot_b: (u32, u64, u64),
    pub persist: (u32, u64, u64),
}

impl Plan {
    /// One line for the confirmation and the log.
    pub fn describe(&self) -> String {
        format!(
            "{} has no slot B (an ISO written to a stick): partition {} (slot B, {} MiB) and partition {} (persist, {} MiB) will be made in its free space, the ISO's area left as it is",
            self.disk.display(),
            self.slot_b.0,
            self.slot_b.2 * 512 / MIB,
            self.persist.0,
            self.persist.2 * 512 / MIB
        )
    }
}

fn align_up(sectors: u64) -> u64 {
    let a = MIB / 512;
    sectors.div_ceil(a) * a
}

/// Plan slot B and persist on `t` for an image of `need` bytes. Refuses a
/// disk that has slot B already, and one without room (saying how much).
pub fn plan(t: &Table, need: u64) -> Result<Plan> {
    if let Some(p) = t.parts.iter().find(|p| p.label.is_empty()) {
        bail!(
            "partition {} of {} has no name in udev's data (udev still probing it?): try again in a moment",
            p.number,
            t.disk.display()
        );
    }
    ensure!(
        t.sector_bytes == 512,
        "{} has {}-byte logical sectors: only 512-byte sectors are supported",
        t.disk.display(),
        t.sector_bytes
    );
    let b_label = slot_label(Slot::B);
    if let Some(p) = t.parts.iter().find(|p| p.label == b_label) {
        bail!(
            "{} already has slot B (partition {})",
            t.disk.display(),
            p.number
        );
    }
    if !t.parts.iter().any(|p| p.label == slot_label(Slot::A)) {
        bail!(
            "{} has no partition labelled {}: not an anklume medium",
            t.disk.display(),
            slot_label(Slot::A)
        );
    }
    let end = t
        .parts
        .iter()
        .map(|p| p.start + p.sectors)
        .max()
        .unwrap_or(0);
    let slot = align_up(need.max(SLOT_B_MIN).div_ceil(512));
    let persist = PERSIST_SIZE / 512;
    let b_start = align_up(end);
    let p_start = b_start + slot;
    let last_usable = t.sectors.saturating_sub(BACKUP_GPT_SECTORS + 1);
    let wanted = p_start + persist;
    if wanted > last_usable + 1 {
        bail!(
            "{} is too small to add slot B ({} MiB) and persist ({} MiB) after the ISO: it has {} MiB free, {} MiB more are needed (use a stick of at least {} MiB)",
            t.disk.display(),
            slot * 512 / MIB,
            persist * 512 / MIB,
            (last_usable + 1).saturating_sub(end) * 512 / MIB,
            (wanted - (last_usable + 1)).div_ceil(MIB / 512),
            (wanted + BACKUP_GPT_SECTORS).div_ceil(MIB / 512)
        );
    }
    let next = t.parts.iter().map(|p| p.number).max().unwrap_or(0) + 1;
    Ok(Plan {
        disk: t.disk.clone(),
        slot_b: (next, b_start, slot),
        persist: (next + 1, p_start, persist),
    })
}

/// Carry out `plan` (see the module docs). `live`: the disk is a block
/// device the kernel uses (tell it about the new partitions); false for
/// an image file.
pub fn apply(plan: &Plan, live: bool) -> Result<()> {
    let disk = &plan.disk;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0)
        .with_context(|| format!("reading the MBR of {}", disk.display()))?;
    let (b, s, n) = plan.slot_b;
    let (pn, ps, pl) = plan.persist;
    // Persist's first MiB, zeros, while it is still free space past every
    // partition: the initrd then formats it, whatever happens after.
    f.write_all_at(&vec![0u8; MIB as usize], ps * 512)
        .and_then(|()| f.sync_all())
        .with_context(|| {
            format!(
                "clearing where the persist partition will start on {}",
                disk.display()
            )
        })?;
    Cmd::new("sgdisk")
        .arg("--move-second-header")
        .arg(format!("--new={b}:{s}:{}", s + n - 1))
        .arg(format!("--typecode={b}:{SLOT_TYPE_X86_64}"))
        .arg(format!("--change-name={b}:{}", slot_label(Slot::B)))
        .arg(format!("--new={pn}:{ps}:{}", ps + pl - 1))
        .arg(format!("--typecode={pn}:{PERSIST_TYPE}"))
        .arg(format!("--change-name={pn}:{PERSIST_LABEL}"))
        .arg(disk)
        .run()
        .with_context(|| format!("adding slot B and persist to {}", disk.display()))?;
    // From here the table has both partitions: a failure says what to do.
    let after = || -> Result<()> {
        restore_bootable_entry(&f, &mbr)
            .with_context(|| format!("the MBR of {}", disk.display()))?;
        if live {
            tell_kernel(disk, &[b, pn])?;
        }
        Ok(())
    };
    after().with_context(|| {
        format!(
            "{} has slot B and persist in its partition table now, but the system does not see them yet: reboot, then run the update again",
            disk.display()
        )
    })
}

/// `partx --add` the partitions `numbers` of `disk` the kernel does not
/// have yet (sgdisk's own re-read succeeds when no partition of the disk
/// is open, e.g. after toram), then wait for udev.
fn tell_kernel(disk: &Path, numbers: &[u32]) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    // partx given a regular file would set up a loop device of its own.
    let meta = std::fs::metadata(disk).with_context(|| format!("reading {}", disk.display()))?;
    ensure!(
        meta.file_type().is_block_device(),
        "{} is not a block device: no kernel partitions to add",
        disk.display()
    );
    let name = disk
        .file_name()
        .context("a disk without a name")?
        .to_string_lossy()
        .into_owned();
    let sys = Path::new("/sys/class/block").join(&name);
    let known = |n: u32| -> bool {
        std::fs::read_dir(&sys).is_ok_and(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("partition"))
                    .is_ok_and(|p| p.trim() == n.to_string())
            })
        })
    };
    for &n in numbers {
        if !known(n) {
            Cmd::new("partx")
                .args(["--add", "--nr"])
                .arg(n.to_string())
                .arg(disk)
                .run()
                .with_context(|| {
                    format!(
                        "telling the kernel about partition {n} of {}",
                        disk.display()
                    )
                })?;
        }
    }
    Cmd::new("udevadm")
        .args(["settle", "--timeout=30"])
        .run()
        .context("waiting for udev to see the new partitions")
}

/// sgdisk rewrites the protective MBR (one 0xEE entry over the disk) and
/// drops the ISO's bootable dummy entry (type 0, active): put entries that
/// are neither empty nor the protective one back where they were, when
/// their slot is free.
fn restore_bootable_entry(f: &std::fs::File, before: &[u8; 512]) -> Result<()> {
    let mut now = [0u8; 512];
    f.read_exact_at(&mut now, 0)?;
    let entry = |m: &[u8; 512], i: usize| -> [u8; 16] {
        m[446 + 16 * i..462 + 16 * i].try_into().expect("16 bytes")
    };
    let mut changed = false;
    for i in 0..4 {
        let old = entry(before, i);
        let keep = old != [0u8; 16] && old[4] != 0xEE;
        if keep && entry(&now, i) == [0u8; 16] {
            now[446 + 16 * i..462 + 16 * i].copy_from_slice(&old);
            changed = true;
        }
    }
    if changed {
        f.write_all_at(&now, 0)?;
        f.sync_all()?;
    }
    ensure!(now[510..] == [0x55, 0xAA], "no MBR signature after sgdisk");
    ensure!(
        now[..440] == before[..440],
        "sgdisk changed the MBR's boot code"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
