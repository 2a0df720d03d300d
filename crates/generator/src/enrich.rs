//! Enrichment after validation: zone addressing and IPs, the auto-created
//! firewall VM and AI access policy, resource limits, shared-volume and
//! persistent-data disk devices (the reference's `enrich_infra`).

use std::collections::HashMap;

use indexmap::IndexMap;

use super::access::{domains, get, machines, map_or_empty, name, seq_or_empty, val};
use super::addressing::{self, base_octet, ZoneAddr, DEFAULT_TRUST_LEVEL};
use super::context::HostContext;
use super::resources;
use anklume_yaml::pyfmt::py_str;
use anklume_yaml::{Mapping, Node, Value};

/// Disk devices per machine: machine → device name → device.
pub type DeviceMap = HashMap<String, IndexMap<String, Mapping>>;

/// What enrichment computed besides editing the document.
#[derive(Debug, Default)]
pub struct Enriched {
    /// Zone addressing, when `global.addressing` is used.
    pub addressing: Option<IndexMap<String, ZoneAddr>>,
    pub shared_volume_devices: DeviceMap,
    pub persistent_data_devices: DeviceMap,
    /// `INFO:` lines.
    pub infos: Vec<String>,
    /// `WARNING:` lines.
    pub warnings: Vec<String>,
}

fn map(pairs: &[(&str, Value)]) -> Mapping {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert_str(k, v.clone());
    }
    m
}

/// Enrich `infra` in place. `Err` is a fatal `ERROR:` message.
pub fn enrich(infra: &mut Mapping, ctx: &HostContext) -> Result<Enriched, String> {
    let mut e = Enriched::default();
    enrich_addressing(infra, &mut e)?;
    enrich_firewall(infra, &mut e)?;
    enrich_ai_access(infra, &mut e);
    let r = resources::allocate(infra, ctx.resources)?;
    e.warnings.extend(r.warnings);
    e.shared_volume_devices = shared_volume_devices(infra);
    e.persistent_data_devices = persistent_data_devices(infra);
    Ok(e)
}

fn domains_mut(infra: &mut Mapping) -> Option<&mut Mapping> {
    infra.get_mut("domains").and_then(|n| n.value.as_map_mut())
}

fn enrich_addressing(infra: &mut Mapping, e: &mut Enriched) -> Result<(), String> {
    let g = map_or_empty(get(infra, "global"));
    if !g.contains_key("addressing") {
        return Ok(());
    }
    let bo = py_str(&base_octet(map_or_empty(get(g, "addressing"))));
    if let Some(doms) = domains_mut(infra) {
        for (_, d) in doms.iter_mut() {
            if let Some(dm) = d.value.as_map_mut() {
                if !dm.contains_key("trust_level") {
                    dm.insert_str("trust_level", Value::str(DEFAULT_TRUST_LEVEL));
                }
            }
        }
    }
    let computed = addressing::compute(infra);
    if let Some(doms) = domains_mut(infra) {
        for (dk, d) in doms.iter_mut() {
            let dname = name(dk);
            if let (Some(info), Some(dm)) = (computed.get(&dname), d.value.as_map_mut()) {
                let prefix = format!("{bo}.{}.{}", info.second_octet, py_str(&info.domain_seq));
                addressing::auto_assign_ips(dm, &prefix)?;
            }
        }
    }
    e.addressing = Some(computed);
    Ok(())
}

fn enrich_firewall(infra: &mut Mapping, e: &mut Enriched) -> Result<(), String> {
    let g = map_or_empty(get(infra, "global")).clone();
    if !val(&g, "firewall_mode").is_some_and(|v| v.is_str("vm")) {
        return Ok(());
    }
    for (_, d) in domains(infra).iter() {
        for (mk, _) in machines(d).iter() {
            if mk.value.is_str("anklume-firewall") || mk.value.is_str("sys-firewall") {
                return Ok(());
            }
        }
    }
    let Some(anklume) = domains(infra).get("anklume") else {
        return Err(
            "firewall_mode is 'vm' but no 'anklume' domain exists. Cannot auto-create anklume-firewall."
                .into(),
        );
    };
    let fw_ip = match e.addressing.as_ref().and_then(|a| a.get("anklume")) {
        Some(info) => format!(
            "{}.253",
            info.prefix(&base_octet(map_or_empty(get(&g, "addressing"))))
        ),
        None => {
            let bs = val(&g, "base_subnet").map_or("10.100".to_string(), py_str);
            let sid = val(map_or_empty(Some(anklume)), "subnet_id").map_or("0".to_string(), py_str);
            format!("{bs}.{sid}.253")
        }
    };
    let fw = map(&[
        (
            "description",
            Value::str("Centralized firewall VM (auto-created by generator)"),
        ),
        ("type", Value::str("vm")),
        ("ip", Value::str(fw_ip.clone())),
        (
            "config",
            Value::Map(map(&[
                ("limits.cpu", Value::str("2")),
                ("limits.memory", Value::str("2GiB")),
            ])),
        ),
        (
            "roles",
            Value::Seq(vec![
                Node::synthetic(Value::str("base_system")),
                Node::synthetic(Value::str("firewall_router")),
            ]),
        ),
        ("ephemeral", Value::Bool(false)),
    ]);
    let dm = domains_mut(infra)
        .and_then(|d| d.get_mut("anklume"))
        .and_then(|n| n.value.as_map_mut())
        .expect("anklume domain is a mapping after validation");
    if !dm
        .get("machines")
        .is_some_and(|n| matches!(n.value, Value::Map(_)))
    {
        dm.insert_str("machines", Value::Map(Mapping::new()));
    }
    let ms = dm
        .get_mut("machines")
        .and_then(|n| n.value.as_map_mut())
        .expect("just set");
    ms.insert_str("anklume-firewall", Value::Map(fw));
    e.infos.push(format!(
        "firewall_mode is 'vm' — auto-created anklume-firewall in anklume domain (ip: {fw_ip})"
    ));
    Ok(())
}

