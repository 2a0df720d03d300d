//! Read what Incus has, compare it with the desired state, and plan the
//! changes: per domain its bridge, project, profiles, volumes and
//! instances (create / update / unchanged), then the orphans (objects
//! anklume marked as its own that `infra.yml` no longer wants).
//!
//! Reading costs a fixed number of requests whatever the size: every
//! listing is one `recursion=1` call across all projects.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Deserialize;
use serde_json::{json, Value};

use super::desired::{ApplySettings, Devices, DomainSpec, InstanceSpec, ProfileSpec, MANAGED_KEY};
use super::images;
use super::plan::{Change, Kind, Step, Verb};
use anklume_incus::client::enc;
use anklume_incus::Client;

#[derive(Debug, Deserialize)]
pub(super) struct Project {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Network {
    pub(super) name: String,
    #[serde(default)]
    pub(super) managed: bool,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) used_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Profile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) project: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) devices: Devices,
    #[serde(default)]
    pub(super) used_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Volume {
    pub(super) name: String,
    #[serde(default)]
    pub(super) project: String,
    #[serde(default, rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
}

/// An instance as listed, plus its raw form (sent back whole on update so
/// nothing anklume does not own is lost).
#[derive(Debug, Deserialize)]
pub(super) struct Instance {
    pub(super) name: String,
    #[serde(default)]
    pub(super) project: String,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default, rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) config: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) devices: Devices,
    #[serde(default)]
    pub(super) profiles: Vec<String>,
    #[serde(skip)]
    pub(super) raw: Value,
}

impl Instance {
    fn from_raw(raw: Value) -> Result<Instance> {
        let mut i: Instance = serde_json::from_value(raw.clone())?;
        i.raw = raw;
        Ok(i)
    }
}

/// Everything read from Incus for one plan.
pub(super) struct Current {
    pub(super) projects: BTreeMap<String, Project>,
    pub(super) networks: BTreeMap<String, Network>,
    /// (project, name) →
    pub(super) profiles: BTreeMap<(String, String), Profile>,
    pub(super) instances: BTreeMap<(String, String), Instance>,
    /// (project, pool, name) →
    pub(super) volumes: BTreeMap<(String, String, String), Volume>,
}

fn read(c: &Client, desired: &[DomainSpec]) -> Result<Current> {
    let projects: Vec<Project> = c.get("/1.0/projects?recursion=1")?;
    let networks: Vec<Network> = c.get("/1.0/networks?recursion=1")?;
    let profiles: Vec<Profile> = c.get("/1.0/profiles?recursion=1&all-projects=true")?;
    let instances: Vec<Value> = c.get("/1.0/instances?recursion=1&all-projects=true")?;
    let pools: BTreeSet<&str> = desired
        .iter()
        .flat_map(|d| &d.instances)
        .flat_map(|i| &i.volumes)
        .map(|v| v.pool.as_str())
        .collect();
    let mut volumes = BTreeMap::new();
    for pool in pools {
        let vs: Vec<Volume> = c.get(&format!(
            "/1.0/storage-pools/{}/volumes?recursion=1&all-projects=true",
            enc(pool)
        ))?;
        for v in vs.into_iter().filter(|v| v.kind == "custom") {
            volumes.insert((v.project.clone(), pool.to_string(), v.name.clone()), v);
        }
    }
    Ok(Current {
        projects: projects.into_iter().map(|p| (p.name.clone(), p)).collect(),
        networks: networks.into_iter().map(|n| (n.name.clone(), n)).collect(),
        profiles: profiles
            .into_iter()
            .map(|p| ((p.project.clone(), p.name.clone()), p))
            .collect(),
        instances: instances
            .into_iter()
            .map(Instance::from_raw)
            .map(|i| i.map(|i| ((i.project.clone(), i.name.clone()), i)))
            .collect::<Result<_>>()?,
        volumes,
    })
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

/// Differences between two device sets (anklume owns them whole).
fn device_drift(have: &Devices, want: &Devices) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in want {
        match have.get(name) {
            None => out.push(format!("device {name}: missing")),
            Some(h) if h != w => {
                let mut keys: Vec<String> = drift(h, w);
                keys.extend(
                    h.keys()
                        .filter(|k| !w.contains_key(*k))
                        .map(|k| format!("{k}: {} → (unset)", h[k])),
                );
                out.push(format!("device {name}: {}", keys.join(", ")));
            }
            Some(_) => {}
        }
    }
    out.extend(
        have.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("device {k}: not in infra.yml")),
    );
    out
}

pub(super) fn q(project: &str) -> String {
    format!("project={}", enc(project))
}

