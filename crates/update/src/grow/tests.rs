use super::*;

const GIB: u64 = 1 << 30;

/// The ISO's partitions (as `make iso` lays them out) on a disk of `bytes`.
fn iso_on(bytes: u64) -> Table {
    let part = |number, start, sectors, label: &str| Part {
        number,
        start,
        sectors,
        label: label.into(),
        ..Part::default()
    };
    Table {
        disk: PathBuf::from("/dev/sdz"),
        sectors: bytes / 512,
        sector_bytes: 512,
        parts: vec![
            part(1, 64, 108_776, "ISO9660"),
            part(2, 108_840, 348_160, "anklume-esp"),
            part(3, 457_000, 590_680, "anklume-slot-a"),
        ],
    }
}

#[test]
fn slot_b_and_persist_go_after_the_iso_aligned() {
    let p = plan(&iso_on(4 * GIB), 300 << 20).unwrap();
    // The ISO ends at sector 1 047 680: the next MiB is 512 MiB.
    assert_eq!(p.slot_b, (4, 1_048_576, 2_097_152));
    assert_eq!(p.persist, (5, 3_145_728, 524_288));
    assert!(
        p.describe().contains("slot B, 1024 MiB"),
        "{}",
        p.describe()
    );
    // A larger image than the minimum gets a larger slot.
    let p = plan(&iso_on(8 * GIB), GIB + GIB / 2 + 1).unwrap();
    assert_eq!(p.slot_b.2, 3_145_728 + 2048);
}

#[test]
fn no_room_no_second_slot_b_not_ours_are_refused_with_reasons() {
    let e = plan(&iso_on(GIB), 300 << 20).unwrap_err().to_string();
    assert!(
        e.contains("too small") && e.contains("511 MiB free") && e.contains("at least 1793 MiB"),
        "{e}"
    );
    // Just enough: a MiB left at the end for the backup GPT.
    let exact = (1_048_576 + 2_097_152 + 524_288 + 2048) * 512;
    plan(&iso_on(exact), 1).unwrap();
    assert!(plan(&iso_on(exact - 512), 1).is_err());

    let mut t = iso_on(4 * GIB);
    t.parts.push(Part {
        number: 4,
        start: 1_048_576,
        sectors: 2_097_152,
        label: "anklume-slot-b".into(),
        ..Part::default()
    });
    assert!(plan(&t, 1)
        .unwrap_err()
        .to_string()
        .contains("already has slot B"));
    let mut t = iso_on(4 * GIB);
    t.parts.retain(|p| p.label != "anklume-slot-a");
    assert!(plan(&t, 1)
        .unwrap_err()
        .to_string()
        .contains("not an anklume medium"));
}

fn sgdisk_info(disk: &Path, n: u32) -> String {
    Cmd::new("sgdisk")
        .arg(format!("--info={n}"))
        .arg(disk)
        .output_string()
        .unwrap()
}

/// An image file laid out as the ISO on a 2 GiB stick: its GPT made by
/// sgdisk, an MBR with boot code and the bootable dummy entry, the ISO
/// area filled with a pattern. Returns the file, its table, MBR and area.
fn iso_like_stick(dir: &Path) -> (PathBuf, Table, [u8; 512], Vec<u8>) {
    let disk = dir.join("stick.img");
    // The "ISO": 48 MiB, three partitions, backup GPT at its end.
    let iso_sectors: u64 = 48 * 2048;
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(iso_sectors * 512)
        .unwrap();
    Cmd::new("sgdisk")
        .args(["--clear", "--set-alignment=8"])
        .args(["--new=1:64:8191", "--change-name=1:ISO9660"])
        .args([
            "--new=2:8192:40959",
            "--typecode=2:EF00",
            "--change-name=2:anklume-esp",
        ])
        .arg(format!("--new=3:40960:{}", iso_sectors - 34))
        .arg(format!("--typecode=3:{SLOT_TYPE_X86_64}"))
        .arg("--change-name=3:anklume-slot-a")
        .arg(&disk)
        .run()
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).unwrap();
    for (i, b) in mbr[..440].iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    let dummy = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    mbr[462..478].copy_from_slice(&dummy);
    f.write_all_at(&mbr, 0).unwrap();
    // The ISO area: a pattern up to the slot's end (the backup GPT after).
    let area: Vec<u8> = (0..(iso_sectors - 34) * 512 - 32768)
        .map(|i| (i % 253) as u8)
        .collect();
    f.write_all_at(&area, 32768).unwrap();
    // Stale bytes where persist will be: they must not survive.
    f.set_len(2 * GIB).unwrap();
    let table = Table {
        disk: disk.clone(),
        sectors: 2 * GIB / 512,
        sector_bytes: 512,
        parts: vec![
            Part {
                number: 1,
                start: 64,
                sectors: 8128,
                label: "ISO9660".into(),
                ..Part::default()
            },
            Part {
                number: 2,
                start: 8192,
                sectors: 32768,
                label: "anklume-esp".into(),
                ..Part::default()
            },
            Part {
                number: 3,
                start: 40960,
                sectors: iso_sectors - 34 - 40960 + 1,
                label: "anklume-slot-a".into(),
                ..Part::default()
            },
        ],
    };
    (disk, table, mbr, area)
}

