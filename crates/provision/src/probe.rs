//! Read the machine's block devices into an [`Inventory`].
//!
//! Sources: sysfs (`/sys/block`: device numbers, sizes, flags, slaves, loop
//! backing files, device-mapper names), udev's database
//! (`/run/udev/data/b<major>:<minor>`: model, serial, CD-ROM flag,
//! filesystem and partition-table signatures, `/dev/disk/by-id` names), the
//! `/dev/disk/by-id` links themselves, `/proc/self/mountinfo`,
//! `/proc/swaps`, `/run/anklume/boot.env`, the TPM class and `MemTotal`.
//!
//! Why not the `udev` crate the design card names: it binds the C
//! `libudev`, so building needs `libudev-dev` and the binary links
//! `libudev.so`, and it always reads the real `/sys` and `/run/udev`. The
//! properties used here are the ones libudev itself reads from udev's
//! database files; reading them directly keeps the probe pure Rust and lets
//! tests run it over a fake tree ([`Probe::new`] takes the root).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::inventory::{BlockDevice, BootFacts, DevNum, DevType, Inventory, LoopBacking, Mount};

/// Reads a machine rooted at `root` (`/` for the running one).
#[derive(Debug, Clone)]
pub struct Probe {
    root: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn flag(p: &Path) -> bool {
    read_trim(p).as_deref() == Some("1")
}

/// udev's `\x20` escapes (`ID_MODEL_ENC`, `ID_FS_LABEL_ENC`).
fn udev_unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// mountinfo's octal escapes (`\040` for a space).
fn octal_unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Properties (`E:`) and links (`S:`) of one udev database entry.
#[derive(Debug, Default)]
struct UdevEntry {
    props: BTreeMap<String, String>,
    links: Vec<String>,
}

impl UdevEntry {
    fn parse(text: &str) -> UdevEntry {
        let mut e = UdevEntry::default();
        for line in text.lines() {
            if let Some(kv) = line.strip_prefix("E:") {
                if let Some((k, v)) = kv.split_once('=') {
                    e.props.insert(k.to_string(), v.to_string());
                }
            } else if let Some(l) = line.strip_prefix("S:") {
                e.links.push(l.to_string());
            }
        }
        e
    }

    fn get(&self, k: &str) -> Option<String> {
        self.props
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn enc(&self, enc: &str, plain: &str) -> Option<String> {
        self.get(enc)
            .map(|v| udev_unescape(&v))
            .filter(|v| !v.is_empty())
            .or_else(|| self.get(plain).map(|v| v.replace('_', " ")))
    }
}

impl Probe {
    pub fn new(root: impl Into<PathBuf>) -> Probe {
        Probe { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The whole inventory.
    pub fn inventory(&self) -> Result<Inventory> {
        let mut devices = self.devices()?;
        self.add_by_id_links(&mut devices)?;
        let boot = match anklume_contract::bootenv::BootEnv::read(
            &self.path(anklume_contract::bootenv::BOOT_ENV),
        )
        .context("reading the boot facts")?
        {
            Some(b) => BootFacts {
                partuuid: b.partuuid,
                device: b.device,
            },
            None => BootFacts::default(),
        };
        Ok(Inventory {
            devices,
            mounts: self.mounts()?,
            swaps: self.swaps(),
            boot,
            tpm2: read_trim(&self.path("sys/class/tpm/tpm0/tpm_version_major")).as_deref()
                == Some("2"),
            mem_total_kib: read_trim(&self.path("proc/meminfo")).and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            }),
        })
    }

