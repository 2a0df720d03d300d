//! `anklume-firstboot` without a terminal: preseed dry runs, disk listing,
//! and the refusals.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anklume_provision::testdata::{cd_boot, usb_boot};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anklume-firstboot"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn preseed_dry_run_prints_the_full_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "inv.json",
        &serde_json::to_string(&usb_boot()).unwrap(),
    );
    let seed = write(
        dir.path(),
        "seed.toml",
        "[disk]\nmodel = \"ST2000*\"\n\n[encryption]\npassphrase = \"correct horse\"\n",
    );
    let o = run(&["--dry-run", "--inventory", &inv, "--preseed", &seed]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.starts_with(&format!("Preseed: {seed}\nPool plan\n")),
        "{out}"
    );
    assert!(
        out.contains("  disk:        /dev/disk/by-id/ata-ST2000DM008_ZFL0ABCD\n"),
        "{out}"
    );
    assert!(
        out.contains("  wipe:        nothing to destroy (blank disk)\n"),
        "{out}"
    );
    assert!(out.contains("Commands (secrets go on stdin, never on a command line):\n  sgdisk --zap-all /dev/disk/by-id/ata-ST2000DM008_ZFL0ABCD\n"), "{out}");
    assert!(
        out.contains("  cryptsetup luksFormat --batch-mode --type luks2"),
        "{out}"
    );
    assert!(
        out.ends_with("  cryptsetup close anklume-pool\nDry run: nothing was written.\n"),
        "{out}"
    );
    assert!(!out.contains("correct horse"), "{out}");
}

#[test]
fn preseed_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "inv.json",
        &serde_json::to_string(&usb_boot()).unwrap(),
    );
    let seed = write(
        dir.path(),
        "seed.toml",
        "[disk]\nserial = \"4C530001230519\"\n\n[encryption]\npassphrase = \"correct horse\"\n",
    );
    let o = run(&["--dry-run", "--inventory", &inv, "--preseed", &seed]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.starts_with(&format!("anklume-firstboot: {seed}: line 1: [disk]: no offered disk matches serial = \"4C530001230519\"; matching but never offered: sda (the boot medium")),
        "{err}"
    );
    let bad = write(dir.path(), "bad.toml", "[disk]\nserial = \"x\"\nsize = 3\n");
    let (_, err) = text(&run(&["--dry-run", "--inventory", &inv, "--preseed", &bad]));
    assert!(
        err.contains(&format!(
            "{bad}: line 3, column 1: at `disk.size`: unknown field `size`"
        )),
        "{err}"
    );
}

#[test]
fn a_fake_inventory_is_refused_outside_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "inv.json",
        &serde_json::to_string(&usb_boot()).unwrap(),
    );
    let seed = write(
        dir.path(),
        "seed.toml",
        "[disk]\nserial = \"ZFL0ABCD\"\n[encryption]\npassphrase = \"12345678\"\n",
    );
    let o = run(&["--inventory", &inv, "--preseed", &seed]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err,
        "anklume-firstboot: --inventory is a fake machine: it is only accepted with --dry-run or --list-disks\n"
    );
}

#[test]
fn list_disks_shows_offered_and_excluded_drives_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "inv.json",
        &serde_json::to_string(&cd_boot()).unwrap(),
    );
    let o = run(&["--list-disks", "--inventory", &inv]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let offered = out.split("Not offered:").next().unwrap();
    assert!(
        offered.contains("nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456 — 500.0 GB"),
        "{out}"
    );
    assert!(
        !offered.contains("sr0") && !offered.contains("QEMU_DVD"),
        "{out}"
    );
    assert!(
        out.contains(
            "  sr0: the boot medium (holds /: dm-0 on /run/anklume/ro → loop0p2 → loop0 → sr0)\n"
        ),
        "{out}"
    );
}

#[test]
fn without_a_terminal_or_preseed_the_wizard_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "inv.json",
        &serde_json::to_string(&usb_boot()).unwrap(),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_anklume-firstboot"))
        .args(["--dry-run", "--inventory", &inv])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("no terminal for the wizard: give --preseed FILE"),
        "{err}"
    );
}

#[test]
fn broken_inventory_json_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write(dir.path(), "inv.json", r#"{"devices": [{"name": "sda"}]}"#);
    let (_, err) = text(&run(&["--list-disks", "--inventory", &inv]));
    assert!(err.contains("inventory JSON: at `devices[0]`"), "{err}");
}

#[test]
fn the_boot_run_takes_no_fake_machine_and_no_dry_run() {
    // --boot writes for real: a fake inventory or a dry run with it would
    // make it plan against something else than what it writes.
    for extra in [
        &["--dry-run"][..],
        &["--inventory", "x.json"],
        &["--no-seed"],
    ] {
        let mut args = vec!["--boot"];
        args.extend_from_slice(extra);
        let o = run(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
}

#[test]
fn the_console_runs_take_no_fake_machine_no_dry_run_and_no_preseed() {
    // --console and --console-on write for real, from the wizard's answers.
    for run_kind in [&["--console"][..], &["--console-on", "ttyS0"]] {
        for extra in [
            &["--dry-run"][..],
            &["--inventory", "x.json"],
            &["--preseed", "x.toml"],
            &["--boot"],
        ] {
            let mut args = run_kind.to_vec();
            args.extend_from_slice(extra);
            let o = run(&args);
            let (_, err) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains("cannot be used with"), "{args:?}: {err}");
        }
    }
}
