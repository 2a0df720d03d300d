//! The wizard on every console at boot, while the machine has no pool
//! (`anklume-firstboot-console.service`): `--console` starts one
//! `--console-on NAME` per console the kernel writes to, each with its
//! terminal as stdin, stdout and stderr; the first console where someone
//! presses Enter runs the wizard (see `anklume_provision::gate`), makes
//! the pool, and moves Incus onto it at once.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{ExitCode, Stdio};

use anklume_cmd::Cmd;
use anklume_provision::consoles;
use anklume_provision::exec::{self, Runner};
use anklume_provision::gate::{Gate, Turn, GATE_DIR};
use anklume_provision::probe::Probe;
use anklume_provision::rawscan;
use anklume_provision::unlock;
use anklume_provision::wizard::{self, Outcome};
use anklume_provision::Term;
use anyhow::{Context, Result};

/// The service: a pool already here, or the consoles already done this
/// boot, ends it at once; else one wizard process per console, waited for.
pub fn all() -> Result<ExitCode> {
    let inv = Probe::new("/")
        .inventory()
        .context("reading the machine's disks")?;
    if let Some(p) = unlock::find(&inv)? {
        println!(
            "This machine has its data pool (/dev/{}): no wizard on the consoles.",
            p.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = Path::new(GATE_DIR);
    if let Some(why) = Gate::finished(dir)? {
        println!("The consoles are done for this boot: {why}");
        return Ok(ExitCode::SUCCESS);
    }
    // An earlier run of the service this boot may have left its owner.
    Gate::new(dir, "").release()?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut children = Vec::new();
    for name in consoles::active(Path::new("/"))? {
        let tty = consoles::terminal(&name).to_string();
        let dev = Path::new("/dev").join(&tty);
        let open = || -> Result<File> {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev)
                .with_context(|| format!("opening {}", dev.display()))
        };
        let spawned = (|| -> Result<_> {
            let (i, o, e) = (open()?, open()?, open()?);
            Cmd::new(&exe)
                .args(["--console-on", &tty])
                .env("TERM", consoles::term_type(&tty))
                .spawn_on(Stdio::from(i), Stdio::from(o), Stdio::from(e))
        })();
        match spawned {
            Ok(c) => {
                println!("The first-boot wizard is offered on {tty}.");
                children.push((tty, c));
            }
            // An unplugged serial line must not stop the screen's wizard.
            Err(e) => println!("Not on {tty}: {e:#}"),
        }
    }
    anyhow::ensure!(!children.is_empty(), "no console to offer the wizard on");
    let mut failed = false;
    for (tty, mut c) in children {
        let status = c.wait().with_context(|| format!("waiting for {tty}"))?;
        if !status.success() {
            println!("The wizard on {tty} ended: {status}");
            failed = true;
        }
    }
    if let Some(why) = Gate::finished(dir)? {
        println!("{why}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One console: wait for its turn, run the wizard, make the pool, bring
/// it up; declined or failed: offered again (here and on the others).
pub fn one(name: &str) -> Result<ExitCode> {
    let gate = Gate::new(GATE_DIR, name);
    // Unbuffered: what is typed after Enter is for the wizard.
    let mut input = File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("reading the console")?,
    );
    let mut out = std::io::stdout();
    loop {
        match gate.wait(&mut input, &mut out)? {
            Turn::Finished(_) => return Ok(ExitCode::SUCCESS),
            Turn::Wizard => match make_pool() {
                Ok(Some(done)) => {
                    println!("\n{done}");
                    gate.finish(&done)?;
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(None) => {
                    println!("Nothing was written.");
                    gate.release()?;
                }
                Err(e) => {
                    println!("\nanklume-firstboot: {e:#}");
                    gate.release()?;
                }
            },
        }
    }
}

/// The wizard, the plan carried out, the pool left unlocked and Incus
/// moved onto it. `None`: declined.
fn make_pool() -> Result<Option<String>> {
    let term = Term::stdout();
    // The prompt may come before udev has recorded every disk (the boot
    // waits for it only when a LUKS or seed volume is there): the disks
    // offered need their model, serial and names.
    println!("Reading the disks...");
    rawscan::wait_for_udev()?;
    let inv = Probe::new("/")
        .inventory()
        .context("reading the machine's disks")?;
    let plan = match wizard::run(&term, &inv, false)? {
        Outcome::Confirmed(plan) => plan,
        Outcome::Declined => return Ok(None),
    };
    // This console is the wizard's terminal: the recovery key goes here.
    crate::write_pool(&plan, &mut std::io::stdout())?;
    exec::leave_open(&plan, &mut exec::System, &mut std::io::stdout())?;
    for s in unlock::bring_up_steps() {
        println!("==> {}", s.what);
        exec::System
            .run(&s, Vec::new())
            .with_context(|| s.what.clone())?;
    }
    Ok(Some(format!(
        "The data pool is ready on {}, Incus runs on it, and the agent is applying its infra.yml (journalctl -u anklume-agent).",
        plan.disk().label()
    )))
}