/// Compute the plan for `desired` against what Incus has now.
pub fn plan(
    c: &Client,
    desired: &[DomainSpec],
    s: &ApplySettings,
    clean_orphans: bool,
) -> Result<Vec<Change>> {
    let cur = read(c, desired)?;
    let mut out = Vec::new();
    for d in desired {
        out.push(network(d, &cur, s)?);
        out.push(project(d, &cur));
        let default = d.default_profile(s);
        out.push(profile(d, &default, &cur, true));
        for p in &d.profiles {
            out.push(profile(d, p, &cur, false));
        }
        let mut seen_volumes = BTreeSet::new();
        for v in d.instances.iter().flat_map(|i| &i.volumes) {
            if seen_volumes.insert((v.pool.clone(), v.name.clone())) {
                out.push(volume(d, v, &cur));
            }
        }
        for i in &d.instances {
            out.push(instance(i, &cur));
        }
    }
    out.extend(super::orphans::orphans(desired, &cur, clean_orphans));
    Ok(out)
}

fn network(d: &DomainSpec, cur: &Current, s: &ApplySettings) -> Result<Change> {
    let want = d.network_config(s)?;
    let name = &d.network.name;
    Ok(match cur.networks.get(name) {
        None => Change::new(Kind::Network, name, &d.domain, Verb::Create, want["ipv4.address"].clone())
            .with_steps(vec![Step::Post(
                "/1.0/networks".into(),
                json!({
                    "name": name,
                    "type": "bridge",
                    "description": format!("anklume domain {}", d.domain),
                    "config": want,
                }),
            )]),
        Some(n) if !n.managed => Change::new(Kind::Network, name, &d.domain, Verb::Update, "not managed by Incus")
            .with_steps(vec![Step::Refuse(format!(
                "network {name} exists but is not managed by Incus (a host interface?): rename the domain or remove it"
            ))]),
        Some(n) => Change::update(
            Kind::Network,
            name,
            &d.domain,
            drift(&n.config, &want),
            vec![Step::Patch(format!("/1.0/networks/{}", enc(name)), json!({ "config": want }))],
        ),
    })
}

fn project(d: &DomainSpec, cur: &Current) -> Change {
    let want = d.project_config();
    match cur.projects.get(&d.project) {
        None => {
            Change::new(Kind::Project, &d.project, &d.domain, Verb::Create, "").with_steps(vec![
                Step::Post(
                    "/1.0/projects".into(),
                    json!({"name": d.project, "description": d.description, "config": want}),
                ),
            ])
        }
        Some(p) => {
            let mut diff = drift(&p.config, &want);
            if p.description != d.description {
                diff.push(format!(
                    "description: {:?} → {:?}",
                    p.description, d.description
                ));
            }
            Change::update(
                Kind::Project,
                &d.project,
                &d.domain,
                diff,
                vec![Step::Patch(
                    format!("/1.0/projects/{}", enc(&d.project)),
                    json!({"description": d.description, "config": want}),
                )],
            )
        }
    }
}

/// The project's default profile (anklume's: devices owned whole) or a
/// custom one from `incus_profiles`.
fn profile(d: &DomainSpec, p: &ProfileSpec, cur: &Current, is_default: bool) -> Change {
    let mut want_cfg = p.config.clone();
    want_cfg.insert(MANAGED_KEY.into(), "true".into());
    let path = format!("/1.0/profiles/{}?{}", enc(&p.name), q(&d.project));
    let body = |have: Option<&Profile>| {
        let mut config = have.map(|h| h.config.clone()).unwrap_or_default();
        config.extend(want_cfg.clone());
        json!({
            "description": have.map(|h| h.description.clone()).unwrap_or_else(|| format!("anklume domain {}", d.domain)),
            "config": config,
            "devices": p.devices,
        })
    };
    let label = format!("{}/{}", d.project, p.name);
    match cur.profiles.get(&(d.project.clone(), p.name.clone())) {
        // A new project's default profile is created with it: fill it in.
        None if is_default => {
            Change::new(Kind::Profile, &label, &d.domain, Verb::Create, "eth0, root")
                .with_steps(vec![Step::Put(path, body(None))])
        }
        None => {
            let mut b = body(None);
            b["name"] = json!(p.name);
            Change::new(Kind::Profile, &label, &d.domain, Verb::Create, "").with_steps(vec![
                Step::Post(format!("/1.0/profiles?{}", q(&d.project)), b),
            ])
        }
        Some(h) => {
            let mut diff = drift(&h.config, &want_cfg);
            diff.extend(device_drift(&h.devices, &p.devices));
            Change::update(
                Kind::Profile,
                &label,
                &d.domain,
                diff,
                vec![Step::Put(path, body(Some(h)))],
            )
        }
    }
}

