//! On fake machines: a sysfs/udev/dev tree whose partition device nodes
//! are FAT image files made by the builder's own ESP writer.

use std::os::unix::fs::symlink;

use anklume_contract::bootenv::BootEnv;
use anklume_contract::bootfiles::GRUBENV;
use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::partition::{ESP_TYPE, SLOT_TYPE_X86_64};
use anklume_contract::Slot;

use super::testing::{FakeMachine, Part, SLOT_PARTUUID as UUID_A};
use super::*;

/// A fake machine in its own temporary folder.
struct Machine {
    m: FakeMachine,
    _tmp: tempfile::TempDir,
}

impl std::ops::Deref for Machine {
    type Target = FakeMachine;
    fn deref(&self) -> &FakeMachine {
        &self.m
    }
}

impl Machine {
    fn new() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        Machine {
            m: FakeMachine::at(tmp.path()),
            _tmp: tmp,
        }
    }
}

fn env(slot: Slot, toram: bool) -> BootEnv {
    BootEnv {
        slot: Some(slot),
        partuuid: Some(UUID_A.into()),
        toram,
        ..BootEnv::default()
    }
}

fn armed_b() -> BootState {
    let mut st = BootState::fresh();
    st.arm(Slot::B, 2);
    st
}

#[test]
fn marks_the_booted_slot_good_on_its_own_disk_only() {
    let m = Machine::new();
    // Slot A of sda booted; B was armed and failed (GRUB fell back to A).
    m.stick("sda", 8, &armed_b(), false, None);
    // Another disk with an ESP holding the same state: never touched.
    m.disk(
        "sdb",
        false,
        None,
        &[Part {
            name: "sdb1",
            dev: "8:17",
            ptype: ESP_TYPE,
            label: "anklume-esp",
            partuuid: "00000000-1111-4000-8000-000000000001",
            fat: Some(&armed_b()),
        }],
    );
    let sdb_before = m.file("dev/sdb1");
    let sda_before = m.file("dev/sda1");

    let Located::Esp(esp) = locate(&m.root, &env(Slot::A, false)).unwrap() else {
        panic!("the ESP is reachable")
    };
    assert_eq!((esp.name.as_str(), esp.disk.as_str()), ("sda1", "sda"));
    assert_eq!(esp.display_name(&m.root), "/dev/sda1");
    assert_eq!(esp.read_only, None);
    assert_eq!(read(&esp).unwrap().state, armed_b());

    let out = mark_good(&m.root, &env(Slot::A, false)).unwrap();
    let mut want = armed_b();
    want.mark_good(Slot::A);
    assert_eq!(
        out,
        Marked::Written {
            before: armed_b(),
            after: want.clone()
        }
    );
    assert!(
        out.describe(Slot::A).contains("slot a marked good"),
        "{out:?}"
    );
    let r = read(&esp).unwrap();
    assert_eq!(r.state, want);
    assert_eq!(r.state.primary, Slot::A);
    // Variables that are not the boot state are kept.
    assert_eq!(r.vars.get("anklume_toram").map(String::as_str), Some("1"));
    // Only the block's first sector changed on sda1; sdb1 is untouched.
    let sda_after = m.file("dev/sda1");
    let changed: Vec<usize> = (0..sda_after.len())
        .filter(|&i| sda_after[i] != sda_before[i])
        .collect();
    assert!(!changed.is_empty());
    assert!(changed.last().unwrap() - changed[0] < 512, "{changed:?}");
    assert_eq!(m.file("dev/sdb1"), sdb_before);

    // Again: already good, nothing written.
    let again = mark_good(&m.root, &env(Slot::A, false)).unwrap();
    assert_eq!(again, Marked::AlreadyGood(want));
    assert_eq!(m.file("dev/sda1"), sda_after);

    let rep = report(&m.root, &env(Slot::A, false)).unwrap().unwrap();
    assert_eq!(rep.esp, "/dev/sda1");
    assert_eq!(
        (rep.primary, rep.good_a, rep.good_b),
        (Slot::A, true, false)
    );
    assert_eq!((rep.tries_a, rep.tries_b), (None, Some(2)));
}

