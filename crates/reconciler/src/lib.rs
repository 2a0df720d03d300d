//! `anklume apply`: make Incus match `infra.yml` through its REST API, and
//! load the isolation ruleset.
//!
//! The desired state comes from the generator's validated model
//! ([`desired`]); [`reconcile`] follows the reference's pattern (read →
//! parse → desired → create → update → orphans) and yields a [`plan`];
//! [`firewall`] builds the `inet anklume` table.

pub mod desired;
pub mod execute;
pub mod firewall;
pub mod images;
mod orphans;
pub mod plan;
pub mod ramcrypt;
pub mod reconcile;
pub mod status;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use self::desired::ApplySettings;
use self::firewall::{Firewall, Live};
use self::plan::{Change, Kind, Step, Verb};
use anklume_incus::Client;

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
    /// Show progress on stderr.
    pub progress: bool,
    /// With `dry_run`: print the plan as JSON ([`PlanReport`]) instead of
    /// the table.
    pub json: bool,
}

/// Version of the JSON plan; bumped when a field changes meaning or goes.
pub const PLAN_SCHEMA: u32 = 1;

/// `anklume apply --dry-run --json` (documented in `docs/reconciler.md`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    pub schema: u32,
    /// One entry per object, in plan order.
    pub changes: Vec<PlannedChange>,
    pub ruleset: RulesetPlan,
    /// Local images that would be copied into a domain's project.
    pub images: Vec<ImageCopy>,
    pub summary: PlanSummary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedChange {
    /// `create`, `update`, `delete`, `orphan` or `unchanged`.
    pub action: &'static str,
    /// `nftables`, `network`, `project`, `profile`, `volume` or `instance`.
    pub kind: &'static str,
    pub name: String,
    /// The domain (empty for the ruleset and orphans).
    pub domain: String,
    /// What differs, or why.
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesetPlan {
    /// `absent`, `different` or `current`.
    pub live: &'static str,
    /// The hash the new ruleset carries.
    pub hash: String,
    /// Unified diff from the last loaded ruleset (empty when current); the
    /// new ruleset passed `nft -c` when this is present.
    pub diff: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageCopy {
    pub alias: String,
    pub project: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanSummary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
    pub orphans: usize,
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
    /// Not attempted because something they need failed (their domain's
    /// bridge, project or profile; the isolation ruleset).
    pub skipped: usize,
}

impl ApplySummary {
    /// Creations + updates + deletions.
    pub fn changes(&self) -> usize {
        self.created + self.updated + self.deleted
    }
}

/// Run `anklume apply`; returns the exit code (1: invalid input or a change
/// failed).
pub fn run(
    o: &ApplyOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(i32, ApplySummary)> {
    let Some(prepared) =
        anklume_generator::prepare(o.infra.as_deref(), o.context_dir.as_deref(), None, err)?
    else {
        return Ok((1, ApplySummary::default()));
    };
    let all_domains = desired::domains(&prepared.model, &o.settings)?;
    // The ruleset always covers every enabled domain, whatever the filter.
    let fw = Firewall::new(
        &all_domains,
        &prepared.model.policies,
        o.settings.netns.clone(),
        o.settings.state_dir.as_deref(),
    );
    let mut domains = all_domains;
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
    let mut plan = reconcile::plan(&client, &domains, &o.settings, o.clean_orphans)
        .context("reading the current state from Incus")?;
    // Orphans are only judged on a full run: a run limited to some domains
    // must not call the others orphans.
    if !o.domains.is_empty() {
        plan.retain(|c| !c.domain.is_empty());
    }
    // Unreadable, the live table counts as a failed ruleset: nothing else
    // may run (no instance without its isolation).
    let live = fw.live();
    let mut fw_change = Change::new(
        Kind::Firewall,
        firewall::TABLE,
        "",
        match live {
            Ok(Live::Absent) => Verb::Create,
            Ok(Live::Different) | Err(_) => Verb::Update,
            Ok(Live::Current) => Verb::Unchanged,
        },
        match live {
            Ok(Live::Absent) => "isolation ruleset",
            Ok(Live::Different) => "the live table is not this ruleset",
            Ok(Live::Current) => "",
            Err(_) => "the live table could not be read",
        },
    );
    match &live {
        Ok(Live::Current) => {}
        Ok(_) => fw_change.steps = vec![Step::LoadRuleset],
        Err(e) => fw_change.steps = vec![Step::Refuse(format!("{e:#}"))],
    }
    plan.insert(0, fw_change);

    let mut s = ApplySummary::default();
    for c in &plan {
        match c.verb {
            Verb::Create => s.created += 1,
            Verb::Update => s.updated += 1,
            Verb::Delete => s.deleted += 1,
            Verb::Orphan => s.orphans += 1,
            Verb::Unchanged => s.unchanged += 1,
        }
    }
    if o.dry_run && o.json {
        // Without the live ruleset there is no plan to show: an error
        // (exit 1) with the reason, as for the table.
        let live = match &live {
            Ok(l) => l.clone(),
            Err(e) => anyhow::bail!("the isolation ruleset could not be read: {e:#}"),
        };
        let diff = if live != Live::Current {
            fw.check()?;
            fw.diff()?
        } else {
            String::new()
        };
        let report = PlanReport {
            schema: PLAN_SCHEMA,
            changes: plan
                .iter()
                .map(|c| PlannedChange {
                    action: c.verb.as_str(),
                    kind: c.kind.as_str(),
                    name: c.name.clone(),
                    domain: c.domain.clone(),
                    detail: c.detail.clone(),
                })
                .collect(),
            ruleset: RulesetPlan {
                live: match live {
                    Live::Absent => "absent",
                    Live::Different => "different",
                    Live::Current => "current",
                },
                hash: fw.hash.clone(),
                diff,
            },
            images: reconcile::local_images_missing(&client, &plan)?
                .into_iter()
                .map(|(alias, project)| ImageCopy { alias, project })
                .collect(),
            summary: PlanSummary {
                create: s.created,
                update: s.updated,
                delete: s.deleted,
                unchanged: s.unchanged,
                orphans: s.orphans,
            },
        };
        serde_json::to_writer_pretty(&mut *out, &report).context("writing the plan as JSON")?;
        writeln!(out)?;
        return Ok((0, s));
    }
    writeln!(
        out,
        "{:<10} {:<9} {:<32} {:<14} detail",
        "action", "kind", "name", "domain"
    )?;
    for c in &plan {
        writeln!(
            out,
            "{:<10} {:<9} {:<32} {:<14} {}",
            c.verb.as_str(),
            c.kind.as_str(),
            c.name,
            c.domain,
            c.detail
        )?;
    }
    if o.dry_run {
        let checked = match &live {
            Ok(Live::Current) => Ok(()),
            Ok(_) => fw.check(),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        if let Err(e) = checked {
            let others = plan.iter().filter(|c| !c.steps.is_empty()).count() - 1;
            writeln!(
                err,
                "FAILED: {} {} {}: {e:#}",
                plan[0].verb.as_str(),
                Kind::Firewall.as_str(),
                firewall::TABLE
            )?;
            writeln!(
                out,
                "[DRY-RUN] the isolation ruleset could not be checked: a run would make none of the {others} other change(s)"
            )?;
            s.failed = 1;
            s.skipped = others;
            return Ok((1, s));
        }
        if live.as_ref().is_ok_and(|l| *l != Live::Current) {
            writeln!(out, "\nnftables ruleset (checked with nft -c):")?;
            write!(out, "{}", fw.diff()?)?;
        }
        for (alias, project) in reconcile::local_images_missing(&client, &plan)? {
            writeln!(out, "image {alias} would be copied into project {project}")?;
        }
        writeln!(
            out,
            "[DRY-RUN] would create {}, update {}, delete {}; {} unchanged, {} orphan(s) kept",
            s.created, s.updated, s.deleted, s.unchanged, s.orphans
        )?;
        return Ok((0, s));
    }
    let mut progress = |p: execute::Progress<'_>| {
        if o.progress {
            for n in &p.notes {
                let _ = writeln!(err, "{n}");
            }
            let _ = writeln!(
                err,
                "[{}/{}] {} {} {} ({:.1} s){}",
                p.done,
                p.total,
                p.change.verb.as_str(),
                p.change.kind.as_str(),
                p.change.name,
                p.took.as_secs_f64(),
                if p.error.is_some() { ": FAILED" } else { "" }
            );
        }
    };
    let failed = execute::execute(&client, &plan, &fw, execute::JOBS, &mut progress)?;
    for f in &failed {
        let c = &f.change;
        writeln!(
            err,
            "{}: {} {} {}: {}",
            if f.skipped { "SKIPPED" } else { "FAILED" },
            c.verb.as_str(),
            c.kind.as_str(),
            c.name,
            f.reason
        )?;
        if f.skipped {
            s.skipped += 1;
        } else {
            s.failed += 1;
        }
    }
    writeln!(
        out,
        "Done: {} created, {} updated, {} deleted, {} unchanged, {} orphan(s) kept, {} failed, {} skipped.",
        s.created, s.updated, s.deleted, s.unchanged, s.orphans, s.failed, s.skipped
    )?;
    Ok((if failed.is_empty() { 0 } else { 1 }, s))
}
