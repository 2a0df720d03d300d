//! Every boot: find the data pool, unlock it, mount it, put Incus on it.
//!
//! The pool is the one LUKS2 volume labelled [`POOL_LABEL`] (the label
//! `cryptsetup luksFormat --label` wrote at first boot, in udev's data as
//! `ID_FS_LABEL`). It is unlocked by `systemd-cryptsetup attach`, the tool
//! behind `/etc/crypttab`: first, on a machine with a TPM, the LUKS2 TPM2
//! token alone (enrolled by the first boot; no prompt); if that does not
//! open it, the passphrase through systemd's password agents, which ask on
//! every console (tty1 and the serial console alike); `tries=0` asks again
//! after a wrong passphrase, for as long as it takes, and a wrong
//! passphrase changes nothing. Which one unlocked is recorded in
//! `/run/anklume/pool-unlock.json` for `anklume status`.
//!
//! Then the filesystem's top level is mounted at [`POOL_DIR`] and its
//! `incus` subvolume at [`INCUS_DIR`], before Incus starts. Each step is
//! skipped when already done (the first boot leaves the pool unlocked; a
//! second run of the unit is harmless). [`steps`] is a pure function of
//! what is already there, unit-tested on the host; [`run`] carries it out.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::exec::{Runner, Stdin, Step};
use crate::inventory::{BlockDevice, Inventory};
use crate::plan::{POOL_LABEL, POOL_MAPPING, ZFS_POOL};
use anklume_contract::pool::{
    PoolPointer, UnlockRecord, UnlockedBy, PERSIST_DIR, POINTER_PATH, UNLOCK_RECORD_PATH,
};

pub use anklume_contract::pool::POOL_DIR;

/// Where Incus keeps its database, images and the `dir` storage pools.
pub const INCUS_DIR: &str = "/var/lib/incus";
/// Incus's socket: there once `incus.socket` listens, which at boot comes
/// after the pool's mount.
pub const INCUS_SOCKET: &str = "/var/lib/incus/unix.socket";
/// The btrfs subvolume that holds Incus's state.
pub const INCUS_SUBVOLUME: &str = "incus";
/// The unlocked pool.
pub fn mapping_path() -> String {
    format!("/dev/mapper/{POOL_MAPPING}")
}

/// The pool's LUKS2 partition, if this machine has one; two of them is an
/// error that names both (which one to unlock is not ours to guess).
pub fn find(inv: &Inventory) -> Result<Option<&BlockDevice>> {
    let found: Vec<&BlockDevice> = inv
        .devices
        .iter()
        .filter(|d| {
            d.fs_type.as_deref() == Some("crypto_LUKS") && d.fs_label.as_deref() == Some(POOL_LABEL)
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => {
            let names: Vec<String> = many.iter().map(|d| format!("/dev/{}", d.name)).collect();
            bail!(
                "{} LUKS volumes are labelled {POOL_LABEL}: {}; unplug the one that is not this machine's pool",
                many.len(),
                names.join(", ")
            )
        }
    }
}

/// How [`locate`] found the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// The pool pointer on the persist partition names it.
    Pointer,
    /// The only LUKS2 volume labelled [`POOL_LABEL`].
    Label,
}

/// The pool's LUKS2 partition: the one the pool pointer names when it is
/// here, else [`find`] by label (a pointer naming a partition that is not
/// plugged in says so in the error when the label is ambiguous too).
pub fn locate<'a>(
    inv: &'a Inventory,
    pointer: Option<&PoolPointer>,
) -> Result<Option<(&'a BlockDevice, FoundBy)>> {
    if let Some(p) = pointer {
        if let Some(d) = inv.devices.iter().find(|d| {
            d.fs_type.as_deref() == Some("crypto_LUKS")
                && d.partuuid.as_deref().is_some_and(|u| p.names(u))
        }) {
            return Ok(Some((d, FoundBy::Pointer)));
        }
    }
    let found = find(inv).with_context(|| match pointer {
        Some(p) => format!(
            "the pool pointer {POINTER_PATH} names PARTUUID {}, which is not here",
            p.partuuid
        ),
        None => format!("no pool pointer in {PERSIST_DIR}"),
    })?;
    Ok(found.map(|d| (d, FoundBy::Label)))
}

/// The partition under the open pool mapping (the first boot left it
/// unlocked), from the mapping's `slaves`.
fn open_pool_partition(inv: &Inventory) -> Option<&BlockDevice> {
    let dm = inv
        .devices
        .iter()
        .find(|d| d.dm_name.as_deref() == Some(POOL_MAPPING))?;
    let slave = dm.slaves.first()?;
    inv.devices.iter().find(|d| &d.name == slave)
}