fn enrich_ai_access(infra: &mut Mapping, e: &mut Enriched) {
    let g = map_or_empty(get(infra, "global"));
    if !val(g, "ai_access_policy").is_some_and(|v| v.is_str("exclusive")) {
        return;
    }
    let Some(def) = val(g, "ai_access_default")
        .filter(|v| v.truthy())
        .map(py_str)
    else {
        return;
    };
    if !domains(infra).contains_key("ai-tools") {
        return;
    }
    let has = seq_or_empty(get(infra, "network_policies"))
        .iter()
        .any(|p| {
            p.value
                .as_map()
                .is_some_and(|m| val(m, "to").is_some_and(|t| t.is_str("ai-tools")))
        });
    if has {
        return;
    }
    let policy = map(&[
        (
            "description",
            Value::str(format!("AI access: {def} -> ai-tools (auto-created)")),
        ),
        ("from", Value::str(def.clone())),
        ("to", Value::str("ai-tools")),
        ("ports", Value::str("all")),
        ("bidirectional", Value::Bool(true)),
    ]);
    if !infra
        .get("network_policies")
        .is_some_and(|n| matches!(n.value, Value::Seq(_)))
    {
        infra.insert_str("network_policies", Value::Seq(Vec::new()));
    }
    if let Some(Value::Seq(items)) = infra.get_mut("network_policies").map(|n| &mut n.value) {
        items.push(Node::synthetic(Value::Map(policy)));
    }
    e.infos.push(format!(
        "ai_access_policy is 'exclusive' — auto-created network policy from '{def}' to 'ai-tools'"
    ));
}

fn shared_volume_devices(infra: &Mapping) -> DeviceMap {
    let mut out = DeviceMap::new();
    let Some(svs) = get(infra, "shared_volumes")
        .filter(|n| n.value.truthy())
        .and_then(|n| n.value.as_map())
    else {
        return out;
    };
    let g = map_or_empty(get(infra, "global"));
    let base = val(g, "shared_volumes_base").map_or("/srv/anklume/shares".to_string(), py_str);
    let doms = domains(infra);
    for (vk, vn) in svs.iter() {
        let Some(vc) = vn.value.as_map() else {
            continue;
        };
        let vname = name(vk);
        let source = val(vc, "source")
            .filter(|v| v.truthy())
            .map_or(format!("{base}/{vname}"), py_str);
        let path = val(vc, "path")
            .filter(|v| v.truthy())
            .map_or(format!("/shared/{vname}"), py_str);
        let shift = val(vc, "shift").is_none_or(Value::truthy);
        let consumers = map_or_empty(get(vc, "consumers"));
        let mut resolved: IndexMap<String, Value> = IndexMap::new();
        for (ck, cv) in consumers.iter() {
            if let Some(d) = ck.value.as_str().and_then(|c| doms.get(c)) {
                for (mk, _) in machines(d).iter() {
                    resolved.insert(name(mk), cv.value.clone());
                }
            }
        }
        for (ck, cv) in consumers.iter() {
            if !ck.value.as_str().is_some_and(|c| doms.contains_key(c)) {
                resolved.insert(name(ck), cv.value.clone());
            }
        }
        for (m, access) in resolved {
            let mut dev = map(&[
                ("type", Value::str("disk")),
                ("source", Value::str(source.clone())),
                ("path", Value::str(path.clone())),
            ]);
            if shift {
                dev.insert_str("shift", Value::str("true"));
            }
            if access.is_str("ro") {
                dev.insert_str("readonly", Value::str("true"));
            }
            out.entry(m).or_default().insert(format!("sv-{vname}"), dev);
        }
    }
    out
}

fn persistent_data_devices(infra: &Mapping) -> DeviceMap {
    let mut out = DeviceMap::new();
    let g = map_or_empty(get(infra, "global"));
    let base = val(g, "persistent_data_base").map_or("/srv/anklume/data".to_string(), py_str);
    for (dk, d) in domains(infra).iter() {
        for (mk, mn) in machines(d).iter() {
            let m = map_or_empty(Some(mn));
            let Some(pd) = get(m, "persistent_data")
                .filter(|n| n.value.truthy())
                .and_then(|n| n.value.as_map())
            else {
                continue;
            };
            for (vk, vn) in pd.iter() {
                let Some(vc) = vn.value.as_map() else {
                    continue;
                };
                let Some(path) = val(vc, "path").filter(|v| v.truthy()) else {
                    continue;
                };
                let mut dev = map(&[
                    ("type", Value::str("disk")),
                    (
                        "source",
                        Value::str(format!("{base}/{}/{}/{}", name(dk), name(mk), name(vk))),
                    ),
                    ("path", path.clone()),
                    ("shift", Value::str("true")),
                ]);
                if val(vc, "readonly").is_some_and(Value::truthy) {
                    dev.insert_str("readonly", Value::str("true"));
                }
                out.entry(name(mk))
                    .or_default()
                    .insert(format!("pd-{}", name(vk)), dev);
            }
        }
    }
    out
}
