//! The interactive first-boot wizard (`dialoguer`, plain theme: it runs on
//! a text console and on a serial line, where colours and box drawing help
//! no one). It fills in the same [`Plan`] a preseed gives, through the same
//! checks: only surveyed candidates are listed, a disk that is not blank
//! needs its by-id name or serial typed, and the plan is shown in full
//! before the last question.

use anyhow::{bail, Context, Result};
use dialoguer::console::Term;
use dialoguer::theme::SimpleTheme;
use dialoguer::{Confirm, Input, Password, Select};

use crate::disks::{survey, Candidate, WipeConsent};
use crate::inventory::Inventory;
use crate::plan::{Argon2id, Filesystem, Luks, Plan, Secret, MIN_PASSPHRASE};

/// What the wizard ends with.
#[derive(Debug)]
pub enum Outcome {
    /// The person confirmed this plan (or, in a dry run, reached it).
    Confirmed(Box<Plan>),
    /// The person said no at the end: nothing is written.
    Declined,
}

fn line(term: &Term, s: &str) -> Result<()> {
    term.write_line(s).context("writing to the terminal")
}

/// Pick a disk, and the consent to wipe it when it is not blank. An empty
/// answer to the confirmation goes back to the list.
fn pick_disk(term: &Term, cands: &[Candidate]) -> Result<(Candidate, Option<WipeConsent>)> {
    let theme = SimpleTheme;
    let items: Vec<String> = cands.iter().map(Candidate::summary).collect();
    loop {
        let i = Select::with_theme(&theme)
            .with_prompt("Disk for the encrypted pool")
            .items(&items)
            .default(0)
            .interact_on(term)
            .context("choosing the disk")?;
        let c = &cands[i];
        if c.is_blank() {
            return Ok((c.clone(), None));
        }
        line(
            term,
            &format!("{} is not blank: {}", c.label(), c.contents()),
        )?;
        line(term, "Everything on it will be destroyed.")?;
        let cand = c.clone();
        let typed: String = Input::with_theme(&theme)
            .with_prompt(
                "To wipe it, type its /dev/disk/by-id name or serial (empty: choose again)",
            )
            .allow_empty(true)
            .validate_with(move |s: &String| -> Result<(), String> {
                if s.trim().is_empty() {
                    return Ok(());
                }
                cand.consent(s).map(|_| ()).map_err(|e| e.to_string())
            })
            .interact_text_on(term)
            .context("confirming the wipe")?;
        if typed.trim().is_empty() {
            continue;
        }
        let consent = c.consent(&typed)?;
        return Ok((c.clone(), Some(consent)));
    }
}

/// Run the wizard on `term` over the machine described by `inv`. With
/// `dry_run` the last question is not asked: the plan is shown and
/// returned.
pub fn run(term: &Term, inv: &Inventory, dry_run: bool) -> Result<Outcome> {
    let theme = SimpleTheme;
    let sv = survey(inv);
    line(term, "anklume first boot: the encrypted data pool")?;
    line(term, "")?;
    let drives: Vec<_> = sv.excluded.iter().filter(|e| !e.virtual_device).collect();
    if !drives.is_empty() {
        line(term, "Not offered:")?;
        for e in drives {
            line(term, &format!("  {}: {}", e.name, e.reason))?;
        }
        line(term, "")?;
    }
    if sv.candidates.is_empty() {
        bail!(
            "no disk can hold the pool: plug in a disk of at least {}",
            crate::disks::MIN_POOL_SIZE
        );
    }
    let (disk, wipe) = pick_disk(term, &sv.candidates)?;

    let fs = Select::with_theme(&theme)
        .with_prompt("Filesystem")
        .items(&[
            "btrfs: subvolumes incus, anklume, snapshots",
            "zfs: pool anklume on LUKS, datasets incus, anklume (needs the ZFS image variant)",
        ])
        .default(0)
        .interact_on(term)
        .context("choosing the filesystem")?;
    let filesystem = if fs == 0 {
        Filesystem::btrfs_default()
    } else {
        Filesystem::zfs_default()
    };

    let tpm2 = if inv.tpm2 {
        Confirm::with_theme(&theme)
            .with_prompt("Enrol the TPM 2.0 (unlock without a passphrase while Secure Boot state is unchanged)?")
            .default(false)
            .interact_on(term)
            .context("asking about the TPM")?
    } else {
        line(
            term,
            "No TPM 2.0 found: the passphrase is asked at every boot.",
        )?;
        false
    };

    let pass = Password::with_theme(&theme)
        .with_prompt(format!(
            "Pool passphrase (at least {MIN_PASSPHRASE} characters)"
        ))
        .with_confirmation("Repeat the passphrase", "The two passphrases differ.")
        .validate_with(|s: &String| -> Result<(), String> {
            Secret::new(s.clone())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .interact_on(term)
        .context("reading the passphrase")?;
    let passphrase = Secret::new(pass)?;

    let luks = Luks::new(Argon2id::for_machine(inv.mem_total_kib));
    let plan = Plan::new(disk, wipe, filesystem, luks, tpm2, passphrase)?;
    line(term, "")?;
    for l in plan.to_string().lines() {
        line(term, l)?;
    }
    line(term, "")?;
    if dry_run {
        return Ok(Outcome::Confirmed(Box::new(plan)));
    }
    let go = Confirm::with_theme(&theme)
        .with_prompt(format!("Write this plan to {}?", plan.disk().label()))
        .default(false)
        .interact_on(term)
        .context("asking for the go-ahead")?;
    Ok(if go {
        Outcome::Confirmed(Box::new(plan))
    } else {
        Outcome::Declined
    })
}
