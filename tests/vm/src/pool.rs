//! pool-tpm: the same with a TPM 2.0 (swtpm) enrolled by the first boot,
//! UEFI; the second boot unlocks without a prompt.
//!
//! pool-btrfs (raw image on a USB stick, SeaBIOS, an empty NVMe disk and a
//! seed stick): the first boot finds `anklume-seed.toml` on the stick
//! labelled ANKLUMESEED, makes LUKS2 + btrfs on the NVMe disk, leaves it
//! unlocked and mounted with Incus's state on it, and a token is written to
//! the pool; the second boot (seed still plugged: it must not make the pool
//! again) asks the passphrase on the serial console, a wrong one is
//! refused and asked again, the right one mounts the same pool, token
//! intact. In between, the agent applies the `infra.yml` the first boot
//! put on the pool: its container runs in both boots, with the data written
//! into it in the first, and the health check passes and marks the boot
//! state of the stick (slot A, already good on a fresh image).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use anklume_cmd::Cmd;
use anklume_contract::Slot;

use crate::qemu::{Bus, Disk, Vm, VmConfig};
use crate::scenario::{
    boot_until_report, check_verified_boot, expect, tail, wait_console, watch_until_report,
    watch_until_report_with, with_tcg_retry, ImageFacts, Outcome,
};

/// The pool disk's serial, which the preseed selects it by.
const POOL_SERIAL: &str = "ANKPOOL0001";
const PASSPHRASE: &str = "correct horse battery staple";
/// What systemd's password agent shows on the console.
const PROMPT: &str = "Please enter passphrase for disk";

/// The pool's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fs {
    Btrfs,
    /// The ZFS variant of the image.
    Zfs,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Btrfs => "btrfs",
            Fs::Zfs => "zfs",
        }
    }

    /// What findmnt says of the pool's mount and of /var/lib/incus.
    fn mounts(self) -> (&'static str, &'static str) {
        match self {
            Fs::Btrfs => (
                "/dev/mapper/anklume-pool",
                "/dev/mapper/anklume-pool[/incus]",
            ),
            Fs::Zfs => ("anklume", "anklume/incus"),
        }
    }
}

/// The preseed: the disk by serial; small argon2id costs (TCG is slow).
fn preseed(tpm2: bool, fs: Fs) -> String {
    format!(
        "[disk]\nserial = \"{POOL_SERIAL}\"\n\n[pool]\nfilesystem = \"{}\"\n\n\
         [encryption]\npassphrase = \"{PASSPHRASE}\"\ntpm2 = {tpm2}\n\
         argon2id = {{ memory_kib = 65536, iterations = 4, parallel = 2 }}\n",
        fs.name()
    )
}

/// A FAT stick labelled ANKLUMESEED holding `anklume-seed.toml`.
fn make_seed(image: &Path, toml: &str) -> Result<()> {
    let _ = std::fs::remove_file(image);
    Cmd::new("mkfs.vfat")
        .args(["-n", "ANKLUMESEED", "-C"])
        .arg(image)
        .arg("8192")
        .run()?;
    let file = image.with_extension("toml");
    std::fs::write(&file, toml)?;
    Cmd::new("mcopy")
        .arg("-i")
        .arg(image)
        .arg(&file)
        .arg("::anklume-seed.toml")
        .run()?;
    Ok(())
}

fn prompts(vm: &Vm) -> usize {
    vm.console().matches(PROMPT).count()
}

/// Wait until the console has shown the prompt `n` times (at most
/// `limit` after `start`).
fn wait_prompt(vm: &mut Vm, n: usize, start: Instant, limit: Duration) -> Result<()> {
    wait_console(vm, PROMPT, n, start, limit).with_context(|| format!("passphrase prompt #{n}"))
}

/// What every boot with a pool must show; the health check marked `slot`
/// good (or found it good already).
pub(crate) fn pool_facts(r: &std::collections::BTreeMap<String, String>, slot: Slot) -> Result<()> {
    pool_facts_on(r, slot, Fs::Btrfs)
}

