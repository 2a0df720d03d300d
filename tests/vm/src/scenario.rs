//! Boot scenarios and what each asserts from inside the guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use anklume_build::{esp, gpt};
use anklume_contract::bootfiles;
use anklume_contract::bootstate::{decode_envblk, encode_envblk};
use anklume_contract::manifest::SlotManifest;
use anklume_contract::partition::{slot_label, ESP_LABEL};
use anklume_contract::Slot;

use crate::qemu::{Firmware, Medium, Vm, VmConfig};
use crate::tamper;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    BiosDisk,
    BiosCd,
    UefiDisk,
    UefiCd,
    Tampered,
    Toram,
    Persist,
    Rollback,
    UefiSbOwn,
    UefiSbMs,
    SbTampered,
    VentoyBios,
    VentoyUefi,
    VentoyGrub2Bios,
    VentoyGrub2Uefi,
    PoolBtrfs,
    PoolTpm,
    Update,
    UpdateBroken,
    UpdatePowercut,
    UpdateRejected,
    StickGrow,
    UpdateSb,
    Wizard,
    PoolWrongPassphrase,
    PoolZfs,
}

/// Which image a scenario boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Iso,
    Raw,
    /// The ZFS variant's raw image (`make iso-zfs`).
    RawZfs,
}

/// The images under test.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub iso: Option<PathBuf>,
    pub raw: Option<PathBuf>,
    pub raw_zfs: Option<PathBuf>,
    /// Ventoy's release files (the Ventoy scenarios make a stick from them);
    /// `None`: [`crate::ventoy::DEFAULT_RELEASE`].
    pub ventoy_release: Option<PathBuf>,
    /// The update scenarios' bundles: a newer version signed with the key
    /// the image trusts (`make test-bundles`), and one signed with another.
    pub bundle: Option<PathBuf>,
    pub foreign_bundle: Option<PathBuf>,
    /// update-broken's: a newer version whose health check always fails.
    pub broken_bundle: Option<PathBuf>,
}

impl Images {
    pub fn get(&self, k: ImageKind) -> Result<&Path> {
        match k {
            ImageKind::Iso => self.iso.as_deref().context("this scenario boots the ISO: pass --iso"),
            ImageKind::Raw => self.raw.as_deref().context(
                "this scenario boots the raw image: pass --raw (build it with `make iso FORMATS=iso,raw`)",
            ),
            ImageKind::RawZfs => self.raw_zfs.as_deref().context(
                "this scenario boots the ZFS variant's raw image: pass --raw-zfs (build it with `make iso-zfs`)",
            ),
        }
    }
}

