//! update: a writable copy of the raw image on a USB stick (SeaBIOS), with
//! a data pool made from a seed at the first boot (the health check needs
//! one; everything pool-btrfs checks is checked here too) and a volume holding a bundle of a newer version signed with the
//! key the image trusts. Boot 1 (slot A): `anklume update --from` the
//! bundle writes slot B and its boot files and arms B (primary, 3 tries,
//! not good) — checked on the stick from the host. Boot 2: GRUB boots B,
//! its root is verified with the bundle's root hash, the pool is unlocked
//! (passphrase on the serial console), the container written in boot 1 is
//! there, and the health check marks B good — checked on the stick again.
//!
//! update-powercut: the same stick, no pool; the first boot starts the
//! update and the power is cut (QEMU killed) while the image is written;
//! on the stick slot A still boots next; the second power-on boots A,
//! `--status` sees the interrupted slot, and a new update succeeds (B
//! armed on the stick).
//!
//! update-rejected: the same stick, no pool, a bundle signed with a key
//! the image does not trust: refused before anything is written; slot B's
//! partition and the ESP's slot-B folder and boot state are byte-identical
//! afterwards.

//!
//! update-sb: the same under Secure Boot (UEFI, a variable store trusting
//! only the build's certificate) with the pool unlocked by a TPM: boot 1
//! (slot A's signed UKI) makes the pool and writes the bundle, whose boot
//! files include the release's signed UKI; boot 2 starts slot B's UKI —
//! the same file the bundle carried, its command line naming the image,
//! not a partition — the initrd finds slot B by the image's verity salt,
//! dm-verity checks it against the signed root hash, the TPM unlocks the
//! pool and the health check marks B good.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use anklume_build::esp;
use anklume_cmd::Cmd;
use anklume_contract::bootfiles;
use anklume_contract::bootstate::BootState;
use anklume_contract::Slot;

use crate::pool::{
    boot_answering_prompts, boot_typing_passphrase, first_pool_boot, fresh_tpm, later_pool_boot,
    pcr7_difference, pool_disks, pool_facts, prompts_shown,
};
use crate::qemu::{Bus, Disk, VmConfig};
use crate::scenario::{
    boot_until_report, check_verified_boot, copy_image, expect, read_env, slot_facts, ImageFacts,
    Images, Outcome,
};

/// The label the guest's test report mounts bundles from.
const BUNDLES_LABEL: &str = "ANKBUNDLES";

/// A writable copy of `image` in the scenario's folder, booted as the
/// stick.
fn writable_stick(cfg: &mut VmConfig, image: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(&cfg.dir)?;
    let stick = copy_image(image, &cfg.dir, "stick.img")?;
    cfg.image = stick.clone();
    Ok(stick)
}

/// `bundle` on a USB volume of its own, attached to `cfg`: returns the
/// volume's file and the bundle's name on it.
fn attach_bundle(cfg: &mut VmConfig, bundle: &Path) -> Result<(PathBuf, String)> {
    let (volume, name) = bundle_volume(&cfg.dir, bundle)?;
    cfg.disks.push(Disk {
        file: volume.clone(),
        bus: Bus::Usb,
        serial: "ANKBUNDLES01".into(),
    });
    Ok((volume, name))
}

/// The guest's `anklume update` succeeded (else its exit and last lines).
fn updated(r: &BTreeMap<String, String>) -> Result<()> {
    if r.get("update_rc").map(String::as_str) != Some("0") {
        bail!(
            "anklume update failed (exit {:?}): {:?}",
            r.get("update_rc"),
            r.get("update_said")
        );
    }
    Ok(())
}

/// Keep a boot's console and report as `<prefix>-console.log` etc.
fn keep_logs(cfg: &VmConfig, prefix: &str) -> Result<()> {
    for f in ["console.log", "report.log"] {
        std::fs::rename(cfg.dir.join(f), cfg.dir.join(format!("{prefix}-{f}")))?;
    }
    Ok(())
}

