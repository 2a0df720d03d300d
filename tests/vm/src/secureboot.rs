//! Secure Boot scenarios (OVMF's Secure Boot firmware, `q35,smm=on`):
//!
//! - `uefi-sb-own`: a variable store whose PK, KEK and db hold only the
//!   build's certificate (no Microsoft key): shim runs on our signature,
//!   Debian's GRUB on shim's trust, our UKI on db.
//! - `uefi-sb-ms`: the stock store (Microsoft keys): the first boot refuses
//!   the UKI and falls to MokManager, which the test drives like a user
//!   ("Enroll key from disk", our certificate on the ESP); the next boot
//!   reaches the verified root.
//! - `sb-tampered`: one byte changed in the UKI's initrd, then in its
//!   command line (the root hash): shim refuses each before Linux starts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use anklume_build::esp;
use anklume_build::signing::pe_section;
use anklume_cmd::Cmd;
use anklume_contract::bootfiles;
use anklume_contract::Slot;

use crate::mok::MokDriver;
use crate::qemu::{Vm, VmConfig, OVMF_VARS, OVMF_VARS_MS};
use crate::scenario::{
    boot_and_report, check_verified_boot, copy_image, expect, tail, ImageFacts, Outcome,
};

/// What GRUB prints when shim refuses a chainloaded image.
const REFUSED: &str = "bad shim signature";
/// Owner GUID of the certificates we enrol (any GUID; this one is ours).
const OWNER: &str = "a7c1e5d2-3b4f-4e6a-9d8c-616e6b6c756d";

