//! The plan: one [`Change`] per object, each carrying the [`Step`]s that
//! carry it out, and the executor that runs them with failure isolation.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::Value;

use super::firewall::Firewall;
use super::images;
use anklume_incus::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    Create,
    Update,
    Delete,
    Orphan,
    Unchanged,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Orphan => "orphan",
            Verb::Unchanged => "unchanged",
        }
    }
}

/// What kind of object a change is about; also the order orphans are
/// deleted in (instances before the profiles, projects and bridges they use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Firewall,
    Network,
    Project,
    Profile,
    Volume,
    Instance,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firewall => "nftables",
            Kind::Network => "network",
            Kind::Project => "project",
            Kind::Profile => "profile",
            Kind::Volume => "volume",
            Kind::Instance => "instance",
        }
    }

    /// A failure of this kind stops the rest of its domain (instances need
    /// their project, bridge and profiles); an instance's failure stops
    /// only that instance.
    fn blocks_domain(self) -> bool {
        matches!(self, Kind::Network | Kind::Project | Kind::Profile)
    }
}

/// One request, or one local action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Post(String, Value),
    Put(String, Value),
    Patch(String, Value),
    Delete(String),
    /// Make a local image alias usable in a project (copied from
    /// `default` when the project has its own image store).
    EnsureImage {
        alias: String,
        project: String,
    },
    /// Delete the image cache of a project about to be deleted.
    DeleteProjectImages(String),
    /// Load the nftables ruleset (one transaction).
    LoadRuleset,
    /// A change that cannot be made (the message says why).
    Refuse(String),
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    /// The domain it belongs to (empty for orphans and the ruleset).
    pub domain: String,
    pub verb: Verb,
    /// What differs (`ipv4.address: 10.1.0.1/24 → 10.1.0.254/24`).
    pub detail: String,
    pub steps: Vec<Step>,
}

impl Change {
    pub fn new(
        kind: Kind,
        name: &str,
        domain: &str,
        verb: Verb,
        detail: impl Into<String>,
    ) -> Self {
        Change {
            kind,
            name: name.to_string(),
            domain: domain.to_string(),
            verb,
            detail: detail.into(),
            steps: Vec::new(),
        }
    }

    /// An existing object: `Update` with `steps` when anything differs,
    /// else `Unchanged`.
    pub fn update(
        kind: Kind,
        name: &str,
        domain: &str,
        diff: Vec<String>,
        steps: Vec<Step>,
    ) -> Self {
        let verb = if diff.is_empty() {
            Verb::Unchanged
        } else {
            Verb::Update
        };
        let mut c = Change::new(kind, name, domain, verb, diff.join(", "));
        if verb == Verb::Update {
            c.steps = steps;
        }
        c
    }

    pub fn with_steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }
}

/// Carry out the plan: the ruleset first (isolation is in place before any
/// instance starts), then each domain in order, then orphan deletions
/// (instances, profiles, projects, bridges). A failing change is recorded
/// and the others go on; returns the failures as `(change, error)`.
pub fn execute(
    c: &Client,
    plan: &[Change],
    fw: &Firewall,
    progress: &mut dyn FnMut(usize, usize, &Change),
) -> Vec<(Change, String)> {
    let mut failed: Vec<(Change, String)> = Vec::new();
    let mut failed_domains: BTreeSet<String> = BTreeSet::new();
    let mut order: Vec<&Change> = plan.iter().filter(|ch| !ch.steps.is_empty()).collect();
    // Deletions go from the most dependent kind to the least.
    order.sort_by_key(|ch| match (ch.verb, ch.kind) {
        (_, Kind::Firewall) => 0,
        (Verb::Delete, Kind::Instance) => 2,
        (Verb::Delete, Kind::Volume) => 3,
        (Verb::Delete, Kind::Profile) => 4,
        (Verb::Delete, Kind::Project) => 5,
        (Verb::Delete, Kind::Network) => 6,
        _ => 1,
    });
    let total = order.len();
    for (i, ch) in order.into_iter().enumerate() {
        progress(i, total, ch);
        if !ch.domain.is_empty() && failed_domains.contains(&ch.domain) {
            failed.push((
                ch.clone(),
                "skipped: an earlier change of this domain failed".into(),
            ));
            continue;
        }
        let r = ch
            .steps
            .iter()
            .try_for_each(|s| run_step(c, s, fw))
            .with_context(|| format!("{} {} {}", ch.verb.as_str(), ch.kind.as_str(), ch.name));
        if let Err(e) = r {
            if !ch.domain.is_empty() && ch.kind.blocks_domain() {
                failed_domains.insert(ch.domain.clone());
            }
            failed.push((ch.clone(), format!("{:#}", e)));
        }
    }
    failed
}

fn run_step(c: &Client, s: &Step, fw: &Firewall) -> Result<()> {
    match s {
        Step::Post(p, b) => c.post(p, b).map(drop)?,
        Step::Put(p, b) => c.put(p, b).map(drop)?,
        Step::Patch(p, b) => c.patch(p, b).map(drop)?,
        Step::Delete(p) => c.delete(p).map(drop)?,
        Step::EnsureImage { alias, project } => images::ensure_in_project(c, alias, project)?,
        Step::DeleteProjectImages(project) => images::delete_all_in_project(c, project)?,
        Step::LoadRuleset => fw.load()?,
        Step::Refuse(why) => anyhow::bail!("{why}"),
    }
    Ok(())
}