/// The pool pointer as the persist partition has it; a pointer that cannot
/// be read or parsed is said and ignored (the label still finds the pool).
fn read_pointer(m: &mut dyn Machine, out: &mut dyn std::io::Write) -> Result<Option<PoolPointer>> {
    let text = match m.read_pointer() {
        Ok(t) => t,
        Err(e) => {
            writeln!(
                out,
                "warning: {POINTER_PATH}: {e:#}; looking for the pool by its label"
            )?;
            return Ok(None);
        }
    };
    Ok(match text.map(|t| PoolPointer::parse(&t)) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            writeln!(out, "warning: {POINTER_PATH}: {e}; looking for the pool by its label (it is written again)")?;
            None
        }
    })
}

/// Remember `pool` in the pool pointer, when this boot has a persist
/// partition and the pointer does not already name it.
fn remember(
    m: &mut dyn Machine,
    runner: &mut dyn Runner,
    out: &mut dyn std::io::Write,
    pointer: Option<&PoolPointer>,
    pool: &BlockDevice,
) -> Result<()> {
    let Some(partuuid) = pool.partuuid.as_deref() else {
        return Ok(());
    };
    if pointer.is_some_and(|p| p.names(partuuid)) || !m.is_mount_point(PERSIST_DIR)? {
        return Ok(());
    }
    runner.write_file(
        POINTER_PATH,
        PoolPointer::new(partuuid).to_json().as_bytes(),
    )?;
    writeln!(
        out,
        "    remembered as this machine's pool in {POINTER_PATH} (PARTUUID {})",
        partuuid.to_ascii_lowercase()
    )?;
    Ok(())
}

/// What is already in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The pool's partition (`/dev/sdb1`), when found.
    pub partition: Option<String>,
    /// `/dev/mapper/anklume-pool` exists.
    pub unlocked: bool,
    /// The filesystem inside, once unlocked (`btrfs`, `zfs_member`).
    pub fstype: Option<String>,
    /// [`POOL_DIR`] is a mount point.
    pub pool_mounted: bool,
    /// The top level holds an [`INCUS_SUBVOLUME`] subvolume.
    pub has_incus: bool,
    /// [`INCUS_DIR`] is a mount point.
    pub incus_mounted: bool,
    /// ZFS: the pool's name (the label of its vdev: `anklume` unless the
    /// preseed named it otherwise).
    pub zfs_pool: Option<String>,
    /// ZFS: the pool is imported.
    pub zfs_imported: bool,
    /// ZFS: its `anklume` dataset is mounted at [`zfs_anklume_dir`].
    pub anklume_mounted: bool,
}

/// ZFS: where the `anklume` dataset is mounted (`infra.yml` is
/// `anklume/infra.yml` on the pool, as on btrfs).
pub fn zfs_anklume_dir() -> String {
    format!("{POOL_DIR}/{}", zfs_anklume_dataset())
}
/// ZFS: the dataset that holds anklume's own data: the folder of
/// `infra.yml` on the pool (the same name the first boot mounts to write
/// it, `exec::filesystem_steps`).
pub fn zfs_anklume_dataset() -> &'static str {
    anklume_contract::pool::INFRA_ON_POOL
        .split_once('/')
        .map_or("anklume", |(dir, _)| dir)
}
/// ZFS: an imported pool named `pool` has this folder (its kstats).
pub fn zfs_imported_marker(pool: &str) -> String {
    format!("/proc/spl/kstat/zfs/{pool}")
}

/// The TPM's try: `systemd-cryptsetup attach anklume-pool PART -
/// tpm2-device=auto,headless=true` (`-`: no key file): the systemd-tpm2
/// token in the header, if the machine's measured state still matches its
/// policy; never a prompt (it fails instead, and [`passphrase_step`] asks).
/// Two tries instead of one command that falls back by itself, so that
/// the boot knows which one unlocked ([`UnlockRecord`]).
pub fn tpm2_step(partition: &str) -> Step {
    Step::new(
        "unlock the pool with the TPM2 token",
        &[
            "systemd-cryptsetup",
            "attach",
            POOL_MAPPING,
            partition,
            "-",
            "tpm2-device=auto,headless=true",
        ],
        Stdin::Nothing,
    )
}

/// The passphrase (or recovery key), asked through systemd's password
/// agents on every console; `tries=0`: asked again after a wrong one.
pub fn passphrase_step(partition: &str) -> Step {
    Step::new(
        "unlock the pool with its passphrase (asked on every console)",
        &[
            "systemd-cryptsetup",
            "attach",
            POOL_MAPPING,
            partition,
            "-",
            "tries=0",
        ],
        Stdin::Nothing,
    )
}

