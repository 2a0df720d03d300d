//! The block devices of the machine as plain data.
//!
//! [`crate::probe`] fills an [`Inventory`] from sysfs, udev's database and
//! the mount table; everything after it (exclusion, selectors, the plan)
//! reads only this data, so tests (and `anklume-firstboot --dry-run` with a
//! fake inventory) feed it from JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A device number (`major:minor`), how the kernel names a block device
/// whatever its path. Serialized as `"8:0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    pub const fn new(major: u32, minor: u32) -> Self {
        DevNum { major, minor }
    }

    /// From a `dev_t` as `stat` returns it.
    pub fn from_dev_t(dev: u64) -> Self {
        DevNum {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("device number {s:?} is not MAJOR:MINOR"))?;
        let n = |x: &str| {
            x.parse::<u32>()
                .map_err(|_| format!("device number {s:?} is not MAJOR:MINOR"))
        };
        Ok(DevNum::new(n(a)?, n(b)?))
    }
}

impl Serialize for DevNum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DevNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whole disk or partition (udev's `DEVTYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevType {
    Disk,
    Partition,
}

/// One block device (`/sys/class/block/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDevice {
    /// Kernel name: `sda`, `nvme0n1p2`, `dm-0`, `loop3`, `sr0`, `zram0`.
    pub name: String,
    pub dev: DevNum,
    #[serde(rename = "type")]
    pub devtype: DevType,
    /// For a partition, the kernel name of its disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub size_bytes: u64,
    #[serde(default)]
    pub removable: bool,
    #[serde(default)]
    pub rotational: bool,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Names under `/dev/disk/by-id/` pointing at this device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_id: Vec<String>,
    /// udev's `ID_CDROM=1`.
    #[serde(default)]
    pub cdrom: bool,
    /// Filesystem or other signature found by blkid (`ID_FS_TYPE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
    /// Partition table type (`ID_PART_TABLE_TYPE`: `gpt`, `dos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_table: Option<String>,
    /// A partition's PARTUUID (`ID_PART_ENTRY_UUID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Kernel names of the devices this one is built on
    /// (`/sys/block/<name>/slaves`: device-mapper, md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slaves: Vec<String>,
    /// A loop device's backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_backing: Option<LoopBacking>,
    /// A device-mapper device's name (`/dev/mapper/<dm_name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_name: Option<String>,
}

/// What a loop device reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopBacking {
    /// `/sys/block/loopN/loop/backing_file`.
    pub file: String,
    /// The block device behind it: the file itself when it is a block
    /// device (a loop over `/dev/sr0`), else the device of the filesystem
    /// holding the file (`None` on tmpfs: a toram copy has no disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<DevNum>,
}

/// One mounted filesystem (`/proc/self/mountinfo`) or active swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub dev: DevNum,
    pub target: String,
    pub fstype: String,
    pub source: String,
    /// Super-block options (an overlay's `lowerdir=`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
}

/// What the initrd recorded about this boot (`/run/anklume/boot.env`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFacts {
    /// PARTUUID of the slot partition that was booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// The block device the slot was opened from (`/dev/loop0`, `/dev/sda2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Everything the planner knows about the machine's storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub devices: Vec<BlockDevice>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Paths of active swap areas (`/proc/swaps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swaps: Vec<String>,
    #[serde(default)]
    pub boot: BootFacts,
    /// A TPM 2.0 is present (`/sys/class/tpm/tpm0`, major version 2).
    #[serde(default)]
    pub tpm2: bool,
    /// `MemTotal` in KiB (caps the argon2id memory cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_kib: Option<u64>,
}

impl Inventory {
    /// Read a fake inventory written as JSON (tests, `--dry-run`).
    pub fn from_json(text: &str) -> anyhow::Result<Inventory> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("inventory JSON: at `{}`: {}", e.path(), e.inner()))
    }

    pub fn device(&self, name: &str) -> Option<&BlockDevice> {
        self.devices.iter().find(|d| d.name == name)
    }

    pub fn by_dev(&self, dev: DevNum) -> Option<&BlockDevice> {
        self.devices.iter().find(|d| d.dev == dev)
    }

    /// The device a `/dev/...` path names: `/dev/sda1`, `/dev/mapper/x`,
    /// `/dev/disk/by-id/x`, `/dev/disk/by-partuuid/x`. Only names, no
    /// file-system access (the probe resolves symlinks itself).
    pub fn by_path(&self, path: &str) -> Option<&BlockDevice> {
        if let Some(n) = path.strip_prefix("/dev/mapper/") {
            return self
                .devices
                .iter()
                .find(|d| d.dm_name.as_deref() == Some(n));
        }
        if let Some(n) = path.strip_prefix("/dev/disk/by-id/") {
            return self.devices.iter().find(|d| d.by_id.iter().any(|b| b == n));
        }
        if let Some(n) = path.strip_prefix("/dev/disk/by-partuuid/") {
            return self.by_partuuid(n);
        }
        path.strip_prefix("/dev/").and_then(|n| self.device(n))
    }

    pub fn by_partuuid(&self, uuid: &str) -> Option<&BlockDevice> {
        self.devices.iter().find(|d| {
            d.partuuid
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(uuid))
        })
    }

    /// The partitions of disk `name`, in kernel order.
    pub fn partitions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BlockDevice> {
        self.devices
            .iter()
            .filter(move |d| d.devtype == DevType::Partition && d.parent.as_deref() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnum_round_trips_and_rejects_garbage() {
        assert_eq!("8:16".parse::<DevNum>().unwrap(), DevNum::new(8, 16));
        assert_eq!(DevNum::new(254, 0).to_string(), "254:0");
        assert!("8".parse::<DevNum>().is_err());
        assert!("a:1".parse::<DevNum>().is_err());
    }

    #[test]
    fn json_errors_name_the_path() {
        let err = Inventory::from_json(
            r#"{"devices": [{"name": "sda", "dev": "8:0", "type": "disk", "size_bytes": 1, "colour": 1}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("devices[0]"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }
}
