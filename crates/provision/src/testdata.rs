//! Fake machines for tests: the devices and mounts each boot kind leaves.

use crate::inventory::{BlockDevice, BootFacts, DevNum, DevType, Inventory, LoopBacking, Mount};

pub const GB: u64 = 1_000_000_000;
pub const SLOT_PARTUUID: &str = "5b7e9a2c-1111-4c3a-9d2e-0123456789ab";

pub fn disk(name: &str, dev: (u32, u32), size: u64) -> BlockDevice {
    BlockDevice {
        name: name.into(),
        dev: DevNum::new(dev.0, dev.1),
        devtype: DevType::Disk,
        parent: None,
        size_bytes: size,
        removable: false,
        rotational: false,
        read_only: false,
        model: None,
        serial: None,
        by_id: vec![],
        cdrom: false,
        fs_type: None,
        fs_label: None,
        part_table: None,
        partuuid: None,
        slaves: vec![],
        loop_backing: None,
        dm_name: None,
    }
}

/// A real-looking disk: model, serial and by-id names.
pub fn named_disk(
    name: &str,
    dev: (u32, u32),
    size: u64,
    model: &str,
    serial: &str,
) -> BlockDevice {
    BlockDevice {
        model: Some(model.into()),
        serial: Some(serial.into()),
        by_id: vec![
            format!("wwn-0x5000c500{}", dev.1),
            format!("ata-{}_{serial}", model.replace(' ', "_")),
        ],
        ..disk(name, dev, size)
    }
}

pub fn part(name: &str, parent: &str, dev: (u32, u32), size: u64) -> BlockDevice {
    BlockDevice {
        devtype: DevType::Partition,
        parent: Some(parent.into()),
        ..disk(name, dev, size)
    }
}

pub fn dm(name: &str, minor: u32, dm_name: &str, slaves: &[&str]) -> BlockDevice {
    BlockDevice {
        dm_name: Some(dm_name.into()),
        slaves: slaves.iter().map(|s| s.to_string()).collect(),
        ..disk(name, (253, minor), GB)
    }
}

pub fn lo(name: &str, minor: u32, file: &str, backing: Option<(u32, u32)>) -> BlockDevice {
    BlockDevice {
        loop_backing: Some(LoopBacking {
            file: file.into(),
            dev: backing.map(|(a, b)| DevNum::new(a, b)),
        }),
        ..disk(name, (7, minor), GB)
    }
}

pub fn mount(dev: (u32, u32), target: &str, fstype: &str, options: &str) -> Mount {
    Mount {
        dev: DevNum::new(dev.0, dev.1),
        target: target.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        options: options.into(),
    }
}

/// The Live OS root: overlay over the squashfs on `anklume-root` (dm-0).
fn live_root_mounts() -> Vec<Mount> {
    vec![
        mount(
            (0, 40),
            "/",
            "overlay",
            "rw,lowerdir=/run/anklume/ro,upperdir=/run/anklume/rw/upper,workdir=/run/anklume/rw/work",
        ),
        mount((0, 25), "/run", "tmpfs", "rw"),
        mount((253, 0), "/run/anklume/ro", "squashfs", "ro"),
        mount((0, 41), "/run/anklume/rw", "tmpfs", "rw"),
    ]
}

/// Two empty internal disks every machine below has: an NVMe and a SATA HDD.
fn internal_disks() -> Vec<BlockDevice> {
    vec![
        BlockDevice {
            by_id: vec![
                "nvme-eui.0025385b71b0d0e1".into(),
                "nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456".into(),
            ],
            ..named_disk(
                "nvme0n1",
                (259, 0),
                500 * GB,
                "Samsung SSD 970 EVO 500GB",
                "S466NX0M123456",
            )
        },
        BlockDevice {
            rotational: true,
            ..named_disk("sdb", (8, 16), 2000 * GB, "ST2000DM008", "ZFL0ABCD")
        },
    ]
}

fn boot_stick(name: &str, minor: u32) -> Vec<BlockDevice> {
    let p = |i: u32| format!("{name}{i}");
    let mut slot = part(&p(2), name, (8, minor + 2), 2 * GB);
    slot.partuuid = Some(SLOT_PARTUUID.into());
    vec![
        BlockDevice {
            removable: true,
            part_table: Some("gpt".into()),
            ..named_disk(name, (8, minor), 32 * GB, "SanDisk Ultra", "4C530001230519")
        },
        BlockDevice {
            fs_type: Some("vfat".into()),
            ..part(&p(1), name, (8, minor + 1), 64 << 20)
        },
        slot,
        BlockDevice {
            fs_type: Some("ext4".into()),
            fs_label: Some("anklume-persist".into()),
            ..part(&p(3), name, (8, minor + 3), GB)
        },
    ]
}