/// How many times the TPM2 token is tried before the passphrase is asked.
pub const TPM_TRIES: usize = 2;

/// Where the kernel's TPM 2.0 resource manager is, when there is one.
pub const TPM_DEVICE: &str = "/dev/tpmrm0";

/// Record what unlocked the pool, for `anklume status`.
pub fn record(runner: &mut dyn Runner, partition: &str, by: UnlockedBy) -> Result<()> {
    let dir = std::path::Path::new(UNLOCK_RECORD_PATH)
        .parent()
        .and_then(|d| d.to_str())
        .expect("the record's path has a folder");
    runner.create_dir(dir)?;
    let r = UnlockRecord {
        partition: partition.to_string(),
        by,
    };
    runner.write_file(UNLOCK_RECORD_PATH, r.to_json().as_bytes())
}

fn mount(what: &str, options: &str, dir: &str) -> Step {
    Step::new(
        what,
        &["mount", "-t", "btrfs", "-o", options, &mapping_path(), dir],
        Stdin::Nothing,
    )
}

fn zfs_mount(what: &str, dataset: &str, dir: &str) -> Step {
    Step::new(
        what,
        &["mount", "-t", "zfs", "-o", "noatime", dataset, dir],
        Stdin::Nothing,
    )
}

/// ZFS (the image's ZFS variant): import the pool without mounting
/// anything (`-N`; no cache file written), then mount its datasets
/// (`mountpoint=legacy`, set by the first boot) where btrfs has its
/// subvolumes: the pool's top at [`POOL_DIR`], `anklume` below it,
/// `incus` at [`INCUS_DIR`].
fn zfs_steps(s: &State) -> Vec<Step> {
    let pool = s.zfs_pool.as_deref().unwrap_or(ZFS_POOL);
    let mut v = Vec::new();
    if !s.zfs_imported {
        v.push(Step::new(
            format!("import the zfs pool {pool}"),
            &[
                "zpool",
                "import",
                "-N",
                "-o",
                "cachefile=none",
                "-d",
                &mapping_path(),
                pool,
            ],
            Stdin::Nothing,
        ));
    }
    if !s.pool_mounted {
        v.push(zfs_mount(
            &format!("mount the pool at {POOL_DIR}"),
            pool,
            POOL_DIR,
        ));
    }
    if !s.anklume_mounted {
        v.push(zfs_mount(
            &format!("mount its {} dataset", zfs_anklume_dataset()),
            &format!("{pool}/{}", zfs_anklume_dataset()),
            &zfs_anklume_dir(),
        ));
    }
    if !s.incus_mounted {
        v.push(zfs_mount(
            &format!("mount its {INCUS_SUBVOLUME} dataset at {INCUS_DIR}"),
            &format!("{pool}/{INCUS_SUBVOLUME}"),
            INCUS_DIR,
        ));
    }
    v
}

/// The mounts still to make on an unlocked pool.
pub fn mount_steps(s: &State) -> Result<Vec<Step>> {
    match s.fstype.as_deref() {
        Some("btrfs") => {}
        Some("zfs_member") => return Ok(zfs_steps(s)),
        Some(other) => bail!(
            "{} holds {other:?}, not the btrfs anklume-firstboot makes: not mounted",
            mapping_path()
        ),
        None => bail!(
            "{} holds no filesystem anyone recognises: not mounted (was the first boot interrupted?)",
            mapping_path()
        ),
    }
    let mut v = Vec::new();
    if !s.pool_mounted {
        v.push(mount(
            &format!("mount the pool at {POOL_DIR}"),
            "subvolid=5,noatime",
            POOL_DIR,
        ));
    }
    if s.has_incus && !s.incus_mounted {
        v.push(mount(
            &format!("mount its {INCUS_SUBVOLUME} subvolume at {INCUS_DIR}"),
            &format!("subvol={INCUS_SUBVOLUME},noatime"),
            INCUS_DIR,
        ));
    }
    Ok(v)
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No pool on this machine.
    NoPool,
    /// Unlocked (or already) and mounted.
    Mounted { incus_on_pool: bool },
}

