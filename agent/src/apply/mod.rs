//! `anklume apply`: make Incus match `infra.yml` through its REST API.
//!
//! The desired state comes from the generator's validated model
//! ([`desired`]); [`reconcile`] follows the reference's pattern (read →
//! parse → desired → create → update → orphans). This first part converges
//! each enabled domain's project and bridge; instances, profiles and the
//! nftables ruleset build on it.

pub mod desired;
pub mod reconcile;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use self::desired::ApplySettings;
use self::reconcile::Verb;
use crate::incus::Client;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub infra: Option<PathBuf>,
    pub context_dir: Option<PathBuf>,
    /// Only these domains (all enabled ones when empty).
    pub domains: Vec<String>,
    pub dry_run: bool,
    pub clean_orphans: bool,
    pub socket: PathBuf,
    pub settings: ApplySettings,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub orphans: usize,
    pub failed: usize,
}

/// Run `anklume apply`; returns the exit code (1: invalid input or a change
/// failed).
pub fn run(
    o: &ApplyOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(i32, ApplySummary)> {
    let Some(prepared) =
        crate::sync::prepare(o.infra.as_deref(), o.context_dir.as_deref(), None, err)?
    else {
        return Ok((1, ApplySummary::default()));
    };
    let mut domains = desired::domains(&prepared.files)?;
    if !o.domains.is_empty() {
        for want in &o.domains {
            anyhow::ensure!(
                domains.iter().any(|d| &d.domain == want),
                "domain {want:?} is not an enabled domain of infra.yml"
            );
        }
        domains.retain(|d| o.domains.contains(&d.domain));
    }
    let client = Client::connect(&o.socket)?;
    // Orphans are only judged on a full run: a run limited to some domains
    // must not call the others orphans.
    let mut plan = reconcile::plan(&client, &domains, &o.settings, o.clean_orphans)
        .context("reading the current state from Incus")?;
    if !o.domains.is_empty() {
        plan.retain(|c| !c.domain.is_empty());
    }
    let mut s = ApplySummary::default();
    writeln!(
        out,
        "{:<10} {:<9} {:<28} {:<16} detail",
        "action", "kind", "name", "domain"
    )?;
    for c in &plan {
        writeln!(
            out,
            "{:<10} {:<9} {:<28} {:<16} {}",
            c.verb.as_str(),
            c.kind,
            c.name,
            c.domain,
            c.detail
        )?;
        match c.verb {
            Verb::Create => s.created += 1,
            Verb::Update => s.updated += 1,
            Verb::Delete => s.deleted += 1,
            Verb::Orphan => s.orphans += 1,
            Verb::Unchanged => s.unchanged += 1,
        }
    }
    if o.dry_run {
        writeln!(
            out,
            "[DRY-RUN] would create {}, update {}, delete {}; {} unchanged, {} orphan(s) kept",
            s.created, s.updated, s.deleted, s.unchanged, s.orphans
        )?;
        return Ok((0, s));
    }
    let failed = reconcile::execute(&client, &plan);
    for (c, e) in &failed {
        writeln!(
            err,
            "FAILED: {} {} {}: {e}",
            c.verb.as_str(),
            c.kind,
            c.name
        )?;
    }
    s.failed = failed.len();
    writeln!(
        out,
        "Done: {} created, {} updated, {} deleted, {} unchanged, {} orphan(s) kept, {} failed.",
        s.created, s.updated, s.deleted, s.unchanged, s.orphans, s.failed
    )?;
    Ok((if failed.is_empty() { 0 } else { 1 }, s))
}