impl Scenario {
    pub const ALL: [Scenario; 26] = [
        Scenario::BiosDisk,
        Scenario::UefiCd,
        Scenario::Tampered,
        Scenario::BiosCd,
        Scenario::UefiDisk,
        Scenario::Toram,
        Scenario::Persist,
        Scenario::Rollback,
        Scenario::UefiSbOwn,
        Scenario::UefiSbMs,
        Scenario::SbTampered,
        Scenario::VentoyBios,
        Scenario::VentoyUefi,
        Scenario::VentoyGrub2Bios,
        Scenario::VentoyGrub2Uefi,
        Scenario::PoolBtrfs,
        Scenario::PoolTpm,
        Scenario::Update,
        Scenario::UpdateBroken,
        Scenario::UpdatePowercut,
        Scenario::UpdateRejected,
        Scenario::StickGrow,
        Scenario::UpdateSb,
        Scenario::Wizard,
        Scenario::PoolWrongPassphrase,
        Scenario::PoolZfs,
    ];
    /// What CI runs: the minimum (BIOS disk, UEFI CD, tampered)
    /// plus toram, persist, rollback, the three Secure Boot scenarios and
    /// Ventoy's two modes (normal mode on UEFI, GRUB2 mode on BIOS), an
    /// update from A to B (which also makes the pool from a seed and
    /// unlocks it on the serial console: all that pool-btrfs checks), the
    /// same under Secure Boot with the pool unlocked by a TPM (update-sb:
    /// all that pool-tpm checks), a power cut during an update, and a
    /// stick written from the ISO growing slot B. bios-cd, uefi-disk and
    /// the other two Ventoy pairings only differ from these by the
    /// firmware × medium (or mode) pairing; pool-btrfs is within update,
    /// pool-tpm within update-sb; update-rejected's refusals are also host
    /// tests (crates/update/tests); update-broken takes four boots.
    pub const CI: [Scenario; 15] = [
        Scenario::BiosDisk,
        Scenario::UefiCd,
        Scenario::Tampered,
        Scenario::Toram,
        Scenario::Persist,
        Scenario::Rollback,
        Scenario::UefiSbOwn,
        Scenario::UefiSbMs,
        Scenario::SbTampered,
        Scenario::VentoyUefi,
        Scenario::VentoyGrub2Bios,
        Scenario::Update,
        Scenario::UpdateSb,
        Scenario::UpdatePowercut,
        Scenario::StickGrow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BiosDisk => "bios-disk",
            Scenario::BiosCd => "bios-cd",
            Scenario::UefiDisk => "uefi-disk",
            Scenario::UefiCd => "uefi-cd",
            Scenario::Tampered => "tampered",
            Scenario::Toram => "toram",
            Scenario::Persist => "persist",
            Scenario::Rollback => "rollback",
            Scenario::UefiSbOwn => "uefi-sb-own",
            Scenario::UefiSbMs => "uefi-sb-ms",
            Scenario::SbTampered => "sb-tampered",
            Scenario::VentoyBios => "ventoy-bios",
            Scenario::VentoyUefi => "ventoy-uefi",
            Scenario::VentoyGrub2Bios => "ventoy-grub2-bios",
            Scenario::VentoyGrub2Uefi => "ventoy-grub2-uefi",
            Scenario::PoolBtrfs => "pool-btrfs",
            Scenario::PoolTpm => "pool-tpm",
            Scenario::Update => "update",
            Scenario::UpdatePowercut => "update-powercut",
            Scenario::UpdateBroken => "update-broken",
            Scenario::StickGrow => "stick-grow",
            Scenario::UpdateRejected => "update-rejected",
            Scenario::UpdateSb => "update-sb",
            Scenario::Wizard => "wizard",
            Scenario::PoolWrongPassphrase => "pool-wrong-passphrase",
            Scenario::PoolZfs => "pool-zfs",
        }
    }

    pub fn image_kind(self) -> ImageKind {
        match self {
            Scenario::Persist
            | Scenario::Rollback
            | Scenario::PoolBtrfs
            | Scenario::PoolTpm
            | Scenario::Update
            | Scenario::UpdatePowercut
            | Scenario::UpdateBroken
            | Scenario::UpdateRejected
            | Scenario::UpdateSb
            | Scenario::Wizard
            | Scenario::PoolWrongPassphrase => ImageKind::Raw,
            Scenario::PoolZfs => ImageKind::RawZfs,
            _ => ImageKind::Iso,
        }
    }

    pub fn parse(s: &str) -> Result<Vec<Scenario>> {
        Ok(match s {
            "all" => Scenario::ALL.to_vec(),
            "ci" => Scenario::CI.to_vec(),
            _ => vec![*Scenario::ALL
                .iter()
                .find(|x| x.name() == s)
                .with_context(|| {
                    let names: Vec<&str> = Scenario::ALL.iter().map(|x| x.name()).collect();
                    format!("unknown scenario {s:?} (all, ci, {})", names.join(", "))
                })?],
        })
    }
}

/// What the image says about itself (read from its GPT and ESP).
#[derive(Debug)]
pub struct ImageFacts {
    pub manifest: SlotManifest,
    pub slot_offset: u64,
    pub esp_offset: u64,
    pub esp_size: u64,
    /// The whole GPT.
    pub parts: Vec<gpt::Entry>,
}

pub fn image_facts(image: &Path) -> Result<ImageFacts> {
    slot_facts(image, Slot::A)
}

