use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::testdata::*;

/// A machine whose state the recorded steps change, as the real ones would.
#[derive(Debug, Default)]
struct World {
    inv: Inventory,
    unlocked: bool,
    fstype: Option<String>,
    mounted: Vec<String>,
    has_incus: bool,
    lines: Vec<String>,
    /// The passphrase unlock fails (a person pressed Ctrl-C at the prompt).
    attach_fails: bool,
    /// The machine has a TPM, and its token opens the pool.
    tpm: bool,
    tpm_unlocks: bool,
    /// The TPM refuses this many tries first (a PCR extended meanwhile).
    tpm_refusals: usize,
    /// Incus's socket is in /var/lib/incus.
    incus_socket: bool,
    /// The pool pointer's text on the persist partition.
    pointer: Option<String>,
    /// ZFS: the pool is imported.
    zfs_imported: bool,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<World>>);

impl Machine for Fake {
    fn inventory(&mut self) -> Result<Inventory> {
        Ok(self.0.borrow().inv.clone())
    }
    fn exists(&mut self, path: &str) -> bool {
        let w = self.0.borrow();
        (path == mapping_path() && w.unlocked)
            || (path == INCUS_SOCKET && w.incus_socket)
            || (path == TPM_DEVICE && w.tpm)
            || (path == zfs_imported_marker("anklume") && w.zfs_imported)
    }
    fn fstype(&mut self, dev: &str) -> Result<Option<String>> {
        assert_eq!(dev, mapping_path());
        let w = self.0.borrow();
        Ok(if w.unlocked { w.fstype.clone() } else { None })
    }
    fn is_mount_point(&mut self, dir: &str) -> Result<bool> {
        Ok(self.0.borrow().mounted.iter().any(|m| m == dir))
    }
    fn read_pointer(&mut self) -> Result<Option<String>> {
        Ok(self.0.borrow().pointer.clone())
    }
    fn fs_label(&mut self, dev: &str) -> Result<Option<String>> {
        assert_eq!(dev, mapping_path());
        let w = self.0.borrow();
        Ok(match w.fstype.as_deref() {
            Some("zfs_member") => Some("anklume".into()),
            _ => Some(POOL_LABEL.into()),
        })
    }
    fn is_subvolume(&mut self, dir: &str) -> bool {
        let w = self.0.borrow();
        dir == format!("{POOL_DIR}/incus") && w.has_incus && w.mounted.iter().any(|m| m == POOL_DIR)
    }
}

impl Runner for Fake {
    fn run(&mut self, step: &Step, input: Vec<u8>) -> Result<()> {
        assert!(input.is_empty(), "no secret goes through our stdin");
        if step.argv[..2] == ["systemctl", "restart"] {
            // anklume-pool.service (`anklume pool unlock` on this machine),
            // then what its Before= orders after it.
            assert_eq!(step.argv[2], "anklume-pool.service");
            self.0.borrow_mut().lines.push(step.argv.join(" "));
            let mut out = Vec::new();
            run(&mut self.clone(), &mut self.clone(), &mut out)?;
            if step.argv.iter().any(|a| a == "incus.socket") {
                self.0.borrow_mut().incus_socket = true;
            }
            return Ok(());
        }
        let mut w = self.0.borrow_mut();
        w.lines.push(step.argv.join(" "));
        match step.argv[0].as_str() {
            "systemd-cryptsetup" if step.argv[5].contains("tpm2-device") => {
                assert!(step.argv[5].contains("headless=true"), "{step:?}");
                if !w.tpm_unlocks {
                    bail!("no TPM2 token matches (test)");
                }
                if w.tpm_refusals > 0 {
                    w.tpm_refusals -= 1;
                    bail!("TPM_RC_PCR_CHANGED (test)");
                }
                w.unlocked = true;
            }
            "systemd-cryptsetup" if w.attach_fails => bail!("cancelled (test)"),
            "systemd-cryptsetup" => w.unlocked = true,
            "mount" => {
                let dir = step.argv.last().unwrap().clone();
                w.mounted.push(dir);
            }
            "zpool" => {
                assert!(w.unlocked, "imported before the unlock");
                assert!(!w.zfs_imported, "imported twice");
                w.zfs_imported = true;
            }
            "systemctl" if step.argv[1] == "stop" => {}
            "systemctl" if step.argv[1] == "start" => {
                if step.argv.iter().any(|a| a == "incus.socket") {
                    w.incus_socket = true;
                }
            }
            "rm" => {
                if step.argv.iter().any(|a| a == INCUS_SOCKET) {
                    w.incus_socket = false;
                }
            }
            other => panic!("unexpected command {other}"),
        }
        Ok(())
    }
    fn wait_for(&mut self, _: &str) -> Result<()> {
        unreachable!()
    }
    fn signatures(&mut self, _: &str) -> Result<Vec<String>> {
        unreachable!()
    }
    fn create_dir(&mut self, path: &str) -> Result<()> {
        self.0.borrow_mut().lines.push(format!("(mkdir {path})"));
        Ok(())
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let data = String::from_utf8(data.to_vec()).unwrap();
        let mut w = self.0.borrow_mut();
        if path == POINTER_PATH {
            assert!(
                w.mounted.iter().any(|m| m == PERSIST_DIR),
                "the pointer written without a persist partition"
            );
            w.pointer = Some(data.clone());
        }
        w.lines.push(format!("(write {path} {})", data.trim_end()));
        Ok(())
    }
}

