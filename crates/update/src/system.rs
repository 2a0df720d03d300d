//! The machine an update runs on: the ESP, the running slot and both slot
//! devices. On a Live OS boot [`System::discover`] finds them (the initrd's
//! boot facts, the slots' PARTLABELs); tests build one from plain files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use anklume_cmd::Cmd;
use anklume_contract::bootenv::{BootEnv, BOOT_ENV};
use anklume_contract::partition::slot_label;
use anklume_contract::Slot;

use crate::esp::Esp;

/// Where the OS records its data-schema version (one integer); see
/// `BundleManifest::data_schema`.
pub const DATA_SCHEMA_FILE: &str = "/usr/lib/anklume/data-schema";

#[derive(Debug, Clone)]
pub struct System {
    pub esp: Esp,
    /// The slot this OS runs from (never written).
    pub running: Slot,
    pub running_version: String,
    /// `None` when the running OS does not record one.
    pub running_data_schema: Option<u32>,
    /// Slot devices (or files), A then B.
    pub devices: [PathBuf; 2],
    /// PARTUUIDs of the slot partitions, A then B (for `slot.cfg`).
    pub partuuids: [String; 2],
}

/// A machine described in a file instead of discovered (`--system FILE`):
/// updating a disk attached to another computer, the bench, tests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemFile {
    /// Root of the mounted ESP.
    pub esp: PathBuf,
    /// The slot that must not be written (the one in use).
    pub running: Slot,
    pub running_version: String,
    #[serde(default)]
    pub running_data_schema: Option<u32>,
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    pub partuuid_a: String,
    pub partuuid_b: String,
}

pub(crate) fn idx(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl System {
    pub fn device(&self, s: Slot) -> &Path {
        &self.devices[idx(s)]
    }

    pub fn partuuid(&self, s: Slot) -> &str {
        &self.partuuids[idx(s)]
    }

    /// Read a [`SystemFile`] (JSON).
    pub fn from_file(path: &Path) -> Result<System> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: SystemFile =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(System {
            esp: Esp::new(f.esp),
            running: f.running,
            running_version: f.running_version,
            running_data_schema: f.running_data_schema,
            devices: [f.slot_a, f.slot_b],
            partuuids: [f.partuuid_a, f.partuuid_b],
        })
    }

    /// The running Live OS: boot facts from the initrd, slot devices by
    /// PARTLABEL on the boot disk, the ESP mounted at `esp`.
    pub fn discover(esp: &Path) -> Result<System> {
        let env = BootEnv::read(Path::new(BOOT_ENV))
            .with_context(|| format!("reading {BOOT_ENV}"))?
            .ok_or_else(|| {
                anyhow!("{BOOT_ENV} does not exist: not a Live OS boot, nothing to update")
            })?;
        let running = env
            .slot
            .ok_or_else(|| anyhow!("{BOOT_ENV} names no slot"))?;
        let running_version = env
            .version
            .ok_or_else(|| anyhow!("{BOOT_ENV} names no version"))?;
        let mut devices = [PathBuf::new(), PathBuf::new()];
        let mut partuuids = [String::new(), String::new()];
        for s in [Slot::A, Slot::B] {
            let dev = PathBuf::from(format!("/dev/disk/by-partlabel/{}", slot_label(s)));
            if !dev.exists() {
                bail!(
                    "no partition labelled {} (a medium without slot {s}: see docs/update.md)",
                    slot_label(s)
                );
            }
            let uuid = Cmd::new("lsblk")
                .args(["--nodeps", "--noheadings", "--output", "PARTUUID"])
                .arg(&dev)
                .output_string()
                .with_context(|| format!("reading the PARTUUID of {}", dev.display()))?;
            devices[idx(s)] = dev;
            partuuids[idx(s)] = uuid.trim().to_string();
        }
        let running_data_schema = match std::fs::read_to_string(DATA_SCHEMA_FILE) {
            Ok(t) => Some(
                t.trim()
                    .parse()
                    .with_context(|| format!("{DATA_SCHEMA_FILE}: not a number"))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {DATA_SCHEMA_FILE}")),
        };
        Ok(System {
            esp: Esp::new(esp),
            running,
            running_version,
            running_data_schema,
            devices,
            partuuids,
        })
    }
}
