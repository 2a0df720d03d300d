//! Running a plan's steps, in order, with the cleanup a failure needs.
//!
//! Every command goes through a [`Runner`]: [`System`] runs them (through
//! `Cmd`); tests use a recording runner, so the order, the stdin of each
//! step, the recovery key shown once and the cleanup after a failure are
//! checked on the host, where no device-mapper exists. (The unlocked pool
//! and the setup mount are released by explicit steps through the runner
//! rather than by a `Drop` guard, so that this cleanup is what the tests
//! see; only a panic between the two would leave the mapping open.)

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    close_step, filesystem_steps, luks_steps, open_step, partition_steps, tpm2_step, verify_target,
    RecoveryKey, Step, SETUP_MOUNT,
};
use crate::inventory::Inventory;
use crate::plan::Plan;
use anklume_cmd::Cmd;

/// Where the plan's commands go.
pub trait Runner {
    /// Run one step with these stdin bytes.
    fn run(&mut self, step: &Step, input: Vec<u8>) -> Result<()>;
    /// Wait for a device node to appear.
    fn wait_for(&mut self, path: &str) -> Result<()>;
    /// The signatures on `path` (read-only probe), as `TYPE OFFSET` lines.
    fn signatures(&mut self, path: &str) -> Result<Vec<String>>;
    /// Create a directory (the setup mount point).
    fn create_dir(&mut self, path: &str) -> Result<()>;
    /// Write a new file (the bootstrap `infra.yml` on the new pool).
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()>;
}

/// The machine itself.
#[derive(Debug, Default)]
pub struct System;

impl Runner for System {
    fn run(&mut self, step: &Step, input: Vec<u8>) -> Result<()> {
        step.cmd_with(input).run()
    }