/// What [`run`] reads from the machine between its steps.
pub trait Machine {
    /// The inventory (udev's view of the disks).
    fn inventory(&mut self) -> Result<Inventory>;
    fn exists(&mut self, path: &str) -> bool;
    /// The filesystem type on `dev` (a low-level probe, not udev's cache).
    fn fstype(&mut self, dev: &str) -> Result<Option<String>>;
    fn is_mount_point(&mut self, dir: &str) -> Result<bool>;
    /// `dir` is a btrfs subvolume.
    fn is_subvolume(&mut self, dir: &str) -> bool;
    /// The text of the pool pointer ([`POINTER_PATH`]), if there is one.
    fn read_pointer(&mut self) -> Result<Option<String>>;
    /// The label of the filesystem on `dev` (a ZFS vdev: its pool's name).
    fn fs_label(&mut self, dev: &str) -> Result<Option<String>>;
}

/// Find, unlock, mount. Progress lines go to `out`.
pub fn run(
    m: &mut dyn Machine,
    runner: &mut dyn Runner,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    // Incus already on the live system's memory: its state cannot move
    // under it (the mount would hide its socket and database).
    if m.exists(INCUS_SOCKET) && !m.is_mount_point(INCUS_DIR)? {
        bail!(
            "Incus already runs from the live system's memory ({INCUS_SOCKET} exists): its state cannot move onto the pool under it; reboot, and the pool is unlocked and mounted before Incus starts"
        );
    }
    let mut s = State {
        unlocked: m.exists(&mapping_path()),
        ..State::default()
    };
    let pointer = read_pointer(m, out)?;
    if s.unlocked {
        // Left unlocked by the first boot: remember which partition it is.
        let inv = m.inventory().context("reading the machine's disks")?;
        if let Some(pool) = open_pool_partition(&inv) {
            remember(m, runner, out, pointer.as_ref(), pool)?;
        }
    } else {
        let inv = m.inventory().context("reading the machine's disks")?;
        let Some((pool, found_by)) = locate(&inv, pointer.as_ref())? else {
            writeln!(
                out,
                "No data pool on this machine (no LUKS volume labelled {POOL_LABEL}): Incus stays on the live system's memory; create one with anklume-firstboot."
            )?;
            return Ok(Outcome::NoPool);
        };
        let part = format!("/dev/{}", pool.name);
        writeln!(
            out,
            "==> unlocking the data pool on {part} ({})",
            match found_by {
                FoundBy::Pointer => "named by the pool pointer on the persist partition",
                FoundBy::Label => "found by its label",
            }
        )?;
        let mut by = None;
        if m.exists(TPM_DEVICE) {
            let step = tpm2_step(&part);
            // Twice: a PCR extended by anything else during the policy
            // session makes the TPM refuse once (TPM_RC_PCR_CHANGED).
            for _ in 0..TPM_TRIES {
                writeln!(out, "==> {}", step.what)?;
                match runner.run(&step, Vec::new()) {
                    Ok(()) => {
                        by = Some(UnlockedBy::Tpm2);
                        break;
                    }
                    // No token, or the measured state changed (firmware,
                    // Secure Boot keys): the passphrase still opens it.
                    Err(e) => writeln!(out, "    the TPM did not unlock it: {e}")?,
                }
            }
        }
        let by = match by {
            Some(b) => b,
            None => {
                let step = passphrase_step(&part);
                writeln!(out, "==> {}", step.what)?;
                runner
                    .run(&step, Vec::new())
                    .with_context(|| format!("unlocking {part}"))?;
                UnlockedBy::Passphrase
            }
        };
        record(runner, &part, by)?;
        writeln!(out, "    unlocked by {by}")?;
        remember(m, runner, out, pointer.as_ref(), pool)?;
        s.partition = Some(part);
        s.unlocked = true;
    }
    s.fstype = m.fstype(&mapping_path())?;
    s.pool_mounted = m.is_mount_point(POOL_DIR)?;
    let zfs = s.fstype.as_deref() == Some("zfs_member");
    if zfs {
        let pool = m
            .fs_label(&mapping_path())?
            .with_context(|| format!("{} holds ZFS but no pool name", mapping_path()))?;
        s.zfs_imported = m.exists(&zfs_imported_marker(&pool));
        s.zfs_pool = Some(pool);
        s.anklume_mounted = m.is_mount_point(&zfs_anklume_dir())?;
        s.incus_mounted = m.is_mount_point(INCUS_DIR)?;
        s.has_incus = true;
    }
    // Two rounds: the incus subvolume is only seen once the top level is
    // mounted (ZFS: one round does all).
    for round in 0..2 {
        if round == 1 && !zfs {
            s.has_incus = m.is_subvolume(&format!("{POOL_DIR}/{INCUS_SUBVOLUME}"));
            s.incus_mounted = m.is_mount_point(INCUS_DIR)?;
        }
        for step in mount_steps(&s)? {
            let dir = step.argv.last().cloned().unwrap_or_default();
            if step.argv[0] == "mount" {
                runner.create_dir(&dir)?;
            }
            writeln!(out, "==> {}", step.what)?;
            runner.run(&step, Vec::new()).context(step.what.clone())?;
            s.zfs_imported |= step.argv[0] == "zpool";
            s.pool_mounted |= dir == POOL_DIR;
            s.anklume_mounted |= zfs && dir == zfs_anklume_dir();
            s.incus_mounted |= dir == INCUS_DIR;
        }
    }
    if !s.has_incus {
        writeln!(
            out,
            "warning: the pool has no {INCUS_SUBVOLUME} subvolume: Incus keeps its state in memory"
        )?;
    }
    Ok(Outcome::Mounted {
        incus_on_pool: s.has_incus,
    })
}

