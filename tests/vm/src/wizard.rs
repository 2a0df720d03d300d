//! wizard: a machine with no pool and no seed volume (raw image on a USB
//! stick, SeaBIOS, an empty NVMe disk). The serial console offers the
//! first-boot wizard in place of its login prompt; the harness presses
//! Enter, checks the list offers the NVMe disk and never the boot stick,
//! picks btrfs, types the passphrase twice (a short one first: refused),
//! confirms, and sees the recovery key. Without a reboot: the pool is
//! mounted with Incus on it, the agent applies the bootstrap `infra.yml`
//! (its container runs), the health check passes, the recovery key is not
//! in the journal, and the login prompt comes back on the serial console.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use anklume_contract::Slot;
use anklume_provision::gate::PROMPT;

use crate::pool::pool_facts;
use crate::qemu::{Bus, Disk, Vm, VmConfig};
use crate::scenario::{
    check_verified_boot, expect, parse_report, tail, wait_console, wait_report, with_tcg_retry,
    ImageFacts, Outcome,
};

const POOL_SERIAL: &str = "ANKPOOL0002";
const PASSPHRASE: &str = "correct horse battery staple";

/// Wait (at most `limit` from now) until the console has shown `text`
/// `n` times in all.
fn wait_text(vm: &mut Vm, text: &str, n: usize, limit: Duration) -> Result<()> {
    wait_console(vm, text, n, Instant::now(), limit)
}

/// A prompt that reads a secret throws away what was typed before it
/// switched the terminal off echo: wait for its text, then a little.
fn type_secret(vm: &mut Vm, prompt: &str, n: usize, secret: &str) -> Result<()> {
    wait_text(vm, prompt, n, Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_secs(2));
    vm.type_console(&format!("{secret}\r"))
}

pub fn run(facts: &ImageFacts, mut cfg: VmConfig) -> Result<Outcome> {
    std::fs::create_dir_all(&cfg.dir)?;
    let disk = cfg.dir.join("pool-disk.img");
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(4 << 30)?;
    cfg.disks.push(Disk {
        file: disk.clone(),
        bus: Bus::Nvme,
        serial: POOL_SERIAL.into(),
    });
    cfg.console_input = true;
    cfg.test_actions = "report,wait-pool".into();
    let mut times = Vec::new();
    let (report, console) = with_tcg_retry(&cfg.dir, || {
        times.clear();
        let mut vm = Vm::start(&cfg)?;
        let start = Instant::now();
        let mark = |times: &mut Vec<(String, f64)>, what: &str| {
            times.push((what.to_string(), start.elapsed().as_secs_f64()))
        };
        wait_text(&mut vm, PROMPT, 1, Duration::from_secs(600))
            .context("the wizard's prompt on the serial console")?;
        mark(&mut times, "prompt");
        // The boot is done while the wizard waits: its first report.
        wait_report(&mut vm, "ANKLUME end", start, Duration::from_secs(900))
            .context("the first report")?;
        let first = parse_report(&vm.report());
        check_verified_boot(&first, facts, Slot::A).context("before the wizard")?;
        expect(&first, "console_wizard", "active")?;
        expect(&first, "serial_getty", "inactive")
            .context("a login prompt ran on the serial console beside the wizard")?;
        if vm.console().contains(" login: ") {
            bail!("a login prompt was shown before the wizard ran");
        }
        vm.type_console("\r")?;
        wait_text(
            &mut vm,
            "Disk for the encrypted pool",
            1,
            Duration::from_secs(120),
        )?;
        mark(&mut times, "wizard");
        let screen = vm.console();
        let list = screen
            .rsplit("anklume first boot: the encrypted data pool")
            .next()
            .unwrap_or_default();
        if !list.contains(POOL_SERIAL) {
            bail!(
                "the NVMe disk {POOL_SERIAL} is not offered:\n{}",
                tail(list, 20)
            );
        }
        if !list.contains("the boot medium") {
            bail!(
                "the boot stick is not listed as not offered:\n{}",
                tail(list, 20)
            );
        }
        vm.type_console("\r")?;
        wait_text(&mut vm, "Filesystem", 1, Duration::from_secs(60))?;
        vm.type_console("\r")?;
        // Too short: refused, asked again.
        type_secret(&mut vm, "Pool passphrase", 1, "short")?;
        wait_text(&mut vm, "at least 8 characters", 2, Duration::from_secs(60))
            .context("a short passphrase must be refused")?;
        type_secret(&mut vm, "Pool passphrase", 2, PASSPHRASE)?;
        type_secret(&mut vm, "Repeat the passphrase", 1, PASSPHRASE)?;
        wait_text(&mut vm, "Write this plan to", 1, Duration::from_secs(60))?;
        vm.type_console("y")?;
        mark(&mut times, "confirmed");
        wait_text(
            &mut vm,
            "Recovery key (shown once, stored nowhere",
            1,
            Duration::from_secs(900),
        )?;
        mark(&mut times, "recovery-key");
        wait_text(
            &mut vm,
            "The data pool is ready on",
            1,
            Duration::from_secs(900),
        )?;
        mark(&mut times, "pool-ready");
        wait_report(&mut vm, "ANKLUME end2", start, Duration::from_secs(2400))
            .context("the report after the wizard")?;
        mark(&mut times, "report");
        let console = vm.console();
        let report = parse_report(&vm.report());
        vm.close()?;
        Ok((report, console))
    })?;
    let r = &report;
    pool_facts(r, Slot::A).context("after the wizard")?;
    expect(r, "pool_unlocked_by", "first-boot")?;
    expect(r, "journal_recovery_key", "0").context("the recovery key reached the journal")?;
    expect(r, "console_wizard", "inactive")?;
    expect(r, "serial_getty", "active").context("no login prompt after the wizard")?;
    match r.get("console_done") {
        Some(d) if d.starts_with("The data pool is ready on") => {}
        other => bail!("the consoles ended with {other:?}"),
    }
    let after = console
        .rsplit("The data pool is ready on")
        .next()
        .unwrap_or_default();
    if !after.contains(" login: ") {
        bail!("the login prompt did not come back on the serial console");
    }
    eprintln!("  wizard: {:?}", r.get("console_done"));
    std::fs::remove_file(&disk)?;
    Ok(Outcome {
        stage_times: times,
        report: report.clone(),
    })
}