    fn devices(&self) -> Result<Vec<BlockDevice>> {
        let sys_block = self.path("sys/block");
        let mut names: Vec<String> = fs::read_dir(&sys_block)
            .with_context(|| format!("listing {}", sys_block.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let dir = sys_block.join(&name);
            let Some(disk) = self.device(&dir, &name, None)? else {
                continue;
            };
            let rotational = disk.rotational;
            let removable = disk.removable;
            out.push(disk);
            let mut parts: Vec<String> = fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            parts.sort_by_key(|p| (p.len(), p.clone()));
            for p in parts {
                if let Some(mut d) = self.device(&dir.join(&p), &p, Some(&name))? {
                    d.rotational = rotational;
                    d.removable = removable;
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// One device from its sysfs folder and its udev entry; `None` when the
    /// folder has no `dev` (not a block device node).
    fn device(&self, dir: &Path, name: &str, parent: Option<&str>) -> Result<Option<BlockDevice>> {
        let Some(dev) = read_trim(&dir.join("dev")) else {
            return Ok(None);
        };
        let dev: DevNum = dev
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", dir.join("dev").display()))?;
        let udev = read_trim(&self.path(&format!("run/udev/data/b{dev}")))
            .map(|t| UdevEntry::parse(&t))
            .unwrap_or_default();
        let sectors: u64 = read_trim(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let list = |sub: &str| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(dir.join(sub))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let loop_backing = read_trim(&dir.join("loop/backing_file")).map(|file| {
            let dev = self.backing_dev(&file);
            LoopBacking { file, dev }
        });
        let serial = udev
            .get("ID_SERIAL_SHORT")
            .or_else(|| read_trim(&dir.join("device/serial")))
            .or_else(|| read_trim(&dir.join("serial")));
        let model = udev
            .enc("ID_MODEL_ENC", "ID_MODEL")
            .or_else(|| read_trim(&dir.join("device/model")));
        let mut by_id: Vec<String> = udev
            .links
            .iter()
            .filter_map(|l| l.strip_prefix("disk/by-id/"))
            .map(str::to_string)
            .collect();
        by_id.sort();
        Ok(Some(BlockDevice {
            name: name.to_string(),
            dev,
            devtype: if parent.is_some() {
                DevType::Partition
            } else {
                DevType::Disk
            },
            parent: parent.map(str::to_string),
            size_bytes: sectors * 512,
            removable: flag(&dir.join("removable")),
            rotational: flag(&dir.join("queue/rotational")),
            read_only: flag(&dir.join("ro")),
            model,
            serial,
            by_id,
            cdrom: udev.get("ID_CDROM").as_deref() == Some("1"),
            fs_type: udev.get("ID_FS_TYPE"),
            fs_label: udev.enc("ID_FS_LABEL_ENC", "ID_FS_LABEL"),
            part_table: udev.get("ID_PART_TABLE_TYPE"),
            partuuid: udev.get("ID_PART_ENTRY_UUID"),
            slaves: list("slaves"),
            loop_backing,
            dm_name: read_trim(&dir.join("dm/name")),
        }))
    }

    /// The block device a loop's backing file lives on (or is).
    fn backing_dev(&self, file: &str) -> Option<DevNum> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let file = file.strip_suffix(" (deleted)").unwrap_or(file);
        let md = fs::metadata(self.path(file)).ok()?;
        let dev = if md.file_type().is_block_device() {
            DevNum::from_dev_t(md.rdev())
        } else {
            DevNum::from_dev_t(md.dev())
        };
        // Major 0: tmpfs, overlay... no disk underneath.
        (dev.major != 0).then_some(dev)
    }

    /// Add the names of `/dev/disk/by-id` (when udev's database lacked them).
    fn add_by_id_links(&self, devices: &mut [BlockDevice]) -> Result<()> {
        let dir = self.path("dev/disk/by-id");
        let Ok(rd) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in rd.filter_map(|e| e.ok()) {
            let link = e.file_name().to_string_lossy().into_owned();
            let Ok(target) = fs::read_link(e.path()) else {
                continue;
            };
            let Some(kname) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if let Some(d) = devices.iter_mut().find(|d| d.name == kname) {
                if !d.by_id.contains(&link) {
                    d.by_id.push(link);
                    d.by_id.sort();
                }
            }
        }
        Ok(())
    }

    /// The mounts of `proc/self/mountinfo` under this root, unescaped.
    pub fn mounts(&self) -> Result<Vec<Mount>> {
        let p = self.path("proc/self/mountinfo");
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let (pre, post) = line
                .split_once(" - ")
                .with_context(|| format!("{}:{}: no ' - ' separator", p.display(), i + 1))?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 2 {
                anyhow::bail!("{}:{}: too few fields", p.display(), i + 1);
            }
            out.push(Mount {
                dev: pre[2]
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{}:{}: {e}", p.display(), i + 1))?,
                target: octal_unescape(pre[4]),
                fstype: post[0].to_string(),
                source: octal_unescape(post[1]),
                options: post.get(2).map(|s| octal_unescape(s)).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn swaps(&self) -> Vec<String> {
        read_trim(&self.path("proc/swaps"))
            .map(|t| {
                t.lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().next())
                    .map(octal_unescape)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