/// An ext4 volume labelled [`BUNDLES_LABEL`] holding `bundle` (made with
/// `mke2fs -d`: no loop device, no copy through a mount).
fn bundle_volume(dir: &Path, bundle: &Path) -> Result<(PathBuf, String)> {
    let name = bundle
        .file_name()
        .context("a bundle path without a file name")?
        .to_string_lossy()
        .into_owned();
    let tree = dir.join("bundles");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    if std::fs::hard_link(bundle, tree.join(&name)).is_err() {
        std::fs::copy(bundle, tree.join(&name))
            .with_context(|| format!("copying {}", bundle.display()))?;
    }
    let size = std::fs::metadata(bundle)?.len();
    let image = dir.join("bundles.img");
    let _ = std::fs::remove_file(&image);
    let mib = size / (1 << 20) + 64 + size / (1 << 20) / 20;
    Cmd::new("mke2fs")
        .args([
            "-q",
            "-t",
            "ext4",
            "-L",
            BUNDLES_LABEL,
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&tree)
        .arg(&image)
        .arg(format!("{mib}M"))
        .run()
        .context("making the bundles volume")?;
    std::fs::remove_dir_all(&tree)?;
    Ok((image, name))
}

fn boot_state(image: &Path, facts: &ImageFacts) -> Result<BootState> {
    BootState::from_vars(&read_env(image, facts)?).map_err(anyhow::Error::msg)
}

fn token() -> Result<String> {
    Ok(format!(
        "token-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    ))
}

pub fn run(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    image: &Path,
    images: &Images,
) -> Result<Outcome> {
    let bundle = images
        .bundle
        .as_deref()
        .context("the update scenario needs --bundle FILE (`make test-bundles` makes one)")?;
    let stick = writable_stick(&mut cfg, image)?;
    let pool_disk = pool_disks(&mut cfg, false)?;
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    let token = token()?;

    // Boot 1, slot A: the pool is made, the update written.
    let first = first_pool_boot(&mut cfg, facts, &token, &format!(",update={name}"))?;
    let r = &first.report;
    updated(r).context("first boot")?;
    // The stick has a persist partition: the first unlock remembers the pool.
    match r.get("pool_pointer") {
        Some(p) if p.starts_with("{\"partuuid\":\"") => {}
        other => bail!("first boot: the pool pointer on the persist partition is {other:?}"),
    }
    keep_logs(&cfg, "boot1")?;
    // On the stick: slot B's boot files match its manifest (checked by
    // slot_facts), B is a newer version, and it is armed, not yet good.
    let b = slot_facts(&stick, Slot::B).context("slot B after the update")?;
    let (old, new) = (&facts.manifest.version, &b.manifest.version);
    if anklume_contract::bundle::compare_versions(new, old).map_err(anyhow::Error::msg)?
        != std::cmp::Ordering::Greater
    {
        bail!("slot B holds version {new}, not newer than slot A's {old}");
    }
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || st.tries(Slot::B) != Some(3) || st.is_good(Slot::B) {
        bail!("after the update the boot state is {st:?}, not B primary with 3 tries, not good");
    }
    if !st.is_good(Slot::A) {
        bail!("the update took slot A's good flag: {st:?}");
    }
    eprintln!(
        "  boot 1: slot B now holds {new} (root hash {}); said: {}",
        b.manifest.root_hash,
        r.get("update_said").map(String::as_str).unwrap_or("")
    );

    // Boot 2: slot B, verified by its own root hash; the pool's passphrase
    // typed (a wrong one first); the health check marks B good.
    cfg.test_actions = "report".into();
    let (mut second, vm, asked) = boot_typing_passphrase(&cfg).context("second boot")?;
    let shown = prompts_shown(&vm);
    vm.close()?;
    let r = &second.report;
    check_verified_boot(r, &b, Slot::B).context("second boot")?;
    pool_facts(r, Slot::B).context("second boot")?;
    later_pool_boot(r, &token, shown, 2).context("second boot, slot B")?;
    expect(r, "pool_found_by", "named by the pool pointer")
        .context("second boot: the pool was not found through the pointer boot 1 wrote")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || !st.is_good(Slot::B) {
        bail!("after the second boot the boot state is {st:?}, not B primary and good");
    }
    eprintln!("  boot 2: slot B verified, pool unlocked, container kept, B marked good: {st:?}");
    second
        .stage_times
        .insert(0, ("2:prompt".into(), asked.as_secs_f64()));
    for f in [pool_disk, volume, stick] {
        std::fs::remove_file(f)?;
    }
    Ok(second)
}

pub fn secure_boot(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    image: &Path,
    images: &Images,
) -> Result<Outcome> {
    use crate::secureboot::{console_of, started_signed_uki, trust_only_the_build};
    let bundle = images
        .bundle
        .as_deref()
        .context("the update-sb scenario needs --bundle FILE (`make test-bundles` makes one)")?;
    let stick = writable_stick(&mut cfg, image)?;
    trust_only_the_build(facts, &mut cfg, image)?;
    fresh_tpm(&mut cfg);
    let pool_disk = pool_disks(&mut cfg, true)?;
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    let token = token()?;

    // Boot 1: slot A's signed UKI; the pool (TPM-enrolled), the update.
    let first = first_pool_boot(&mut cfg, facts, &token, &format!(",update={name}"))?;
    let r = &first.report;
    expect(r, "secure_boot", "on").context("first boot")?;
    if !started_signed_uki(&console_of(&cfg)?, Slot::A) {
        bail!("first boot: GRUB did not start slot A's signed UKI");
    }
    expect(r, "tpm2_token", "1").context("first boot")?;
    updated(r).context("first boot")?;
    keep_logs(&cfg, "boot1")?;
    let b = slot_facts(&stick, Slot::B).context("slot B after the update")?;
    if b.manifest.boot_files.last().map(|f| f.name.as_str()) != Some(bootfiles::UKI) {
        bail!(
            "slot B's boot files {:?} have no signed UKI: the bundle must carry one",
            b.manifest.boot_files
        );
    }
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || st.tries(Slot::B) != Some(3) || st.is_good(Slot::B) {
        bail!("after the update the boot state is {st:?}, not B primary with 3 tries, not good");
    }

    // Boot 2: slot B's UKI, found by its salt, verified, pool by TPM (if
    // the TPM says no, the passphrase is typed so that the report shows
    // PCR 7's events).
    cfg.test_actions = "report".into();
    let (second, vm) =
        boot_answering_prompts(&cfg, Duration::from_secs(1500)).context("second boot")?;
    let shown = prompts_shown(&vm);
    vm.close()?;
    let r = &second.report;
    if shown != 0 {
        bail!(
            "second boot: the TPM did not unlock the pool (the passphrase was asked {shown} times): {}",
            pcr7_difference(&first.report, r)
        );
    }
    expect(r, "secure_boot", "on").context("second boot")?;
    if !started_signed_uki(&console_of(&cfg)?, Slot::B) {
        bail!("second boot: GRUB did not start slot B's signed UKI");
    }
    check_verified_boot(r, &b, Slot::B).context("second boot")?;
    let part_b = facts
        .parts
        .iter()
        .find(|p| p.name == anklume_contract::partition::slot_label(Slot::B))
        .context("the raw image has no slot B partition")?;
    expect(r, "boot_partuuid", &part_b.unique_guid.to_lowercase()).context("second boot")?;
    pool_facts(r, Slot::B).context("second boot")?;
    later_pool_boot(r, &token, shown, 0).context("second boot, slot B")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || !st.is_good(Slot::B) {
        bail!("after the second boot the boot state is {st:?}, not B primary and good");
    }
    eprintln!(
        "  slot B ({}) booted from the bundle's signed UKI under Secure Boot, verified, pool unlocked by the TPM, marked good: {st:?}",
        b.manifest.version
    );
    for f in [pool_disk, volume, stick] {
        std::fs::remove_file(f)?;
    }
    Ok(second)
}

/// stick-grow: the ISO written to a 4 GiB stick (as `dd` does: the file
/// copied, the rest of the stick empty), SeaBIOS. Boot 1 (slot A): `anklume
/// update --from` finds no slot B, makes slot B and persist in the free
/// space, then installs the bundle; on the stick, checked from the host:
/// both partitions in the GPT, the ISO 9660 area and slot A unchanged, B
/// armed. Boot 2: slot B, verified, persist formatted and mounted.
pub fn stick_grow(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    iso: &Path,
    images: &Images,
) -> Result<Outcome> {
    let bundle = images
        .bundle
        .as_deref()
        .context("the stick-grow scenario needs --bundle FILE (`make test-bundles` makes one)")?;
    std::fs::create_dir_all(&cfg.dir)?;
    let stick = copy_image(iso, &cfg.dir, "stick.img")?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stick)?
        .set_len(4 << 30)?;
    cfg.image = stick.clone();
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    cfg.test_actions = format!("report,update={name}");
    let (first, vm) = boot_until_report(&cfg, Duration::from_secs(1500)).context("first boot")?;
    vm.close()?;
    let r = &first.report;
    check_verified_boot(r, facts, Slot::A).context("first boot")?;
    expect(r, "persist_mounted", "0").context("first boot: a stick from the ISO has no persist")?;
    updated(r).context("first boot")?;
    keep_logs(&cfg, "boot1")?;
    // The stick's GPT now has slot B and persist; what the ISO holds
    // besides its ESP (the ISO 9660 area, slot A) is unchanged.
    let parts = {
        let f = std::fs::File::open(&stick)?;
        anklume_build::gpt::read(&f).context("reading the grown stick's GPT")?
    };
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    for want in ["anklume-slot-b", "anklume-persist"] {
        if !names.contains(&want) {
            bail!("the stick's GPT has no {want} after the update: {names:?}");
        }
    }
    for label in ["ISO9660", "anklume-slot-a"] {
        let p = facts
            .parts
            .iter()
            .find(|p| p.name == label)
            .with_context(|| format!("the ISO has no {label} partition"))?;
        let (a, b) = (
            read_range(iso, p.offset(), p.size())?,
            read_range(&stick, p.offset(), p.size())?,
        );
        if a != b {
            bail!("the update changed the stick's {label} partition");
        }
    }
    let b = slot_facts(&stick, Slot::B).context("slot B after the update")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || st.tries(Slot::B) != Some(3) {
        bail!("after the update the boot state is {st:?}, not B armed");
    }
    eprintln!(
        "  boot 1: {}",
        r.get("update_said").map(String::as_str).unwrap_or("")
    );

    // Boot 2: slot B from the new partition; persist formatted, mounted.
    cfg.test_actions = "report".into();
    let (second, vm) = boot_until_report(&cfg, Duration::from_secs(900)).context("second boot")?;
    vm.close()?;
    let r = &second.report;
    check_verified_boot(r, &b, Slot::B).context("second boot")?;
    expect(r, "persist_mounted", "1").context("second boot: the new persist partition")?;
    eprintln!("  boot 2: slot B verified, persist mounted; GPT: {names:?}");
    std::fs::remove_file(volume)?;
    std::fs::remove_file(stick)?;
    Ok(second)
}

fn read_range(file: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; usize::try_from(len)?];
    f.read_exact_at(&mut buf, offset)
        .with_context(|| format!("reading {} bytes at {offset} of {}", len, file.display()))?;
    Ok(buf)
}

/// The reports of the boots one QEMU run made (it may reboot), in order.
fn reports(text: &str) -> Vec<BTreeMap<String, String>> {
    text.split("ANKLUME hello\n")
        .skip(1)
        .map(crate::scenario::parse_report)
        .collect()
}

pub fn broken(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    image: &Path,
    images: &Images,
) -> Result<Outcome> {
    let bundle = images.broken_bundle.as_deref().context(
        "the update-broken scenario needs --broken-bundle FILE (`make test-bundle-broken` makes one)",
    )?;
    let stick = writable_stick(&mut cfg, image)?;
    fresh_tpm(&mut cfg);
    let pool_disk = pool_disks(&mut cfg, true)?;
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    let token = token()?;

    // Boot 1, slot A: the pool (TPM-enrolled: later boots unlock by
    // themselves), the broken update written.
    let first = first_pool_boot(&mut cfg, facts, &token, &format!(",update={name}"))?;
    let r = &first.report;
    expect(r, "tpm2_token", "1").context("first boot")?;
    expect(r, "update_rc", "0")
        .with_context(|| format!("first boot: {:?}", r.get("update_said")))?;
    keep_logs(&cfg, "boot1")?;
    let b = slot_facts(&stick, Slot::B).context("slot B after the update")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || st.tries(Slot::B) != Some(3) {
        bail!("after the update the boot state is {st:?}, not B armed");
    }

    // Power on once, reboots allowed: B boots, its health check fails,
    // it gives way to A and reboots; A comes up healthy.
    cfg.allow_reboot = true;
    cfg.test_actions = "report".into();
    let mut vm = crate::qemu::Vm::start(&cfg)?;
    let start = Instant::now();
    let boots = loop {
        std::thread::sleep(Duration::from_millis(500));
        let text = vm.report();
        let boots = reports(&text);
        if boots.len() >= 2
            && text
                .rsplit("ANKLUME hello\n")
                .next()
                .is_some_and(|l| l.contains("ANKLUME end"))
        {
            break boots;
        }
        if !vm.running() || start.elapsed() > Duration::from_secs(1800) {
            bail!(
                "{} boot report(s) after {} s, not the broken slot's then slot A's; console tail:\n{}",
                boots.len(),
                start.elapsed().as_secs(),
                crate::scenario::tail(&vm.console(), 30)
            );
        }
    };
    let shown = prompts_shown(&vm);
    vm.close()?;
    let (on_b, on_a) = (&boots[boots.len() - 2], &boots[boots.len() - 1]);
    expect(on_b, "boot_slot", "b").context("the boot after the update")?;
    expect(on_b, "boot_version", &b.manifest.version).context("the boot after the update")?;
    check_verified_boot(on_a, facts, Slot::A).context("the boot after the fallback")?;
    pool_facts(on_a, Slot::A).context("the boot after the fallback")?;
    later_pool_boot(on_a, &token, shown, 0).context("the boot after the fallback")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::A || st.is_good(Slot::B) || st.tries(Slot::B) != Some(0) {
        bail!("after the fallback the boot state is {st:?}: not A primary with B failed");
    }
    eprintln!(
        "  slot B ({}) booted, failed its health check, gave way: {st:?}; slot A came back healthy in {:.0} s",
        b.manifest.version,
        start.elapsed().as_secs_f64()
    );
    for f in [pool_disk, volume, stick] {
        std::fs::remove_file(f)?;
    }
    Ok(Outcome {
        report: on_a.clone(),
        ..Outcome::default()
    })
}

/// The updater's lines so far in the guest's report.
fn steps(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("ANKLUME update_step="))
        .collect()
}

