//! The content of every generated file (`generate` of the reference), as
//! YAML values in the reference's key order.

use std::collections::BTreeSet;

use super::access::{domains, get, machines, map_or_empty, name, val};
use super::enrich::Enriched;
use super::model::{merged_devices, Machine, Model};
use anklume_yaml::{Mapping, Value};

/// One file to write: its path relative to the base directory, and the
/// content of its managed section.
#[derive(Debug)]
pub struct FileContent {
    pub rel: String,
    pub data: Mapping,
}

/// Build a mapping from pairs, skipping `None` (the reference drops keys
/// whose value is `None`).
fn build(pairs: Vec<(&str, Option<Value>)>) -> Mapping {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            m.insert_str(k, v);
        }
    }
    m
}

/// All distinct OS images, sorted (`extract_all_images`).
fn all_images(infra: &Mapping) -> Vec<String> {
    let g = map_or_empty(get(infra, "global"));
    let default = val(g, "default_os_image");
    let mut set = BTreeSet::new();
    for (_, d) in domains(infra).iter() {
        for (_, mn) in machines(d).iter() {
            let img = match get(map_or_empty(Some(mn)), "os_image") {
                Some(n) => Some(&n.value),
                None => default,
            };
            if let Some(s) = img.filter(|v| v.truthy()).and_then(Value::as_str) {
                set.insert(s.to_string());
            }
        }
    }
    set.into_iter().collect()
}

/// The nesting prefix (`NNN-`), or empty.
pub fn nesting_prefix(infra: &Mapping, absolute_level: Option<i64>) -> String {
    let g = map_or_empty(get(infra, "global"));
    if val(g, "nesting_prefix").is_some_and(|v| !v.truthy()) {
        return String::new();
    }
    match absolute_level {
        Some(l) if l < 0 => format!("-{:02}-", -l),
        Some(l) => format!("{l:03}-"),
        None => String::new(),
    }
}

/// Every file, rendered from the model (names, addressing, devices) and
/// the enriched document (what the reference passes through as written):
/// the files of each [`unit`] in order.
pub fn files(infra: &Mapping, model: &Model, e: &Enriched) -> Vec<FileContent> {
    (0..units(infra))
        .flat_map(|j| unit(infra, model, e, j))
        .collect()
}

/// How many units of work [`unit`] splits the files into: one for
/// `group_vars/all.yml`, then one per domain.
pub fn units(infra: &Mapping) -> usize {
    1 + domains(infra).len()
}

/// The files of unit `j`, in order: [`all_file`] for 0, then
/// [`domain_files`] of domain `j - 1`. Units are independent (`sync`
/// builds them on the threads that write them).
pub fn unit(infra: &Mapping, model: &Model, e: &Enriched, j: usize) -> Vec<FileContent> {
    match j {
        0 => vec![all_file(infra)],
        j => domain_files(infra, model, e, j - 1),
    }
}

/// The output directories the files go into (relative to the base): what
/// [`files`] writes, without building the files.
pub fn dirs(model: &Model) -> Vec<&'static str> {
    let enabled = || model.domains.iter().filter(|d| d.enabled);
    let mut dirs = vec!["group_vars"];
    if enabled().next().is_some() {
        dirs.push("inventory");
    }
    if enabled().any(|d| !d.machines.is_empty()) {
        dirs.push("host_vars");
    }
    dirs
}

/// `group_vars/all.yml`.
pub fn all_file(infra: &Mapping) -> FileContent {
    let g = map_or_empty(get(infra, "global"));
    let has_addressing = g.contains_key("addressing");
    let images = all_images(infra);
    let policies = val(infra, "network_policies")
        .filter(|v| v.truthy())
        .cloned();
    FileContent {
        rel: "group_vars/all.yml".into(),
        data: build(vec![
            ("project_name", val(infra, "project_name").cloned()),
            (
                "addressing",
                if has_addressing {
                    val(g, "addressing").cloned()
                } else {
                    None
                },
            ),
            (
                "base_subnet",
                if has_addressing {
                    None
                } else {
                    Some(
                        val(g, "base_subnet")
                            .cloned()
                            .unwrap_or(Value::str("10.100")),
                    )
                },
            ),
            ("default_os_image", val(g, "default_os_image").cloned()),
            (
                "psot_default_connection",
                val(g, "default_connection").cloned(),
            ),
            ("psot_default_user", val(g, "default_user").cloned()),
            (
                "incus_all_images",
                (!images.is_empty()).then(|| {
                    Value::Seq(
                        images
                            .into_iter()
                            .map(|s| anklume_yaml::Node::synthetic(Value::Str(s)))
                            .collect(),
                    )
                }),
            ),
            ("network_policies", policies),
        ]),
    }
}

