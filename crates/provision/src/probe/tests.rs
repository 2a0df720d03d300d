use std::os::unix::fs::symlink;

use super::*;
use crate::disks::{survey, Exclusion};

fn w(root: &Path, p: &str, content: &str) {
    let p = root.join(p);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A USB-stick boot as sysfs, udev and procfs show it.
fn fake_usb_boot(root: &Path) {
    // sda: the boot stick, GPT, slot partition sda2.
    w(root, "sys/block/sda/dev", "8:0\n");
    w(root, "sys/block/sda/size", "62521344\n");
    w(root, "sys/block/sda/removable", "1\n");
    w(root, "sys/block/sda/ro", "0\n");
    w(root, "sys/block/sda/queue/rotational", "1\n");
    w(root, "sys/block/sda/sda2/partition", "2\n");
    w(root, "sys/block/sda/sda2/dev", "8:2\n");
    w(root, "sys/block/sda/sda2/size", "4194304\n");
    w(
        root,
        "run/udev/data/b8:0",
        "S:disk/by-id/usb-SanDisk_Ultra_4C530001230519-0:0\nS:disk/by-path/pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0\nE:ID_MODEL=Ultra\nE:ID_MODEL_ENC=Ultra\\x20USB\\x203.0\\x20\\x20\nE:ID_SERIAL_SHORT=4C530001230519\nE:ID_PART_TABLE_TYPE=gpt\n",
    );
    w(
        root,
        "run/udev/data/b8:2",
        "E:ID_PART_ENTRY_UUID=5b7e9a2c-1111-4c3a-9d2e-0123456789ab\nE:ID_FS_TYPE=squashfs\n",
    );
    // nvme0n1: blank internal disk, serial from sysfs only, by-id from /dev.
    w(root, "sys/block/nvme0n1/dev", "259:0\n");
    w(root, "sys/block/nvme0n1/size", "976773168\n");
    w(root, "sys/block/nvme0n1/removable", "0\n");
    w(root, "sys/block/nvme0n1/queue/rotational", "0\n");
    w(
        root,
        "sys/block/nvme0n1/device/model",
        "Samsung SSD 970 EVO 500GB          \n",
    );
    w(
        root,
        "sys/block/nvme0n1/device/serial",
        "  S466NX0M123456\n",
    );
    fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
    symlink(
        "../../nvme0n1",
        root.join("dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456"),
    )
    .unwrap();
    // dm-0: the verity root over sda2; zram0; sr0 with a disc.
    w(root, "sys/block/dm-0/dev", "253:0\n");
    w(root, "sys/block/dm-0/size", "4000000\n");
    w(root, "sys/block/dm-0/dm/name", "anklume-root\n");
    w(root, "sys/block/dm-0/slaves/sda2", "");
    w(root, "sys/block/zram0/dev", "252:0\n");
    w(root, "sys/block/zram0/size", "16777216\n");
    w(root, "sys/block/sr0/dev", "11:0\n");
    w(root, "sys/block/sr0/size", "1843200\n");
    w(
        root,
        "run/udev/data/b11:0",
        "E:ID_CDROM=1\nE:ID_FS_TYPE=iso9660\nE:ID_FS_LABEL=ANKLUME-SEED\n",
    );
    w(root, "sys/block/loop0/dev", "7:0\n");
    w(root, "sys/block/loop0/size", "0\n");
    w(
        root,
        "proc/self/mountinfo",
        "30 1 0:40 / / rw,relatime shared:1 - overlay anklume-root rw,lowerdir=/run/anklume/ro,upperdir=/run/anklume/rw/upper,workdir=/run/anklume/rw/work\n\
         31 30 0:25 / /run rw,nosuid shared:2 - tmpfs tmpfs rw,mode=755\n\
         32 31 253:0 / /run/anklume/ro ro,relatime shared:3 - squashfs /dev/mapper/anklume-root ro\n\
         33 30 0:50 / /media/my\\040files rw - tmpfs tmpfs rw\n",
    );
    w(root, "proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0                              partition\t8388604\t\t0\t\t100\n");
    w(
        root,
        "run/anklume/boot.env",
        "slot=a\npartuuid=5b7e9a2c-1111-4c3a-9d2e-0123456789ab\ndevice=/dev/sda2\ntoram=0\n",
    );
    w(root, "sys/class/tpm/tpm0/tpm_version_major", "2\n");
    w(
        root,
        "proc/meminfo",
        "MemTotal:       16318460 kB\nMemFree:         1000 kB\n",
    );
}

#[test]
fn reads_sysfs_udev_and_procfs() {
    let dir = tempfile::tempdir().unwrap();
    fake_usb_boot(dir.path());
    let inv = Probe::new(dir.path()).inventory().unwrap();
    let names: Vec<&str> = inv.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["dm-0", "loop0", "nvme0n1", "sda", "sda2", "sr0", "zram0"]
    );
    let sda = inv.device("sda").unwrap();
    assert_eq!(sda.dev, DevNum::new(8, 0));
    assert_eq!(sda.size_bytes, 62521344 * 512);
    assert!(sda.removable && sda.rotational && !sda.read_only);
    assert_eq!(sda.model.as_deref(), Some("Ultra USB 3.0"));
    assert_eq!(sda.serial.as_deref(), Some("4C530001230519"));
    assert_eq!(sda.by_id, ["usb-SanDisk_Ultra_4C530001230519-0:0"]);
    assert_eq!(sda.part_table.as_deref(), Some("gpt"));
    let sda2 = inv.device("sda2").unwrap();
    assert_eq!(sda2.devtype, DevType::Partition);
    assert_eq!(sda2.parent.as_deref(), Some("sda"));
    assert_eq!(
        sda2.partuuid.as_deref(),
        Some("5b7e9a2c-1111-4c3a-9d2e-0123456789ab")
    );
    let nvme = inv.device("nvme0n1").unwrap();
    assert_eq!(nvme.model.as_deref(), Some("Samsung SSD 970 EVO 500GB"));
    assert_eq!(nvme.serial.as_deref(), Some("S466NX0M123456"));
    assert_eq!(
        nvme.by_id,
        ["nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456"]
    );
    let dm = inv.device("dm-0").unwrap();
    assert_eq!(dm.dm_name.as_deref(), Some("anklume-root"));
    assert_eq!(dm.slaves, ["sda2"]);
    let sr0 = inv.device("sr0").unwrap();
    assert!(sr0.cdrom);
    assert_eq!(sr0.fs_label.as_deref(), Some("ANKLUME-SEED"));
    assert_eq!(inv.mounts.len(), 4);
    assert_eq!(inv.mounts[0].target, "/");
    assert!(inv.mounts[0].options.contains("lowerdir=/run/anklume/ro"));
    assert_eq!(inv.mounts[3].target, "/media/my files");
    assert_eq!(inv.swaps, ["/dev/zram0"]);
    assert_eq!(inv.boot.device.as_deref(), Some("/dev/sda2"));
    assert!(inv.tpm2);
    assert_eq!(inv.mem_total_kib, Some(16318460));

    let s = survey(&inv);
    let offered: Vec<&str> = s
        .candidates
        .iter()
        .map(|c| c.disk().name.as_str())
        .collect();
    assert_eq!(offered, ["nvme0n1"]);
    assert!(matches!(
        s.excluded_reason("sda"),
        Some(Exclusion::BootMedium { .. })
    ));
    assert_eq!(s.excluded_reason("sr0"), Some(&Exclusion::CdRom));
    assert_eq!(s.excluded_reason("zram0"), Some(&Exclusion::Zram));
    assert_eq!(s.excluded_reason("loop0"), Some(&Exclusion::Loop));
}

