use super::*;
use crate::disks::survey;
use crate::plan::{Argon2id, Luks};
use crate::testdata::*;

const PASS: &str = "correct horse battery";
const NVME: &str = "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456";

fn plan_on(
    inv: &Inventory,
    idx: usize,
    wipe: Option<&str>,
    fs: Filesystem,
    tpm2: bool,
    argon: Argon2id,
) -> Plan {
    let s = survey(inv);
    let c = s.candidates[idx].clone();
    let consent = wipe.map(|w| c.consent(w).unwrap());
    Plan::new(
        c,
        consent,
        fs,
        Luks::new(argon),
        tpm2,
        Secret::new(PASS).unwrap(),
    )
    .unwrap()
}

fn default_argon() -> Argon2id {
    Argon2id {
        memory_kib: 1 << 20,
        iterations: 4,
        parallel: 4,
    }
}

/// The usual plan: the blank NVMe disk of a USB boot, btrfs, no TPM2.
fn blank_nvme_btrfs() -> Plan {
    plan_on(
        &usb_boot(),
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    )
}

fn lines(plan: &Plan) -> Vec<String> {
    steps(plan).iter().map(Step::line).collect()
}

#[test]
fn a_blank_disk_btrfs_plan_maps_to_these_commands() {
    let plan = blank_nvme_btrfs();
    let p1 = format!("{NVME}-part1");
    assert_eq!(
        lines(&plan),
        [
            format!("sgdisk --zap-all {NVME}"),
            format!("sgdisk --align-end --new=1:0:0 --typecode=1:8309 --change-name=1:anklume-pool {NVME}"),
            "udevadm settle --timeout=30".into(),
            format!("cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size=512 --sector-size=4096 --pbkdf argon2id --pbkdf-memory=1048576 --pbkdf-force-iterations=4 --pbkdf-parallel=4 --label=anklume-pool --key-file=- {p1}  < passphrase"),
            format!("cryptsetup luksAddKey --batch-mode --pbkdf argon2id --pbkdf-memory=1048576 --pbkdf-force-iterations=4 --pbkdf-parallel=4 --key-file=- --keyfile-size=21 --new-keyfile=/dev/stdin {p1}  < passphrase + recovery key"),
            format!("cryptsetup open --type luks2 --key-file=- {p1} anklume-pool  < passphrase"),
            "mkfs.btrfs --quiet --label=anklume-pool /dev/mapper/anklume-pool".into(),
            "mount -t btrfs /dev/mapper/anklume-pool /run/anklume/pool-setup".into(),
            "btrfs subvolume create /run/anklume/pool-setup/incus".into(),
            "btrfs subvolume create /run/anklume/pool-setup/anklume".into(),
            "btrfs subvolume create /run/anklume/pool-setup/snapshots".into(),
            "umount /run/anklume/pool-setup".into(),
            "cryptsetup close anklume-pool".into(),
        ]
    );
}

#[test]
fn a_wiped_disk_zfs_tpm2_plan_maps_to_these_commands() {
    let mut inv = usb_boot();
    inv.devices
        .iter_mut()
        .find(|d| d.name == "sdb")
        .unwrap()
        .part_table = Some("gpt".into());
    let plan = plan_on(
        &inv,
        1,
        Some("ZFL0ABCD"),
        Filesystem::zfs_default(),
        true,
        default_argon(),
    );
    let disk = "/dev/disk/by-id/ata-ST2000DM008_ZFL0ABCD";
    let l = lines(&plan);
    assert_eq!(l[0], format!("wipefs --all --force {disk}"));
    assert!(l.contains(&format!("systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 --unlock-key-file=/dev/stdin {disk}-part1  < passphrase")), "{l:#?}");
    let tail: Vec<&str> = l.iter().rev().take(6).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "zfs create anklume/incus",
            "zfs create anklume/anklume",
            "mount -t zfs anklume/anklume /run/anklume/pool-setup",
            "umount /run/anklume/pool-setup",
            "zpool export anklume",
            "cryptsetup close anklume-pool",
        ]
    );
    assert!(l.iter().any(|s| s == "zpool create -o ashift=12 -O compression=lz4 -O acltype=posixacl -O xattr=sa -O mountpoint=legacy anklume /dev/mapper/anklume-pool"));
}

