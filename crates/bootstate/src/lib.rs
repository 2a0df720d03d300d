//! The boot state of the medium this system booted from.
//!
//! GRUB counts tries in its environment block on the ESP
//! (`EFI/anklume/grubenv`, [`anklume_contract::bootstate`]); after a
//! healthy boot the booted slot is marked good there ([`mark_good`]), the
//! call the health check makes and the updater will make.
//!
//! - [`locate`]: the ESP of the booted medium. The initrd writes the booted
//!   slot's PARTUUID to `/run/anklume/boot.env`; the slot partition
//!   (`/dev/disk/by-partuuid/…`) leads in sysfs to its disk, and the ESP is
//!   the partition of that disk with the ESP type GUID in udev's data. Never
//!   another disk: an ESP on any other disk is not ours to write.
//! - [`read`]: the block, through the FAT (`anklume-esp`), without
//!   mounting anything.
//! - [`mark_good`]: the block rewritten **in place**, as GRUB's `save_env`
//!   does (GRUB and we must agree on where the block is; a new file would be
//!   allocated elsewhere). Only the 512-byte sectors that change are written;
//!   the state variables fit in the first sector, so a mark-good is one
//!   sector write, read back after a sync.
//!
//! - [`fall_back`]: after an unhealthy boot of a slot on trial (installed
//!   by an update, not yet good), the good slot boots next at once.
//!
//! When the kernel has the ESP mounted, the block is read and written
//! through that mount (in place, same size), never under it.
//!
//! On a read-only medium (a CD, an ISO under Ventoy, a read-only loop) or
//! with the medium gone (toram, stick pulled out) nothing is written and
//! the outcome says why; that is not an error.
//!
//! Everything is read below a root path (`/` on a machine), so tests run
//! on a fake sysfs/udev/dev tree whose "partitions" are FAT image files.

mod locate;

use std::collections::BTreeMap;
use std::path::Path;

use anklume_contract::bootenv::BootEnv;
use anklume_contract::bootfiles::GRUBENV;
use anklume_contract::bootstate::{decode_envblk, encode_envblk, BootState};
use anklume_contract::Slot;
use anyhow::{Context, Result};
use serde::Serialize;

pub use locate::{locate, Esp, Located};

/// The boot state as read from an ESP, with the other variables of the
/// block (kept as they are when it is rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub state: BootState,
    pub vars: BTreeMap<String, String>,
}

/// Read the boot state from `esp`.
pub fn read(esp: &Esp) -> Result<Read> {
    let block = match &esp.mounted_at {
        Some(m) => std::fs::read(m.join(GRUBENV))
            .with_context(|| format!("reading {GRUBENV} on the ESP mounted at {}", m.display()))?,
        None => anklume_esp::read_file(&esp.device, esp.offset, GRUBENV)
            .with_context(|| format!("reading {GRUBENV} on the ESP {}", esp.device.display()))?,
    };
    let vars = decode_envblk(&block)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{GRUBENV} on {}", esp.device.display()))?;
    let state = BootState::from_vars(&vars)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{GRUBENV} on {}", esp.device.display()))?;
    Ok(Read { state, vars })
}

/// What [`mark_good`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked {
    /// The block was rewritten: the state before and after.
    Written { before: BootState, after: BootState },
    /// The slot was already good and primary: nothing written.
    AlreadyGood(BootState),
    /// The medium is read-only: nothing written (the state, when readable).
    ReadOnly {
        why: String,
        state: Option<BootState>,
    },
    /// The medium is not reachable: nothing written.
    Unreachable(String),
}

impl Marked {
    /// One line for people and the journal.
    pub fn describe(&self, slot: Slot) -> String {
        match self {
            Marked::Written { before, after } => format!(
                "slot {slot} marked good (was: {}; now: {})",
                summary(before),
                summary(after)
            ),
            Marked::AlreadyGood(s) => {
                format!(
                    "slot {slot} was already good ({}); nothing written",
                    summary(s)
                )
            }
            Marked::ReadOnly { why, .. } => {
                format!("boot state not written: {why}; nothing to mark on this medium")
            }
            Marked::Unreachable(why) => {
                format!("boot state not written: {why}")
            }
        }
    }
}

/// `primary a, a good, b 2 tries left`.
pub fn summary(s: &BootState) -> String {
    let mut out = format!("primary {}", s.primary);
    for slot in [Slot::A, Slot::B] {
        match (s.is_good(slot), s.tries(slot)) {
            (true, _) => out.push_str(&format!(", {slot} good")),
            (false, Some(t)) => out.push_str(&format!(", {slot} {t} tries left")),
            (false, None) => out.push_str(&format!(", {slot} not good")),
        }
    }
    out
}

/// Mark the booted slot (`env.slot`) good on the booted medium's ESP,
/// found under `root`. A read-only or unreachable medium is an outcome,
/// not an error; a missing or unreadable block is an error.
pub fn mark_good(root: &Path, env: &BootEnv) -> Result<Marked> {
    let slot = env.slot.context(
        "boot.env names no booted slot (slot=a or slot=b): which slot to mark good is unknown",
    )?;
    let esp = match locate(root, env)? {
        Located::Unreachable(why) => return Ok(Marked::Unreachable(why)),
        Located::Esp(esp) => esp,
    };
    if let Some(why) = &esp.read_only {
        return Ok(Marked::ReadOnly {
            why: why.clone(),
            state: read(&esp).ok().map(|r| r.state),
        });
    }
    let Read {
        state: before,
        vars,
    } = read(&esp)?;
    let mut after = before.clone();
    after.mark_good(slot);
    if after == before {
        return Ok(Marked::AlreadyGood(before));
    }
    write_state(&esp, vars, &after)?;
    Ok(Marked::Written { before, after })
}