#[test]
fn a_loop_backing_file_leads_to_the_disk_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    w(root, "sys/block/loop3/dev", "7:3\n");
    w(root, "sys/block/loop3/size", "2048\n");
    w(
        root,
        "sys/block/loop3/loop/backing_file",
        "/images/live.iso\n",
    );
    w(root, "images/live.iso", "iso");
    w(
        root,
        "proc/self/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n",
    );
    let inv = Probe::new(root).inventory().unwrap();
    let b = inv.device("loop3").unwrap().loop_backing.clone().unwrap();
    assert_eq!(b.file, "/images/live.iso");
    // The file is on the test's own filesystem: its device, whatever it is.
    use std::os::unix::fs::MetadataExt;
    let st_dev = DevNum::from_dev_t(fs::metadata(root.join("images/live.iso")).unwrap().dev());
    assert_eq!(b.dev, (st_dev.major != 0).then_some(st_dev));
}

#[test]
fn garbage_in_sysfs_or_mountinfo_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    w(dir.path(), "sys/block/sda/dev", "eight\n");
    w(dir.path(), "proc/self/mountinfo", "");
    let e = format!("{:#}", Probe::new(dir.path()).inventory().unwrap_err());
    assert!(
        e.contains("sys/block/sda/dev: device number \"eight\""),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("sys/block")).unwrap();
    w(dir.path(), "proc/self/mountinfo", "1 0 8:1 / /\n");
    let e = format!("{:#}", Probe::new(dir.path()).inventory().unwrap_err());
    assert!(e.contains("mountinfo:1: no ' - ' separator"), "{e}");
}

/// On the machine running the tests: the probe reads it, and the disk
/// holding `/` (when `/` is on a disk) is never offered.
#[test]
fn this_machine_never_offers_the_disk_holding_root() {
    let inv = Probe::new("/").inventory().unwrap();
    let s = survey(&inv);
    let root = inv
        .mounts
        .iter()
        .rev()
        .find(|m| m.target == "/")
        .expect("a / mount");
    if let Some(d) = inv.by_dev(root.dev) {
        let disk = d.parent.clone().unwrap_or_else(|| d.name.clone());
        assert!(
            !s.candidates.iter().any(|c| c.disk().name == disk),
            "{disk} holds / but is offered"
        );
        assert!(matches!(
            s.excluded_reason(&disk),
            Some(Exclusion::BootMedium { .. })
        ));
    }
}
