//! The command line of `anklume-update` and `anklume update` (one
//! definition, two thin programs): install a bundle, status, rollback,
//! mark-good, new keys. See docs/update.md.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::grow;
use crate::keys::{self, TRUSTED_KEYS_DIR};
use crate::ops;
use crate::system::MissingSlot;
use crate::{update, FileSource, HttpSource, OpenBundle, Source, Step, System, UpdateOptions};

/// The update command line, shared by `anklume-update` and `anklume update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Install the bundle FILE (or http(s):// URL, read by resumable
    /// range requests) into the inactive slot.
    #[arg(long, value_name = "FILE|URL")]
    from: Option<PathBuf>,
    /// Do not ask before writing.
    #[arg(long)]
    yes: bool,
    /// Accept a bundle whose version is not newer than the running one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Look for the image's blocks on this machine (the running slot, an
    /// interrupted write) and read only the others from the bundle: the
    /// default for a URL; for a local file the scan usually costs more than
    /// it saves.
    #[arg(long, conflicts_with = "no_reuse")]
    reuse: bool,
    /// Read the whole image from the bundle, even from a URL.
    #[arg(long)]
    no_reuse: bool,
    /// Read the image once, checking it only while writing (faster; a
    /// corrupt bundle then leaves the target unbootable instead of untouched).
    #[arg(long)]
    stream: bool,
    /// Show the slots, their versions and what boots next.
    #[arg(long)]
    status: bool,
    /// Boot the other slot next (or cancel an update not yet booted).
    #[arg(long)]
    rollback: bool,
    /// Mark the running slot good (what the health check calls).
    #[arg(long)]
    mark_good: bool,
    /// Make a signing key pair DIR/NAME.key (private) + DIR/NAME.pub.
    #[arg(long, value_name = "DIR/NAME")]
    new_key: Option<PathBuf>,
    /// Where the ESP is mounted (default: found on the boot disk, and
    /// mounted at /run/anklume/esp for the command's length if the kernel
    /// has not mounted it).
    #[arg(long, value_name = "DIR")]
    esp: Option<PathBuf>,
    /// Directory of trusted public keys (*.pub).
    #[arg(long, default_value = TRUSTED_KEYS_DIR)]
    keys: PathBuf,
    /// Print the time each step of an update took (stderr).
    #[arg(long)]
    timings: bool,
    /// Describe the machine in a JSON file instead of discovering the
    /// running Live OS (a disk attached elsewhere; tests; bench).
    #[arg(long, value_name = "FILE")]
    system: Option<PathBuf>,
}

/// Carry out one command line.
pub fn run(a: UpdateArgs) -> Result<()> {
    let ops_given = [
        a.from.is_some(),
        a.status,
        a.rollback,
        a.mark_good,
        a.new_key.is_some(),
    ];
    match ops_given.iter().filter(|&&x| x).count() {
        1 => {}
        0 => bail!("nothing to do: give --from FILE, --status, --rollback, --mark-good or --new-key (see --help)"),
        _ => bail!("give only one of --from, --status, --rollback, --mark-good, --new-key"),
    }
    if let Some(p) = &a.new_key {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = p
            .file_name()
            .context("--new-key DIR/NAME: no NAME")?
            .to_string_lossy();
        let k = keys::generate(dir, &name)?;
        println!(
            "wrote {0}/{name}.key (keep it private) and {0}/{name}.pub (key id {1}): install the .pub in {TRUSTED_KEYS_DIR}",
            dir.display(),
            anklume_contract::bundle::hex(&k.id())
        );
        return Ok(());
    }
    let mut opened = None;
    let (sys, esp_mount) = match &a.system {
        Some(f) => (System::from_file(f)?, None),
        None => {
            let found = System::discover(a.esp.as_deref())?;
            match found.missing {
                None => (found.sys, found.esp_mount),
                Some(missing) if a.from.is_some() => {
                    // A stick written from the ISO: the bundle and every
                    // check that does not need slot B's device first, then
                    // slot B and persist are made, then the machine is
                    // discovered again (the ESP guard is kept: the second
                    // discovery finds the ESP mounted).
                    let b = open_bundle(&a, &found.sys)?;
                    crate::update::check_machine(&found.sys, &b, a.allow_downgrade)?;
                    grow_stick(&a, &missing, b.manifest.image.size)?;
                    opened = Some(b);
                    let again = System::discover(a.esp.as_deref())?;
                    if let Some(m) = again.missing {
                        bail!("after making slot B: {m}");
                    }
                    (again.sys, found.esp_mount)
                }
                Some(missing) => bail!("{missing}"),
            }
        }
    };
    let r = run_on(a, &sys, opened);
    match (esp_mount, r) {
        (Some(m), Ok(())) => m.close(),
        // The command's error first; an ESP left mounted is said too.
        (Some(m), Err(e)) => {
            if let Err(c) = m.close() {
                eprintln!("anklume-update: warning: {c:#}");
            }
            Err(e)
        }
        (None, r) => r,
    }
}

