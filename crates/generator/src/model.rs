//! The generator's validated, enriched model: one typed structure built
//! once from the enriched `infra.yml`, which the renderer ([`crate::generate`])
//! writes as the Ansible tree and the reconciler consumes directly.
//!
//! Everything that both sides need (names with the nesting prefix, each
//! domain's project and bridge addressing, each machine's image, address,
//! protection, merged devices, volumes, policies) is derived here and only
//! here, so the Ansible tree and what `anklume apply` creates cannot
//! disagree. Leaf values that `infra.yml` passes through to Incus (config
//! and device keys) stay YAML scalars ([`Value`]); [`incus_value`] gives
//! their Incus string form.

use anklume_yaml::pyfmt::{float_repr, py_str};
use anklume_yaml::{Mapping, Value};
use indexmap::IndexMap;

use crate::access::{domains, get, machines, map_or_empty, name, seq_or_empty, val};
use crate::addressing::base_octet;
use crate::enrich::Enriched;

/// Config keys → YAML scalar values, in `infra.yml` order.
pub type Config = IndexMap<String, Value>;
/// Device name → its keys.
pub type Devices = IndexMap<String, Config>;

/// The whole validated, enriched description.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Nesting prefix (`001-`) of projects, bridges and instances, or empty.
    pub prefix: String,
    /// Every domain, in `infra.yml` order (disabled ones too: see
    /// [`Domain::enabled`]).
    pub domains: Vec<Domain>,
    /// `network_policies`, in order.
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub enabled: bool,
    pub description: String,
    /// The Incus project (`<prefix><name>`).
    pub project: String,
    pub network: Network,
    /// Zone or legacy subnet id (as written, for the rendered variables).
    pub subnet_id: Option<Value>,
    /// Custom profiles, in order.
    pub profiles: Vec<Profile>,
    pub machines: Vec<Machine>,
}

/// A domain's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `<prefix>net-<domain>`
    pub name: String,
    /// `10.110.0.0/24`
    pub subnet: String,
    /// `10.110.0.254`
    pub gateway: String,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub config: Config,
    pub devices: Devices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineType {
    Lxc,
    Vm,
}

#[derive(Debug, Clone)]
pub struct Machine {
    /// The name in `infra.yml`.
    pub name: String,
    /// The Incus instance name (`<prefix><name>`).
    pub instance_name: String,
    pub kind: MachineType,
    pub description: String,
    /// Its own `ephemeral`, else its domain's.
    pub ephemeral: bool,
    /// `os_image`, else `global.default_os_image`.
    pub os_image: Option<String>,
    /// Static address (given, or assigned by zone addressing).
    pub ip: Option<String>,
    /// `profiles` (`None`: Incus's `default`).
    pub profiles: Option<Vec<String>>,
    pub config: Config,
    /// Shared-volume and persistent-data disks, then the declared devices
    /// (a declared device of the same name wins).
    pub devices: Devices,
    /// `storage_volumes`: volume name → its keys (`pool`, `size`, `path`).
    pub storage_volumes: IndexMap<String, Config>,
    pub boot_autostart: Option<Value>,
    pub boot_priority: Option<Value>,
    pub snapshots_schedule: Option<Value>,
    pub snapshots_expiry: Option<Value>,
}

/// One `network_policies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Its position in `network_policies` (for messages).
    pub index: usize,
    pub description: String,
    /// `host`, a domain or a machine (validated: one of them).
    pub from: String,
    pub to: String,
    /// Empty: every port.
    pub ports: Vec<u16>,
    pub protocol: Option<String>,
    pub bidirectional: bool,
}

/// The Incus string form of a YAML scalar (`true`, `4`, `8GiB`); `None` for
/// null, `Err` with the value's kind for a list or mapping.
pub fn incus_value(v: &Value) -> Result<Option<String>, &'static str> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) | Value::Timestamp(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => return Err(v.kind()),
    }))
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

fn config(v: Option<&Value>) -> Config {
    v.and_then(Value::as_map)
        .map(|m| m.iter().map(|(k, v)| (name(k), v.value.clone())).collect())
        .unwrap_or_default()
}

fn devices(v: Option<&Value>) -> Devices {
    v.and_then(Value::as_map)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (name(k), config(Some(&v.value))))
                .collect()
        })
        .unwrap_or_default()
}

/// A domain's subnet, gateway and subnet id, by zone addressing or the
/// legacy `base_subnet` + `subnet_id`.
fn addressing(
    infra: &Mapping,
    e: &Enriched,
    dname: &str,
    dm: &Mapping,
) -> (String, String, Option<Value>) {
    let g = map_or_empty(get(infra, "global"));
    let zone = e
        .addressing
        .as_ref()
        .and_then(|a| a.get(dname))
        .filter(|_| g.contains_key("addressing"));
    match zone {
        Some(info) => {
            let p = info.prefix(&base_octet(map_or_empty(get(g, "addressing"))));
            (
                format!("{p}.0/24"),
                format!("{p}.254"),
                Some(info.domain_seq.clone()),
            )
        }
        None => {
            let sid = val(dm, "subnet_id").cloned();
            let bs = val(g, "base_subnet").map_or("10.100".to_string(), py_str);
            let s = sid.as_ref().map_or("None".to_string(), py_str);
            (format!("{bs}.{s}.0/24"), format!("{bs}.{s}.254"), sid)
        }
    }
}