/// What the image's ESP says about `slot` (its manifest, its boot files
/// checked against it) and where that slot's partition starts.
pub fn slot_facts(image: &Path, slot: Slot) -> Result<ImageFacts> {
    let f = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let parts = gpt::read(&f).with_context(|| format!("reading the GPT of {}", image.display()))?;
    let by_label = |l: &str| {
        parts
            .iter()
            .find(|p| p.name == l)
            .with_context(|| format!("no partition {l}"))
    };
    let esp_part = by_label(ESP_LABEL)?;
    let part = by_label(slot_label(slot))?;
    let json = esp::read_file(
        image,
        esp_part.offset(),
        &bootfiles::slot_file(slot, bootfiles::MANIFEST),
    )?;
    let manifest =
        SlotManifest::from_json(&String::from_utf8_lossy(&json)).map_err(anyhow::Error::msg)?;
    // What GRUB will load is what the manifest records.
    anklume_build::bootfiles::check(&manifest, |name| {
        esp::read_file(image, esp_part.offset(), &bootfiles::slot_file(slot, name))
    })
    .with_context(|| format!("slot {slot}'s boot files on the ESP of {}", image.display()))?;
    Ok(ImageFacts {
        manifest,
        slot_offset: part.offset(),
        esp_offset: esp_part.offset(),
        esp_size: esp_part.size(),
        parts: parts.clone(),
    })
}

/// Stage markers on the console (any of them), each with its own deadline
/// from boot start. The last is the console ready for a person: a login
/// prompt, or on a machine with no data pool the first-boot wizard's
/// prompt, which takes the login prompt's place.
const STAGES: &[(&str, &[&str], u64)] = &[
    ("grub", &["Booting `anklume"], 240),
    ("kernel", &["Linux version"], 360),
    ("verity-root", &["anklume-root: root: overlay"], 480),
    ("login", &[" login: ", anklume_provision::gate::PROMPT], 600),
];
/// Console text that ends a boot that should succeed, at once.
const FATAL: &[&str] = &[
    "anklume-root: FATAL",
    "Kernel panic",
    "emergency mode",
    "is corrupted",
];

#[derive(Debug, Default)]
pub struct Outcome {
    pub stage_times: Vec<(String, f64)>,
    pub report: BTreeMap<String, String>,
}

pub(crate) fn parse_report(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("ANKLUME "))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boot and wait for the report; fail at the first missed deadline or fatal line.
pub(crate) fn boot_and_report(cfg: &VmConfig, total: Duration) -> Result<Outcome> {
    let (out, vm) = boot_until_report(cfg, total)?;
    vm.close()?;
    Ok(out)
}

/// Boot and wait for the report; the VM keeps running for the caller.
pub(crate) fn boot_until_report(cfg: &VmConfig, total: Duration) -> Result<(Outcome, Vm)> {
    with_tcg_retry(&cfg.dir, || {
        let vm = Vm::start(cfg)?;
        watch_until_report(vm, Instant::now(), total)
    })
}

/// What QEMU 7.2's TCG does now and then with two vCPUs: the kernel
/// patches its own code (a static key, through a temporary `int3`) and the
/// other vCPU still executes the breakpoint after the patch is done, so the
/// kernel dies of `Oops: int3` (seen once, 3 s into a boot, at
/// `sched_clock_cpu`). Not a fault of the image: such a boot is run once
/// more, its console kept as `console-tcg-int3.log`; any other failure,
/// or the same one twice, stands.
pub(crate) fn with_tcg_retry<T>(dir: &Path, mut boot: impl FnMut() -> Result<T>) -> Result<T> {
    match boot() {
        Err(e) if tcg_int3_race(dir) => {
            let kept = dir.join("console-tcg-int3.log");
            std::fs::rename(dir.join("console.log"), &kept)?;
            eprintln!(
                "  QEMU TCG code-patching race (Oops: int3, console in {}): booting once more",
                kept.display()
            );
            boot().with_context(|| format!("after a first boot lost to the TCG race ({e:#})"))
        }
        r => r,
    }
}

