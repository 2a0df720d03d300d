//! Boot scenarios and what each asserts from inside the guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use anklume_build::{esp, gpt};
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
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::BiosDisk,
        Scenario::UefiCd,
        Scenario::Tampered,
        Scenario::BiosCd,
        Scenario::UefiDisk,
        Scenario::Toram,
    ];
    /// What CI runs (the minimum).
    pub const CI: [Scenario; 3] = [Scenario::BiosDisk, Scenario::UefiCd, Scenario::Tampered];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BiosDisk => "bios-disk",
            Scenario::BiosCd => "bios-cd",
            Scenario::UefiDisk => "uefi-disk",
            Scenario::UefiCd => "uefi-cd",
            Scenario::Tampered => "tampered",
            Scenario::Toram => "toram",
        }
    }

    pub fn parse(s: &str) -> Result<Vec<Scenario>> {
        Ok(match s {
            "all" => Scenario::ALL.to_vec(),
            "ci" => Scenario::CI.to_vec(),
            _ => vec![*Scenario::ALL
                .iter()
                .find(|x| x.name() == s)
                .with_context(|| format!("unknown scenario {s:?} (all, ci, bios-disk, bios-cd, uefi-disk, uefi-cd, tampered, toram)"))?],
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
}

pub fn image_facts(image: &Path) -> Result<ImageFacts> {
    let f = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let parts = gpt::read(&f).with_context(|| format!("reading the GPT of {}", image.display()))?;
    let by_label = |l: &str| {
        parts
            .iter()
            .find(|p| p.name == l)
            .with_context(|| format!("no partition {l}"))
    };
    let esp_part = by_label(ESP_LABEL)?;
    let slot = by_label(slot_label(Slot::A))?;
    let json = esp::read_file(image, esp_part.offset(), "EFI/anklume/slot-a.json")?;
    let manifest =
        SlotManifest::from_json(&String::from_utf8_lossy(&json)).map_err(anyhow::Error::msg)?;
    Ok(ImageFacts {
        manifest,
        slot_offset: slot.offset(),
        esp_offset: esp_part.offset(),
        esp_size: esp_part.size(),
    })
}

/// Stage markers on the console, each with its own deadline from boot start.
const STAGES: &[(&str, &str, u64)] = &[
    ("grub", "Booting `anklume", 240),
    ("kernel", "Linux version", 360),
    ("verity-root", "anklume-root: root: overlay", 480),
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

fn parse_report(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("ANKLUME "))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boot and wait for the report; fail at the first missed deadline or fatal line.
fn boot_and_report(cfg: &VmConfig, total: Duration) -> Result<Outcome> {
    let (out, vm) = boot_until_report(cfg, total)?;
    vm.close()?;
    Ok(out)
}

/// Boot and wait for the report; the VM keeps running for the caller.
fn boot_until_report(cfg: &VmConfig, total: Duration) -> Result<(Outcome, Vm)> {
    let mut vm = Vm::start(cfg)?;
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut next = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let t = start.elapsed();
        let console = vm.console();
        while next < STAGES.len() && console.contains(STAGES[next].1) {
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

fn expect(report: &BTreeMap<String, String>, key: &str, want: &str) -> Result<()> {
    match report.get(key) {
        Some(v) if v == want => Ok(()),
        Some(v) => bail!("guest reports {key}={v:?}, expected {want:?}"),
        None => bail!("guest report has no {key}"),
    }
}

pub fn run(s: Scenario, image: &Path, work: &Path) -> Result<Outcome> {
    let facts = image_facts(image)?;
    let dir = work.join(s.name());
    let (firmware, medium) = match s {
        Scenario::BiosDisk | Scenario::Tampered => (Firmware::Bios, Medium::UsbDisk),
        Scenario::BiosCd => (Firmware::Bios, Medium::Cd),
        Scenario::UefiDisk => (Firmware::Uefi, Medium::UsbDisk),
        Scenario::UefiCd | Scenario::Toram => (Firmware::Uefi, Medium::Cd),
    };
    let mut cfg = VmConfig {
        image: image.to_path_buf(),
        firmware,
        medium,
        memory_mib: 2048,
        test_actions: "report".into(),
        dir: dir.clone(),
        monitor: false,
    };
    if s == Scenario::Toram {
        return toram(&facts, cfg, image);
    }
    if s == Scenario::Tampered {
        std::fs::create_dir_all(&dir)?;
        let copy: PathBuf = dir.join("tampered.img");
        let t = tamper::tamper(image, &copy, facts.slot_offset)?;
        eprintln!("  tampered {} at byte {}", t.file, t.offset);
        cfg.image = copy.clone();
        let r = boot_and_report(&cfg, Duration::from_secs(600));
        std::fs::remove_file(&copy)?;
        return match r {
            Ok(_) => bail!("the tampered image booted to userspace"),
            Err(e) => {
                let console = crate::qemu::strip_escapes(&String::from_utf8_lossy(&std::fs::read(
                    dir.join("console.log"),
                )?));
                let verity_line = console
                    .lines()
                    .find(|l| l.contains("device-mapper: verity") && l.contains("is corrupted"))
                    .with_context(|| format!("boot failed, but without a verity error: {e:#}"))?;
                eprintln!("  refused as expected: {}", verity_line.trim());
                Ok(Outcome::default())
            }
        };
    }
    let out = boot_and_report(&cfg, Duration::from_secs(900))?;
    let r = &out.report;
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
    expect(r, "boot_slot", "a")?;
    expect(r, "boot_version", &facts.manifest.version)?;
    // `anklume status` inside the guest agrees.
    expect(r, "status_slot", "a")?;
    expect(r, "status_root_hash", &facts.manifest.root_hash)?;
    match r.get("status_verity") {
        Some(v) if v.starts_with("verified ") => {}
        other => bail!("anklume status reports verity {other:?}"),
    }
    Ok(out)
}

/// toram: a copy of the image whose boot state asks for the "copied to RAM"
/// entry; after the first report the CD is ejected through the QEMU monitor
/// and the guest must still read all of /usr.
fn toram(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    use anklume_contract::bootstate::{decode_envblk, encode_envblk, ENVBLK_SIZE, TORAM_VAR};
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(&cfg.dir)?;
    let copy = cfg.dir.join("toram.iso");
    std::fs::copy(image, &copy).context("copying the image")?;
    // The environment block is a file on the ESP: find its sector.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)?;
    let header = b"# GRUB Environment Block\n";
    let mut sector = vec![0u8; ENVBLK_SIZE];
    let mut found = None;
    let mut pos = facts.esp_offset;
    while pos + ENVBLK_SIZE as u64 <= facts.esp_offset + facts.esp_size {
        f.read_exact_at(&mut sector, pos)?;
        if sector.starts_with(header) {
            found = Some(pos);
            break;
        }
        pos += 512;
    }
    let pos = found.context("no GRUB environment block on the ESP")?;
    let mut vars = decode_envblk(&sector).map_err(anyhow::Error::msg)?;
    vars.insert(TORAM_VAR.to_string(), "1".to_string());
    f.write_all_at(&encode_envblk(&vars).map_err(anyhow::Error::msg)?, pos)?;
    f.sync_all()?;
    cfg.image = copy.clone();
    cfg.monitor = true;
    cfg.test_actions = "report,wait-eject".into();
    let (mut out, mut vm) = boot_until_report(&cfg, Duration::from_secs(900))?;
    let r = out.report.clone();
    expect(&r, "boot_toram", "1")?;
    expect(&r, "status_toram", "yes")?;
    expect(&r, "verity_status", "verified")?;
    expect(&r, "verity_roothash", &facts.manifest.root_hash)?;
    let answer = vm.monitor("eject -f cd")?;
    eprintln!(
        "  ejected the CD (monitor: {:?})",
        answer.lines().last().unwrap_or("").trim()
    );
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let report = vm.report();
        if report.lines().any(|l| l == "ANKLUME end2") {
            out.report = parse_report(&report);
            out.stage_times
                .push(("after-eject".into(), start.elapsed().as_secs_f64()));
            break;
        }
        if start.elapsed() > Duration::from_secs(600) || !vm.running() {
            bail!(
                "no report after the eject; console tail:\n{}",
                tail(&vm.console(), 25)
            );
        }
    }
    vm.close()?;
    std::fs::remove_file(&copy)?;
    expect(&out.report, "ejected", "1")?;
    expect(&out.report, "after_eject_read", "ok")?;
    Ok(out)
}
