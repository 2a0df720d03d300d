use super::*;
use crate::testdata::*;

fn names(s: &Survey) -> Vec<&str> {
    s.candidates
        .iter()
        .map(|c| c.disk().name.as_str())
        .collect()
}

fn boot_via(s: &Survey, name: &str) -> String {
    match s.excluded_reason(name) {
        Some(Exclusion::BootMedium { via }) => via.clone(),
        other => panic!("{name}: expected the boot medium, got {other:?}"),
    }
}

#[test]
fn usb_stick_boot_excludes_the_stick_only() {
    let s = survey(&usb_boot());
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    let via = boot_via(&s, "sda");
    assert_eq!(via, "holds /: dm-0 on /run/anklume/ro → sda2 → sda");
    // The verity mapping itself is part of the boot medium's chain.
    assert!(matches!(
        s.excluded_reason("dm-0"),
        Some(Exclusion::BootMedium { .. })
    ));
}

#[test]
fn cd_boot_excludes_the_drive_through_the_loop() {
    let s = survey(&cd_boot());
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    let via = boot_via(&s, "sr0");
    assert!(via.contains("loop0p2 → loop0 → sr0"), "{via}");
}

#[test]
fn ventoy_boot_excludes_the_stick_under_the_ventoy_mapping() {
    let s = survey(&ventoy_boot());
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    let via = boot_via(&s, "sdc");
    assert!(via.contains("dm-1 → sdc1 → sdc"), "{via}");
}

#[test]
fn ventoy_mapping_alone_marks_its_stick() {
    // Even when nothing else leads there (a root from elsewhere), the disk
    // under /dev/mapper/ventoy is the boot medium.
    let mut inv = ventoy_boot();
    inv.mounts.clear();
    inv.boot = Default::default();
    inv.devices.retain(|d| d.name != "dm-0");
    let s = survey(&inv);
    assert!(boot_via(&s, "sdc").starts_with("/dev/mapper/ventoy"));
}

#[test]
fn toram_still_excludes_a_plugged_stick_by_partuuid() {
    let s = survey(&toram_boot(true));
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    let via = boot_via(&s, "sda");
    assert!(via.starts_with("booted slot partition: sda2"), "{via}");
    // The RAM copy's loop is not a disk of anyone's.
    assert_eq!(
        s.excluded_reason("loop0")
            .map(|r| matches!(r, Exclusion::BootMedium { .. })),
        Some(true)
    );
}

#[test]
fn toram_with_the_stick_pulled_offers_the_internal_disks() {
    let s = survey(&toram_boot(false));
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
}

#[test]
fn boot_medium_found_by_device_number_not_name() {
    // Rename the stick: the chain still leads to it by dev number.
    let mut inv = usb_boot();
    inv.boot = Default::default();
    for d in &mut inv.devices {
        if d.name == "sda" {
            d.name = "sdz".into();
        }
        if d.parent.as_deref() == Some("sda") {
            d.parent = Some("sdz".into());
        }
    }
    let s = survey(&inv);
    boot_via(&s, "sdz");
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
}

#[test]
fn classic_install_root_partition_disk_is_the_boot_medium() {
    let mut inv = usb_boot();
    inv.mounts = vec![
        mount((8, 17), "/", "ext4", "rw"),
        mount((8, 1), "/mnt/usb", "vfat", "rw"),
    ];
    inv.boot = Default::default();
    inv.devices.retain(|d| d.name != "dm-0");
    inv.devices.push(part("sdb1", "sdb", (8, 17), 100 * GB));
    let s = survey(&inv);
    assert!(boot_via(&s, "sdb").contains("sdb1 on / → sdb"));
    assert_eq!(
        s.excluded_reason("sda"),
        Some(&Exclusion::InUse {
            what: "sda1 mounted on /mnt/usb".into()
        })
    );
    assert_eq!(names(&s), ["nvme0n1"]);
}

#[test]
fn never_offers_cdrom_loop_zram_or_virtual_devices() {
    let mut inv = usb_boot();
    inv.devices.extend([
        BlockDevice {
            cdrom: true,
            by_id: vec!["ata-DVD".into()],
            ..disk("sr1", (11, 1), 4 * GB)
        },
        BlockDevice {
            by_id: vec!["x".into()],
            ..lo("loop5", 5, "/var/tmp/big.img", Some((8, 16)))
        },
        BlockDevice {
            size_bytes: 8 * GB,
            serial: Some("z".into()),
            ..disk("zram0", (252, 0), 0)
        },
        BlockDevice {
            size_bytes: 8 * GB,
            serial: Some("m".into()),
            ..disk("md0", (9, 0), 0)
        },
        BlockDevice {
            size_bytes: 8 * GB,
            serial: Some("r".into()),
            ..disk("ram0", (1, 0), 0)
        },
    ]);
    let s = survey(&inv);
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    assert_eq!(s.excluded_reason("sr1"), Some(&Exclusion::CdRom));
    assert_eq!(s.excluded_reason("loop5"), Some(&Exclusion::Loop));
    assert_eq!(s.excluded_reason("zram0"), Some(&Exclusion::Zram));
    assert!(matches!(
        s.excluded_reason("md0"),
        Some(Exclusion::Virtual { .. })
    ));
    assert!(matches!(
        s.excluded_reason("ram0"),
        Some(Exclusion::Virtual { .. })
    ));
}