fn volume(d: &DomainSpec, v: &super::desired::VolumeSpec, cur: &Current) -> Change {
    let label = format!("{}/{}", d.project, v.name);
    let mut want = BTreeMap::new();
    if let Some(size) = &v.size {
        want.insert("size".to_string(), size.clone());
    }
    want.insert(MANAGED_KEY.to_string(), "true".into());
    let base = format!("/1.0/storage-pools/{}/volumes/custom", enc(&v.pool));
    match cur
        .volumes
        .get(&(d.project.clone(), v.pool.clone(), v.name.clone()))
    {
        None => Change::new(
            Kind::Volume,
            &label,
            &d.domain,
            Verb::Create,
            v.size.clone().unwrap_or_default(),
        )
        .with_steps(vec![Step::Post(
            format!("{base}?{}", q(&d.project)),
            json!({"name": v.name, "content_type": "filesystem", "config": want}),
        )]),
        Some(h) => Change::update(
            Kind::Volume,
            &label,
            &d.domain,
            drift(&h.config, &want),
            vec![Step::Patch(
                format!("{base}/{}?{}", enc(&v.name), q(&d.project)),
                json!({ "config": want }),
            )],
        ),
    }
}

fn instance(i: &InstanceSpec, cur: &Current) -> Change {
    let label = format!("{}/{}", i.project, i.name);
    let base = format!("/1.0/instances/{}", enc(&i.name));
    let state = format!("{base}/state?{}", q(&i.project));
    let Some(h) = cur.instances.get(&(i.project.clone(), i.name.clone())) else {
        let mut steps = Vec::new();
        if let super::desired::ImageRef::Local(alias) = &i.image {
            steps.push(Step::EnsureImage {
                alias: alias.clone(),
                project: i.project.clone(),
            });
        }
        steps.push(Step::Post(
            format!("/1.0/instances?{}", q(&i.project)),
            json!({
                "name": i.name,
                "type": i.kind.api_name(),
                "description": i.description,
                "source": i.image.source(),
                "profiles": i.profiles,
                "config": i.config,
                "devices": i.devices,
            }),
        ));
        steps.push(Step::State(
            state,
            json!({"action": "start", "timeout": 60}),
        ));
        let detail = format!(
            "{} {}{}",
            i.kind.api_name(),
            i.image,
            i.ip.as_deref()
                .map(|ip| format!(", {ip}"))
                .unwrap_or_default()
        );
        return Change::new(Kind::Instance, &label, &i.domain, Verb::Create, detail)
            .with_steps(steps);
    };
    if h.kind != i.kind.api_name() {
        return Change::new(Kind::Instance, &label, &i.domain, Verb::Update, format!("type: {} → {}", h.kind, i.kind.api_name()))
            .with_steps(vec![Step::Refuse(format!(
                "{} is a {}, infra.yml wants a {}: an instance cannot change type; delete it to have it recreated",
                i.name, h.kind, i.kind.api_name()
            ))]);
    }
    let mut diff = drift(&h.config, &i.config);
    diff.extend(device_drift(&h.devices, &i.devices));
    if h.profiles != i.profiles {
        diff.push(format!("profiles: {:?} → {:?}", h.profiles, i.profiles));
    }
    if h.description != i.description {
        diff.push(format!(
            "description: {:?} → {:?}",
            h.description, i.description
        ));
    }
    let mut steps = Vec::new();
    if !diff.is_empty() {
        let mut body = h.raw.clone();
        let mut config = h.config.clone();
        config.extend(i.config.clone());
        body["config"] = json!(config);
        body["devices"] = json!(i.devices);
        body["profiles"] = json!(i.profiles);
        body["description"] = json!(i.description);
        steps.push(Step::Put(format!("{base}?{}", q(&i.project)), body));
    }
    let running = h.status == "Running";
    let ip_of = |d: &Devices| d.get("eth0").and_then(|e| e.get("ipv4.address")).cloned();
    if !running {
        diff.push(format!("state: {} → Running", h.status));
        steps.push(Step::State(
            state,
            json!({"action": "start", "timeout": 60}),
        ));
    } else if ip_of(&h.devices) != ip_of(&i.devices) {
        // The new address is served by DHCP: restart so the instance takes it.
        diff.push("restart for the new address".into());
        steps.push(Step::State(
            state,
            json!({"action": "restart", "timeout": 60}),
        ));
    }
    Change::update(Kind::Instance, &label, &i.domain, diff, steps)
}

/// The images a plan will copy between projects (for the plan's notes).
pub fn local_images_missing(c: &Client, plan: &[Change]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for ch in plan {
        for s in &ch.steps {
            if let Step::EnsureImage { alias, project } = s {
                let key = (alias.clone(), project.clone());
                if !out.contains(&key) && images::alias_target(c, alias, project)?.is_none() {
                    out.push(key);
                }
            }
        }
    }
    Ok(out)
}