/// Incus's units: the daemon, its socket, and the per-user ones whose
/// socket is in [`INCUS_DIR`] too.
const INCUS_UNITS: [&str; 4] = [
    "incus.socket",
    "incus.service",
    "incus-user.socket",
    "incus-user.service",
];

/// A pool made after the boot (the wizard on a console): the steps that
/// put Incus on it now instead of at the next boot. Incus stops (it ran
/// from the live system's memory, with nothing of the user's in it) and
/// its sockets are removed (a socket left there means "Incus runs from
/// memory" to [`run`]); anklume-pool.service runs again and mounts the
/// pool, already unlocked, and Incus's sockets start after it in the same
/// transaction (the unit's `Before=` orders them; the mount starts the
/// agent, which waits for the sockets' pending jobs instead of finding no
/// Incus); the agent applies the pool's `infra.yml` (not waited for: the
/// first apply may take minutes).
pub fn bring_up_steps() -> Vec<Step> {
    let mut stop = vec!["systemctl", "stop"];
    stop.extend(INCUS_UNITS);
    let sockets = [INCUS_SOCKET.to_string(), format!("{INCUS_SOCKET}.user")];
    let mut rm = vec!["rm", "-f", "--"];
    rm.extend(sockets.iter().map(String::as_str));
    vec![
        Step::new(
            "stop Incus (it ran from memory, before there was a pool)",
            &stop,
            Stdin::Nothing,
        ),
        Step::new("remove its sockets from memory", &rm, Stdin::Nothing),
        Step::new(
            "mount the pool and its incus subvolume (anklume-pool.service), then start Incus on it",
            &[
                "systemctl",
                "restart",
                "anklume-pool.service",
                "incus.socket",
                "incus-user.socket",
            ],
            Stdin::Nothing,
        ),
        Step::new(
            "start the agent: it applies the pool's infra.yml",
            &["systemctl", "start", "--no-block", "anklume-agent.service"],
            Stdin::Nothing,
        ),
    ]
}

/// The running machine.
#[derive(Debug, Default)]
pub struct LiveMachine;

impl Machine for LiveMachine {
    fn inventory(&mut self) -> Result<Inventory> {
        // udev's record of a LUKS volume (its label, PARTUUID) may not be
        // there yet at boot; a machine with none has nothing to wait for.
        if let Some(found) = crate::rawscan::settle(|s| s.is_luks())? {
            println!("Waited for udev's record of the block devices: {found}");
        }
        crate::probe::Probe::new("/").inventory()
    }

    fn exists(&mut self, path: &str) -> bool {
        Path::new(path).exists()
    }

    fn fstype(&mut self, dev: &str) -> Result<Option<String>> {
        // wipefs probes the device itself (`TYPE OFFSET` lines, none when
        // blank); udev's record of a mapping just made may lag.
        Ok(crate::exec::signatures(dev)?
            .first()
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string))
    }

    fn is_mount_point(&mut self, dir: &str) -> Result<bool> {
        Ok(crate::probe::Probe::new("/")
            .mounts()?
            .iter()
            .any(|m| m.target == dir))
    }

    fn fs_label(&mut self, dev: &str) -> Result<Option<String>> {
        // A low-level probe (-p): udev's cache of a mapping just opened
        // may lag.
        let label = anklume_cmd::Cmd::new("blkid")
            .args(["-p", "-o", "value", "-s", "LABEL", dev])
            .output_string()
            .with_context(|| format!("reading the label of {dev}"))?;
        let label = label.trim();
        Ok((!label.is_empty()).then(|| label.to_string()))
    }

    fn read_pointer(&mut self) -> Result<Option<String>> {
        match std::fs::read_to_string(POINTER_PATH) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {POINTER_PATH}")),
        }
    }

    fn is_subvolume(&mut self, dir: &str) -> bool {
        // A btrfs subvolume's root directory has inode 256.
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.ino() == 256)
    }
}

#[cfg(test)]
mod tests;