    fn wait_for(&mut self, path: &str) -> Result<()> {
        let timeout = Duration::from_secs(30);
        let start = Instant::now();
        while !Path::new(path).exists() {
            if start.elapsed() > timeout {
                bail!(
                    "{path} did not appear within {} s after partitioning",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn signatures(&mut self, path: &str) -> Result<Vec<String>> {
        signatures(path)
    }

    fn create_dir(&mut self, path: &str) -> Result<()> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        // A new file system: nothing to replace, but never half a file.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, data).with_context(|| format!("writing {tmp}"))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {tmp} to {path}"))
    }
}

/// The signatures `wipefs` finds on `path` (read-only probe), as
/// `TYPE OFFSET` lines: udev's data may lag or be missing, so a disk planned
/// as blank is probed itself before anything is written.
pub fn signatures(path: &str) -> Result<Vec<String>> {
    let out = Cmd::new("wipefs")
        .args(["--no-act", "--noheadings", "--output", "TYPE,OFFSET", path])
        .output_string()
        .with_context(|| format!("probing {path} for signatures"))?;
    Ok(out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// A disk planned without a wipe must carry no signature at all.
pub fn check_blank(plan: &Plan, runner: &mut dyn Runner) -> Result<()> {
    if plan.wipe().is_some() {
        return Ok(());
    }
    let found = runner.signatures(&plan.disk().path())?;
    if !found.is_empty() {
        bail!(
            "{} is not blank after all ({}): nothing was written; confirm the wipe by naming the disk",
            plan.disk().label(),
            found.join(", ")
        );
    }
    Ok(())
}

/// Where the bootstrap `infra.yml` goes while the new pool is mounted for
/// setup: the `anklume` subvolume (see `anklume_contract::pool`), below the
/// btrfs top level; ZFS mounts its `anklume` dataset itself there. None
/// without that subvolume or dataset.
pub fn bootstrap_infra_path(plan: &Plan) -> Option<String> {
    let (dir, file) = anklume_contract::pool::INFRA_ON_POOL.split_once('/')?;
    match &plan.filesystem {
        crate::plan::Filesystem::Btrfs { subvolumes } => subvolumes
            .iter()
            .any(|s| s == dir)
            .then(|| format!("{SETUP_MOUNT}/{dir}/{file}")),
        crate::plan::Filesystem::Zfs { datasets, .. } => datasets
            .iter()
            .any(|d| d == dir)
            .then(|| format!("{SETUP_MOUNT}/{file}")),
    }
}

/// Carry out `plan`; `now` is a fresh inventory (see [`verify_target`]).
/// Progress goes to `out`; the recovery key goes to `key_out` once, right
/// after it is added to the pool (the wizard's terminal; at boot the
/// console itself, so that it never reaches the journal that `out` feeds).
/// When a step fails after the pool was unlocked, the setup mount (if
/// made) is unmounted and the pool locked again, through the same runner,
/// before the error is returned.
pub fn execute(
    plan: &Plan,
    now: &Inventory,
    runner: &mut dyn Runner,
    out: &mut dyn Write,
    key_out: &mut dyn Write,
) -> Result<()> {
    verify_target(plan, now)?;
    check_blank(plan, runner)?;
    let pass = plan.passphrase();
    let recovery = RecoveryKey::generate()?;
    let step = |s: &Step, runner: &mut dyn Runner, out: &mut dyn Write| -> Result<()> {
        writeln!(out, "==> {}", s.what)?;
        runner
            .run(s, s.input(pass, &recovery))
            .with_context(|| s.what.clone())
    };
    for s in partition_steps(plan) {
        step(&s, runner, out)?;
    }
    let part = plan.partition_path();
    runner.wait_for(&part)?;
    for s in luks_steps(plan, &part) {
        step(&s, runner, out)?;
    }
    writeln!(
        key_out,
        "\nRecovery key (shown once, stored nowhere: write it down now):\n\n    {}\n",
        recovery.expose()
    )?;
    key_out.flush()?;
    step(&open_step(&part), runner, out)?;
    // From here the pool is unlocked: lock it again whatever happens.
    let mut mounted = false;
    let mut body = |runner: &mut dyn Runner, out: &mut dyn Write| -> Result<()> {
        if plan.tpm2 {
            step(&tpm2_step(&part), runner, out)?;
        }
        runner.create_dir(SETUP_MOUNT)?;
        for s in filesystem_steps(plan) {
            if s.argv[0] == "umount" {
                if let Some(path) = bootstrap_infra_path(plan) {
                    writeln!(out, "==> the first infra.yml ({path})")?;
                    runner.write_file(&path, crate::BOOTSTRAP_INFRA.as_bytes())?;
                }
            }
            step(&s, runner, out)?;
            match s.argv[0].as_str() {
                "mount" => mounted = true,
                "umount" => mounted = false,
                _ => {}
            }
        }
        Ok(())
    };
    let result = body(runner, out);
    if result.is_err() && mounted {
        let umount = Step {
            what: "unmount after the failure".into(),
            argv: vec!["umount".into(), SETUP_MOUNT.into()],
            stdin: super::Stdin::Nothing,
        };
        if let Err(e) = runner.run(&umount, Vec::new()) {
            writeln!(out, "warning: {SETUP_MOUNT} stays mounted: {e:#}")?;
        }
    }
    let close = close_step();
    writeln!(out, "==> {}", close.what)?;
    let closed = runner.run(&close, Vec::new()).context("locking the pool");
    result?;
    closed
}

/// Unlock the pool just made with the plan's passphrase and leave it open
/// (the first boot goes on without asking for it again).
pub fn leave_open(plan: &Plan, runner: &mut dyn Runner, out: &mut dyn Write) -> Result<()> {
    let part = plan.partition_path();
    let s = open_step(&part);
    writeln!(out, "==> {} (left unlocked for this boot)", s.what)?;
    runner
        .run(&s, plan.passphrase().expose().as_bytes().to_vec())
        .context("unlocking the new pool")?;
    crate::unlock::record(runner, &part, anklume_contract::pool::UnlockedBy::FirstBoot)
}
