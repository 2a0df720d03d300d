//! Orphans: objects anklume marked as its own (`user.anklume.managed`)
//! that `infra.yml` no longer wants — reported, and deleted only when asked
//! (never a protected instance, never what something that stays still
//! uses).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::desired::{DomainSpec, MANAGED_KEY};
use super::plan::{Change, Kind, Step, Verb};
use super::reconcile::{q, Current};
use anklume_incus::client::enc;

fn managed(config: &BTreeMap<String, String>) -> bool {
    config.get(MANAGED_KEY).map(String::as_str) == Some("true")
}

/// The entries of an Incus `used_by` list (`/1.0/instances/web?project=pro`,
/// `/1.0/profiles/default?project=pro`) that outlive this run: not an
/// instance being deleted, not in a project being deleted.
fn users_that_stay<'a>(
    used_by: &'a [String],
    deleting: &BTreeSet<(&str, &str)>,
    deleting_projects: &BTreeSet<&str>,
) -> Vec<&'a str> {
    used_by
        .iter()
        .map(String::as_str)
        .filter(|u| {
            let (path, query) = u.split_once('?').unwrap_or((u, ""));
            let project = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("project="))
                .unwrap_or("default");
            let instance = path.strip_prefix("/1.0/instances/");
            !deleting_projects.contains(project)
                && !instance.is_some_and(|i| deleting.contains(&(project, i)))
        })
        .collect()
}

/// Objects anklume marked as its own that `infra.yml` no longer wants.
pub(super) fn orphans(desired: &[DomainSpec], cur: &Current, clean: bool) -> Vec<Change> {
    let verb = if clean { Verb::Delete } else { Verb::Orphan };
    let want_projects: BTreeSet<&str> = desired.iter().map(|d| d.project.as_str()).collect();
    let want_networks: BTreeSet<&str> = desired.iter().map(|d| d.network.name.as_str()).collect();
    let want_instances: BTreeSet<(&str, &str)> = desired
        .iter()
        .flat_map(|d| &d.instances)
        .map(|i| (i.project.as_str(), i.name.as_str()))
        .collect();
    let want_profiles: BTreeSet<(&str, &str)> = desired
        .iter()
        .flat_map(|d| {
            d.profiles
                .iter()
                .map(move |p| (d.project.as_str(), p.name.as_str()))
        })
        .collect();
    let mut out = Vec::new();
    // Instances that stay in a project (protected, or not anklume's) keep
    // the project.
    let mut kept_in: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut deleting: BTreeSet<(&str, &str)> = BTreeSet::new();
    for ((project, name), i) in &cur.instances {
        if want_instances.contains(&(project.as_str(), name.as_str())) {
            continue;
        }
        if !managed(&i.config) {
            kept_in.entry(project).or_default().push(name);
            continue;
        }
        let label = format!("{project}/{name}");
        let protected = i
            .config
            .get("security.protection.delete")
            .map(String::as_str)
            == Some("true");
        if protected {
            kept_in.entry(project).or_default().push(name);
            out.push(Change::new(
                Kind::Instance,
                &label,
                "",
                Verb::Orphan,
                "not in infra.yml; protected (security.protection.delete=true), never deleted",
            ));
            continue;
        }
        if clean {
            deleting.insert((project.as_str(), name.as_str()));
        } else {
            kept_in.entry(project).or_default().push(name);
        }
        let mut steps = Vec::new();
        let base = format!("/1.0/instances/{}", enc(name));
        if i.status == "Running" {
            steps.push(Step::Put(
                format!("{base}/state?{}", q(project)),
                json!({"action": "stop", "force": true, "timeout": 30}),
            ));
        }
        steps.push(Step::Delete(format!("{base}?{}", q(project))));
        out.push(
            Change::new(Kind::Instance, &label, "", verb, "not in infra.yml").with_steps(steps),
        );
    }
    for ((project, name), p) in &cur.profiles {
        if name == "default"
            || !managed(&p.config)
            || !want_projects.contains(project.as_str())
            || want_profiles.contains(&(project.as_str(), name.as_str()))
        {
            continue;
        }
        let label = format!("{project}/{name}");
        let no_set = BTreeSet::new();
        let used = users_that_stay(&p.used_by, &deleting, &no_set);
        if !used.is_empty() {
            out.push(Change::new(
                Kind::Profile,
                &label,
                "",
                Verb::Orphan,
                format!("not in infra.yml; still used by {}", used.join(", ")),
            ));
            continue;
        }
        out.push(
            Change::new(Kind::Profile, &label, "", verb, "not in infra.yml").with_steps(vec![
                Step::Delete(format!("/1.0/profiles/{}?{}", enc(name), q(project))),
            ]),
        );
    }
    let mut deleting_projects: BTreeSet<&str> = BTreeSet::new();
    for (name, p) in &cur.projects {
        if !managed(&p.config) || want_projects.contains(name.as_str()) {
            continue;
        }
        if let Some(kept) = kept_in.get(name.as_str()) {
            out.push(Change::new(
                Kind::Project,
                name,
                "",
                Verb::Orphan,
                format!("not in infra.yml; still holds {}", kept.join(", ")),
            ));
            continue;
        }
        deleting_projects.insert(name);
        out.push(
            Change::new(Kind::Project, name, "", verb, "not in infra.yml").with_steps(vec![
                Step::DeleteProjectImages(name.clone()),
                Step::Delete(format!("/1.0/projects/{}", enc(name))),
            ]),
        );
    }
    for (name, n) in &cur.networks {
        if managed(&n.config) && !want_networks.contains(name.as_str()) {
            // Still used by something that stays (a kept project's profile)?
            let users = users_that_stay(&n.used_by, &deleting, &deleting_projects);
            if !users.is_empty() {
                out.push(Change::new(
                    Kind::Network,
                    name,
                    "",
                    Verb::Orphan,
                    format!("not in infra.yml; still used by {}", users.join(", ")),
                ));
                continue;
            }
            out.push(
                Change::new(Kind::Network, name, "", verb, "not in infra.yml")
                    .with_steps(vec![Step::Delete(format!("/1.0/networks/{}", enc(name)))]),
            );
        }
    }
    if !clean {
        for ch in &mut out {
            ch.steps.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn users_of_deleted_instances_and_projects_do_not_keep_an_object() {
        let used_by: Vec<String> = [
            "/1.0/instances/gone?project=p1",
            "/1.0/instances/kept?project=p1",
            "/1.0/profiles/default?project=p2",
            "/1.0/instances/host-one",
        ]
        .map(String::from)
        .to_vec();
        let deleting = BTreeSet::from([("p1", "gone"), ("default", "x")]);
        let projects = BTreeSet::from(["p2"]);
        assert_eq!(
            super::users_that_stay(&used_by, &deleting, &projects),
            ["/1.0/instances/kept?project=p1", "/1.0/instances/host-one"]
        );
    }
}
