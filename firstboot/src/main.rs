//! `anklume-firstboot`: the first-boot wizard and its unattended mode.
//!
//! A thin CLI over `anklume-provision`: read the machine's disks, take the
//! plan from a preseed (`--preseed FILE`, else the `ANKLUME-SEED` volume)
//! or from the interactive wizard, show it in full, and with `--dry-run`
//! stop there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anklume_provision::consoles::Consoles;
use anklume_provision::disks::survey;
use anklume_provision::exec;
use anklume_provision::inventory::Inventory;
use anklume_provision::plan::Plan;
use anklume_provision::preseed::Preseed;
use anklume_provision::probe::Probe;
use anklume_provision::rawscan;
use anklume_provision::seed::{self, load_seed, SEED_LABEL, SEED_MOUNT_DIR};
use anklume_provision::unlock;
use anklume_provision::wizard::{self, Outcome};
use anklume_provision::Term;
use anyhow::{bail, Context, Result};
use clap::Parser;

mod console;

/// Create the encrypted data pool on first boot: interactive by default,
/// unattended with a preseed (`--preseed FILE`, or `anklume-seed.toml` on a
/// volume labelled ANKLUME-SEED).
#[derive(Debug, Parser)]
#[command(name = "anklume-firstboot", version)]
struct Cli {
    /// Unattended: take every answer from this preseed file.
    #[arg(long, value_name = "FILE")]
    preseed: Option<PathBuf>,
    /// Show the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// List the disks: those offered for the pool, and why the others are
    /// not; then exit.
    #[arg(long)]
    list_disks: bool,
    /// Do not look for an ANKLUME-SEED volume (interactive unless --preseed).
    #[arg(long)]
    no_seed: bool,
    /// Read the disks from this JSON inventory instead of the machine
    /// (tests and demos; only with --dry-run or --list-disks).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Trace the external commands run.
    #[arg(long)]
    verbose: bool,
    /// The boot-time run (anklume-firstboot.service): unattended only.
    /// A machine that already has a pool, or no seed volume, is left
    /// alone (exit 0); the new pool is left unlocked for this boot.
    #[arg(long, conflicts_with_all = ["dry_run", "list_disks", "inventory", "no_seed"])]
    boot: bool,
    /// The boot-time wizard (anklume-firstboot-console.service): with no
    /// pool on the machine, offer the wizard on every console; the first
    /// where someone presses Enter runs it, makes the pool and moves Incus
    /// onto it at once.
    #[arg(long, conflicts_with_all = ["dry_run", "list_disks", "inventory", "no_seed", "boot", "preseed"])]
    console: bool,
    /// One console of --console (its terminal is stdin and stdout).
    #[arg(long, value_name = "TTY", hide = true, conflicts_with_all = ["dry_run", "list_disks", "inventory", "no_seed", "boot", "preseed", "console"])]
    console_on: Option<String>,
}

/// Exit status when the person declines the plan at the last question.
const DECLINED: u8 = 3;

fn inventory(cli: &Cli) -> Result<Inventory> {
    match &cli.inventory {
        Some(p) => {
            if !(cli.dry_run || cli.list_disks) {
                bail!("--inventory is a fake machine: it is only accepted with --dry-run or --list-disks");
            }
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Inventory::from_json(&text).with_context(|| format!("in {}", p.display()))
        }
        None => Probe::new("/")
            .inventory()
            .context("reading the machine's disks"),
    }
}

fn list_disks(inv: &Inventory) {
    let s = survey(inv);
    println!("Offered for the pool:");
    if s.candidates.is_empty() {
        println!("  (none)");
    }
    for c in &s.candidates {
        println!("  {}", c.summary());
    }
    println!("Not offered:");
    for e in &s.excluded {
        println!("  {}: {}", e.name, e.reason);
    }
}

fn preseed(cli: &Cli, inv: &Inventory) -> Result<Option<Preseed>> {
    if let Some(p) = &cli.preseed {
        return Preseed::load(p).map(Some);
    }
    // A fake inventory's devices cannot be mounted.
    if cli.no_seed || cli.inventory.is_some() {
        return Ok(None);
    }
    load_seed(inv, Path::new(SEED_MOUNT_DIR))
        .with_context(|| format!("reading the {SEED_LABEL} volume"))
}

fn print_commands(plan: &Plan) {
    println!("Commands (secrets go on stdin, never on a command line):");
    for s in exec::steps(plan) {
        println!("  {}", s.line());
    }
}

