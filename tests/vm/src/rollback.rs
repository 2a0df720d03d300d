//! rollback (raw image, OVMF): slot B holds a copy of slot A whose config
//! carries a root hash that does not match, so B's initrd refuses it every
//! time (as it would a half-written or corrupted update). The boot state is
//! armed as the updater arms it: B primary, 3 tries, not good. GRUB must
//! count B's tries down across three failed boots (each rebooting by
//! itself), then boot slot A, which must come up verified.
//!
//! Each boot is its own QEMU process: the guest's reboot ends QEMU
//! (`-no-reboot`) and the next boot is a fresh power-on of the same disk,
//! as on a real machine; only the disk (and its GRUB environment block)
//! carries state from one boot to the next. (A guest reset inside one TCG
//! process once hung a CI run for 15 minutes; a fresh process per boot
//! also gives each boot its own deadline and console log.)

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use anklume_build::bootfiles::{slot_folder, BootFiles};
use anklume_build::esp;
use anklume_build::grub::{self, SlotBoot};
use anklume_contract::bootfiles;
use anklume_contract::bootstate::{BootState, MAX_TRIES};
use anklume_contract::manifest::SlotManifest;
use anklume_contract::partition::slot_label;
use anklume_contract::Slot;

use crate::qemu::{Vm, VmConfig};
use crate::scenario::{
    check_verified_boot, copy_image, parse_report, read_env, tail, write_env, ImageFacts, Outcome,
};

/// The initrd's line when a counted try fails (anklume-root-failed.sh).
const COUNTED_FAILURE: &str = "anklume-root: slot b did not boot; this try was counted";
/// No console output for this long means the guest is stuck.
const SILENCE: Duration = Duration::from_secs(240);
/// One boot, failed or not, takes ~80 s under TCG here.
const BOOT_DEADLINE: Duration = Duration::from_secs(480);

pub fn run(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    let copy = copy_image(image, &cfg.dir, "rollback.raw")?;
    arm_broken_slot_b(&copy, facts)?;
    cfg.image = copy.clone();
    cfg.allow_reboot = false;
    let base = cfg.dir.clone();

    let start = Instant::now();
    let mut out = Outcome::default();
    let mut boots = Vec::new();
    let mut failures_b = 0;
    for n in 1..=usize::from(MAX_TRIES) + 1 {
        cfg.dir = base.join(format!("boot-{n}"));
        let (console, report) = one_boot(&cfg).with_context(|| format!("boot {n}"))?;
        let slots = booted_slots(&console);
        let [slot] = slots[..] else {
            bail!(
                "boot {n}: expected one kernel, saw {slots:?}; console tail:\n{}",
                tail(&console, 25)
            );
        };
        ensure!(
            loaded_from_own_folder(&console, slot),
            "boot {n}: GRUB did not load slot {slot} from {}; console tail:\n{}",
            bootfiles::slot_dir(slot),
            tail(&console, 25)
        );
        boots.push(slot);
        failures_b += console.matches(COUNTED_FAILURE).count();
        out.stage_times.push((
            format!("boot-{n}-slot-{slot}"),
            start.elapsed().as_secs_f64(),
        ));
        if slot == Slot::A {
            ensure!(
                report.lines().any(|l| l == "ANKLUME end"),
                "boot {n}: slot A ended without reporting; console tail:\n{}",
                tail(&console, 25)
            );
            out.report = parse_report(&report);
            break;
        }
    }
    let mut want = vec![Slot::B; usize::from(MAX_TRIES)];
    want.push(Slot::A);
    ensure!(
        boots == want,
        "kernels booted for slots {boots:?}, expected {want:?}"
    );
    ensure!(
        failures_b == usize::from(MAX_TRIES),
        "slot B's initrd reported {failures_b} counted failures, expected {MAX_TRIES}"
    );
    check_verified_boot(&out.report, facts, Slot::A).context("the fallback boot of slot A")?;

    // The boot state GRUB left behind: B exhausted and not good, A good.
    let st = BootState::from_vars(&read_env(&copy, facts)?).map_err(anyhow::Error::msg)?;
    ensure!(
        st.tries(Slot::B) == Some(0) && !st.is_good(Slot::B) && st.is_good(Slot::A),
        "boot state after the rollback: {st:?}"
    );
    std::fs::remove_file(&copy)?;
    eprintln!("  slot B failed {MAX_TRIES} counted tries, then slot A booted verified");
    Ok(out)
}

/// Power on, and return `(console, report)` once the guest has reported
/// (slot A) or rebooted (QEMU exits).
fn one_boot(cfg: &VmConfig) -> Result<(String, String)> {
    let mut vm = Vm::start(cfg)?;
    let start = Instant::now();
    let (mut last_len, mut last_change) = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let report = vm.report();
        if report.lines().any(|l| l == "ANKLUME end") || !vm.running() {
            let console = vm.console();
            vm.close()?;
            return Ok((console, report));
        }
        let console = vm.console();
        if console.len() != last_len {
            (last_len, last_change) = (console.len(), Instant::now());
        } else if last_change.elapsed() > SILENCE {
            bail!(
                "no console output for {} s; console tail:\n{}",
                SILENCE.as_secs(),
                tail(&console, 25)
            );
        }
        if start.elapsed() > BOOT_DEADLINE {
            bail!(
                "neither a report nor a reboot within {} s; console tail:\n{}",
                BOOT_DEADLINE.as_secs(),
                tail(&console, 25)
            );
        }
    }
}

