//! Projects and bridges: read what Incus has, compare with the desired
//! state, then create / update / report orphans (delete them only when
//! asked, and only those anklume marked as its own).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Deserialize;
use serde_json::{json, Value};

use super::desired::{ApplySettings, DomainSpec, MANAGED_KEY};
use crate::incus::client::enc;
use crate::incus::Client;

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

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    /// The domain it belongs to (empty for orphans).
    pub domain: String,
    pub verb: Verb,
    /// What differs (`ipv4.address: 10.1.0.1/24 → 10.1.0.254/24`).
    pub detail: String,
    /// What to send (create/update), or nothing.
    body: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Project {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Network {
    name: String,
    #[serde(default)]
    managed: bool,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// `key: have → want` for every desired key Incus has otherwise.
fn drift(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: {} → {v}",
                have.get(k).map_or("(unset)", String::as_str)
            )
        })
        .collect()
}

/// An existing object: `Update` with `body` when anything differs, else
/// `Unchanged`.
fn update(kind: &'static str, name: &str, domain: &str, diff: Vec<String>, body: Value) -> Change {
    Change {
        kind,
        name: name.to_string(),
        domain: domain.to_string(),
        verb: if diff.is_empty() {
            Verb::Unchanged
        } else {
            Verb::Update
        },
        detail: diff.join(", "),
        body: (!diff.is_empty()).then_some(body),
    }
}

/// Compute the plan for `desired` against what Incus has now.
pub fn plan(
    c: &Client,
    desired: &[DomainSpec],
    s: &ApplySettings,
    clean_orphans: bool,
) -> Result<Vec<Change>> {
    let projects: Vec<Project> = c.get("/1.0/projects?recursion=1")?;
    let networks: Vec<Network> = c.get("/1.0/networks?recursion=1")?;
    let projects: BTreeMap<&str, &Project> =
        projects.iter().map(|p| (p.name.as_str(), p)).collect();
    let networks: BTreeMap<&str, &Network> =
        networks.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut out = Vec::new();
    for d in desired {
        let want_cfg = d.network_config(s)?;
        match networks.get(d.network.name.as_str()) {
            None => out.push(Change {
                kind: "network",
                name: d.network.name.clone(),
                domain: d.domain.clone(),
                verb: Verb::Create,
                detail: want_cfg["ipv4.address"].clone(),
                body: Some(json!({
                    "name": d.network.name,
                    "type": "bridge",
                    "description": format!("anklume domain {}", d.domain),
                    "config": want_cfg,
                })),
            }),
            Some(n) => {
                let diff = drift(&n.config, &want_cfg);
                if !n.managed {
                    anyhow::bail!(
                        "network {} exists but is not managed by Incus (a host interface?): rename the domain or remove it",
                        d.network.name
                    );
                }
                let body = json!({ "config": want_cfg });
                out.push(update("network", &d.network.name, &d.domain, diff, body));
            }
        }
        let want_cfg = d.project_config();
        match projects.get(d.project.as_str()) {
            None => out.push(Change {
                kind: "project",
                name: d.project.clone(),
                domain: d.domain.clone(),
                verb: Verb::Create,
                detail: String::new(),
                body: Some(json!({
                    "name": d.project,
                    "description": d.description,
                    "config": want_cfg,
                })),
            }),
            Some(p) => {
                let mut diff = drift(&p.config, &want_cfg);
                if p.description != d.description {
                    diff.push(format!(
                        "description: {:?} → {:?}",
                        p.description, d.description
                    ));
                }
                let body = json!({ "description": d.description, "config": want_cfg });
                out.push(update("project", &d.project, &d.domain, diff, body));
            }
        }
    }
    let want_projects: BTreeSet<&str> = desired.iter().map(|d| d.project.as_str()).collect();
    let want_networks: BTreeSet<&str> = desired.iter().map(|d| d.network.name.as_str()).collect();
    let orphan = if clean_orphans {
        Verb::Delete
    } else {
        Verb::Orphan
    };
    let have_projects = projects.iter().map(|(n, p)| (*n, &p.config));
    let have_networks = networks.iter().map(|(n, x)| (*n, &x.config));
    out.extend(orphans("project", have_projects, &want_projects, orphan));
    out.extend(orphans("network", have_networks, &want_networks, orphan));
    Ok(out)
}

/// Objects anklume marked as its own that `infra.yml` no longer wants.
fn orphans<'a>(
    kind: &'static str,
    have: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
    want: &BTreeSet<&str>,
    verb: Verb,
) -> Vec<Change> {
    have.filter(|(name, config)| {
        config.get(MANAGED_KEY).map(String::as_str) == Some("true") && !want.contains(name)
    })
    .map(|(name, _)| Change {
        kind,
        name: name.to_string(),
        domain: String::new(),
        verb,
        detail: "not in infra.yml".into(),
        body: None,
    })
    .collect()
}

/// Carry out the plan. A failing change is recorded and the other domains
/// go on; returns the failures as `(change, error)`.
pub fn execute(c: &Client, plan: &[Change]) -> Vec<(Change, String)> {
    let mut failed: Vec<(Change, String)> = Vec::new();
    let mut failed_domains: BTreeSet<String> = BTreeSet::new();
    // Orphans: projects first (they may use the networks), then networks.
    let mut order: Vec<&Change> = plan.iter().collect();
    order.sort_by_key(|ch| match (ch.verb, ch.kind) {
        (Verb::Delete, "project") => 1,
        (Verb::Delete, _) => 2,
        _ => 0,
    });
    for ch in order {
        if !ch.domain.is_empty() && failed_domains.contains(&ch.domain) {
            continue;
        }
        let path = match ch.kind {
            "project" => "/1.0/projects",
            _ => "/1.0/networks",
        };
        let r = match (ch.verb, &ch.body) {
            (Verb::Create, Some(b)) => c.post(path, b).map(|_| ()),
            (Verb::Update, Some(b)) => c.patch(&format!("{path}/{}", enc(&ch.name)), b).map(|_| ()),
            (Verb::Delete, _) => c.delete(&format!("{path}/{}", enc(&ch.name))).map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = r {
            if !ch.domain.is_empty() {
                failed_domains.insert(ch.domain.clone());
            }
            failed.push((ch.clone(), e.to_string()));
        }
    }
    failed
}