fn tcg_int3_race(dir: &Path) -> bool {
    std::fs::read(dir.join("console.log"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("Oops: int3"))
}

/// [`boot_until_report`] on a VM started at `start` (the caller may have
/// typed on its console first).
pub(crate) fn watch_until_report(vm: Vm, start: Instant, total: Duration) -> Result<(Outcome, Vm)> {
    watch_until_report_with(vm, start, total, &mut |_| Ok(()))
}

/// [`watch_until_report`], calling `tick` on the VM every half second
/// (to answer a prompt on its console).
pub(crate) fn watch_until_report_with(
    mut vm: Vm,
    start: Instant,
    total: Duration,
    tick: &mut dyn FnMut(&mut Vm) -> Result<()>,
) -> Result<(Outcome, Vm)> {
    let mut out = Outcome::default();
    let mut next = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        tick(&mut vm)?;
        let t = start.elapsed();
        let console = vm.console();
        while next < STAGES.len() && STAGES[next].1.iter().any(|m| console.contains(m)) {
            out.stage_times
                .push((STAGES[next].0.to_string(), t.as_secs_f64()));
            next += 1;
        }
        if let Some(f) = FATAL.iter().find(|f| console.contains(*f)) {
            bail!(
                "{:?} on the console after {:.0} s; console tail:\n{}",
                f,
                t.as_secs_f64(),
                tail(&console, 25)
            );
        }
        let report = vm.report();
        if report.lines().any(|l| l == "ANKLUME end") {
            out.stage_times.push(("report".into(), t.as_secs_f64()));
            out.report = parse_report(&report);
            break;
        }
        if next < STAGES.len() && t > Duration::from_secs(STAGES[next].2) {
            bail!(
                "stage {:?} not reached within {} s; console tail:\n{}",
                STAGES[next].0,
                STAGES[next].2,
                tail(&console, 25)
            );
        }
        if t > total {
            bail!(
                "no report from the guest within {} s; console tail:\n{}",
                total.as_secs(),
                tail(&console, 25)
            );
        }
        if !vm.running() {
            bail!("QEMU exited; console tail:\n{}", tail(&console, 25));
        }
    }
    Ok((out, vm))
}