/// Booted from a USB stick (`sda`), persist mounted.
pub fn usb_boot() -> Inventory {
    let mut devices = boot_stick("sda", 0);
    devices.extend(internal_disks());
    devices.push(dm("dm-0", 0, "anklume-root", &["sda2"]));
    let mut mounts = live_root_mounts();
    mounts.push(mount((8, 3), "/var/lib/anklume/persist", "ext4", "rw"));
    Inventory {
        devices,
        mounts,
        boot: BootFacts {
            partuuid: Some(SLOT_PARTUUID.into()),
            device: Some("/dev/sda2".into()),
        },
        ..Default::default()
    }
}

/// Booted from a CD: the initrd's partition-scanning loop over `sr0`.
pub fn cd_boot() -> Inventory {
    let mut devices = internal_disks();
    devices.push(BlockDevice {
        cdrom: true,
        removable: true,
        fs_type: Some("iso9660".into()),
        part_table: Some("gpt".into()),
        by_id: vec!["ata-QEMU_DVD-ROM_QM00003".into()],
        ..disk("sr0", (11, 0), 900 << 20)
    });
    devices.push(lo("loop0", 0, "/dev/sr0", Some((11, 0))));
    let mut slot = part("loop0p2", "loop0", (259, 8), 400 << 20);
    slot.partuuid = Some(SLOT_PARTUUID.into());
    devices.push(slot);
    devices.push(dm("dm-0", 0, "anklume-root", &["loop0p2"]));
    Inventory {
        devices,
        mounts: live_root_mounts(),
        boot: BootFacts {
            partuuid: Some(SLOT_PARTUUID.into()),
            device: Some("/dev/loop0p2".into()),
        },
        ..Default::default()
    }
}

/// Booted from Ventoy: `/dev/mapper/ventoy` maps the ISO file on the
/// stick's exFAT partition; a loop exposes the ISO's partitions.
pub fn ventoy_boot() -> Inventory {
    let mut devices = internal_disks();
    devices.push(BlockDevice {
        removable: true,
        part_table: Some("dos".into()),
        ..named_disk(
            "sdc",
            (8, 32),
            64 * GB,
            "Kingston DataTraveler",
            "E0D55EA57371",
        )
    });
    devices.push(BlockDevice {
        fs_type: Some("exfat".into()),
        fs_label: Some("Ventoy".into()),
        ..part("sdc1", "sdc", (8, 33), 63 * GB)
    });
    devices.push(BlockDevice {
        fs_type: Some("vfat".into()),
        fs_label: Some("VTOYEFI".into()),
        ..part("sdc2", "sdc", (8, 34), 32 << 20)
    });
    devices.push(dm("dm-1", 1, "ventoy", &["sdc1"]));
    devices.push(lo("loop0", 0, "/dev/mapper/ventoy", Some((253, 1))));
    let mut slot = part("loop0p2", "loop0", (259, 8), 400 << 20);
    slot.partuuid = Some(SLOT_PARTUUID.into());
    devices.push(slot);
    devices.push(dm("dm-0", 0, "anklume-root", &["loop0p2"]));
    Inventory {
        devices,
        mounts: live_root_mounts(),
        boot: BootFacts {
            partuuid: Some(SLOT_PARTUUID.into()),
            device: Some("/dev/loop0p2".into()),
        },
        ..Default::default()
    }
}

/// Booted with `anklume.toram=1` from a stick that is still plugged in:
/// the root is a loop over a file on tmpfs, nothing leads to the stick but
/// the slot's PARTUUID.
pub fn toram_boot(stick_still_plugged: bool) -> Inventory {
    let mut devices = internal_disks();
    if stick_still_plugged {
        devices.extend(boot_stick("sda", 0));
    }
    devices.push(lo("loop0", 0, "/run/anklume/ram/slot.img", None));
    devices.push(dm("dm-0", 0, "anklume-root", &["loop0"]));
    let mut mounts = live_root_mounts();
    mounts.push(mount((0, 45), "/run/anklume/ram", "tmpfs", "rw"));
    Inventory {
        devices,
        mounts,
        boot: BootFacts {
            partuuid: Some(SLOT_PARTUUID.into()),
            device: Some("/dev/loop0".into()),
        },
        ..Default::default()
    }
}