#[test]
fn disks_in_use_read_only_small_or_unnamed_are_not_offered() {
    let mut inv = usb_boot();
    inv.devices.extend([
        named_disk("sdd", (8, 48), 100 * GB, "Crucial", "CR1"),
        part("sdd1", "sdd", (8, 49), 100 * GB),
        dm("dm-3", 3, "old-pool", &["sdd1"]),
        named_disk("sde", (8, 64), 100 * GB, "Crucial", "CR2"),
        part("sde2", "sde", (8, 66), 8 * GB),
        BlockDevice {
            read_only: true,
            ..named_disk("sdf", (8, 80), 100 * GB, "WP", "WP1")
        },
        named_disk("sdg", (8, 96), GB, "Tiny", "T1"),
        disk("vdb", (254, 16), 100 * GB),
    ]);
    inv.swaps = vec!["/dev/sde2".into()];
    let s = survey(&inv);
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    assert_eq!(
        s.excluded_reason("sdd"),
        Some(&Exclusion::InUse {
            what: "sdd1 held by dm-3 (old-pool)".into()
        })
    );
    assert_eq!(
        s.excluded_reason("sde"),
        Some(&Exclusion::InUse {
            what: "sde2 is active swap".into()
        })
    );
    assert_eq!(s.excluded_reason("sdf"), Some(&Exclusion::ReadOnly));
    assert!(matches!(
        s.excluded_reason("sdg"),
        Some(Exclusion::TooSmall { .. })
    ));
    assert_eq!(s.excluded_reason("vdb"), Some(&Exclusion::NoStableName));
}

#[test]
fn candidate_names_and_consent() {
    let s = survey(&usb_boot());
    let nvme = &s.candidates[0];
    assert_eq!(
        nvme.by_id(),
        Some("nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456")
    );
    assert_eq!(
        nvme.path(),
        "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456"
    );
    assert!(nvme.is_blank());
    assert!(nvme.is_named_by("S466NX0M123456"));
    assert!(nvme.is_named_by(" /dev/disk/by-id/nvme-eui.0025385b71b0d0e1 "));
    assert!(!nvme.is_named_by("S466NX0M12345"));
    assert!(!nvme.is_named_by("nvme0n1"));
    assert!(!nvme.is_named_by(""));
    let sdb = &s.candidates[1];
    let err = sdb.consent("S466NX0M123456").unwrap_err().to_string();
    assert!(
        err.contains("does not name ata-ST2000DM008_ZFL0ABCD"),
        "{err}"
    );
    let ok = sdb.consent("ZFL0ABCD").unwrap();
    assert!(ok.covers(sdb));
    assert!(!ok.covers(nvme));
}

#[test]
fn contents_describe_what_a_wipe_destroys() {
    let mut inv = usb_boot();
    inv.devices
        .iter_mut()
        .find(|d| d.name == "sdb")
        .unwrap()
        .part_table = Some("gpt".into());
    inv.devices.push(BlockDevice {
        fs_type: Some("ntfs".into()),
        fs_label: Some("Photos".into()),
        ..part("sdb1", "sdb", (8, 17), 1000 * GB)
    });
    let s = survey(&inv);
    let sdb = &s.candidates[1];
    assert!(!sdb.is_blank());
    assert_eq!(
        sdb.contents(),
        "gpt partition table, sdb1 1.0 TB ntfs \"Photos\""
    );
}

#[test]
fn the_seed_stick_is_not_offered() {
    let mut inv = usb_boot();
    inv.devices
        .push(named_disk("sdh", (8, 112), 16 * GB, "Seed Stick", "SEED1"));
    inv.devices.push(BlockDevice {
        fs_type: Some("vfat".into()),
        fs_label: Some("ANKLUMESEED".into()),
        ..part("sdh1", "sdh", (8, 113), 16 * GB)
    });
    let s = survey(&inv);
    assert_eq!(names(&s), ["nvme0n1", "sdb"]);
    assert_eq!(
        s.excluded_reason("sdh"),
        Some(&Exclusion::SeedVolume {
            volume: "sdh1".into()
        })
    );
}