/// On an image file laid out as the ISO (its GPT made by sgdisk, an MBR
/// with boot code and the bootable dummy entry, the ISO area filled):
/// the partitions are added, the backup GPT moved, the ISO area and the
/// MBR's boot code and entry kept, persist's start zeroed.
#[test]
fn apply_adds_both_partitions_and_leaves_the_iso_alone() {
    let t = tempfile::tempdir().unwrap();
    let (disk, table, mbr, area) = iso_like_stick(t.path());
    let dummy = mbr[462..478].to_vec();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let p = plan(&table, 20 << 20).unwrap();
    assert_eq!(p.slot_b, (4, 98_304, 2_097_152));
    f.write_all_at(&[0xAB; 4096], p.persist.1 * 512).unwrap();
    drop(f);

    apply(&p, false).unwrap();

    let verify = Cmd::new("sgdisk")
        .arg("--verify")
        .arg(&disk)
        .output_string()
        .unwrap();
    assert!(verify.contains("No problems found"), "{verify}");
    let b = sgdisk_info(&disk, 4);
    assert!(b.contains("Partition name: 'anklume-slot-b'"), "{b}");
    assert!(
        b.contains(SLOT_TYPE_X86_64) && b.contains("First sector: 98304 "),
        "{b}"
    );
    let pe = sgdisk_info(&disk, 5);
    assert!(pe.contains("Partition name: 'anklume-persist'"), "{pe}");
    assert!(pe.contains(PERSIST_TYPE), "{pe}");
    let f = std::fs::File::open(&disk).unwrap();
    let mut back = vec![0u8; area.len()];
    f.read_exact_at(&mut back, 32768).unwrap();
    assert!(back == area, "the ISO area changed");
    let mut now = [0u8; 512];
    f.read_exact_at(&mut now, 0).unwrap();
    assert_eq!(now[..440], mbr[..440], "boot code");
    assert_eq!(now[462..478], dummy, "the bootable dummy entry");
    assert_eq!(now[446 + 4], 0xEE, "the protective entry");
    let mut head = [0u8; 4096];
    f.read_exact_at(&mut head, p.persist.1 * 512).unwrap();
    assert_eq!(head, [0u8; 4096], "persist's start is zeroed");
    // Planned again: refused, slot B is there.
    let t2 = Table {
        parts: [
            table.parts.clone(),
            vec![Part {
                number: 4,
                start: p.slot_b.1,
                sectors: p.slot_b.2,
                label: "anklume-slot-b".into(),
                ..Part::default()
            }],
        ]
        .concat(),
        ..table
    };
    assert!(plan(&t2, 1).is_err());
}