#[test]
fn a_new_slot_that_came_up_is_marked_good_and_stops_counting() {
    let m = Machine::new();
    m.stick("vda", 252, &armed_b(), false, None);
    // The booted slot is B this time (its PARTUUID is UUID_A here).
    let out = mark_good(&m.root, &env(Slot::B, false)).unwrap();
    let Marked::Written { after, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(after.primary, Slot::B);
    assert_eq!(after.tries(Slot::B), None);
    assert!(after.is_good(Slot::B) && after.is_good(Slot::A));
}

#[test]
fn read_only_media_are_left_alone() {
    let cases = [
        // A CD: the initrd's read-only partition-scanning loop over sr0.
        (
            "loop0",
            true,
            Some("/dev/sr0"),
            "booted from a CD/DVD (loop0 over /dev/sr0)",
        ),
        // Ventoy: a loop over the ventoy mapping.
        ("loop0", false, Some("/dev/mapper/ventoy"), "under Ventoy"),
        // Any device the kernel calls read-only (a write-protect switch).
        ("sdc", true, None, "the boot medium sdc is read-only"),
    ];
    for (disk, ro, backing, why) in cases {
        let m = Machine::new();
        m.stick(disk, 7, &armed_b(), ro, backing);
        let esp_node = if disk.starts_with("loop") {
            format!("dev/{disk}p1")
        } else {
            format!("dev/{disk}1")
        };
        let before = m.file(&esp_node);
        let out = mark_good(&m.root, &env(Slot::A, false)).unwrap();
        let Marked::ReadOnly { why: got, state } = &out else {
            panic!("{disk}: {out:?}")
        };
        assert!(got.contains(why), "{disk}: {got}");
        assert_eq!(state.as_ref(), Some(&armed_b()));
        assert!(out.describe(Slot::A).contains("not written"), "{out:?}");
        assert_eq!(m.file(&esp_node), before, "{disk}: nothing written");
        let rep = report(&m.root, &env(Slot::A, false)).unwrap().unwrap();
        assert!(rep.read_only.unwrap().contains(why));
    }
}

#[test]
fn ventoy_behind_a_dm_node_is_recognised() {
    let m = Machine::new();
    let dm = m.root.join("sys/devices/virtual/block/dm-3/dm");
    std::fs::create_dir_all(&dm).unwrap();
    std::fs::write(dm.join("name"), "ventoy\n").unwrap();
    symlink(dm.parent().unwrap(), m.root.join("sys/class/block/dm-3")).unwrap();
    m.stick("loop1", 7, &BootState::fresh(), false, Some("/dev/dm-3"));
    let out = mark_good(&m.root, &env(Slot::A, false)).unwrap();
    assert!(
        matches!(&out, Marked::ReadOnly { why, .. } if why.contains("Ventoy")),
        "{out:?}"
    );
}

#[test]
fn a_released_medium_is_unreachable_not_an_error() {
    let m = Machine::new();
    let out = mark_good(&m.root, &env(Slot::A, true)).unwrap();
    let Marked::Unreachable(why) = &out else {
        panic!("{out:?}")
    };
    assert!(why.contains("toram") && why.contains(UUID_A), "{why}");
    let out = mark_good(&m.root, &env(Slot::A, false)).unwrap();
    assert!(
        matches!(&out, Marked::Unreachable(w) if w.contains("gone")),
        "{out:?}"
    );
    let no_live = BootEnv::default();
    assert!(matches!(
        locate(&m.root, &no_live).unwrap(),
        Located::Unreachable(_)
    ));
}

#[test]
fn errors_name_what_is_wrong() {
    // No booted slot in boot.env.
    let m = Machine::new();
    let e = mark_good(&m.root, &BootEnv::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("names no booted slot"), "{e}");

    // A disk without an ESP.
    let m = Machine::new();
    m.disk(
        "sda",
        false,
        None,
        &[Part {
            name: "sda2",
            dev: "8:2",
            ptype: SLOT_TYPE_X86_64,
            label: "anklume-slot-a",
            partuuid: UUID_A,
            fat: None,
        }],
    );
    let e = format!(
        "{:#}",
        mark_good(&m.root, &env(Slot::A, false)).unwrap_err()
    );
    assert!(
        e.contains("boot disk sda has no partition of the ESP type"),
        "{e}"
    );

    // An ESP without the block.
    let m = Machine::new();
    m.stick("sda", 8, &BootState::fresh(), false, None);
    anklume_esp::write_esp(&m.root.join("dev/sda1"), 8 << 20, 1, &[]).unwrap();
    let e = format!(
        "{:#}",
        mark_good(&m.root, &env(Slot::A, false)).unwrap_err()
    );
    assert!(e.contains("EFI/anklume/grubenv is not on the ESP"), "{e}");

    // A block that is not a boot state.
    let m = Machine::new();
    m.stick("sda", 8, &BootState::fresh(), false, None);
    let mut vars = BootState::fresh().to_vars();
    vars.insert("anklume_tries_b".into(), "9".into());
    let block = encode_envblk(&vars).unwrap();
    anklume_esp::rewrite_in_place(&m.root.join("dev/sda1"), 0, GRUBENV, &block).unwrap();
    let before = m.file("dev/sda1");
    let e = format!(
        "{:#}",
        mark_good(&m.root, &env(Slot::A, false)).unwrap_err()
    );
    assert!(e.contains("anklume_tries_b=9"), "{e}");
    assert_eq!(m.file("dev/sda1"), before);
}

#[test]
fn a_mounted_esp_is_written_through_its_mount_never_under_it() {
    let m = Machine::new();
    m.stick("sda", 8, &armed_b(), false, None);
    // The kernel has sda1 (8:1) mounted at /boot/efi: a copy of its files
    // stands in for the mounted FAT.
    let efi = m.root.join("boot/efi/EFI/anklume");
    std::fs::create_dir_all(&efi).unwrap();
    let block = anklume_esp::read_file(&m.root.join("dev/sda1"), 0, GRUBENV).unwrap();
    std::fs::write(efi.join("grubenv"), &block).unwrap();
    std::fs::create_dir_all(m.root.join("proc/self")).unwrap();
    std::fs::write(
        m.root.join("proc/self/mountinfo"),
        "22 1 0:21 / / rw - overlay anklume-root rw\n\
         40 22 8:1 / /boot/efi rw,relatime - vfat /dev/sda1 rw\n",
    )
    .unwrap();
    let device_before = m.file("dev/sda1");
    let Located::Esp(esp) = locate(&m.root, &env(Slot::A, false)).unwrap() else {
        panic!("reachable")
    };
    assert_eq!(esp.mounted_at, Some(m.root.join("boot/efi")));
    let out = mark_good(&m.root, &env(Slot::A, false)).unwrap();
    assert!(matches!(out, Marked::Written { .. }), "{out:?}");
    assert_eq!(
        m.file("dev/sda1"),
        device_before,
        "nothing written under the mount"
    );
    let r = read(&esp).unwrap();
    assert!(r.state.is_good(Slot::A) && r.state.primary == Slot::A);
    assert_eq!(r.vars.get("anklume_toram").map(String::as_str), Some("1"));
    assert_eq!(m.file("boot/efi/EFI/anklume/grubenv").len(), 1024);
    // A block of the wrong size there is refused, not rewritten.
    std::fs::write(efi.join("grubenv"), b"short").unwrap();
    let e = format!(
        "{:#}",
        mark_good(&m.root, &env(Slot::B, false)).unwrap_err()
    );
    assert!(e.contains("GRUB environment"), "{e}");
}

#[test]
fn an_unhealthy_trial_boot_falls_back_to_the_good_slot_and_nothing_else_does() {
    let m = Machine::new();
    // B was installed by an update and is on trial (2 tries left), A good.
    m.stick("sda", 8, &armed_b(), false, None);
    let out = fall_back(&m.root, &env(Slot::B, false)).unwrap();
    let mut want = armed_b();
    want.primary = Slot::A;
    want.tries = [None, Some(0)];
    assert_eq!(
        out,
        FellBack::Written {
            before: armed_b(),
            after: want.clone()
        }
    );
    assert!(out
        .describe(Slot::B)
        .starts_with("slot b failed its trial: slot a boots next"));
    let Located::Esp(esp) = locate(&m.root, &env(Slot::B, false)).unwrap() else {
        panic!("the ESP is reachable")
    };
    let back = read(&esp).unwrap();
    assert_eq!(back.state, want);
    // The block's other variables are kept.
    assert_eq!(
        back.vars.get("anklume_toram").map(String::as_str),
        Some("1")
    );

    // The next boot (A, good): unhealthy or not, it is not on trial.
    let before = m.file("dev/sda1");
    let again = fall_back(&m.root, &env(Slot::A, false)).unwrap();
    assert!(
        matches!(again, FellBack::Nothing(ref w) if w.contains("slot a is not on trial")),
        "{again:?}"
    );
    assert_eq!(m.file("dev/sda1"), before);
}

/// A stick in state `st` booted from `slot`: `fall_back` writes nothing,
/// saying `why`.
fn no_fallback(st: &BootState, slot: Slot, ro: bool, why: &str) {
    let m = Machine::new();
    m.stick("sda", 8, st, ro, None);
    let before = m.file("dev/sda1");
    let out = fall_back(&m.root, &env(slot, false)).unwrap();
    let said = match &out {
        FellBack::Nothing(w) | FellBack::NotWritable(w) => w.clone(),
        FellBack::Written { .. } => panic!("written: {out:?}"),
    };
    assert!(said.contains(why), "{out:?}");
    assert_eq!(m.file("dev/sda1"), before);
}

#[test]
fn no_fallback_from_a_good_slot_or_to_a_slot_that_is_not_good() {
    // A good slot that is unhealthy stays where it is.
    no_fallback(&BootState::fresh(), Slot::A, false, "not on trial");
    // B failed earlier and was picked by hand from GRUB's menu: not on
    // trial (A is primary).
    let mut failed = armed_b();
    failed.fail_trial(Slot::B);
    no_fallback(&failed, Slot::B, false, "not on trial");
    // B on trial, but A is not good either: nothing better to go back to.
    let mut st = armed_b();
    st.good = [false, false];
    no_fallback(&st, Slot::B, false, "slot a is not good");
    // A read-only medium: said, not written.
    no_fallback(&armed_b(), Slot::B, true, "read-only");
}

#[test]
fn two_sticks_from_one_image_the_opened_one_or_none() {
    // Every stick written from one image has the same PARTUUIDs.
    let m = Machine::new();
    m.stick("sda", 8, &BootState::fresh(), false, None);
    m.stick("sdb", 8 + 8, &armed_b(), false, None);
    let mut e = env(Slot::A, false);
    // The initrd opened sdb2: sdb's ESP, whatever the by-partuuid link says.
    e.device = Some("/dev/sdb2".into());
    let Located::Esp(esp) = locate(&m.root, &e).unwrap() else {
        panic!("sdb's ESP")
    };
    assert_eq!((esp.name.as_str(), esp.disk.as_str()), ("sdb1", "sdb"));
    let sda = m.file("dev/sda1");
    assert!(matches!(
        mark_good(&m.root, &e).unwrap(),
        Marked::Written { .. }
    ));
    assert_eq!(m.file("dev/sda1"), sda, "the other stick is never written");
    // Without device= (an older initrd): two candidates, none chosen.
    e.device = None;
    match locate(&m.root, &e).unwrap() {
        Located::Unreachable(why) => assert!(why.contains("2 partitions (sda2, sdb2)"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The opened device is gone (another disk took its name, or none).
    e.device = Some("/dev/sdc2".into());
    match locate(&m.root, &e).unwrap() {
        Located::Unreachable(why) => assert!(why.contains("/dev/sdc2"), "{why}"),
        other => panic!("{other:?}"),
    }
}