/// Build the model from the enriched document (after both validation
/// passes: shapes are known to be right).
pub fn build(infra: &Mapping, e: &Enriched, prefix: &str) -> Model {
    let g = map_or_empty(get(infra, "global"));
    let mut model = Model {
        prefix: prefix.to_string(),
        ..Model::default()
    };
    for (dk, dn) in domains(infra).iter() {
        let dm = map_or_empty(Some(dn));
        let dname = name(dk);
        let (subnet, gateway, subnet_id) = addressing(infra, e, &dname, dm);
        let domain_ephemeral = val(dm, "ephemeral").and_then(Value::as_bool) == Some(true);
        let profiles = val(dm, "profiles")
            .and_then(Value::as_map)
            .map(|pm| {
                pm.iter()
                    .map(|(k, p)| {
                        let pm = p.value.as_map();
                        Profile {
                            name: name(k),
                            config: config(pm.and_then(|m| val(m, "config"))),
                            devices: devices(pm.and_then(|m| val(m, "devices"))),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let machines = machines(dn)
            .iter()
            .map(|(mk, mn)| {
                machine(
                    &name(mk),
                    map_or_empty(Some(mn)),
                    domain_ephemeral,
                    g,
                    e,
                    prefix,
                )
            })
            .collect();
        model.domains.push(Domain {
            enabled: !val(dm, "enabled").is_some_and(|v| matches!(v, Value::Bool(false))),
            description: text(val(dm, "description")),
            project: format!("{prefix}{dname}"),
            network: Network {
                name: format!("{prefix}net-{dname}"),
                subnet,
                gateway,
            },
            subnet_id,
            profiles,
            machines,
            name: dname,
        });
    }
    for (i, pn) in seq_or_empty(get(infra, "network_policies"))
        .iter()
        .enumerate()
    {
        let Some(p) = pn.value.as_map() else { continue };
        model.policies.push(Policy {
            index: i,
            description: text(val(p, "description")),
            from: val(p, "from").map(py_str).unwrap_or_default(),
            to: val(p, "to").map(py_str).unwrap_or_default(),
            ports: match val(p, "ports") {
                Some(Value::Seq(items)) => items
                    .iter()
                    .filter_map(|n| n.value.as_int())
                    .filter_map(|i| u16::try_from(i).ok())
                    .collect(),
                _ => Vec::new(),
            },
            protocol: val(p, "protocol")
                .and_then(Value::as_str)
                .map(str::to_string),
            bidirectional: val(p, "bidirectional").and_then(Value::as_bool) == Some(true),
        });
    }
    model
}

/// The devices a machine gets: its shared-volume and persistent-data disks,
/// then its declared devices (which win on a name clash), as the renderer
/// writes them (`None`: the machine declares no devices and gets none).
pub(crate) fn merged_devices(mname: &str, m: &Mapping, e: &Enriched) -> Option<Value> {
    let user = val(m, "devices").cloned();
    let mut merged = Mapping::new();
    for map in [
        e.shared_volume_devices.get(mname),
        e.persistent_data_devices.get(mname),
    ]
    .into_iter()
    .flatten()
    {
        for (k, dev) in map {
            merged.insert_str(k, Value::Map(dev.clone()));
        }
    }
    if let Some(Value::Map(u)) = user.as_ref().filter(|v| v.truthy()) {
        for (k, v) in u.iter() {
            merged.insert(k.clone(), v.clone());
        }
    }
    if merged.is_empty() {
        user
    } else {
        Some(Value::Map(merged))
    }
}

fn machine(
    mname: &str,
    m: &Mapping,
    domain_ephemeral: bool,
    g: &Mapping,
    e: &Enriched,
    prefix: &str,
) -> Machine {
    let os_image = match get(m, "os_image") {
        Some(n) => n.value.as_str().map(str::to_string),
        None => val(g, "default_os_image")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    Machine {
        instance_name: format!("{prefix}{mname}"),
        kind: if val(m, "type").is_some_and(|t| t.is_str("vm")) {
            MachineType::Vm
        } else {
            MachineType::Lxc
        },
        description: text(val(m, "description")),
        ephemeral: match val(m, "ephemeral").filter(|v| !v.is_null()) {
            Some(v) => v.as_bool() == Some(true),
            None => domain_ephemeral,
        },
        os_image,
        ip: val(m, "ip")
            .filter(|v| v.truthy())
            .and_then(Value::as_str)
            .map(str::to_string),
        profiles: val(m, "profiles").and_then(Value::as_seq).map(|items| {
            items
                .iter()
                .filter_map(|n| n.value.as_str().map(str::to_string))
                .collect()
        }),
        config: config(val(m, "config")),
        devices: devices(merged_devices(mname, m, e).as_ref()),
        storage_volumes: val(m, "storage_volumes")
            .and_then(Value::as_map)
            .map(|vm| {
                vm.iter()
                    .map(|(k, v)| (name(k), config(Some(&v.value))))
                    .collect()
            })
            .unwrap_or_default(),
        boot_autostart: val(m, "boot_autostart").cloned(),
        boot_priority: val(m, "boot_priority").cloned(),
        snapshots_schedule: val(m, "snapshots_schedule").cloned(),
        snapshots_expiry: val(m, "snapshots_expiry").cloned(),
        name: mname.to_string(),
    }
}