/// The build's certificate, read from the image's ESP.
fn cert(facts: &ImageFacts, image: &Path, dir: &Path) -> Result<PathBuf> {
    let der = esp::read_file(image, facts.esp_offset, bootfiles::SB_CERT).with_context(|| {
        format!(
            "{} has no {}: build it with a signing key (make test does)",
            image.display(),
            bootfiles::SB_CERT
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let p = dir.join("anklume-sb.der");
    std::fs::write(&p, der)?;
    Ok(p)
}

/// A variable store with only `cert` as PK, KEK and db, Secure Boot on.
fn own_keys_vars(cert: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("OVMF_VARS.own.fd");
    Cmd::new("virt-fw-vars")
        .args(["--input", OVMF_VARS, "--set-pk", OWNER])
        .arg(cert)
        .args(["--add-kek", OWNER])
        .arg(cert)
        .args(["--add-db", OWNER])
        .arg(cert)
        .arg("--sb")
        .arg("--output")
        .arg(&out)
        .run()
        .context("making a variable store with the build's certificate")?;
    Ok(out)
}

/// The checks of every Secure Boot boot that reaches userspace.
fn check_secure_boot(out: &Outcome, facts: &ImageFacts, console: &str) -> Result<()> {
    check_verified_boot(&out.report, facts, Slot::A)?;
    expect(&out.report, "secure_boot", "on")?;
    ensure!(
        started_signed_uki(console, Slot::A),
        "GRUB did not take the Secure Boot path; console tail:\n{}",
        tail(console, 25)
    );
    Ok(())
}

pub(crate) fn console_of(cfg: &VmConfig) -> Result<String> {
    Ok(crate::qemu::strip_escapes(&String::from_utf8_lossy(
        &std::fs::read(cfg.dir.join("console.log"))?,
    )))
}

/// Secure Boot on with a variable store that trusts only the build's
/// certificate (read from `image`'s ESP), for `cfg`.
pub(crate) fn trust_only_the_build(
    facts: &ImageFacts,
    cfg: &mut VmConfig,
    image: &Path,
) -> Result<()> {
    let cert = cert(facts, image, &cfg.dir)?;
    cfg.secure_boot_vars = Some(own_keys_vars(&cert, &cfg.dir)?);
    Ok(())
}

/// Whether GRUB took the Secure Boot path and started slot `s`'s signed UKI.
pub(crate) fn started_signed_uki(console: &str, s: Slot) -> bool {
    console.contains(&format!(
        "anklume: Secure Boot is on: starting the signed UKI of slot {s}"
    ))
}

pub fn own_keys(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    trust_only_the_build(facts, &mut cfg, image)?;
    let out = boot_and_report(&cfg, Duration::from_secs(900))?;
    check_secure_boot(&out, facts, &console_of(&cfg)?)?;
    Ok(out)
}

pub fn stock_keys_with_mok(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    _image: &Path,
) -> Result<Outcome> {
    std::fs::create_dir_all(&cfg.dir)?;
    let vars = cfg.dir.join("OVMF_VARS.ms.fd");
    std::fs::copy(OVMF_VARS_MS, &vars)
        .with_context(|| format!("copying {OVMF_VARS_MS} (install ovmf: ci/setup-image)"))?;
    cfg.secure_boot_vars = Some(vars);
    // First boot: the key is not enrolled, GRUB falls back to MokManager.
    let t = Instant::now();
    let mut first = cfg.clone();
    first.dir = cfg.dir.join("enrol");
    first.monitor = true;
    let mut vm = Vm::start(&first)?;
    {
        let mut mok = MokDriver::new(&vm);
        mok.enroll_from_disk("ANKLUME-ESP", bootfiles::SB_CERT, Duration::from_secs(300))
            .context("enrolling the build's certificate with MokManager")?;
    }
    let console = vm.console();
    ensure!(
        console.contains(REFUSED),
        "MokManager ran, but GRUB did not first refuse the UKI; console tail:\n{}",
        tail(&console, 25)
    );
    // MokManager's Reboot: QEMU exits (-no-reboot).
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.running() {
        if Instant::now() > deadline {
            bail!("QEMU still runs 60 s after MokManager's Reboot");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    vm.close()?;
    let enrol = t.elapsed().as_secs_f64();
    // Second boot, same variable store: the UKI is trusted now.
    let mut out = boot_and_report(&cfg, Duration::from_secs(900))?;
    check_secure_boot(&out, facts, &console_of(&cfg)?)?;
    out.stage_times.insert(0, ("mok-enrolled".into(), enrol));
    Ok(out)
}

/// Which byte of the UKI a tamper case changes.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// A byte in the middle of the embedded initrd.
    Initrd,
    /// One hex digit of the root hash in the embedded command line.
    RootHash,
}

fn tampered_uki(uki: &[u8], change: Change) -> Result<Vec<u8>> {
    let mut v = uki.to_vec();
    match change {
        Change::Initrd => {
            let (off, len) = pe_section(uki, ".initrd")?;
            ensure!(len > 0, "the UKI's .initrd is empty");
            v[off + len / 2] ^= 0x01;
        }
        Change::RootHash => {
            let (off, len) = pe_section(uki, ".cmdline")?;
            let cmdline = &uki[off..off + len];
            let key = b"anklume.roothash=";
            let at = cmdline
                .windows(key.len())
                .position(|w| w == key)
                .context("the UKI's command line has no anklume.roothash=")?;
            let i = off + at + key.len();
            v[i] = if v[i] == b'0' { b'1' } else { b'0' };
        }
    }
    Ok(v)
}

pub fn tampered(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    let cert = cert(facts, image, &cfg.dir)?;
    let vars = own_keys_vars(&cert, &cfg.dir)?;
    let uki_path = bootfiles::slot_file(Slot::A, bootfiles::UKI);
    let uki = esp::read_file(image, facts.esp_offset, &uki_path)?;
    let mut out = Outcome::default();
    let base = cfg.dir.clone();
    for (change, name) in [(Change::Initrd, "initrd"), (Change::RootHash, "roothash")] {
        let dir = base.join(name);
        let copy = copy_image(image, &dir, "tampered.img")?;
        esp::write_file(
            &copy,
            facts.esp_offset,
            &uki_path,
            &tampered_uki(&uki, change)?,
        )?;
        // Each boot gets its own copy of the store: nothing carries over.
        let v = dir.join("OVMF_VARS.fd");
        std::fs::copy(&vars, &v)?;
        cfg.secure_boot_vars = Some(v);
        cfg.image = copy.clone();
        cfg.dir = dir;
        let t = Instant::now();
        let vm = Vm::start(&cfg)?;
        let r = wait_refused(&vm, Duration::from_secs(300));
        vm.close()?;
        std::fs::remove_file(&copy)?;
        r.with_context(|| format!("UKI with a changed {name}"))?;
        eprintln!(
            "  changed {name}: refused by shim ({REFUSED}) after {:.0} s",
            t.elapsed().as_secs_f64()
        );
        out.stage_times
            .push((format!("{name}-refused"), t.elapsed().as_secs_f64()));
    }
    Ok(out)
}

/// GRUB must report shim's refusal, and Linux must never start.
fn wait_refused(vm: &Vm, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let c = vm.console();
        if c.contains("Linux version") || c.contains("Command line:") {
            bail!("Linux started; console tail:\n{}", tail(&c, 25));
        }
        if c.contains(REFUSED) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "no \"{REFUSED}\" within {} s; console tail:\n{}",
                timeout.as_secs(),
                tail(&c, 25)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_uki() -> Vec<u8> {
        // MZ, PE at 0x40, 2 sections, no optional header.
        let mut pe = vec![0u8; 0x300];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x46] = 2;
        let sec = |pe: &mut Vec<u8>, i: usize, name: &[u8], off: u32, len: u32| {
            let s = 0x40 + 24 + i * 40;
            pe[s..s + name.len()].copy_from_slice(name);
            pe[s + 8..s + 12].copy_from_slice(&len.to_le_bytes());
            pe[s + 16..s + 20].copy_from_slice(&len.to_le_bytes());
            pe[s + 20..s + 24].copy_from_slice(&off.to_le_bytes());
        };
        let cmd = b"ro anklume.roothash=0abc anklume.version=1";
        sec(&mut pe, 0, b".cmdline", 0x100, cmd.len() as u32);
        sec(&mut pe, 1, b".initrd", 0x200, 0x80);
        pe[0x100..0x100 + cmd.len()].copy_from_slice(cmd);
        pe
    }

    #[test]
    fn each_change_touches_one_byte_of_its_section() {
        let uki = fake_uki();
        let a = tampered_uki(&uki, Change::RootHash).unwrap();
        let diff: Vec<usize> = (0..uki.len()).filter(|&i| a[i] != uki[i]).collect();
        assert_eq!(diff.len(), 1);
        assert_eq!(&a[diff[0] - 17..=diff[0]], b"anklume.roothash=1");
        let b = tampered_uki(&uki, Change::Initrd).unwrap();
        let diff: Vec<usize> = (0..uki.len()).filter(|&i| b[i] != uki[i]).collect();
        assert_eq!(diff, [0x240]);
    }
}
