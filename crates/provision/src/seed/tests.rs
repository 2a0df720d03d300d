use std::io::Write;

use super::*;
use crate::testdata::*;

const SEED: &str =
    "[disk]\nserial = \"ZFL0ABCD\"\n\n[encryption]\npassphrase_file = \"secret.txt\"\n";

fn is_mounted(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

fn seed_tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(SEED_FILE), SEED).unwrap();
    std::fs::write(dir.join("secret.txt"), "from the stick\n").unwrap();
}

#[test]
fn finds_exactly_one_seed_volume_by_label() {
    let mut inv = usb_boot();
    assert!(find_seed(&inv).unwrap().is_none());
    let mut stick = disk("sdh", (8, 112), 8 << 20);
    stick.fs_type = Some("vfat".into());
    stick.fs_label = Some("AnklumeSeed".into());
    inv.devices.push(stick.clone());
    // A volume with the label but another filesystem is not a seed.
    let mut ext4 = disk("sdi", (8, 128), 8 << 20);
    ext4.fs_type = Some("ext4".into());
    ext4.fs_label = Some(SEED_LABEL.into());
    inv.devices.push(ext4);
    assert_eq!(find_seed(&inv).unwrap().unwrap().name, "sdh");
    let mut cd = disk("sr1", (11, 1), 8 << 20);
    cd.fs_type = Some("iso9660".into());
    cd.fs_label = Some(SEED_LABEL.into());
    inv.devices.push(cd);
    let e = find_seed(&inv).unwrap_err().to_string();
    assert_eq!(
        e,
        "2 volumes are labelled ANKLUME-SEED (/dev/sdh, /dev/sr1): leave only one plugged in"
    );
}

#[test]
fn the_mount_is_read_only_and_limited_to_fat_and_iso9660() {
    let c = SeedMount::command(
        Path::new("/dev/sdh1"),
        Path::new(SEED_MOUNT_DIR),
        SEED_FSTYPES,
        false,
    );
    assert_eq!(
        c.line(),
        "mount -t vfat,iso9660 -o ro,nodev,nosuid,noexec /dev/sdh1 /run/anklume/seed"
    );
}

/// The guard over a real mount. This host's kernel has neither vfat nor
/// iso9660 (the VM scenario mounts those), so the image is a squashfs: the
/// same mount, read-only, unmount and drop paths.
#[test]
fn the_guard_mounts_read_only_reads_the_seed_and_unmounts() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    seed_tree(&tree);
    let img = dir.path().join("seed.sqfs");
    anklume_cmd::Cmd::new("mksquashfs")
        .arg(&tree)
        .arg(&img)
        .args(["-quiet", "-no-progress"])
        .run()
        .unwrap();
    let mnt = dir.path().join("mnt");
    let m = SeedMount::mount(&img, &mnt, "squashfs", true).unwrap();
    assert!(is_mounted(&mnt));
    assert!(
        std::fs::write(mnt.join("new"), "x").is_err(),
        "the seed is writable"
    );
    let p = read_seed(m.path(), "/dev/sdh").unwrap();
    assert_eq!(p.origin, "/dev/sdh:/anklume-seed.toml");
    let plan = p.plan(&usb_boot()).unwrap();
    assert_eq!(plan.disk().disk().name, "sdb");
    assert_eq!(plan.passphrase().expose(), "from the stick");
    m.close().unwrap();
    assert!(!is_mounted(&mnt));
    {
        let _m = SeedMount::mount(&img, &mnt, "squashfs", true).unwrap();
        assert!(is_mounted(&mnt));
    }
    assert!(!is_mounted(&mnt), "the guard left the seed mounted");
}

#[test]
fn mount_failures_and_missing_files_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let e = format!(
        "{:#}",
        SeedMount::mount(&junk, &dir.path().join("mnt"), SEED_FSTYPES, true).unwrap_err()
    );
    assert!(e.starts_with("mounting the seed volume "), "{e}");
    assert!(
        e.contains("mount -t vfat,iso9660 -o ro,nodev,nosuid,noexec,loop"),
        "{e}"
    );
    let e = read_seed(dir.path(), "/dev/sdh").unwrap_err().to_string();
    assert_eq!(
        e,
        "the seed volume /dev/sdh has no anklume-seed.toml at its root"
    );
}

/// What a user makes with any OS: a FAT volume labelled ANKLUMESEED. Its
/// label fits FAT's 11 characters, and the files read back from a FAT
/// image (through the `fatfs` crate, as the host cannot mount vfat).
#[test]
fn the_fat_label_fits_and_a_fat_seed_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("seed.img");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .unwrap();
    f.set_len(4 << 20).unwrap();
    let label: [u8; 11] = SEED_LABEL_FAT.as_bytes().try_into().unwrap();
    fatfs::format_volume(&f, fatfs::FormatVolumeOptions::new().volume_label(label)).unwrap();
    {
        use std::io::Seek;
        (&f).rewind().unwrap();
        let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
        fs.root_dir()
            .create_file(SEED_FILE)
            .unwrap()
            .write_all(SEED.as_bytes())
            .unwrap();
        fs.root_dir()
            .create_file("secret.txt")
            .unwrap()
            .write_all(b"from the stick\n")
            .unwrap();
    }
    let f = std::fs::File::open(&img).unwrap();
    let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_label(), SEED_LABEL_FAT);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for name in [SEED_FILE, "secret.txt"] {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut fs.root_dir().open_file(name).unwrap(), &mut data).unwrap();
        std::fs::write(out.join(name), data).unwrap();
    }
    let p = read_seed(&out, "fat").unwrap();
    assert_eq!(
        p.plan(&usb_boot()).unwrap().passphrase().expose(),
        "from the stick"
    );
}
