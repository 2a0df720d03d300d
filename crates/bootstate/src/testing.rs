//! A fake machine for tests (feature `testing`, and this crate's own
//! tests): a sysfs / udev / `/dev` tree under a folder, whose partition
//! device nodes are files — the ESP a FAT image holding a boot state,
//! written with the builder's own ESP writer.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anklume_contract::bootfiles::GRUBENV;
use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::partition::{ESP_TYPE, SLOT_TYPE_X86_64};

/// The booted slot's PARTUUID on every fake stick.
pub const SLOT_PARTUUID: &str = "6A2F1C5E-0B7D-4E1A-9C3F-2D8E5B7A4C10";

/// A fake machine's device tree under `root`.
#[derive(Debug)]
pub struct FakeMachine {
    pub root: PathBuf,
}

/// One partition: kernel name, dev number, type, PARTLABEL, PARTUUID, and
/// the boot state of its FAT image (`None`: not an ESP, a plain file).
#[derive(Debug)]
pub struct Part<'a> {
    pub name: &'a str,
    pub dev: &'a str,
    pub ptype: &'a str,
    pub label: &'a str,
    pub partuuid: &'a str,
    pub fat: Option<&'a BootState>,
}

impl FakeMachine {
    /// An empty machine under `root` (created).
    pub fn at(root: &Path) -> FakeMachine {
        for d in [
            "dev/disk/by-partuuid",
            "sys/class/block",
            "run/udev/data",
            "sys/devices",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        FakeMachine {
            root: root.to_path_buf(),
        }
    }

    /// A disk with its partitions; `ro`: the kernel's read-only flag;
    /// `backing`: a loop device's backing file.
    pub fn disk(&self, disk: &str, ro: bool, backing: Option<&str>, parts: &[Part<'_>]) {
        let sys = self.root.join("sys/devices/virtual/block").join(disk);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("ro"), if ro { "1\n" } else { "0\n" }).unwrap();
        // Sizes in 512-byte sectors: 64 MiB per partition, one after the other.
        std::fs::write(
            sys.join("size"),
            format!("{}\n", (parts.len() as u64 + 1) * 131_072),
        )
        .unwrap();
        if let Some(b) = backing {
            std::fs::create_dir_all(sys.join("loop")).unwrap();
            std::fs::write(sys.join("loop/backing_file"), format!("{b}\n")).unwrap();
        }
        symlink(&sys, self.root.join("sys/class/block").join(disk)).unwrap();
        for p in parts {
            let ps = sys.join(p.name);
            std::fs::create_dir_all(&ps).unwrap();
            std::fs::write(ps.join("partition"), "1\n").unwrap();
            std::fs::write(ps.join("dev"), format!("{}\n", p.dev)).unwrap();
            std::fs::write(ps.join("ro"), "0\n").unwrap();
            let n: u64 = p
                .dev
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            std::fs::write(ps.join("start"), format!("{}\n", 2048 + (n - 1) * 131_072)).unwrap();
            std::fs::write(ps.join("size"), "131072\n").unwrap();
            symlink(&ps, self.root.join("sys/class/block").join(p.name)).unwrap();
            std::fs::write(
                self.root.join(format!("run/udev/data/b{}", p.dev)),
                format!(
                    "E:ID_PART_ENTRY_TYPE={}\nE:ID_PART_ENTRY_NAME={}\nE:ID_PART_ENTRY_UUID={}\n",
                    p.ptype.to_lowercase(),
                    p.label,
                    p.partuuid.to_lowercase()
                ),
            )
            .unwrap();
            let node = self.root.join("dev").join(p.name);
            match p.fat {
                Some(st) => esp_image(&node, st),
                None => std::fs::write(&node, b"squashfs").unwrap(),
            }
            // Two partitions with one PARTUUID (two sticks from one
            // image): the link names the first, as udev's may.
            let link = self
                .root
                .join("dev/disk/by-partuuid")
                .join(p.partuuid.to_lowercase());
            if !link.exists() {
                symlink(format!("../../{}", p.name), link).unwrap();
            }
        }
    }

    /// A boot stick `disk`: its ESP (partition 1) holding `st`, the booted
    /// slot (partition 2, [`SLOT_PARTUUID`]).
    pub fn stick(&self, disk: &str, major: u32, st: &BootState, ro: bool, backing: Option<&str>) {
        let (p1, p2) = if disk.starts_with("loop") {
            (format!("{disk}p1"), format!("{disk}p2"))
        } else {
            (format!("{disk}1"), format!("{disk}2"))
        };
        self.disk(
            disk,
            ro,
            backing,
            &[
                Part {
                    name: &p1,
                    dev: &format!("{major}:1"),
                    ptype: ESP_TYPE,
                    label: "anklume-esp",
                    partuuid: &format!("{major:08}-0000-4000-8000-000000000001"),
                    fat: Some(st),
                },
                Part {
                    name: &p2,
                    dev: &format!("{major}:2"),
                    ptype: SLOT_TYPE_X86_64,
                    label: "anklume-slot-a",
                    partuuid: SLOT_PARTUUID,
                    fat: None,
                },
            ],
        );
    }

    /// The bytes of a file of the tree (`dev/sda1`).
    pub fn file(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap()
    }
}

/// An 8 MiB FAT image holding the boot state block (with
/// `anklume_toram=1` beside it) and a grub.cfg.
pub fn esp_image(at: &Path, st: &BootState) {
    let mut vars = st.to_vars();
    vars.insert("anklume_toram".into(), "1".into());
    let block = encode_envblk(&vars).unwrap();
    anklume_esp::write_esp(
        at,
        8 << 20,
        7,
        &[
            anklume_esp::EspFile {
                path: "EFI/anklume/grub.cfg",
                data: b"# grub\n",
            },
            anklume_esp::EspFile {
                path: GRUBENV,
                data: &block,
            },
        ],
    )
    .unwrap();
}