pub fn powercut(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    image: &Path,
    images: &Images,
) -> Result<Outcome> {
    let bundle = images.bundle.as_deref().context(
        "the update-powercut scenario needs --bundle FILE (`make test-bundles` makes one)",
    )?;
    let stick = writable_stick(&mut cfg, image)?;
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    cfg.test_actions = format!("report,update={name}");

    // Boot 1: cut the power 1.5 s into the image write (it takes ~5 s
    // under TCG on the 2-core CI machine).
    let mut vm = crate::qemu::Vm::start(&cfg)?;
    let start = Instant::now();
    let cut_after = Duration::from_millis(1500);
    let mut writing_since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let report = vm.report();
        let s = steps(&report);
        if s.iter()
            .any(|l| l.contains("Armed") || l.contains("slot b now holds"))
        {
            bail!("the update finished before the power cut; steps: {s:?}");
        }
        if let Some(t) = writing_since {
            if t.elapsed() >= cut_after {
                break;
            }
        } else if s.iter().any(|l| l.contains("Cleared")) {
            writing_since = Some(Instant::now());
        }
        if report.lines().any(|l| l.starts_with("ANKLUME update_rc=")) {
            bail!(
                "the update ended before the power cut: {:?}",
                steps(&report)
            );
        }
        if !vm.running() || start.elapsed() > Duration::from_secs(1200) {
            bail!(
                "no update under way within {} s; console tail:\n{}",
                start.elapsed().as_secs(),
                crate::scenario::tail(&vm.console(), 25)
            );
        }
    }
    let s = steps(&vm.report()).join(" | ");
    vm.close()?;
    eprintln!("  power cut after: {s}");
    keep_logs(&cfg, "boot1")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::A || st.is_good(Slot::B) || st.tries(Slot::B).is_some() {
        bail!("after the power cut the boot state is {st:?}: slot B must not be armed");
    }

    // Boot 2: slot A; the interrupted slot seen; a new update succeeds.
    let (out, vm) = boot_until_report(&cfg, Duration::from_secs(1500)).context("second boot")?;
    vm.close()?;
    let r = &out.report;
    check_verified_boot(r, facts, Slot::A).context("second boot")?;
    // The cut image is not bootable: its folder lost slot.cfg before the
    // image was touched (empty, or incomplete when older files remain).
    match r.get("update_status_before") {
        Some(v)
            if v.contains("next boot: slot a")
                && (v.contains("slot b: -  empty") || v.contains("slot b: -  incomplete")) => {}
        other => bail!("second boot: --status before the new update said {other:?}, not slot b empty or incomplete, slot a next"),
    }
    updated(r).context("second boot: the new update")?;
    let st = boot_state(&stick, facts)?;
    if st.primary != Slot::B || st.tries(Slot::B) != Some(3) {
        bail!("after the new update the boot state is {st:?}, not B armed");
    }
    slot_facts(&stick, Slot::B).context("slot B after the new update")?;
    eprintln!(
        "  boot 2: slot A booted; the new update: {}",
        r.get("update_said").map(String::as_str).unwrap_or("")
    );
    std::fs::remove_file(volume)?;
    std::fs::remove_file(stick)?;
    Ok(out)
}