/// [`pool_facts`] on a pool of filesystem `fs`.
pub(crate) fn pool_facts_on(
    r: &std::collections::BTreeMap<String, String>,
    slot: Slot,
    fs: Fs,
) -> Result<()> {
    let (pool_source, incus_source) = fs.mounts();
    expect(r, "pool_unit", "active")?;
    expect(r, "pool_source", pool_source)?;
    expect(r, "pool_fstype", fs.name())?;
    expect(r, "incus_source", incus_source)?;
    // Incus started on the pool (its socket made after the mount).
    match r.get("status_incus") {
        Some(v) if v.starts_with("reachable") => {}
        other => bail!("Incus on the pool: anklume status says {other:?}"),
    }
    expect(r, "firstboot", "success")?;
    // The agent applied the first infra.yml (written on the pool by the
    // first boot, its image made on the machine): the container runs, and
    // the health check passed and reached the stick's boot state (slot A
    // is good from the build on, so it has nothing to change).
    expect(r, "box_state", "RUNNING")?;
    expect(r, "health", "success")?;
    match r.get("health_marked") {
        Some(m)
            if m.starts_with(&format!("slot {slot} marked good"))
                || m.starts_with(&format!("slot {slot} was already good")) =>
        {
            Ok(())
        }
        other => bail!("anklume health --mark-good said {other:?}, not that slot {slot} is good"),
    }
}

/// pool-btrfs: the passphrase typed on the serial console at the second
/// boot (a wrong one first).
pub fn btrfs(facts: &ImageFacts, cfg: VmConfig) -> Result<Outcome> {
    two_boots(facts, cfg, false, Fs::Btrfs)
}

/// pool-zfs: pool-btrfs on the ZFS variant of the image (`make iso-zfs`),
/// with a preseed asking for ZFS: the pool `anklume` on LUKS2, imported
/// and its datasets mounted at every boot.
pub fn zfs(facts: &ImageFacts, cfg: VmConfig) -> Result<Outcome> {
    two_boots(facts, cfg, false, Fs::Zfs)
}

/// pool-tpm (UEFI, a swtpm TPM 2.0): the first boot also enrols the TPM
/// (PCR 7); the second boot unlocks with it, without any prompt.
pub fn tpm(facts: &ImageFacts, mut cfg: VmConfig) -> Result<Outcome> {
    fresh_tpm(&mut cfg);
    two_boots(facts, cfg, true, Fs::Btrfs)
}

/// A swtpm TPM 2.0 for `cfg`, its state new (a leftover of an earlier run
/// removed) and kept between the scenario's boots.
pub(crate) fn fresh_tpm(cfg: &mut VmConfig) {
    let state = cfg.dir.join("tpm");
    let _ = std::fs::remove_dir_all(&state);
    cfg.tpm_state = Some(state);
}

/// An empty 4 GiB NVMe disk for the pool and a seed stick whose preseed
/// selects it, added to `cfg`'s disks; console input on. Returns the pool
/// disk's file.
pub(crate) fn pool_disks(cfg: &mut VmConfig, tpm2: bool) -> Result<std::path::PathBuf> {
    pool_disks_for(cfg, tpm2, Fs::Btrfs)
}

/// [`pool_disks`] with a preseed asking for `fs`.
pub(crate) fn pool_disks_for(cfg: &mut VmConfig, tpm2: bool, fs: Fs) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(&cfg.dir)?;
    let disk = cfg.dir.join("pool-disk.img");
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(4 << 30)?;
    let seed = cfg.dir.join("seed.img");
    make_seed(&seed, &preseed(tpm2, fs))?;
    cfg.disks.extend([
        Disk {
            file: disk.clone(),
            bus: Bus::Nvme,
            serial: POOL_SERIAL.into(),
        },
        Disk {
            file: seed.clone(),
            bus: Bus::Usb,
            serial: "ANKSEED0001".into(),
        },
    ]);
    cfg.console_input = true;
    Ok(disk)
}

/// Boot, type a wrong passphrase at the pool's prompt on the serial
/// console, then the right one at the next prompt, and wait for the
/// report. Also returns when the first prompt was shown.
pub(crate) fn boot_typing_passphrase(cfg: &VmConfig) -> Result<(Outcome, Vm, Duration)> {
    let mut asked = Duration::ZERO;
    let (o, vm) = with_tcg_retry(&cfg.dir, || {
        let mut vm = Vm::start(cfg)?;
        let start = Instant::now();
        wait_prompt(&mut vm, 1, start, Duration::from_secs(600))?;
        asked = start.elapsed();
        vm.type_console("wrong passphrase\r")?;
        wait_prompt(&mut vm, 2, start, Duration::from_secs(900))
            .context("after a wrong passphrase the prompt must come back")?;
        vm.type_console(&format!("{PASSPHRASE}\r"))?;
        watch_until_report(vm, start, Duration::from_secs(1200))
    })?;
    Ok((o, vm, asked))
}

