//! The wizard, end to end through a pseudo-terminal, in dry-run mode over a
//! fake machine: a USB-stick boot with an empty NVMe disk and a SATA disk
//! holding an NTFS partition.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anklume_provision::inventory::Inventory;
use anklume_provision::testdata::{part, usb_boot, GB};
use expectrl::{Eof, Session};

/// The boot stick's identifiers (see `testdata::boot_stick`): they must
/// never reach the screen.
const BOOT_SERIAL: &str = "4C530001230519";
const BOOT_BY_ID: &str = "ata-SanDisk_Ultra_4C530001230519";

fn machine() -> Inventory {
    let mut inv = usb_boot();
    let sdb = inv.devices.iter_mut().find(|d| d.name == "sdb").unwrap();
    sdb.part_table = Some("gpt".into());
    let mut p = part("sdb1", "sdb", (8, 17), 1000 * GB);
    p.fs_type = Some("ntfs".into());
    p.fs_label = Some("Photos".into());
    inv.devices.push(p);
    inv
}

fn write_inventory(dir: &Path, inv: &Inventory) -> String {
    let p = dir.join("inventory.json");
    std::fs::write(&p, serde_json::to_string_pretty(inv).unwrap()).unwrap();
    p.to_str().unwrap().to_string()
}

struct Pty {
    s: Session,
    screen: String,
}

impl Pty {
    fn start(args: &[&str]) -> Pty {
        // expectrl's pty starts with echo off, where `send_secret` could
        // not tell the passphrase prompt from any other: turn it on, as on
        // a real console, before the wizard starts. (Not checked here: the
        // wizard's first menu may already have switched to raw mode.)
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"stty echo && exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_anklume-firstboot"))
            .args(args)
            .env("TERM", "vt100");
        let mut s = Session::spawn(cmd).expect("spawning the wizard in a pty");
        s.set_expect_timeout(Some(Duration::from_secs(30)));
        Pty {
            s,
            screen: String::new(),
        }
    }

    fn wait_echo_off(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self
            .s
            .get_process()
            .get_echo()
            .expect("reading the pty's echo flag")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the passphrase prompt never turned echo off\nscreen so far:\n{}",
                self.screen
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for `text`; everything shown so far is kept.
    fn wait(&mut self, text: &str) {
        match self.s.expect(text) {
            Ok(c) => {
                self.screen.push_str(&String::from_utf8_lossy(c.before()));
                self.screen.push_str(text);
            }
            Err(e) => panic!("waiting for {text:?}: {e}\nscreen so far:\n{}", self.screen),
        }
    }

    fn send(&mut self, keys: &str) {
        self.s.send(keys).unwrap();
    }

    /// Type a secret line once the prompt has turned echo off. The prompt
    /// (console's `read_secure`) switches modes with `TCSAFLUSH`, which
    /// throws away whatever was typed before: sending on seeing the prompt
    /// text alone loses the passphrase now and then.
    fn send_secret(&mut self, line: &str) {
        self.wait_echo_off();
        self.send(&format!("{line}{ENTER}"));
    }

    fn finish(&mut self) -> i32 {
        let c = self.s.expect(Eof).unwrap();
        self.screen.push_str(&String::from_utf8_lossy(c.before()));
        match self.s.get_process_mut().wait().unwrap() {
            expectrl::WaitStatus::Exited(_, code) => code,
            other => panic!("wizard ended with {other:?}"),
        }
    }
}

const DOWN: &str = "\x1b[B";
const ENTER: &str = "\r";

#[test]
fn wizard_dry_run_plans_a_wipe_of_the_named_disk_and_never_lists_the_boot_stick() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &machine());
    let mut t = Pty::start(&["--dry-run", "--inventory", &inv]);
    t.wait("Not offered:");
    t.wait("sda: the boot medium (holds /: dm-0 on /run/anklume/ro → sda2 → sda)");
    t.wait("Disk for the encrypted pool");
    // Only physical disks are listed as not offered: not the verity mapping.
    assert!(!t.screen.contains("dm-0:"), "{}", t.screen);
    t.wait("nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456");
    t.wait("ata-ST2000DM008_ZFL0ABCD");
    // Second disk: it holds data, so its name must be typed.
    t.send(DOWN);
    t.send(ENTER);
    t.wait("is not blank: gpt partition table, sdb1 1.0 TB ntfs \"Photos\"");
    t.wait("type its /dev/disk/by-id name or serial");
    // A wrong name is refused and asked again.
    t.send("S466NX0M123456");
    t.send(ENTER);
    t.wait("does not name ata-ST2000DM008_ZFL0ABCD");
    t.send("ZFL0ABCD");
    t.send(ENTER);
    t.wait("Filesystem");
    t.send(ENTER);
    t.wait("No TPM 2.0 found");
    t.wait("Pool passphrase");
    t.send_secret("short");
    t.wait("must have at least 8 characters");
    t.wait("Pool passphrase");
    t.send_secret("correct horse battery");
    t.wait("Repeat the passphrase");
    t.send_secret("correct horse battery");
    t.wait("Pool plan");
    t.wait("disk:        /dev/disk/by-id/ata-ST2000DM008_ZFL0ABCD");
    t.wait("wipe:        YES, everything on it is destroyed (confirmed as \"ZFL0ABCD\")");
    t.wait("subvolumes:  incus, anklume, snapshots");
    t.wait("Dry run: nothing was written.");
    let code = t.finish();
    assert_eq!(code, 0, "{}", t.screen);
    for secret in [BOOT_SERIAL, BOOT_BY_ID, "correct horse battery", "short"] {
        assert!(
            !t.screen.contains(secret),
            "{secret:?} shown:\n{}",
            t.screen
        );
    }
}

#[test]
fn wizard_picks_a_blank_disk_without_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.tpm2 = true;
    let inv = write_inventory(dir.path(), &m);
    let mut t = Pty::start(&["--dry-run", "--inventory", &inv]);
    t.wait("Disk for the encrypted pool");
    t.send(ENTER);
    t.wait("Filesystem");
    t.send(DOWN);
    t.send(ENTER);
    t.wait("Enrol the TPM 2.0");
    t.send("y");
    t.wait("Pool passphrase");
    t.send_secret("correct horse battery");
    t.wait("Repeat the passphrase");
    t.send_secret("correct horse battery");
    t.wait("disk:        /dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456");
    t.wait("wipe:        nothing to destroy (blank disk)");
    t.wait("TPM2:        enrol");
    t.wait("zfs pool \"anklume\"");
    t.wait("Dry run: nothing was written.");
    assert_eq!(t.finish(), 0, "{}", t.screen);
    assert!(!t.screen.contains(BOOT_SERIAL), "{}", t.screen);
}