/// Every device a command names is the planned disk, its partition 1 or
/// the pool mapping; no secret is ever on a command line.
#[test]
fn commands_touch_only_the_planned_disk_and_carry_no_secret() {
    for (inv, idx) in [
        (usb_boot(), 0),
        (cd_boot(), 1),
        (ventoy_boot(), 0),
        (toram_boot(true), 1),
    ] {
        for fs in [Filesystem::btrfs_default(), Filesystem::zfs_default()] {
            let mut inv = inv.clone();
            inv.tpm2 = true;
            let plan = plan_on(&inv, idx, None, fs, true, default_argon());
            let allowed = [
                plan.disk().path(),
                plan.partition_path(),
                "/dev/mapper/anklume-pool".to_string(),
                "/dev/stdin".into(),
            ];
            for s in steps(&plan) {
                for a in &s.argv {
                    let dev = a.find("/dev/").map(|i| &a[i..]);
                    if let Some(dev) = dev {
                        assert!(allowed.iter().any(|x| x == dev), "{} names {dev}", s.line());
                    }
                    assert!(!a.contains(PASS), "{}", s.line());
                }
            }
        }
    }
}

#[test]
fn recovery_keys_are_modhex_groups_and_random() {
    let k = RecoveryKey::from_bytes(&[0x01; 32]);
    assert_eq!(k.expose(), ["cbcbcbcb"; 8].join("-"));
    let a = RecoveryKey::generate().unwrap();
    let b = RecoveryKey::generate().unwrap();
    assert_ne!(a, b);
    let groups: Vec<&str> = a.expose().split('-').collect();
    assert_eq!(groups.len(), 8);
    assert!(groups
        .iter()
        .all(|g| g.len() == 8 && g.bytes().all(|c| MODHEX.contains(&c))));
    assert_eq!(format!("{a:?}"), "RecoveryKey(<hidden>)");
}

fn run_all(steps: &[Step], pass: &Secret, rk: &RecoveryKey) {
    for s in steps {
        s.cmd(pass, rk)
            .run()
            .unwrap_or_else(|e| panic!("{}: {e:#}", s.line()));
    }
}