/// Boot and wait for the report, typing the passphrase whenever the
/// prompt shows (a TPM that should have unlocked and did not: the report
/// still comes, with PCR 7 and its events to say why).
pub(crate) fn boot_answering_prompts(cfg: &VmConfig, total: Duration) -> Result<(Outcome, Vm)> {
    with_tcg_retry(&cfg.dir, || {
        let vm = Vm::start(cfg)?;
        let mut typed = 0;
        watch_until_report_with(vm, Instant::now(), total, &mut |vm| {
            if prompts(vm) > typed {
                vm.type_console(&format!("{PASSPHRASE}\r"))?;
                typed += 1;
            }
            Ok(())
        })
    })
}

/// PCR 7's events as the report gave them (`pcr7_event_N`), in order.
pub(crate) fn pcr7_events(r: &BTreeMap<String, String>) -> Vec<String> {
    (1..)
        .map_while(|n| r.get(&format!("pcr7_event_{n}")).cloned())
        .collect()
}

/// Why the TPM did not unlock on a later boot, from two boots' reports:
/// PCR 7 (the Secure Boot state the token is sealed to) and the events
/// that differ.
pub(crate) fn pcr7_difference(
    first: &BTreeMap<String, String>,
    later: &BTreeMap<String, String>,
) -> String {
    let (a, b) = (pcr7_events(first), pcr7_events(later));
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter().filter(|e| !y.contains(e)).cloned().collect()
    };
    format!(
        "PCR 7 was {:?} when the TPM was enrolled, {:?} now; events only then: {:#?}; only now: {:#?}",
        first.get("pcr7"),
        later.get("pcr7"),
        only(&a, &b),
        only(&b, &a)
    )
}

/// How many times the console showed the pool's passphrase prompt.
pub(crate) fn prompts_shown(vm: &Vm) -> usize {
    prompts(vm)
}

/// The first boot with a seed and an empty pool disk: the pool is made
/// (no passphrase asked), a token written on it and into the bootstrap
/// container; `more` adds test actions. Returns the report.
pub(crate) fn first_pool_boot(
    cfg: &mut VmConfig,
    facts: &ImageFacts,
    token: &str,
    more: &str,
) -> Result<Outcome> {
    first_pool_boot_on(cfg, facts, token, more, Fs::Btrfs)
}

/// [`first_pool_boot`] on a pool of filesystem `fs`.
pub(crate) fn first_pool_boot_on(
    cfg: &mut VmConfig,
    facts: &ImageFacts,
    token: &str,
    more: &str,
    fs: Fs,
) -> Result<Outcome> {
    cfg.test_actions = format!("report,pool-write={token},box-write={token}{more}");
    let (first, vm) = boot_until_report(cfg, Duration::from_secs(1500)).context("first boot")?;
    let shown = prompts(&vm);
    let key_on_console = vm
        .console()
        .contains("Recovery key (shown once, stored nowhere");
    vm.close()?;
    let r = &first.report;
    check_verified_boot(r, facts, Slot::A).context("first boot")?;
    if !key_on_console {
        bail!("first boot: the recovery key was not shown on the serial console");
    }
    expect(r, "journal_recovery_key", "0")
        .context("first boot: the recovery key reached the journal")?;
    pool_facts_on(r, Slot::A, fs).context("first boot")?;
    expect(r, "pool_written", token).context("first boot")?;
    expect(r, "box_written", token).context("first boot")?;
    expect(r, "pool_unlocked_by", "first-boot").context("first boot")?;
    if shown != 0 {
        bail!("first boot: the passphrase was asked although the first boot had it");
    }
    Ok(first)
}

/// A later boot of the same machine: the pool unlocked (`prompts` times
/// asked), the first boot's tokens there, the firstboot unit leaving the
/// pool alone.
pub(crate) fn later_pool_boot(
    r: &std::collections::BTreeMap<String, String>,
    token: &str,
    shown: usize,
    prompts_wanted: usize,
) -> Result<()> {
    expect(r, "pool_token", token)
        .context("the token written on the pool by the first boot is gone")?;
    expect(r, "box_token", token)
        .context("the container's data written by the first boot is gone")?;
    match r.get("firstboot_said") {
        Some(s) if s.contains("has its data pool") => {}
        other => bail!("anklume-firstboot said {other:?}, not that the pool exists"),
    }
    if shown != prompts_wanted {
        bail!("the passphrase was asked {shown} times, expected {prompts_wanted}");
    }
    // What `anklume status` shows: the TPM when no one was asked.
    let by = if prompts_wanted == 0 {
        "tpm2"
    } else {
        "passphrase"
    };
    expect(r, "pool_unlocked_by", by)?;
    Ok(())
}

