//! The machine an update runs on: the ESP, the running slot and both slot
//! devices. On a Live OS boot [`System::discover`] finds them (the initrd's
//! boot facts, the slots' PARTLABELs); tests build one from plain files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;

use anklume_bootstate::Located;
use anklume_cmd::Cmd;
use anklume_contract::bootenv::{BootEnv, BOOT_ENV};
use anklume_contract::partition::slot_label;
use anklume_contract::Slot;

use crate::esp::Esp;
use crate::trust::FirmwareDirs;

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
    /// The firmware's variables (Secure Boot state, the keys it trusts);
    /// `None` on a machine that did not boot through UEFI.
    pub firmware: Option<FirmwareDirs>,
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
    /// efivarfs of the machine whose Secure Boot keys the new UKI must
    /// match (absent: not checked).
    #[serde(default)]
    pub efivars: Option<PathBuf>,
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
            // Laid out as the kernel does: mok-variables beside efivars.
            firmware: f.efivars.map(|efivars| FirmwareDirs {
                mok_variables: efivars
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .join("mok-variables"),
                efivars,
            }),
        })
    }

    /// The running Live OS: boot facts from the initrd; the ESP and both
    /// slot partitions on the disk the running slot is on (never another
    /// disk: a second anklume stick plugged in is not ours to write). The
    /// ESP is used where `esp` says, else where the kernel has it mounted,
    /// else mounted for the update's length (the returned guard). A boot
    /// disk without slot B (an ISO written to a stick) is discovered all
    /// the same, with [`Discovered::missing`] set and no slot B device.
    pub fn discover(esp: Option<&Path>) -> Result<Discovered> {
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
            .clone()
            .ok_or_else(|| anyhow!("{BOOT_ENV} names no version"))?;
        let root = Path::new("/");
        let found = match anklume_bootstate::locate(root, &env)? {
            Located::Esp(e) => e,
            Located::Unreachable(why) => bail!("cannot update this boot: {why}"),
        };
        if let Some(why) = &found.read_only {
            bail!("cannot update this boot: {why}");
        }
        let mut devices = [PathBuf::new(), PathBuf::new()];
        let mut partuuids = [String::new(), String::new()];
        let mut missing = None;
        for s in [Slot::A, Slot::B] {
            match slot_partition(root, &found.disk, s) {
                Ok((dev, uuid)) => {
                    devices[idx(s)] = dev;
                    partuuids[idx(s)] = uuid;
                }
                Err(e) if s == Slot::B && e.downcast_ref::<MissingSlot>().is_some() => {
                    missing = e.downcast::<MissingSlot>().ok();
                }
                Err(e) => return Err(e),
            }
        }
        let (esp_root, guard) = match (esp, &found.mounted_at) {
            (Some(p), _) => (p.to_path_buf(), None),
            (None, Some(m)) => (m.clone(), None),
            (None, None) => {
                let g = EspMount::mount(&found.device, Path::new(ESP_MOUNT))?;
                (g.path().to_path_buf(), Some(g))
            }
        };
        let running_data_schema = match std::fs::read_to_string(DATA_SCHEMA_FILE) {
            Ok(t) => Some(
                t.trim()
                    .parse()
                    .with_context(|| format!("{DATA_SCHEMA_FILE}: not a number"))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {DATA_SCHEMA_FILE}")),
        };
        Ok(Discovered {
            sys: System {
                esp: Esp::new(esp_root),
                running,
                running_version,
                running_data_schema,
                devices,
                partuuids,
                firmware: FirmwareDirs::live(),
            },
            esp_mount: guard,
            missing,
        })
    }
}

/// What [`System::discover`] found.
#[derive(Debug)]
pub struct Discovered {
    pub sys: System,
    /// The ESP, when the updater mounted it: close it when done.
    pub esp_mount: Option<EspMount>,
    /// Slot B has no partition: `sys` has no device for it, and nothing
    /// may be written to slot B before [`crate::grow`] made one.
    pub missing: Option<MissingSlot>,
}

/// Where [`System::discover`] mounts an ESP the kernel has not mounted.
pub const ESP_MOUNT: &str = "/run/anklume/esp";

