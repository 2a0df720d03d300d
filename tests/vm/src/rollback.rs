//! rollback (raw image, OVMF): slot B holds a copy of slot A whose config
//! carries a root hash that does not match, so B's initrd refuses it every
//! time (as it would a half-written or corrupted update). The boot state is
//! armed as the updater arms it: B primary, 3 tries, not good. GRUB must
//! count B's tries down across three failed boots (each rebooting by
//! itself), then boot slot A, which must come up verified.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use anklume_build::esp;
use anklume_build::grub::{self, SlotBoot};
use anklume_contract::bootstate::{BootState, MAX_TRIES};
use anklume_contract::partition::slot_label;
use anklume_contract::Slot;

use crate::qemu::{Vm, VmConfig};
use crate::scenario::{
    check_verified_boot, copy_image, parse_report, read_env, tail, write_env, ImageFacts, Outcome,
};

/// The initrd's line when a counted try fails (anklume-root-failed.sh).
const COUNTED_FAILURE: &str = "anklume-root: slot b did not boot; this try was counted";
/// No console output for this long means the guest is stuck.
const SILENCE: Duration = Duration::from_secs(300);

pub fn run(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    let copy = copy_image(image, &cfg.dir, "rollback.raw")?;
    arm_broken_slot_b(&copy, facts)?;
    cfg.image = copy.clone();
    cfg.allow_reboot = true;

    let mut vm = Vm::start(&cfg)?;
    let start = Instant::now();
    let mut out = Outcome::default();
    let (mut last_len, mut last_change) = (0, Instant::now());
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let console = vm.console();
        let boots = booted_slots(&console);
        for s in &boots[seen..] {
            out.stage_times.push((
                format!("kernel-{}-slot-{s}", seen + 1),
                start.elapsed().as_secs_f64(),
            ));
            seen += 1;
        }
        let report = vm.report();
        if report.lines().any(|l| l == "ANKLUME end") {
            out.stage_times
                .push(("slot-a-report".into(), start.elapsed().as_secs_f64()));
            out.report = parse_report(&report);
            break;
        }
        if console.len() != last_len {
            (last_len, last_change) = (console.len(), Instant::now());
        } else if last_change.elapsed() > SILENCE {
            bail!(
                "no console output for {} s; console tail:\n{}",
                SILENCE.as_secs(),
                tail(&console, 25)
            );
        }
        if start.elapsed() > Duration::from_secs(1800) || !vm.running() {
            bail!(
                "slot A never reported (QEMU running: {}); console tail:\n{}",
                vm.running(),
                tail(&console, 25)
            );
        }
    }
    vm.close()?;
    let console = crate::qemu::strip_escapes(&String::from_utf8_lossy(&std::fs::read(
        cfg.dir.join("console.log"),
    )?));
    let boots = booted_slots(&console);
    let mut want = vec![Slot::B; usize::from(MAX_TRIES)];
    want.push(Slot::A);
    ensure!(
        boots == want,
        "kernels booted for slots {boots:?}, expected {want:?}"
    );
    let failures_b = console.matches(COUNTED_FAILURE).count();
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

/// Slot B = slot A's bytes, `slot-b.cfg` with a wrong root hash, boot state
/// armed for B.
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
    let cfg = grub::slot_cfg(&SlotBoot {
        slot: Slot::B,
        partition: b.number,
        partuuid: b.unique_guid.clone(),
        root_hash: String::from_utf8(wrong)?,
        hash_offset: facts.manifest.hash_offset,
        version: format!("{}-broken", facts.manifest.version),
    });
    esp::write_file(
        copy,
        facts.esp_offset,
        &grub::slot_cfg_path(Slot::B),
        cfg.as_bytes(),
    )
    .context("writing slot-b.cfg")?;

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
}