/// The LUKS steps for real, on an image file (cryptsetup formats files
/// without device-mapper): the header has the plan's explicit argon2id
/// costs, and both the passphrase and the recovery key unlock it.
#[test]
fn luks_steps_format_with_explicit_argon2id_and_add_the_recovery_key() {
    let argon = Argon2id {
        memory_kib: 65536,
        iterations: 5,
        parallel: 1,
    };
    let plan = plan_on(
        &usb_boot(),
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        argon,
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pool.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let img_s = img.to_str().unwrap();
    let rk = RecoveryKey::generate().unwrap();
    run_all(&luks_steps(&plan, img_s), plan.passphrase(), &rk);
    let dump = Cmd::new("cryptsetup")
        .args(["luksDump", img_s])
        .output_string()
        .unwrap();
    for want in [
        "Version:       \t2",
        "Label:         \tanklume-pool",
        "cipher: aes-xts-plain64",
        "sector: 4096 [bytes]",
    ] {
        assert!(dump.contains(want), "{want:?} missing:\n{dump}");
    }
    // Two keyslots, both argon2id with exactly the planned costs.
    assert_eq!(dump.matches("PBKDF:      argon2id").count(), 2, "{dump}");
    assert_eq!(dump.matches("Time cost:  5").count(), 2, "{dump}");
    assert_eq!(dump.matches("Memory:     65536").count(), 2, "{dump}");
    assert_eq!(dump.matches("Threads:    1").count(), 2, "{dump}");
    assert_eq!(dump.matches("Key:        512 bits").count(), 2, "{dump}");
    let unlocks = |key: &str| {
        Cmd::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file=-", img_s])
            .input(key.as_bytes().to_vec())
            .run()
            .is_ok()
    };
    assert!(unlocks(PASS));
    assert!(unlocks(rk.expose()));
    assert!(!unlocks("wrong passphrase"));
    assert!(!unlocks(&format!("{PASS}{}", rk.expose())));
}

/// The partition steps for real on an image file that held ext4: the
/// signature is gone and one LUKS-typed partition named anklume-pool
/// covers the disk.
#[test]
fn partition_steps_wipe_and_make_one_pool_partition() {
    let mut inv = usb_boot();
    inv.devices
        .iter_mut()
        .find(|d| d.name == "sdb")
        .unwrap()
        .fs_type = Some("ext4".into());
    let plan = plan_on(
        &inv,
        1,
        Some("ZFL0ABCD"),
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let img_s = img.to_str().unwrap();
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", img_s])
        .run()
        .unwrap();
    let probe = || {
        Cmd::new("blkid")
            .args(["-p", "-o", "export", img_s])
            .output_string()
            .unwrap_or_default()
    };
    assert!(probe().contains("TYPE=ext4"));
    let steps: Vec<Step> = partition_steps_on(&plan, img_s)
        .into_iter()
        .filter(|s| s.argv[0] != "udevadm")
        .collect();
    assert_eq!(steps[0].argv[0], "wipefs");
    run_all(
        &steps,
        plan.passphrase(),
        &RecoveryKey::from_bytes(&[0; 32]),
    );
    let after = probe();
    assert!(!after.contains("TYPE=ext4"), "{after}");
    assert!(after.contains("PTTYPE=gpt"), "{after}");
    let table = Cmd::new("sgdisk")
        .args(["-p", img_s])
        .output_string()
        .unwrap();
    let row = table.lines().last().unwrap();
    assert!(
        row.trim_start().starts_with("1 ") && row.contains("8309") && row.ends_with("anklume-pool"),
        "{table}"
    );
    // Start and size on 1 MiB boundaries, so LUKS2's 4096-byte sectors fit
    // exactly (the image's last usable sector, like most disks', is odd).
    let info = Cmd::new("sgdisk")
        .args(["-i", "1", img_s])
        .output_string()
        .unwrap();
    let sectors = |key: &str| -> u64 {
        let l = info.lines().find(|l| l.starts_with(key)).unwrap();
        l[key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(sectors("First sector:") % 2048, 0, "{info}");
    assert_eq!(sectors("Partition size:") % 2048, 0, "{info}");
}

#[test]
fn the_target_is_checked_again_before_writing() {
    let inv = usb_boot();
    let plan = plan_on(
        &inv,
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    );
    verify_target(&plan, &inv).unwrap();

    let mut gone = inv.clone();
    gone.devices.retain(|d| d.name != "nvme0n1");
    let e = verify_target(&plan, &gone).unwrap_err().to_string();
    assert!(
        e.contains("is no longer offered (it is gone): nothing was written"),
        "{e}"
    );

    let mut swapped = inv.clone();
    swapped
        .devices
        .iter_mut()
        .find(|d| d.name == "nvme0n1")
        .unwrap()
        .size_bytes += 1 << 30;
    let e = verify_target(&plan, &swapped).unwrap_err().to_string();
    assert!(e.contains("changed since the plan"), "{e}");

    let mut mounted = inv.clone();
    mounted
        .devices
        .push(part("nvme0n1p1", "nvme0n1", (259, 1), 100 * GB));
    mounted.mounts.push(mount((259, 1), "/mnt", "ext4", "rw"));
    let e = verify_target(&plan, &mounted).unwrap_err().to_string();
    assert!(
        e.contains("no longer offered (in use: nvme0n1p1 mounted on /mnt)"),
        "{e}"
    );

    let mut filled = inv.clone();
    filled
        .devices
        .iter_mut()
        .find(|d| d.name == "nvme0n1")
        .unwrap()
        .part_table = Some("dos".into());
    let e = verify_target(&plan, &filled).unwrap_err().to_string();
    assert!(
        e.contains("is no longer blank (dos partition table)"),
        "{e}"
    );
}

/// A runner that records what it is asked and fails where told.
#[derive(Default)]
struct Recorder {
    lines: Vec<String>,
    inputs: Vec<Vec<u8>>,
    signatures: Vec<String>,
    fail_on: Option<&'static str>,
}

impl Runner for Recorder {
    fn run(&mut self, step: &Step, input: Vec<u8>) -> Result<()> {
        self.lines.push(step.argv.join(" "));
        self.inputs.push(input);
        match self.fail_on {
            Some(f) if step.argv.join(" ").starts_with(f) => bail!("{f} failed (test)"),
            _ => Ok(()),
        }
    }
    fn wait_for(&mut self, path: &str) -> Result<()> {
        self.lines.push(format!("(wait for {path})"));
        Ok(())
    }
    fn signatures(&mut self, path: &str) -> Result<Vec<String>> {
        self.lines.push(format!("(probe {path})"));
        Ok(self.signatures.clone())
    }
    fn create_dir(&mut self, path: &str) -> Result<()> {
        self.lines.push(format!("(mkdir {path})"));
        Ok(())
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.lines.push(format!("(write {path})"));
        self.inputs.push(data.to_vec());
        Ok(())
    }
}

#[test]
fn execute_runs_every_step_in_order_and_shows_the_recovery_key_once() {
    let inv = usb_boot();
    let plan = plan_on(
        &inv,
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    );
    let mut r = Recorder::default();
    let (mut out, mut keys) = (Vec::new(), Vec::new());
    execute(&plan, &inv, &mut r, &mut out, &mut keys).unwrap();
    let out = String::from_utf8(out).unwrap();
    let keys = String::from_utf8(keys).unwrap();
    let p1 = format!("{NVME}-part1");
    let mut want = vec![format!("(probe {NVME})")];
    want.extend(steps(&plan).iter().map(|s| s.argv.join(" ")));
    // After partitioning (wipe-less: zap, new, settle), wait for the
    // partition; after unlocking, make the mount point.
    want.insert(4, format!("(wait for {p1})"));
    let open_at = want
        .iter()
        .position(|l| l.starts_with("cryptsetup open"))
        .unwrap();
    want.insert(open_at + 1, "(mkdir /run/anklume/pool-setup)".into());
    // The first infra.yml goes on the anklume subvolume before the unmount.
    let umount_at = want.iter().position(|l| l.starts_with("umount")).unwrap();
    want.insert(
        umount_at,
        "(write /run/anklume/pool-setup/anklume/infra.yml)".into(),
    );
    assert_eq!(r.lines, want);
    let written = r
        .lines
        .iter()
        .position(|l| l.starts_with("(write"))
        .unwrap();
    // (inputs: commands and the written file, not the probe, the wait and the mkdir)
    assert_eq!(r.inputs[written - 3], crate::BOOTSTRAP_INFRA.as_bytes());
    assert!(crate::BOOTSTRAP_INFRA.contains("default_os_image: anklume-base"));
    // The recovery key: on stdin after the passphrase, shown exactly once.
    let add = r
        .lines
        .iter()
        .position(|l| l.starts_with("cryptsetup luksAddKey"))
        .unwrap();
    // (inputs are recorded for commands only: minus the probe and the wait)
    let input = String::from_utf8(r.inputs[add - 2].clone()).unwrap();
    let key = input.strip_prefix(PASS).expect("passphrase first");
    assert_eq!(key.len(), 71);
    // Shown once, on its own writer (the console at boot), never in the
    // progress (the journal at boot).
    assert_eq!(keys.matches(key).count(), 1, "{keys}");
    assert!(
        keys.contains("Recovery key (shown once, stored nowhere: write it down now)"),
        "{keys}"
    );
    assert!(!out.contains(key), "{out}");
    assert!(!out.contains(PASS) && !keys.contains(PASS), "{out}");
    let format_at = r
        .lines
        .iter()
        .position(|l| l.starts_with("cryptsetup luksFormat"))
        .unwrap();
    assert_eq!(r.inputs[format_at - 2], PASS.as_bytes());
}

#[test]
fn a_failure_after_unlocking_unmounts_and_locks_the_pool_again() {
    let inv = usb_boot();
    let plan = plan_on(
        &inv,
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    );
    let mut r = Recorder {
        fail_on: Some("btrfs subvolume create /run/anklume/pool-setup/anklume"),
        ..Default::default()
    };
    let e = format!(
        "{:#}",
        execute(&plan, &inv, &mut r, &mut Vec::new(), &mut Vec::new()).unwrap_err()
    );
    assert_eq!(
        e,
        "subvolume anklume: btrfs subvolume create /run/anklume/pool-setup/anklume failed (test)"
    );
    let tail: Vec<&str> = r
        .lines
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "btrfs subvolume create /run/anklume/pool-setup/anklume",
            "umount /run/anklume/pool-setup",
            "cryptsetup close anklume-pool",
        ]
    );
    // Failing before the mount: only the lock.
    let mut r = Recorder {
        fail_on: Some("mkfs.btrfs"),
        ..Default::default()
    };
    execute(&plan, &inv, &mut r, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert_eq!(r.lines.last().unwrap(), "cryptsetup close anklume-pool");
    assert!(!r.lines.iter().any(|l| l.starts_with("umount")));
    // Failing before the unlock: nothing to lock.
    let mut r = Recorder {
        fail_on: Some("cryptsetup luksAddKey"),
        ..Default::default()
    };
    execute(&plan, &inv, &mut r, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(r.lines.last().unwrap().starts_with("cryptsetup luksAddKey"));
}

#[test]
fn nothing_runs_when_the_target_changed_or_is_not_blank_after_all() {
    let inv = usb_boot();
    let plan = plan_on(
        &inv,
        0,
        None,
        Filesystem::btrfs_default(),
        false,
        default_argon(),
    );
    let mut gone = inv.clone();
    gone.devices.retain(|d| d.name != "nvme0n1");
    let mut r = Recorder::default();
    execute(&plan, &gone, &mut r, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(r.lines.is_empty(), "{:?}", r.lines);
    let mut r = Recorder {
        signatures: vec!["ext4 0x438".into()],
        ..Default::default()
    };
    let e = execute(&plan, &inv, &mut r, &mut Vec::new(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not blank after all (ext4 0x438): nothing was written"),
        "{e}"
    );
    assert_eq!(r.lines, [format!("(probe {NVME})")]);
}

/// The real probe: `wipefs --no-act` on an image file.
#[test]
fn signatures_are_read_with_wipefs_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let img_s = img.to_str().unwrap();
    assert!(signatures(img_s).unwrap().is_empty());
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", img_s])
        .run()
        .unwrap();
    let before = std::fs::read(&img).unwrap();
    assert_eq!(signatures(img_s).unwrap(), ["ext4 0x438"]);
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the probe wrote to the disk"
    );
    let e = format!("{:#}", signatures("/nonexistent/disk").unwrap_err());
    assert!(
        e.contains("probing /nonexistent/disk for signatures"),
        "{e}"
    );
}

#[test]
fn leave_open_unlocks_the_new_partition_with_the_passphrase_on_stdin() {
    let plan = blank_nvme_btrfs();
    let mut r = Recorder {
        lines: vec![],
        inputs: vec![],
        signatures: vec![],
        fail_on: None,
    };
    let mut out = Vec::new();
    leave_open(&plan, &mut r, &mut out).unwrap();
    assert_eq!(
        r.lines,
        [
            format!("cryptsetup open --type luks2 --key-file=- {NVME}-part1 anklume-pool"),
            "(mkdir /run/anklume)".into(),
            "(write /run/anklume/pool-unlock.json)".into(),
        ]
    );
    assert_eq!(r.inputs[0], PASS.as_bytes());
    assert_eq!(
        String::from_utf8(r.inputs[1].clone()).unwrap(),
        format!("{{\"partition\":\"{NVME}-part1\",\"by\":\"first-boot\"}}\n")
    );
    assert!(!String::from_utf8(out).unwrap().contains(PASS));
}

#[test]
fn the_first_infra_yml_goes_where_the_agent_reads_it_and_only_with_that_subvolume_or_dataset() {
    let plan = blank_nvme_btrfs();
    assert_eq!(
        bootstrap_infra_path(&plan).unwrap(),
        format!("{SETUP_MOUNT}/{}", anklume_contract::pool::INFRA_ON_POOL)
    );
    let zfs = plan_on(
        &usb_boot(),
        0,
        None,
        Filesystem::zfs_default(),
        false,
        default_argon(),
    );
    assert_eq!(
        bootstrap_infra_path(&zfs).unwrap(),
        format!("{SETUP_MOUNT}/infra.yml")
    );
    let no_anklume = plan_on(
        &usb_boot(),
        0,
        None,
        Filesystem::Btrfs {
            subvolumes: vec!["incus".into()],
        },
        false,
        default_argon(),
    );
    assert_eq!(bootstrap_infra_path(&no_anklume), None);
}