/// The kernel's view: sizes from sysfs, names and PARTUUIDs from udev; a
/// partition udev has not named yet stops the plan (it could be a slot B
/// made a moment ago), as do sectors other than 512 bytes.
#[test]
fn the_table_comes_from_sysfs_and_udev_and_unnamed_partitions_stop_the_plan() {
    use anklume_bootstate::testing::{FakeMachine, Part as FakePart};
    let t = tempfile::tempdir().unwrap();
    let m = FakeMachine::at(t.path());
    let part = |name, dev, label| FakePart {
        name,
        dev,
        ptype: SLOT_TYPE_X86_64,
        label,
        partuuid: "44444444-0000-4000-8000-000000000001",
        fat: None,
    };
    m.disk(
        "sdz",
        false,
        None,
        &[
            part("sdz1", "8:1", "ISO9660"),
            part("sdz3", "8:3", "anklume-slot-a"),
        ],
    );
    let sys = m.root.join("sys/class/block");
    std::fs::write(sys.join("sdz/size"), "8388608\n").unwrap();
    for (p, start, size) in [("sdz1", 64, 108_776), ("sdz3", 457_000, 590_680)] {
        std::fs::write(sys.join(p).join("start"), format!("{start}\n")).unwrap();
        std::fs::write(sys.join(p).join("size"), format!("{size}\n")).unwrap();
    }
    std::fs::write(sys.join("sdz1/partition"), "1\n").unwrap();
    std::fs::write(sys.join("sdz3/partition"), "3\n").unwrap();
    let table = Table::from_sysfs(&m.root, "sdz").unwrap();
    assert_eq!(table.disk, m.root.join("dev/sdz"));
    assert_eq!((table.sectors, table.sector_bytes), (8_388_608, 512));
    assert_eq!(
        table
            .parts
            .iter()
            .map(|p| (p.number, p.start, p.label.as_str(), p.name.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, 64, "ISO9660", "sdz1"),
            (3, 457_000, "anklume-slot-a", "sdz3")
        ]
    );
    assert_eq!(
        table.parts[1].partuuid,
        "44444444-0000-4000-8000-000000000001"
    );
    assert_eq!(plan(&table, 1).unwrap().slot_b, (4, 1_048_576, 2_097_152));
    // udev's data for partition 3 without its name yet.
    std::fs::write(
        m.root.join("run/udev/data/b8:3"),
        "E:ID_PART_ENTRY_TYPE=x\n",
    )
    .unwrap();
    let e = plan(&Table::from_sysfs(&m.root, "sdz").unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partition 3 of") && e.contains("has no name"),
        "{e}"
    );
    // 4096-byte logical sectors: refused.
    std::fs::write(
        m.root.join("run/udev/data/b8:3"),
        "E:ID_PART_ENTRY_NAME=anklume-slot-a\n",
    )
    .unwrap();
    std::fs::create_dir_all(sys.join("sdz/queue")).unwrap();
    std::fs::write(sys.join("sdz/queue/logical_block_size"), "4096\n").unwrap();
    let e = plan(&Table::from_sysfs(&m.root, "sdz").unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4096-byte logical sectors"), "{e}");
}

/// A step after sgdisk fails (here telling the kernel about partitions of
/// an image file, which is not a block device): the error says the table is complete and to reboot;
/// the table has both partitions, the MBR entry is back, persist's start
/// zeroed (all done before or regardless of that step).
#[test]
fn a_failure_after_the_table_is_written_says_to_reboot() {
    let t = tempfile::tempdir().unwrap();
    let (disk, table, mbr, _) = iso_like_stick(t.path());
    let p = plan(&table, 20 << 20).unwrap();
    let e = format!("{:#}", apply(&p, true).unwrap_err());
    assert!(
        e.contains("has slot B and persist in its partition table now")
            && e.contains("reboot, then run the update again")
            && e.contains("is not a block device"),
        "{e}"
    );
    assert!(sgdisk_info(&disk, 4).contains("Partition name: 'anklume-slot-b'"));
    assert!(sgdisk_info(&disk, 5).contains("Partition name: 'anklume-persist'"));
    let f = std::fs::File::open(&disk).unwrap();
    let mut now = [0u8; 512];
    f.read_exact_at(&mut now, 0).unwrap();
    assert_eq!(now[462..478], mbr[462..478], "the bootable dummy entry");
    let mut head = [0u8; 4096];
    f.read_exact_at(&mut head, p.persist.1 * 512).unwrap();
    assert_eq!(head, [0u8; 4096]);
}