/// A USB boot whose NVMe disk holds the pool's LUKS partition.
fn with_pool() -> Inventory {
    let mut inv = usb_boot();
    let mut p = part("nvme0n1p1", "nvme0n1", (259, 1), 500 * GB);
    p.fs_type = Some("crypto_LUKS".into());
    p.fs_label = Some(POOL_LABEL.into());
    inv.devices.push(p);
    inv
}

fn world(inv: Inventory) -> Fake {
    Fake(Rc::new(RefCell::new(World {
        inv,
        fstype: Some("btrfs".into()),
        has_incus: true,
        ..World::default()
    })))
}

fn run_on(f: &Fake) -> (Result<Outcome>, String) {
    let mut out = Vec::new();
    let r = run(&mut f.clone(), &mut f.clone(), &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn a_locked_pool_is_unlocked_by_systemd_cryptsetup_then_mounted_with_incus_on_it() {
    let f = world(with_pool());
    let (r, out) = run_on(&f);
    assert_eq!(
        r.unwrap(),
        Outcome::Mounted {
            incus_on_pool: true
        }
    );
    assert_eq!(
        f.0.borrow().lines,
        [
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tries=0",
            "(mkdir /run/anklume)",
            r#"(write /run/anklume/pool-unlock.json {"partition":"/dev/nvme0n1p1","by":"passphrase"})"#,
            "(mkdir /var/lib/anklume/pool)",
            "mount -t btrfs -o subvolid=5,noatime /dev/mapper/anklume-pool /var/lib/anklume/pool",
            "(mkdir /var/lib/incus)",
            "mount -t btrfs -o subvol=incus,noatime /dev/mapper/anklume-pool /var/lib/incus",
        ]
    );
    assert!(
        out.contains("unlocking the data pool on /dev/nvme0n1p1")
            && out.contains("unlocked by passphrase"),
        "{out}"
    );
}

/// With a TPM, its token is tried alone first (no prompt); the passphrase
/// is asked only when it does not open the pool. The record says which.
#[test]
fn the_tpm_is_tried_first_and_the_record_says_what_unlocked() {
    let f = world(with_pool());
    f.0.borrow_mut().tpm = true;
    f.0.borrow_mut().tpm_unlocks = true;
    let (r, out) = run_on(&f);
    r.unwrap();
    let lines = f.0.borrow().lines.clone();
    assert_eq!(
        lines[..3],
        [
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tpm2-device=auto,headless=true",
            "(mkdir /run/anklume)",
            r#"(write /run/anklume/pool-unlock.json {"partition":"/dev/nvme0n1p1","by":"tpm2"})"#,
        ]
    );
    assert!(out.contains("unlocked by the TPM"), "{out}");

    // A PCR extended during the first try: the second one unlocks.
    let f = world(with_pool());
    f.0.borrow_mut().tpm = true;
    f.0.borrow_mut().tpm_unlocks = true;
    f.0.borrow_mut().tpm_refusals = 1;
    let (r, out) = run_on(&f);
    r.unwrap();
    let lines = f.0.borrow().lines.clone();
    assert_eq!(lines.iter().filter(|l| l.contains("headless")).count(), 2);
    assert!(!lines.iter().any(|l| l.ends_with("tries=0")), "{lines:?}");
    assert!(
        out.contains("TPM_RC_PCR_CHANGED") && out.contains("unlocked by the TPM"),
        "{out}"
    );

    // The measured state changed: the TPM says no, the passphrase opens it.
    let f = world(with_pool());
    f.0.borrow_mut().tpm = true;
    let (r, out) = run_on(&f);
    r.unwrap();
    let lines = f.0.borrow().lines.clone();
    assert_eq!(
        lines[..5],
        [
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tpm2-device=auto,headless=true",
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tpm2-device=auto,headless=true",
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tries=0",
            "(mkdir /run/anklume)",
            r#"(write /run/anklume/pool-unlock.json {"partition":"/dev/nvme0n1p1","by":"passphrase"})"#,
        ]
    );
    assert!(
        out.contains("the TPM did not unlock it: no TPM2 token matches")
            && out.contains("unlocked by passphrase"),
        "{out}"
    );
}

#[test]
fn a_pool_left_unlocked_by_the_first_boot_is_only_mounted() {
    let f = world(with_pool());
    f.0.borrow_mut().unlocked = true;
    run_on(&f).0.unwrap();
    let lines = f.0.borrow().lines.clone();
    assert!(
        !lines.iter().any(|l| l.starts_with("systemd-cryptsetup")),
        "{lines:?}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("mount ")).count(), 2);
}

#[test]
fn a_second_run_changes_nothing() {
    let f = world(with_pool());
    run_on(&f).0.unwrap();
    let before = f.0.borrow().lines.len();
    run_on(&f).0.unwrap();
    assert_eq!(f.0.borrow().lines.len(), before, "{:?}", f.0.borrow().lines);
}

#[test]
fn no_pool_is_not_an_error_and_runs_nothing() {
    let f = world(usb_boot());
    let (r, out) = run_on(&f);
    assert_eq!(r.unwrap(), Outcome::NoPool);
    assert!(f.0.borrow().lines.is_empty());
    assert!(out.contains("No data pool on this machine"), "{out}");
}

#[test]
fn a_luks_volume_with_another_label_is_not_the_pool() {
    let mut inv = usb_boot();
    let mut p = part("nvme0n1p1", "nvme0n1", (259, 1), 500 * GB);
    p.fs_type = Some("crypto_LUKS".into());
    p.fs_label = Some("home".into());
    inv.devices.push(p);
    assert!(find(&inv).unwrap().is_none());
}

#[test]
fn two_pools_are_refused_by_name() {
    let mut inv = with_pool();
    let mut p = part("sdb1", "sdb", (8, 17), 100 * GB);
    p.fs_type = Some("crypto_LUKS".into());
    p.fs_label = Some(POOL_LABEL.into());
    inv.devices.push(p);
    let f = world(inv);
    let e = format!("{:#}", run_on(&f).0.unwrap_err());
    assert!(
        e.contains("2 LUKS volumes are labelled anklume-pool: /dev/nvme0n1p1, /dev/sdb1"),
        "{e}"
    );
    assert!(f.0.borrow().lines.is_empty());
}

#[test]
fn a_failed_unlock_mounts_nothing() {
    let f = world(with_pool());
    f.0.borrow_mut().attach_fails = true;
    let e = format!("{:#}", run_on(&f).0.unwrap_err());
    assert!(e.contains("unlocking /dev/nvme0n1p1"), "{e}");
    assert_eq!(f.0.borrow().lines.len(), 1);
}

#[test]
fn unknown_contents_are_refused_before_any_mount() {
    for (fs, want) in [
        (Some("ext4"), "holds \"ext4\""),
        (None, "holds no filesystem"),
    ] {
        let f = world(with_pool());
        f.0.borrow_mut().fstype = fs.map(str::to_string);
        let e = run_on(&f).0.unwrap_err().to_string();
        assert!(e.contains(want), "{fs:?}: {e}");
        assert!(
            !f.0.borrow().lines.iter().any(|l| l.starts_with("mount")),
            "{:?}",
            f.0.borrow().lines
        );
    }
}

#[test]
fn without_an_incus_subvolume_only_the_pool_is_mounted_and_that_is_said() {
    let f = world(with_pool());
    f.0.borrow_mut().has_incus = false;
    let (r, out) = run_on(&f);
    assert_eq!(
        r.unwrap(),
        Outcome::Mounted {
            incus_on_pool: false
        }
    );
    assert!(!f
        .0
        .borrow()
        .lines
        .iter()
        .any(|l| l.contains("/var/lib/incus")));
    assert!(out.contains("no incus subvolume"), "{out}");
}

#[test]
fn a_running_incus_on_memory_is_never_covered_by_the_pool() {
    let f = world(with_pool());
    f.0.borrow_mut().incus_socket = true;
    let e = run_on(&f).0.unwrap_err().to_string();
    assert!(
        e.contains("Incus already runs from the live system's memory"),
        "{e}"
    );
    assert!(e.contains("reboot"), "{e}");
    assert!(f.0.borrow().lines.is_empty(), "{:?}", f.0.borrow().lines);
    // Once Incus's folder is the pool's (a second run), its socket is fine.
    let f = world(with_pool());
    run_on(&f).0.unwrap();
    f.0.borrow_mut().incus_socket = true;
    run_on(&f).0.unwrap();
}

#[test]
fn a_pool_made_after_the_boot_gets_incus_moved_onto_it_at_once() {
    // The wizard on a console made the pool and left it unlocked; Incus
    // ran from memory meanwhile (its socket there).
    let f = world(with_pool());
    {
        let mut w = f.0.borrow_mut();
        w.unlocked = true;
        w.incus_socket = true;
    }
    for s in bring_up_steps() {
        f.clone().run(&s, Vec::new()).unwrap();
    }
    let w = f.0.borrow();
    assert_eq!(w.mounted, [POOL_DIR, INCUS_DIR]);
    assert!(w.incus_socket, "Incus started again");
    let at = |prefix: &str| {
        w.lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", w.lines))
    };
    // Incus stopped and its socket gone before the pool is mounted (else
    // the mount would hide them: `run` refuses that), started after.
    assert!(
        at("systemctl stop incus.socket incus.service") < at("rm -f -- /var/lib/incus/unix.socket")
    );
    assert!(at("rm -f") < at("systemctl restart anklume-pool.service"));
    // Incus's sockets start in the pool's transaction (its Before= puts
    // them after the mounts), so the agent the mount starts finds them.
    assert!(
        at("systemctl restart anklume-pool.service incus.socket incus-user.socket")
            < at("mount -t btrfs -o subvol=incus")
    );
    assert!(
        at("mount -t btrfs -o subvol=incus")
            < at("systemctl start --no-block anklume-agent.service")
    );
    // Already unlocked by the wizard: nothing asked.
    assert!(
        !w.lines.iter().any(|l| l.starts_with("systemd-cryptsetup")),
        "{:?}",
        w.lines
    );
}

const OURS: &str = "1b2c3d4e-0000-4000-8000-00000000000a";
const THEIRS: &str = "1b2c3d4e-0000-4000-8000-00000000000b";

/// A USB boot with persist, and two disks holding a LUKS volume labelled
/// anklume-pool: this machine's (`OURS`) and another's on a USB disk.
fn with_two_pools() -> Inventory {
    let mut inv = with_pool();
    inv.devices.last_mut().unwrap().partuuid = Some(OURS.to_ascii_uppercase());
    let mut p = part("sdc1", "sdc", (8, 33), 500 * GB);
    p.fs_type = Some("crypto_LUKS".into());
    p.fs_label = Some(POOL_LABEL.into());
    p.partuuid = Some(THEIRS.into());
    inv.devices.push(p);
    inv
}

fn pointer_to(partuuid: &str) -> Option<String> {
    Some(PoolPointer::new(partuuid).to_json())
}

#[test]
fn the_pool_pointer_picks_this_machines_pool_among_two() {
    let f = world(with_two_pools());
    f.0.borrow_mut().pointer = pointer_to(OURS);
    let (r, out) = run_on(&f);
    r.unwrap();
    assert!(
        out.contains("unlocking the data pool on /dev/nvme0n1p1 (named by the pool pointer"),
        "{out}"
    );
    // Without the pointer, two pools are refused by name.
    let f = world(with_two_pools());
    let e = format!("{:#}", run_on(&f).0.unwrap_err());
    assert!(
        e.contains("/dev/nvme0n1p1") && e.contains("/dev/sdc1"),
        "{e}"
    );
    assert!(e.contains("no pool pointer"), "{e}");
    assert!(f.0.borrow().lines.is_empty());
}

#[test]
fn the_first_unlock_with_persist_remembers_the_pool_and_later_ones_use_it() {
    let mut inv = with_pool();
    inv.devices.last_mut().unwrap().partuuid = Some(OURS.into());
    let f = world(inv);
    f.0.borrow_mut().mounted.push(PERSIST_DIR.into());
    let (r, out) = run_on(&f);
    r.unwrap();
    assert!(out.contains("(found by its label)"), "{out}");
    assert_eq!(f.0.borrow().pointer, pointer_to(OURS));
    // The next boot: named by the pointer, nothing written again.
    let next = world(f.0.borrow().inv.clone());
    next.0.borrow_mut().mounted.push(PERSIST_DIR.into());
    next.0.borrow_mut().pointer = f.0.borrow().pointer.clone();
    let (r, out) = run_on(&next);
    r.unwrap();
    assert!(out.contains("(named by the pool pointer"), "{out}");
    assert!(
        !next
            .0
            .borrow()
            .lines
            .iter()
            .any(|l| l.contains(POINTER_PATH)),
        "{:?}",
        next.0.borrow().lines
    );
}

#[test]
fn without_persist_nothing_is_remembered() {
    let mut inv = with_pool();
    inv.devices.last_mut().unwrap().partuuid = Some(OURS.into());
    let f = world(inv);
    run_on(&f).0.unwrap();
    assert_eq!(f.0.borrow().pointer, None);
}

#[test]
fn a_pool_left_open_by_the_first_boot_is_remembered_from_its_mapping() {
    let mut inv = with_pool();
    inv.devices.last_mut().unwrap().partuuid = Some(OURS.into());
    inv.devices
        .push(dm("dm-1", 1, POOL_MAPPING, &["nvme0n1p1"]));
    let f = world(inv);
    {
        let mut w = f.0.borrow_mut();
        w.unlocked = true;
        w.mounted.push(PERSIST_DIR.into());
    }
    run_on(&f).0.unwrap();
    assert_eq!(f.0.borrow().pointer, pointer_to(OURS));
    assert!(!f
        .0
        .borrow()
        .lines
        .iter()
        .any(|l| l.starts_with("systemd-cryptsetup")));
}

#[test]
fn a_stale_or_broken_pointer_falls_back_to_the_label_and_is_written_again() {
    for (pointer, said) in [
        (pointer_to(THEIRS), None),
        (
            Some("{\"disk\":\"sdb\"}".to_string()),
            Some("unknown field"),
        ),
    ] {
        let mut inv = with_pool();
        inv.devices.last_mut().unwrap().partuuid = Some(OURS.into());
        let f = world(inv);
        {
            let mut w = f.0.borrow_mut();
            w.mounted.push(PERSIST_DIR.into());
            w.pointer = pointer;
        }
        let (r, out) = run_on(&f);
        r.unwrap();
        assert!(out.contains("(found by its label)"), "{out}");
        if let Some(said) = said {
            assert!(out.contains(said) && out.contains("warning"), "{out}");
        }
        assert_eq!(f.0.borrow().pointer, pointer_to(OURS));
    }
}

#[test]
fn a_zfs_pool_is_imported_without_mounts_then_its_datasets_mounted_where_btrfs_has_its_subvolumes()
{
    let f = world(with_pool());
    f.0.borrow_mut().fstype = Some("zfs_member".into());
    let (r, out) = run_on(&f);
    assert_eq!(
        r.unwrap(),
        Outcome::Mounted {
            incus_on_pool: true
        }
    );
    let w = f.0.borrow();
    let cmds: Vec<&str> = w
        .lines
        .iter()
        .filter(|l| !l.starts_with('('))
        .map(String::as_str)
        .collect();
    assert_eq!(
        cmds,
        [
            "systemd-cryptsetup attach anklume-pool /dev/nvme0n1p1 - tries=0",
            "zpool import -N -o cachefile=none -d /dev/mapper/anklume-pool anklume",
            "mount -t zfs -o noatime anklume /var/lib/anklume/pool",
            "mount -t zfs -o noatime anklume/anklume /var/lib/anklume/pool/anklume",
            "mount -t zfs -o noatime anklume/incus /var/lib/incus",
        ],
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    drop(w);
    // A second run (the unit restarted): nothing to do.
    let before = f.0.borrow().lines.len();
    run_on(&f).0.unwrap();
    assert_eq!(f.0.borrow().lines.len(), before, "{:?}", f.0.borrow().lines);
}