/// The bytes an update writes for slot B: its partition, its folder's
/// files on the ESP and the boot state.
fn slot_b_bytes(image: &Path, facts: &ImageFacts) -> Result<Vec<(String, Vec<u8>)>> {
    let part = facts
        .parts
        .iter()
        .find(|p| p.name == anklume_contract::partition::slot_label(Slot::B))
        .context("the raw image has no slot B")?;
    let mut out = Vec::new();
    let mut f = std::fs::File::open(image)?;
    let mut data = vec![0u8; usize::try_from(part.size())?];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(part.offset()))?;
    std::io::Read::read_exact(&mut f, &mut data)?;
    out.push(("slot B partition".to_string(), data));
    for name in [
        bootfiles::SLOT_CFG,
        bootfiles::MANIFEST,
        bootfiles::KERNEL,
        bootfiles::INITRD,
    ] {
        let path = bootfiles::slot_file(Slot::B, name);
        let data = esp::read_file(image, facts.esp_offset, &path).unwrap_or_default();
        out.push((path, data));
    }
    out.push((
        bootfiles::GRUBENV.to_string(),
        esp::read_file(image, facts.esp_offset, bootfiles::GRUBENV)?,
    ));
    Ok(out)
}

pub fn rejected(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    image: &Path,
    images: &Images,
) -> Result<Outcome> {
    let bundle = images.foreign_bundle.as_deref().context(
        "the update-rejected scenario needs --foreign-bundle FILE (`make test-bundles` makes one)",
    )?;
    let stick = writable_stick(&mut cfg, image)?;
    let (volume, name) = attach_bundle(&mut cfg, bundle)?;
    let before = slot_b_bytes(&stick, facts)?;
    cfg.test_actions = format!("report,update={name}");
    let (out, vm) = boot_until_report(&cfg, Duration::from_secs(900))?;
    vm.close()?;
    let r = &out.report;
    check_verified_boot(r, facts, Slot::A)?;
    expect(r, "update_rc", "1")?;
    match r.get("update_said") {
        Some(s) if s.contains("which is not among the") && s.contains("trusted key") => {}
        other => bail!("anklume update did not refuse the foreign key's bundle: {other:?}"),
    }
    let after = slot_b_bytes(&stick, facts)?;
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0.as_str())
        .collect();
    if !changed.is_empty() {
        bail!("a refused bundle changed: {}", changed.join(", "));
    }
    eprintln!(
        "  refused: {}; slot B, its boot files and the boot state byte-identical",
        r.get("update_said").map(String::as_str).unwrap_or("")
    );
    std::fs::remove_file(volume)?;
    std::fs::remove_file(stick)?;
    Ok(out)
}