/// Wait until the console has shown `text` `n` times in all, at most
/// `limit` after `start`; QEMU exiting ends the wait.
pub(crate) fn wait_console(
    vm: &mut Vm,
    text: &str,
    n: usize,
    start: Instant,
    limit: Duration,
) -> Result<()> {
    while vm.console().matches(text).count() < n {
        if start.elapsed() > limit {
            bail!(
                "{text:?} (#{n}) not shown on the console within {} s; console tail:\n{}",
                limit.as_secs(),
                tail(&vm.console(), 30)
            );
        }
        if !vm.running() {
            bail!("QEMU exited; console tail:\n{}", tail(&vm.console(), 30));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// Wait until the report has the line `end` (`ANKLUME end2`: a second
/// report), at most `limit` after `start`; QEMU exiting ends the wait.
pub(crate) fn wait_report(vm: &mut Vm, end: &str, start: Instant, limit: Duration) -> Result<()> {
    while !vm.report().lines().any(|l| l == end) {
        if start.elapsed() > limit || !vm.running() {
            bail!("no {end:?}; console tail:\n{}", tail(&vm.console(), 30));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

pub(crate) fn expect(report: &BTreeMap<String, String>, key: &str, want: &str) -> Result<()> {
    match report.get(key) {
        Some(v) if v == want => Ok(()),
        Some(v) => bail!("guest reports {key}={v:?}, expected {want:?}"),
        None => bail!("guest report has no {key}"),
    }
}

pub fn run(s: Scenario, images: &Images, work: &Path) -> Result<Outcome> {
    let image = images.get(s.image_kind())?;
    let facts = image_facts(image)?;
    let dir = work.join(s.name());
    let (firmware, medium) = match s {
        Scenario::BiosDisk | Scenario::Tampered => (Firmware::Bios, Medium::UsbDisk),
        Scenario::BiosCd => (Firmware::Bios, Medium::Cd),
        Scenario::UefiDisk => (Firmware::Uefi, Medium::UsbDisk),
        Scenario::UefiCd | Scenario::Toram => (Firmware::Uefi, Medium::Cd),
        Scenario::Persist => (Firmware::Bios, Medium::UsbDiskWritable),
        Scenario::Rollback => (Firmware::Uefi, Medium::UsbDiskWritable),
        Scenario::UefiSbOwn | Scenario::UefiSbMs | Scenario::SbTampered => {
            (Firmware::Uefi, Medium::UsbDisk)
        }
        Scenario::VentoyBios
        | Scenario::VentoyGrub2Bios
        | Scenario::PoolBtrfs
        | Scenario::Wizard
        | Scenario::PoolWrongPassphrase
        | Scenario::PoolZfs => (Firmware::Bios, Medium::UsbDisk),
        Scenario::Update | Scenario::UpdatePowercut | Scenario::UpdateRejected => {
            (Firmware::Bios, Medium::UsbDiskWritable)
        }
        Scenario::UpdateBroken | Scenario::UpdateSb => (Firmware::Uefi, Medium::UsbDiskWritable),
        Scenario::StickGrow => (Firmware::Bios, Medium::UsbDiskWritable),
        Scenario::VentoyUefi | Scenario::VentoyGrub2Uefi | Scenario::PoolTpm => {
            (Firmware::Uefi, Medium::UsbDisk)
        }
    };
    let cfg = VmConfig {
        image: image.to_path_buf(),
        firmware,
        medium,
        memory_mib: 2048,
        test_actions: "report".into(),
        dir: dir.clone(),
        monitor: false,
        allow_reboot: false,
        secure_boot_vars: None,
        disks: Vec::new(),
        console_input: false,
        tpm_state: None,
    };
    match s {
        Scenario::Toram => crate::toram::run(&facts, cfg, image),
        Scenario::Tampered => tampered(&facts, cfg, image),
        Scenario::Persist => crate::persist::run(&facts, cfg, image),
        Scenario::Rollback => crate::rollback::run(&facts, cfg, image),
        Scenario::UefiSbOwn => crate::secureboot::own_keys(&facts, cfg, image),
        Scenario::UefiSbMs => crate::secureboot::stock_keys_with_mok(&facts, cfg, image),
        Scenario::SbTampered => crate::secureboot::tampered(&facts, cfg, image),
        Scenario::PoolBtrfs => crate::pool::btrfs(&facts, cfg),
        Scenario::PoolTpm => crate::pool::tpm(&facts, cfg),
        Scenario::Wizard => crate::wizard::run(&facts, cfg),
        Scenario::PoolWrongPassphrase => crate::pool::wrong_passphrase(&facts, cfg),
        Scenario::PoolZfs => crate::pool::zfs(&facts, cfg),
        Scenario::Update => crate::update::run(&facts, cfg, image, images),
        Scenario::UpdatePowercut => crate::update::powercut(&facts, cfg, image, images),
        Scenario::UpdateBroken => crate::update::broken(&facts, cfg, image, images),
        Scenario::StickGrow => crate::update::stick_grow(&facts, cfg, image, images),
        Scenario::UpdateRejected => crate::update::rejected(&facts, cfg, image, images),
        Scenario::UpdateSb => crate::update::secure_boot(&facts, cfg, image, images),
        Scenario::VentoyBios
        | Scenario::VentoyUefi
        | Scenario::VentoyGrub2Bios
        | Scenario::VentoyGrub2Uefi => {
            let mode = match s {
                Scenario::VentoyGrub2Bios | Scenario::VentoyGrub2Uefi => crate::ventoy::Mode::Grub2,
                _ => crate::ventoy::Mode::Normal,
            };
            let release = images
                .ventoy_release
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::ventoy::DEFAULT_RELEASE));
            // One stick for all Ventoy scenarios of a run (and later runs
            // of the same ISO).
            let stick_dir = work.join("ventoy-stick");
            crate::ventoy::run(&facts, cfg, image, &release, &stick_dir, mode)
        }
        _ => {
            let out = boot_and_report(&cfg, Duration::from_secs(900))?;
            check_verified_boot(&out.report, &facts, Slot::A)?;
            Ok(out)
        }
    }
}

/// A copy of the image with one byte of `/usr/lib/systemd/systemd` flipped
/// inside the slot must not boot, and the console must say why.
fn tampered(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    std::fs::create_dir_all(&cfg.dir)?;
    let copy: PathBuf = cfg.dir.join("tampered.img");
    let t = tamper::tamper(image, &copy, facts.slot_offset)?;
    eprintln!("  tampered {} at byte {}", t.file, t.offset);
    cfg.image = copy.clone();
    let r = boot_and_report(&cfg, Duration::from_secs(600));
    std::fs::remove_file(&copy)?;
    match r {
        Ok(_) => bail!("the tampered image booted to userspace"),
        Err(e) => {
            let console = crate::qemu::strip_escapes(&String::from_utf8_lossy(&std::fs::read(
                cfg.dir.join("console.log"),
            )?));
            let verity_line = console
                .lines()
                .find(|l| l.contains("device-mapper: verity") && l.contains("is corrupted"))
                .with_context(|| format!("boot failed, but without a verity error: {e:#}"))?;
            eprintln!("  refused as expected: {}", verity_line.trim());
            Ok(Outcome::default())
        }
    }
}

/// What every good boot must show: running, `/` an overlay over the
/// dm-verity device with the build's root hash, `anklume status` agreeing.
pub(crate) fn check_verified_boot(
    r: &BTreeMap<String, String>,
    facts: &ImageFacts,
    slot: Slot,
) -> Result<()> {
    if r.get("state").map(String::as_str) != Some("running") {
        bail!(
            "system state {:?}, failed units: {:?}",
            r.get("state"),
            r.get("failed_units")
        );
    }
    expect(r, "root_fstype", "overlay")?;
    expect(r, "lower_source", "/dev/mapper/anklume-root")?;
    expect(r, "lower_fstype", "squashfs")?;
    expect(r, "verity_status", "verified")?;
    expect(r, "verity_roothash", &facts.manifest.root_hash)?;
    expect(r, "boot_roothash", &facts.manifest.root_hash)?;
    expect(r, "boot_slot", &slot.to_string())?;
    expect(r, "boot_version", &facts.manifest.version)?;
    expect(r, "status_slot", &slot.to_string())?;
    expect(r, "status_root_hash", &facts.manifest.root_hash)?;
    match r.get("status_verity") {
        Some(v) if v.starts_with("verified ") => Ok(()),
        other => bail!("anklume status reports verity {other:?}"),
    }
}

/// The GRUB environment block of the image's ESP, as variables.
pub(crate) fn read_env(image: &Path, facts: &ImageFacts) -> Result<BTreeMap<String, String>> {
    let block = esp::read_file(image, facts.esp_offset, bootfiles::GRUBENV)?;
    decode_envblk(&block).map_err(anyhow::Error::msg)
}

/// Replace the GRUB environment block of the image's ESP.
pub(crate) fn write_env(
    image: &Path,
    facts: &ImageFacts,
    vars: &BTreeMap<String, String>,
) -> Result<()> {
    let block = encode_envblk(vars).map_err(anyhow::Error::msg)?;
    esp::write_file(image, facts.esp_offset, bootfiles::GRUBENV, &block)
}

/// A private copy of the image for a scenario that writes to it (holes kept).
pub(crate) fn copy_image(image: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let copy = dir.join(name);
    anklume_cmd::Cmd::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&copy)
        .run()
        .with_context(|| format!("copying {} to {}", image.display(), copy.display()))?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot that writes `console` and fails, or succeeds.
    fn boot(dir: &Path, console: &str, ok: bool) -> Result<u32> {
        std::fs::write(dir.join("console.log"), console)?;
        if ok {
            Ok(7)
        } else {
            bail!("boot failed")
        }
    }

    #[test]
    fn only_the_tcg_int3_oops_gets_a_second_boot_and_only_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let oops = "[ 3.1] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\nKernel panic";
        // Lost to the race, then fine: the second boot's result, the first
        // console kept.
        let mut n = 0;
        let r = with_tcg_retry(d, || {
            n += 1;
            boot(d, if n == 1 { oops } else { "login: " }, n > 1)
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n, 2);
        assert!(std::fs::read_to_string(d.join("console-tcg-int3.log"))
            .unwrap()
            .contains("Oops: int3"));
        // The race twice: the failure stands.
        let mut n = 0;
        let e = with_tcg_retry(d, || {
            n += 1;
            boot(d, oops, false)
        })
        .unwrap_err();
        assert_eq!(n, 2);
        assert!(format!("{e:#}").contains("lost to the TCG race"), "{e:#}");
        // Any other failure: no second boot.
        let mut n = 0;
        with_tcg_retry(d, || {
            n += 1;
            boot(
                d,
                "device-mapper: verity: is corrupted\nKernel panic",
                false,
            )
        })
        .unwrap_err();
        assert_eq!(n, 1);
    }
}