/// The slot of each kernel started so far, in order, from the kernel's own
/// `Command line:` line (one per boot, whatever the firmware echoes).
fn booted_slots(console: &str) -> Vec<Slot> {
    console
        .lines()
        .filter(|l| l.contains("] Command line: "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("anklume.slot="))
                .and_then(|s| s.parse().ok())
        })
        .collect()
}

/// Whether GRUB said it loads slot `s` from that slot's folder on the ESP
/// (`anklume: loading slot b (<version>) from (hd0,gpt2)/EFI/anklume/slot-b`).
fn loaded_from_own_folder(console: &str, s: Slot) -> bool {
    let said = format!("anklume: loading slot {s} (");
    let dir = ") from (";
    let folder = format!(")/{}", bootfiles::slot_dir(s));
    console.match_indices(&said).any(|(i, _)| {
        let line = console[i..].lines().next().unwrap_or("");
        line.contains(dir) && line.trim_end().ends_with(&folder)
    })
}

/// Slot B = slot A's bytes; slot B's folder on the ESP written as the
/// updater writes it (kernel, initrd, manifest, then `slot.cfg`), from slot
/// A's boot files but with a `slot.cfg` whose root hash is wrong; boot
/// state armed for B.
fn arm_broken_slot_b(copy: &Path, facts: &ImageFacts) -> Result<()> {
    let part = |s: Slot| {
        facts
            .parts
            .iter()
            .find(|p| p.name == slot_label(s))
            .with_context(|| format!("the raw image has no {} partition", slot_label(s)))
    };
    let (a, b) = (part(Slot::A)?, part(Slot::B)?);
    ensure!(b.size() >= a.size(), "slot B is smaller than slot A");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(copy)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < a.size() {
        let n = buf.len().min((a.size() - done) as usize);
        f.read_exact_at(&mut buf[..n], a.offset() + done)?;
        if buf[..n].iter().any(|&x| x != 0) {
            f.write_all_at(&buf[..n], b.offset() + done)?;
        }
        done += n as u64;
    }
    f.sync_all()?;
    drop(f);

    let mut wrong = facts.manifest.root_hash.clone().into_bytes();
    let last = wrong.last_mut().context("empty root hash")?;
    *last = if *last == b'0' { b'1' } else { b'0' };
    let version = format!("{}-broken", facts.manifest.version);
    let cfg = grub::slot_cfg(&SlotBoot {
        slot: Slot::B,
        partuuid: b.unique_guid.clone(),
        root_hash: String::from_utf8(wrong)?,
        hash_offset: facts.manifest.hash_offset,
        version: version.clone(),
    });
    let read_a =
        |name: &str| esp::read_file(copy, facts.esp_offset, &bootfiles::slot_file(Slot::A, name));
    let boot = BootFiles {
        kernel_version: facts.manifest.kernel_version.clone(),
        kernel: read_a(bootfiles::KERNEL)?,
        initrd: read_a(bootfiles::INITRD)?,
    };
    // Without Secure Boot GRUB loads the kernel and initrd: slot B gets no
    // UKI (A's would carry A's root hash) and its manifest lists none.
    let mut manifest = SlotManifest {
        version,
        ..facts.manifest.clone()
    };
    manifest.boot_files.truncate(bootfiles::LOADED.len());
    let manifest_json = manifest.to_json();
    esp::create_dir(copy, facts.esp_offset, &bootfiles::slot_dir(Slot::B))?;
    for (path, data) in slot_folder(Slot::B, &boot, None, &manifest_json, &cfg) {
        // The ESP holds two slots' boot files: this is where it must fit.
        esp::write_file(copy, facts.esp_offset, &path, data)
            .with_context(|| format!("writing {path} on the ESP"))?;
    }

    let mut st = BootState::from_vars(&read_env(copy, facts)?).map_err(anyhow::Error::msg)?;
    st.arm(Slot::B, MAX_TRIES);
    let mut vars = read_env(copy, facts)?;
    vars.extend(st.to_vars());
    write_env(copy, facts, &vars).context("arming slot B in the boot state")
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_command_lines_give_the_boot_sequence() {
        use anklume_contract::Slot;
        let c = "anklume: loading slot b (x)anklume: loading slot b (x)\n\
                 [    0.000000] Command line: root=anklume anklume.slot=b panic=10\n\
                 [   18.8] anklume-root-failed.sh[331]: anklume-root: slot b did not boot\n\
                 [    0.000000] Command line: root=anklume anklume.slot=a\n";
        assert_eq!(super::booted_slots(c), [Slot::B, Slot::A]);
    }

    #[test]
    fn grub_must_load_a_slot_from_its_own_folder() {
        use anklume_contract::Slot;
        let b = "anklume: loading slot b (0.1.0-broken) from (hd0,gpt2)/EFI/anklume/slot-b\r\n";
        assert!(super::loaded_from_own_folder(b, Slot::B));
        assert!(!super::loaded_from_own_folder(b, Slot::A));
        let wrong = "anklume: loading slot b (0.1.0) from (hd0,gpt2)/EFI/anklume/slot-a\n";
        assert!(!super::loaded_from_own_folder(wrong, Slot::B));
        let old = "anklume: loading slot b (0.1.0) from (hd0,gpt4)\n";
        assert!(!super::loaded_from_own_folder(old, Slot::B));
    }
}