/// Write the pool, after reading the machine again (the disk must still be
/// the one planned). At boot (`at_boot`) the pool is left unlocked, for
/// anklume-pool.service to mount before Incus starts; on a running system
/// Incus already runs from memory, so the pool is for the next boot.
fn apply(plan: &Plan, at_boot: bool) -> Result<()> {
    if at_boot {
        // The service's output goes to the journal too: the recovery key
        // goes to the consoles themselves, and nowhere else.
        let mut consoles = Consoles::open(Path::new("/"))
            .context("the recovery key is shown only on the consoles, and none could be opened")?;
        println!(
            "The recovery key is shown on the console ({}), not in this log.",
            consoles.names.join(", ")
        );
        write_pool(plan, &mut consoles)?;
        exec::leave_open(plan, &mut exec::System, &mut std::io::stdout())?;
        println!("The pool is ready on {}.", plan.disk().label());
    } else {
        write_pool(plan, &mut std::io::stdout())?;
        println!(
            "The pool is ready on {}: reboot, and it is unlocked and mounted before Incus starts.",
            plan.disk().label()
        );
    }
    Ok(())
}

/// Carry out `plan` after reading the machine again (the disk must still
/// be the one planned); progress on stdout, the recovery key on `key_out`.
pub(crate) fn write_pool(plan: &Plan, key_out: &mut dyn std::io::Write) -> Result<()> {
    let now = Probe::new("/")
        .inventory()
        .context("reading the machine's disks again")?;
    exec::execute(
        plan,
        &now,
        &mut exec::System,
        &mut std::io::stdout(),
        key_out,
    )
}

/// The plan a preseed gives, shown in full.
fn preseed_plan(p: &Preseed, inv: &Inventory) -> Result<Plan> {
    println!("Preseed: {}", p.origin);
    let plan = p.plan(inv)?;
    println!("{plan}");
    Ok(plan)
}

/// anklume-firstboot.service: a pool already here, or no seed volume, is
/// not this run's business. The devices themselves are probed first: with
/// no LUKS volume and no seed volume on any (most boots), that is known
/// without waiting for udev's first pass over every device; otherwise udev
/// is waited for and the inventory decides, as the wizard does.
fn boot(cli: &Cli) -> Result<ExitCode> {
    let found =
        rawscan::settle(|s| s.is_luks() || seed::is_seed(Some(&s.kind), s.label.as_deref()))?;
    let Some(found) = found else {
        println!("No data pool yet and no {SEED_LABEL} volume: the wizard is offered on the consoles (anklume-firstboot-console.service).");
        return Ok(ExitCode::SUCCESS);
    };
    println!("Waited for udev's record of the block devices: {found}");
    let inv = inventory(cli)?;
    if let Some(p) = unlock::find(&inv)? {
        println!(
            "This machine has its data pool (/dev/{}): nothing to create.",
            p.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(p) = preseed(cli, &inv)? else {
        println!("No data pool yet and no {SEED_LABEL} volume: the wizard is offered on the consoles (anklume-firstboot-console.service).");
        return Ok(ExitCode::SUCCESS);
    };
    apply(&preseed_plan(&p, &inv)?, true)?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: &Cli) -> Result<ExitCode> {
    anklume_cmd::set_trace(cli.verbose);
    if cli.boot {
        return boot(cli);
    }
    if cli.console {
        return console::all();
    }
    if let Some(tty) = &cli.console_on {
        return console::one(tty);
    }
    let inv = inventory(cli)?;
    if cli.list_disks {
        list_disks(&inv);
        return Ok(ExitCode::SUCCESS);
    }
    let plan = match preseed(cli, &inv)? {
        Some(p) => preseed_plan(&p, &inv)?,
        None => {
            let term = Term::stdout();
            if !term.is_term() {
                bail!("no terminal for the wizard: give --preseed FILE, or plug in a volume labelled {SEED_LABEL} holding anklume-seed.toml");
            }
            match wizard::run(&term, &inv, cli.dry_run)? {
                Outcome::Confirmed(plan) => *plan,
                Outcome::Declined => {
                    println!("Nothing was written.");
                    return Ok(ExitCode::from(DECLINED));
                }
            }
        }
    };
    if cli.dry_run {
        print_commands(&plan);
        println!("Dry run: nothing was written.");
        return Ok(ExitCode::SUCCESS);
    }
    apply(&plan, false)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anklume-firstboot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