/// Ask before writing `what`, unless `--yes`; refuse without a terminal.
fn confirm(a: &UpdateArgs, what: &str) -> Result<()> {
    if a.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("would write {what}; no terminal to ask: add --yes");
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(format!("Write {what}?"))
        .default(false)
        .interact()
        .context("asking for confirmation")?;
    if !ok {
        bail!("cancelled; nothing written");
    }
    Ok(())
}

/// Open and check `--from` (signature, layout, index, boot files).
fn open_bundle(a: &UpdateArgs, sys: &System) -> Result<OpenBundle> {
    let from = a.from.as_ref().expect("checked above");
    let trusted = keys::load_trusted(&a.keys)?;
    let t_open = std::time::Instant::now();
    let from_s = from.to_string_lossy();
    let source: Box<dyn Source> = if is_url(&from_s) {
        Box::new(HttpSource::open(
            &from_s,
            std::time::Duration::from_millis(500),
        )?)
    } else {
        Box::new(FileSource::open(from)?)
    };
    // With block reuse, a boot file the ESP already has (either slot's
    // folder, same SHA-256) is not read from the bundle.
    let local = |name: &str| -> Vec<Vec<u8>> {
        [sys.running, sys.running.other()]
            .into_iter()
            .filter_map(|s| std::fs::read(sys.esp.slot_file(s, name)).ok())
            .collect()
    };
    let bundle = if reuse_blocks(a) {
        OpenBundle::open_reusing(source, &trusted, &|name: &str| local(name))
    } else {
        OpenBundle::open(source, &trusted)
    }?;
    if a.timings {
        eprintln!(
            "{:>8.3} s  open (signature, index, boot files)",
            t_open.elapsed().as_secs_f64()
        );
    }
    Ok(bundle)
}

/// Block reuse (delta): asked for, or a URL without --no-reuse.
fn reuse_blocks(a: &UpdateArgs) -> bool {
    let url = a
        .from
        .as_ref()
        .is_some_and(|f| is_url(&f.to_string_lossy()));
    a.reuse || (url && !a.no_reuse)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Make slot B and persist on a stick written from the ISO (see
/// [`crate::grow`]), for an image of `need` bytes.
fn grow_stick(a: &UpdateArgs, missing: &MissingSlot, need: u64) -> Result<()> {
    let table = grow::Table::from_sysfs(Path::new("/"), &missing.disk)?;
    let plan = grow::plan(&table, need)?;
    eprintln!("anklume-update: {}", plan.describe());
    confirm(
        a,
        &format!(
            "a new partition table on {} (slot B and persist added)",
            plan.disk.display()
        ),
    )?;
    grow::apply(&plan, true)?;
    eprintln!(
        "anklume-update: slot B (partition {}) and persist (partition {}) made on {}",
        plan.slot_b.0,
        plan.persist.0,
        plan.disk.display()
    );
    Ok(())
}

/// The commands that work on a machine's slots and ESP.
fn run_on(a: UpdateArgs, sys: &System, opened: Option<OpenBundle>) -> Result<()> {
    if a.status {
        print!("{}", ops::status(sys)?);
        return Ok(());
    }
    if a.mark_good {
        ops::mark_good(sys)?;
        println!("slot {} marked good", sys.running);
        return Ok(());
    }
    if a.rollback {
        let st = ops::rollback(sys)?;
        println!("next boot: slot {}", crate::esp::would_boot(&st, &sys.esp));
        return Ok(());
    }
    let url = is_url(&a.from.as_ref().expect("checked above").to_string_lossy());
    let bundle = match opened {
        Some(b) => b,
        None => open_bundle(&a, sys)?,
    };
    let m = &bundle.manifest;
    let target = sys.running.other();
    let what = format!(
        "version {} (signed by {}) into slot {target} ({}), running {} stays untouched",
        m.slot.version,
        bundle.key,
        sys.device(target).display(),
        sys.running_version
    );
    confirm(&a, &what)?;
    let blocks = m.slot.data_blocks;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(blocks * 4096);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix("slot");
        b
    } else {
        ProgressBar::hidden()
    };
    let opts = UpdateOptions {
        allow_downgrade: a.allow_downgrade,
        reuse: reuse_blocks(&a),
        // Over HTTP, checking every block first would download the image
        // twice: it is checked while written (the target made unbootable
        // first), as with --stream.
        precheck: !a.stream && !url,
        ..UpdateOptions::default()
    };
    let t0 = std::time::Instant::now();
    let mut last = t0;
    let r = update(sys, &bundle, &opts, &mut |s| {
        if let Step::Chunk(done) = s {
            bar.set_position(done * 4096);
        } else if a.timings {
            let now = std::time::Instant::now();
            eprintln!("{:>8.3} s  {s:?}", (now - last).as_secs_f64());
            last = now;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    for n in &r.notes {
        eprintln!("anklume-update: {n}");
    }
    println!(
        "slot {} now holds {} (root hash {}); image bytes: {} from the bundle, {} reused, {} already in place; {} bytes read from the bundle in all; reboot to try it (3 tries, then back to slot {})",
        r.target,
        r.version,
        r.root_hash,
        r.stats.from_bundle,
        r.stats.reused,
        r.stats.present,
        r.bundle_bytes_read,
        sys.running
    );
    Ok(())
}