fn two_boots(facts: &ImageFacts, mut cfg: VmConfig, tpm2: bool, fs: Fs) -> Result<Outcome> {
    let disk = pool_disks_for(&mut cfg, tpm2, fs)?;
    let token = format!(
        "token-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );

    // Boot 1: the pool is made from the seed, left unlocked, mounted.
    let first = first_pool_boot_on(&mut cfg, facts, &token, "", fs)?;
    let r = &first.report;
    if tpm2 {
        expect(r, "tpm2_token", "1").context("first boot: no systemd-tpm2 token on the pool")?;
    }
    eprintln!(
        "  boot 1: pool made from the seed: {:?}",
        r.get("firstboot_said")
    );
    for f in ["console.log", "report.log"] {
        std::fs::rename(cfg.dir.join(f), cfg.dir.join(format!("boot1-{f}")))?;
    }

    // Boot 2: the TPM unlocks; else asked on the serial console, a wrong
    // passphrase, then the right one.
    cfg.test_actions = "report".into();
    let (mut second, vm, asked) = if tpm2 {
        boot_until_report(&cfg, Duration::from_secs(1200)).map(|(o, vm)| (o, vm, Duration::ZERO))
    } else {
        boot_typing_passphrase(&cfg)
    }
    .context("second boot")?;
    let shown = prompts(&vm);
    vm.close()?;
    let r = &second.report;
    check_verified_boot(r, facts, Slot::A).context("second boot")?;
    pool_facts_on(r, Slot::A, fs).context("second boot")?;
    later_pool_boot(r, &token, shown, if tpm2 { 0 } else { 2 }).context("second boot")?;
    if tpm2 {
        eprintln!("  boot 2: the TPM unlocked the pool, no prompt");
    } else {
        eprintln!(
            "  boot 2: asked after {:.0} s, wrong passphrase asked again, right one mounted the pool",
            asked.as_secs_f64()
        );
        second
            .stage_times
            .insert(0, ("2:prompt".into(), asked.as_secs_f64()));
    }
    std::fs::remove_file(&disk)?;
    Ok(second)
}

/// The SHA-256 of a file, by `sha256sum` (a 4 GiB pool disk, mostly holes).
fn file_sha256(path: &Path) -> Result<String> {
    let out = Cmd::new("sha256sum").arg(path).output_string()?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum printed nothing for {}", path.display()))
}

/// pool-wrong-passphrase: the pool made from the seed (boot 1, as in
/// pool-btrfs); boot 2 is only given wrong passphrases: each is refused and
/// the prompt comes back, nothing is unlocked, and after the power is cut
/// the pool disk is byte-identical to what boot 1 left.
pub fn wrong_passphrase(facts: &ImageFacts, mut cfg: VmConfig) -> Result<Outcome> {
    let disk = pool_disks(&mut cfg, false)?;
    let token = format!(
        "token-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    first_pool_boot(&mut cfg, facts, &token, "")?;
    for f in ["console.log", "report.log"] {
        std::fs::rename(cfg.dir.join(f), cfg.dir.join(format!("boot1-{f}")))?;
    }
    let before = file_sha256(&disk)?;
    cfg.test_actions = "report".into();
    let mut out = Outcome::default();
    with_tcg_retry(&cfg.dir, || {
        out.stage_times.clear();
        let mut vm = Vm::start(&cfg)?;
        let start = Instant::now();
        for (n, wrong) in ["wrong passphrase", "Correct Horse Battery Staple", ""]
            .iter()
            .enumerate()
        {
            wait_prompt(&mut vm, n + 1, start, Duration::from_secs(900)).with_context(|| {
                format!("after {n} wrong passphrase(s) the prompt must come back")
            })?;
            out.stage_times
                .push((format!("prompt-{}", n + 1), start.elapsed().as_secs_f64()));
            vm.type_console(&format!("{wrong}\r"))?;
        }
        wait_prompt(&mut vm, 4, start, Duration::from_secs(900))
            .context("after three wrong passphrases the prompt must come back")?;
        out.stage_times
            .push(("prompt-4".into(), start.elapsed().as_secs_f64()));
        // A few more seconds for anything that would follow an unlock.
        std::thread::sleep(Duration::from_secs(5));
        let console = vm.console();
        vm.close()?;
        for never in ["unlocked by", "mount the pool", " login: "] {
            if console.contains(never) {
                bail!(
                    "{never:?} on the console after wrong passphrases only:\n{}",
                    tail(&console, 25)
                );
            }
        }
        Ok(())
    })?;
    let after = file_sha256(&disk)?;
    if after != before {
        bail!("the pool disk changed while only wrong passphrases were typed ({before} → {after})");
    }
    eprintln!("  boot 2: three wrong passphrases refused, asked a fourth time; pool disk unchanged ({before})");
    std::fs::remove_file(&disk)?;
    Ok(out)
}