/// The files of the `i`-th domain of the document, in the reference's
/// order (its inventory, its group_vars, each machine's host_vars); none
/// for a disabled domain.
pub fn domain_files(infra: &Mapping, model: &Model, e: &Enriched, i: usize) -> Vec<FileContent> {
    let g = map_or_empty(get(infra, "global"));
    let Some((dk, dn)) = domains(infra).get_index(i) else {
        return Vec::new();
    };
    let dm = map_or_empty(Some(dn));
    if val(dm, "enabled").is_some_and(|v| matches!(v, Value::Bool(false))) {
        return Vec::new();
    }
    let dname = name(dk);
    let md = model
        .domains
        .get(i)
        .filter(|d| d.name == dname)
        .expect("the model has every domain, in the document's order");
    let (subnet, gateway, sid) = (
        md.network.subnet.clone(),
        md.network.gateway.clone(),
        md.subnet_id.clone(),
    );
    let ms = machines(dn);
    let mut out = Vec::new();
    let mut hosts = Mapping::new();
    for (mk, mn) in ms.iter() {
        let ip = val(map_or_empty(Some(mn)), "ip")
            .filter(|v| v.truthy())
            .cloned();
        let h = ip.map_or(Value::Null, |ip| {
            Value::Map(build(vec![("ansible_host", Some(ip))]))
        });
        hosts.insert_str(&name(mk), h);
    }
    let hosts_v = if hosts.is_empty() {
        Value::Null
    } else {
        Value::Map(hosts)
    };
    let mut group = Mapping::new();
    group.insert_str("hosts", hosts_v);
    let mut children = Mapping::new();
    children.insert_str(&dname, Value::Map(group));
    let mut all = Mapping::new();
    all.insert_str("children", Value::Map(children));
    let mut inv = Mapping::new();
    inv.insert_str("all", Value::Map(all));
    out.push(FileContent {
        rel: format!("inventory/{dname}.yml"),
        data: inv,
    });

    let ephemeral = val(dm, "ephemeral").cloned().unwrap_or(Value::Bool(false));
    let provider = val(dm, "ai_provider")
        .cloned()
        .unwrap_or(Value::str("local"));
    let sanitize = match val(dm, "ai_sanitize").filter(|v| !v.is_null()) {
        Some(v) => v.clone(),
        None => Value::Bool(provider.is_str("cloud") || provider.is_str("local-first")),
    };
    let net = build(vec![
        ("name", Some(Value::str(md.network.name.clone()))),
        ("subnet", Some(Value::str(subnet))),
        ("gateway", Some(Value::str(gateway))),
    ]);
    let mut gvars = build(vec![
        ("domain_name", Some(Value::str(dname.clone()))),
        (
            "domain_description",
            Some(val(dm, "description").cloned().unwrap_or(Value::str(""))),
        ),
        ("domain_ephemeral", Some(ephemeral.clone())),
        ("domain_trust_level", val(dm, "trust_level").cloned()),
        ("domain_ai_provider", Some(provider)),
        ("domain_ai_sanitize", Some(sanitize)),
        ("incus_project", Some(Value::str(md.project.clone()))),
        ("incus_network", Some(Value::Map(net))),
        ("subnet_id", sid),
    ]);
    if let Some(p) = val(dm, "profiles").filter(|v| v.truthy()) {
        gvars.insert_str("incus_profiles", p.clone());
    }
    out.push(FileContent {
        rel: format!("group_vars/{dname}.yml"),
        data: gvars,
    });

    for ((_, mn), mm) in ms.iter().zip(&md.machines) {
        out.push(host_vars(
            mm,
            map_or_empty(Some(mn)),
            &dname,
            &ephemeral,
            g,
            e,
        ));
    }
    out
}

fn host_vars(
    mm: &Machine,
    m: &Mapping,
    dname: &str,
    domain_ephemeral: &Value,
    g: &Mapping,
    e: &Enriched,
) -> FileContent {
    let mname = mm.name.as_str();
    let eph = val(m, "ephemeral")
        .filter(|v| !v.is_null())
        .unwrap_or(domain_ephemeral)
        .clone();
    let devices = merged_devices(mname, m, e);
    let os_image = match get(m, "os_image") {
        Some(n) => Some(n.value.clone()),
        None => val(g, "default_os_image").cloned(),
    };
    FileContent {
        rel: format!("host_vars/{mname}.yml"),
        data: build(vec![
            ("instance_name", Some(Value::str(mm.instance_name.clone()))),
            (
                "instance_type",
                Some(val(m, "type").cloned().unwrap_or(Value::str("lxc"))),
            ),
            (
                "instance_description",
                Some(val(m, "description").cloned().unwrap_or(Value::str(""))),
            ),
            ("instance_domain", Some(Value::str(dname))),
            ("instance_ephemeral", Some(eph)),
            ("instance_os_image", os_image),
            ("instance_ip", val(m, "ip").cloned()),
            ("instance_gpu", val(m, "gpu").cloned()),
            ("instance_profiles", val(m, "profiles").cloned()),
            ("instance_config", val(m, "config").cloned()),
            ("instance_devices", devices),
            (
                "instance_storage_volumes",
                val(m, "storage_volumes").cloned(),
            ),
            ("instance_roles", val(m, "roles").cloned()),
            ("instance_boot_autostart", val(m, "boot_autostart").cloned()),
            ("instance_boot_priority", val(m, "boot_priority").cloned()),
            (
                "instance_snapshots_schedule",
                val(m, "snapshots_schedule").cloned(),
            ),
            (
                "instance_snapshots_expiry",
                val(m, "snapshots_expiry").cloned(),
            ),
        ]),
    }
}