/// What [`fall_back`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FellBack {
    /// The booted slot was on trial: it is failed now, the other (good)
    /// slot boots next.
    Written { before: BootState, after: BootState },
    /// Nothing written, and why (the booted slot is not on trial, or the
    /// other slot is not good: there is nothing better to go back to).
    Nothing(String),
    /// Read-only or unreachable medium: nothing written.
    NotWritable(String),
}

impl FellBack {
    /// One line for people and the journal.
    pub fn describe(&self, slot: Slot) -> String {
        match self {
            FellBack::Written { after, .. } => format!(
                "slot {slot} failed its trial: slot {} boots next ({})",
                after.primary,
                summary(after)
            ),
            FellBack::Nothing(why) => format!("no fallback: {why}"),
            FellBack::NotWritable(why) => format!("boot state not written: {why}"),
        }
    }
}

/// After an unhealthy boot: when the booted slot is on trial (an update
/// not yet marked good) and the other slot is good, give up on the booted
/// slot at once ([`BootState::fail_trial`]) instead of spending its
/// remaining tries. Anything else is left as it is.
pub fn fall_back(root: &Path, env: &BootEnv) -> Result<FellBack> {
    let slot = env
        .slot
        .context("boot.env names no booted slot (slot=a or slot=b)")?;
    let esp = match locate(root, env)? {
        Located::Unreachable(why) => return Ok(FellBack::NotWritable(why)),
        Located::Esp(esp) => esp,
    };
    if let Some(why) = &esp.read_only {
        return Ok(FellBack::NotWritable(why.clone()));
    }
    let Read {
        state: before,
        vars,
    } = read(&esp)?;
    if !before.on_trial(slot) {
        return Ok(FellBack::Nothing(format!(
            "slot {slot} is not on trial ({})",
            summary(&before)
        )));
    }
    if !before.is_good(slot.other()) {
        return Ok(FellBack::Nothing(format!(
            "slot {} is not good ({})",
            slot.other(),
            summary(&before)
        )));
    }
    let mut after = before.clone();
    after.fail_trial(slot);
    write_state(&esp, vars, &after)?;
    Ok(FellBack::Written { before, after })
}

/// Whether the booted slot is on trial ([`BootState::on_trial`]) on a
/// medium that can be written; `false` when the medium cannot be reached.
pub fn on_trial(root: &Path, env: &BootEnv) -> Result<bool> {
    let Some(slot) = env.slot else {
        return Ok(false);
    };
    Ok(match locate(root, env)? {
        Located::Esp(esp) if esp.read_only.is_none() => read(&esp)?.state.on_trial(slot),
        _ => false,
    })
}

/// Write `state` (over `vars`, the block's other variables) to the ESP's
/// block in place.
fn write_state(esp: &Esp, mut vars: BTreeMap<String, String>, state: &BootState) -> Result<()> {
    vars.extend(state.to_vars());
    let block = encode_envblk(&vars).map_err(anyhow::Error::msg)?;
    match &esp.mounted_at {
        Some(m) => rewrite_mounted(&m.join(GRUBENV), &block)?,
        None => {
            anklume_esp::rewrite_in_place(&esp.device, esp.offset, GRUBENV, &block).with_context(
                || {
                    format!(
                        "writing {GRUBENV} on the ESP {} in place",
                        esp.device.display()
                    )
                },
            )?;
        }
    }
    Ok(())
}

/// The ESP is mounted: never write under the kernel's FAT driver. The
/// block is overwritten through the mount, in place (same size, no
/// truncation: the driver keeps the file's clusters, as `save_env` needs),
/// synced and read back.
fn rewrite_mounted(path: &Path, block: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    let len = f.metadata()?.len();
    anyhow::ensure!(
        len == block.len() as u64,
        "{} is {len} bytes, not a {}-byte GRUB environment block",
        path.display(),
        block.len()
    );
    f.write_all_at(block, 0)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    let mut back = vec![0u8; block.len()];
    f.read_exact_at(&mut back, 0)?;
    anyhow::ensure!(
        back == block,
        "{} does not read back as written",
        path.display()
    );
    Ok(())
}

/// The boot state for `anklume status` (JSON: `boot_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The ESP's device (`/dev/sda1`).
    pub esp: String,
    /// Why nothing can be written there, when so.
    pub read_only: Option<String>,
    pub primary: Slot,
    /// Tries left per slot (null: not counting).
    pub tries_a: Option<u8>,
    pub tries_b: Option<u8>,
    pub good_a: bool,
    pub good_b: bool,
}

/// The boot state of the booted medium, for a report: `Ok(Err(why))` when
/// the ESP cannot be reached.
pub fn report(root: &Path, env: &BootEnv) -> Result<std::result::Result<Report, String>> {
    let esp = match locate(root, env)? {
        Located::Unreachable(why) => return Ok(Err(why)),
        Located::Esp(esp) => esp,
    };
    let r = read(&esp)?;
    Ok(Ok(Report {
        esp: esp.display_name(root),
        read_only: esp.read_only.clone(),
        primary: r.state.primary,
        tries_a: r.state.tries(Slot::A),
        tries_b: r.state.tries(Slot::B),
        good_a: r.state.is_good(Slot::A),
        good_b: r.state.is_good(Slot::B),
    }))
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