/// The partition labelled for slot `s` on `disk` (kernel name), from
/// sysfs and udev's data below `root`: its device node and PARTUUID.
fn slot_partition(root: &Path, disk: &str, s: Slot) -> Result<(PathBuf, String)> {
    let want = slot_label(s);
    let table = crate::grow::Table::from_sysfs(root, disk)?;
    if let Some(p) = table.parts.iter().find(|p| p.label == want) {
        ensure!(
            !p.partuuid.is_empty(),
            "udev knows no PARTUUID of {} ({want})",
            p.name
        );
        return Ok((root.join("dev").join(&p.name), p.partuuid.clone()));
    }
    Err(MissingSlot {
        disk: disk.to_string(),
        slot: s,
    }
    .into())
}

/// The boot disk has no partition for `slot` (an ISO written to a stick
/// has slot A only): the caller may make it ([`crate::grow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSlot {
    /// Kernel name of the boot disk.
    pub disk: String,
    pub slot: Slot,
}

impl std::fmt::Display for MissingSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the boot disk {} has no partition labelled {}: a medium without slot {} (an ISO written to a stick has only slot A: `anklume update --from` adds slot B; see docs/update.md)",
            self.disk,
            slot_label(self.slot),
            self.slot
        )
    }
}

impl std::error::Error for MissingSlot {}

/// The ESP mounted by the updater, unmounted by [`EspMount::close`] (or,
/// failing that, on drop, with a warning).
#[derive(Debug)]
pub struct EspMount(anklume_cmd::mount::Mounted);

impl EspMount {
    /// Mount the FAT `device` read-write at `dir` (made if missing).
    pub fn mount(device: &Path, dir: &Path) -> Result<EspMount> {
        let cmd = Cmd::new("mount")
            .args(["-t", "vfat", "-o", "rw,nodev,nosuid,noexec"])
            .arg(device)
            .arg(dir);
        anklume_cmd::mount::Mounted::run(cmd, dir, &format!("the ESP {}", device.display()))
            .map(EspMount)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Unmount (the kernel writes the FAT back first).
    pub fn close(self) -> Result<()> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anklume_bootstate::testing::{FakeMachine, Part};
    use anklume_contract::bootstate::BootState;
    use anklume_contract::partition::{ESP_TYPE, SLOT_TYPE_X86_64};

    fn part<'a>(name: &'a str, dev: &'a str, label: &'a str, uuid: &'a str) -> Part<'a> {
        Part {
            name,
            dev,
            ptype: SLOT_TYPE_X86_64,
            label,
            partuuid: uuid,
            fat: None,
        }
    }

    #[test]
    fn slots_are_found_on_the_boot_disk_only() {
        let t = tempfile::tempdir().unwrap();
        let m = FakeMachine::at(t.path());
        let st = BootState::fresh();
        // Another anklume stick with both slots, plugged in first.
        m.disk(
            "sda",
            false,
            None,
            &[
                part(
                    "sda2",
                    "8:2",
                    "anklume-slot-a",
                    "11111111-0000-4000-8000-000000000002",
                ),
                part(
                    "sda3",
                    "8:3",
                    "anklume-slot-b",
                    "11111111-0000-4000-8000-000000000003",
                ),
            ],
        );
        m.disk(
            "vda",
            false,
            None,
            &[
                Part {
                    name: "vda1",
                    dev: "254:1",
                    ptype: ESP_TYPE,
                    label: "anklume-esp",
                    partuuid: "22222222-0000-4000-8000-000000000001",
                    fat: Some(&st),
                },
                part(
                    "vda2",
                    "254:2",
                    "anklume-slot-a",
                    "22222222-0000-4000-8000-000000000002",
                ),
                part(
                    "vda3",
                    "254:3",
                    "anklume-slot-b",
                    "22222222-0000-4000-8000-00000000000B",
                ),
            ],
        );
        let (dev, uuid) = slot_partition(&m.root, "vda", Slot::B).unwrap();
        assert_eq!(dev, m.root.join("dev/vda3"));
        assert_eq!(uuid, "22222222-0000-4000-8000-00000000000b");
        let (dev, _) = slot_partition(&m.root, "vda", Slot::A).unwrap();
        assert_eq!(dev, m.root.join("dev/vda2"));
        // A stick with slot A only (an ISO written with dd): said so.
        m.disk(
            "sdc",
            false,
            None,
            &[part(
                "sdc2",
                "8:34",
                "anklume-slot-a",
                "33333333-0000-4000-8000-000000000002",
            )],
        );
        let e = slot_partition(&m.root, "sdc", Slot::B)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sdc has no partition labelled anklume-slot-b"),
            "{e}"
        );
    }
}
