//! `--status`, `--mark-good`, `--rollback`: the boot state, read and moved.

use std::fmt;

use anyhow::{bail, Result};

use anklume_contract::bootstate::BootState;
use anklume_contract::Slot;

use crate::esp::would_boot;
use crate::system::System;

/// What a slot holds, as the boot state and its folder tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No file in its folder.
    Empty,
    /// Files but no `slot.cfg`: an update was cut short (the next update
    /// cleans it; GRUB never boots it).
    Incomplete,
    /// Complete and marked good after a healthy boot.
    Good,
    /// Complete, armed: this many tries left before the fallback.
    Trying(u8),
    /// Complete, tried without being marked good: GRUB falls back.
    Failed,
    /// Complete but neither armed nor good (an update cut just before its
    /// last write, or a slot a newer update disarmed).
    NotArmed,
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Empty => f.write_str("empty"),
            SlotState::Incomplete => {
                f.write_str("incomplete (interrupted update; cleaned by the next update)")
            }
            SlotState::Good => f.write_str("good"),
            SlotState::Trying(n) => write!(f, "on trial, {n} tries left"),
            SlotState::Failed => f.write_str("failed (tries used up, never marked good)"),
            SlotState::NotArmed => f.write_str("written, not armed"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SlotStatus {
    pub slot: Slot,
    pub state: SlotState,
    pub version: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub running: Slot,
    pub primary: Slot,
    /// The slot GRUB boots next.
    pub next_boot: Slot,
    pub slots: [SlotStatus; 2],
}

fn slot_state(sys: &System, st: &BootState, s: Slot) -> Result<SlotState> {
    if !sys.esp.has_slot_cfg(s) {
        return Ok(if sys.esp.has_any_file(s)? {
            SlotState::Incomplete
        } else {
            SlotState::Empty
        });
    }
    Ok(match (st.is_good(s), st.tries(s)) {
        (true, _) => SlotState::Good,
        (false, Some(0)) => SlotState::Failed,
        (false, Some(n)) => SlotState::Trying(n),
        (false, None) => SlotState::NotArmed,
    })
}

pub fn status(sys: &System) -> Result<Status> {
    let (st, _) = sys.esp.read_state()?;
    let one = |s: Slot| -> Result<SlotStatus> {
        Ok(SlotStatus {
            slot: s,
            state: slot_state(sys, &st, s)?,
            version: sys.esp.slot_manifest(s)?.map(|m| m.version),
        })
    };
    Ok(Status {
        running: sys.running,
        primary: st.primary,
        next_boot: would_boot(&st, &sys.esp),
        slots: [one(Slot::A)?, one(Slot::B)?],
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "running: slot {}  primary: slot {}  next boot: slot {}",
            self.running, self.primary, self.next_boot
        )?;
        for s in &self.slots {
            let v = s.version.as_deref().unwrap_or("-");
            writeln!(f, "slot {}: {v}  {}", s.slot, s.state)?;
        }
        Ok(())
    }
}

/// Mark the running slot good (what the health check calls).
pub fn mark_good(sys: &System) -> Result<BootState> {
    let (mut st, _) = sys.esp.read_state()?;
    st.mark_good(sys.running);
    sys.esp.write_state(&st)?;
    Ok(st)
}

/// Make the other slot boot next: a good slot becomes primary; a pending
/// update (the other slot armed, not yet booted) is cancelled. A slot that
/// is empty, incomplete, failed or was never good is refused.
pub fn rollback(sys: &System) -> Result<BootState> {
    let (mut st, _) = sys.esp.read_state()?;
    let other = sys.running.other();
    match slot_state(sys, &st, other)? {
        SlotState::Good => st.primary = other,
        SlotState::Trying(_) if st.primary == other => {
            st.primary = sys.running;
            st.tries[crate::system::idx(other)] = None;
        }
        s => bail!("cannot roll back to slot {other}: it is {s}"),
    }
    sys.esp.write_state(&st)?;
    Ok(st)
}
