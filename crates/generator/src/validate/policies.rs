//! Network policies, exclusive AI access, shared volumes and persistent
//! data mount collisions.

use std::collections::HashMap;

use super::{is_int, is_valid_name, State};
use crate::access::{domains, get, machines, map_or_empty, name, non_null, seq_or_empty, val};
use crate::diag::Diags;
use anklume_yaml::pyfmt::py_str;
use anklume_yaml::{Node, Value};

/// Is `v` a known domain, machine or `host`?
fn known(st: &State, v: &Value) -> bool {
    match v.as_str() {
        Some(s) => {
            s == "host" || domains(st.infra).contains_key(s) || st.all_machines.contains_key(s)
        }
        None => false,
    }
}

/// A policy end that names one machine must name a machine with an address:
/// the isolation ruleset matches a machine by its IP, and without one the
/// rule could only name the machine's whole bridge, i.e. its whole domain.
/// Run after enrichment (zone addressing has given machines their IPs by
/// then; legacy `base_subnet` mode gives none). The reference generator
/// accepted this; we refuse it rather than widen a policy silently.
pub(super) fn validate_policy_addresses(st: &State, d: &mut Diags) {
    for (i, pn) in seq_or_empty(get(st.infra, "network_policies"))
        .iter()
        .enumerate()
    {
        let Some(p) = pn.value.as_map() else { continue };
        for field in ["from", "to"] {
            let Some(r) = non_null(p, field) else {
                continue;
            };
            let Some(mname) = r.value.as_str() else {
                continue;
            };
            if mname == "host" || domains(st.infra).contains_key(mname) {
                continue;
            }
            let Some(dname) = st.all_machines.get(mname) else {
                continue;
            };
            let m = domains(st.infra)
                .get(dname.as_str())
                .map(machines)
                .and_then(|ms| ms.get(mname).cloned());
            let has_ip = m
                .as_ref()
                .and_then(|mn| val(map_or_empty(Some(mn)), "ip"))
                .is_some_and(|v| v.truthy());
            if !has_ip {
                d.err(
                    format!(
                        "network_policies[{i}]: '{field}: {mname}' names machine {mname} (domain {dname}), which has no IP address: the rule would open its whole domain. Give {mname} an 'ip', or name the domain {dname} if that is what you mean"
                    ),
                    format!("network_policies[{i}].{field}"),
                    Some(r),
                );
            }
        }
    }
}

pub(super) fn validate_network_policies(st: &State, d: &mut Diags) {
    for (i, pn) in seq_or_empty(get(st.infra, "network_policies"))
        .iter()
        .enumerate()
    {
        let path = format!("network_policies[{i}]");
        let Some(p) = pn.value.as_map() else {
            d.err(format!("{path}: must be a mapping"), &path, Some(pn));
            continue;
        };
        for field in ["from", "to"] {
            match non_null(p, field) {
                None => d.err(format!("{path}: missing '{field}'"), &path, Some(pn)),
                Some(r) if !known(st, &r.value) => d.err(
                    format!(
                        "{path}: '{field}: {}' is not a known domain, machine, or 'host'",
                        py_str(&r.value)
                    ),
                    format!("{path}.{field}"),
                    Some(r),
                ),
                Some(_) => {}
            }
        }
        if let Some(ports) = non_null(p, "ports") {
            if !ports.value.is_str("all") {
                match &ports.value {
                    Value::Seq(items) => {
                        for port in items {
                            if !is_int(&port.value).is_some_and(|v| (1..=65535).contains(&v)) {
                                d.err(
                                    format!(
                                        "{path}: invalid port {} (must be 1-65535)",
                                        py_str(&port.value)
                                    ),
                                    format!("{path}.ports"),
                                    Some(port),
                                );
                            }
                        }
                    }
                    _ => d.err(
                        format!("{path}: ports must be a list or 'all'"),
                        format!("{path}.ports"),
                        Some(ports),
                    ),
                }
            }
        }
        if let Some(proto) = non_null(p, "protocol") {
            if !proto
                .value
                .as_str()
                .is_some_and(|s| s == "tcp" || s == "udp")
            {
                d.err(
                    format!(
                        "{path}: protocol must be 'tcp' or 'udp', got '{}'",
                        py_str(&proto.value)
                    ),
                    format!("{path}.protocol"),
                    Some(proto),
                );
            }
        }
        if let Some(b) = non_null(p, "bidirectional") {
            if !matches!(b.value, Value::Bool(_)) {
                d.err(
                    format!(
                        "{path}: bidirectional must be a boolean, got {}",
                        b.value.py_type()
                    ),
                    format!("{path}.bidirectional"),
                    Some(b),
                );
            }
        }
    }
}

pub(super) fn validate_ai_access(st: &State, d: &mut Diags) {
    if !val(st.g, "ai_access_policy").is_some_and(|v| v.is_str("exclusive")) {
        return;
    }
    let doms = domains(st.infra);
    let def = non_null(st.g, "ai_access_default");
    match def {
        None => d.err(
            "global.ai_access_default is required when ai_access_policy is 'exclusive'",
            "global.ai_access_default",
            None,
        ),
        Some(n) if n.value.is_str("ai-tools") => d.err(
            "global.ai_access_default cannot be 'ai-tools' (must be a client domain)",
            "global.ai_access_default",
            Some(n),
        ),
        Some(n) if !n.value.as_str().is_some_and(|s| doms.contains_key(s)) => d.err(
            format!(
                "global.ai_access_default '{}' is not a known domain",
                py_str(&n.value)
            ),
            "global.ai_access_default",
            Some(n),
        ),
        Some(_) => {}
    }
    if !doms.contains_key("ai-tools") {
        d.err(
            "ai_access_policy is 'exclusive' but no 'ai-tools' domain exists",
            "domains",
            None,
        );
    }
    let n = seq_or_empty(get(st.infra, "network_policies"))
        .iter()
        .filter(|p| {
            p.value
                .as_map()
                .is_some_and(|m| val(m, "to").is_some_and(|t| t.is_str("ai-tools")))
        })
        .count();
    if n > 1 {
        d.err(
            format!("ai_access_policy is 'exclusive' but {n} network_policies target ai-tools (max 1 allowed)"),
            "network_policies",
            None,
        );
    }
}

/// (machine, mount path) → shared volume name.
pub(crate) type MountPaths = HashMap<(String, String), String>;

pub(super) fn validate_shared_volumes(st: &State, d: &mut Diags) -> MountPaths {
    let mut paths = MountPaths::new();
    let Some(svn) = get(st.infra, "shared_volumes").filter(|n| n.value.truthy()) else {
        return paths;
    };
    let Some(svs) = svn.value.as_map() else {
        d.err(
            "shared_volumes must be a mapping",
            "shared_volumes",
            Some(svn),
        );
        return paths;
    };
    let doms = domains(st.infra);
    // machine → its domain node
    let mut machine_domain: HashMap<String, &Node> = HashMap::new();
    for (_, dn) in doms.iter() {
        for (mk, _) in machines(dn).iter() {
            machine_domain.insert(name(mk), dn);
        }
    }
    for (vk, vn) in svs.iter() {
        let vname = name(vk);
        let vpath = format!("shared_volumes.{vname}");
        let Some(vc) = vn.value.as_map() else {
            d.err(
                format!("shared_volumes.{vname}: must be a mapping"),
                &vpath,
                Some(vn),
            );
            continue;
        };
        if !vk.value.as_str().is_some_and(is_valid_name) {
            d.err(
                format!("shared_volumes.{vname}: invalid name (lowercase alphanumeric + hyphen, no trailing hyphen)"),
                &vpath,
                Some(vk),
            );
        }
        for key in ["source", "path"] {
            if let Some(n) = non_null(vc, key) {
                if !n.value.as_str().is_some_and(|s| s.starts_with('/')) {
                    d.err(
                        format!("shared_volumes.{vname}: {key} must be an absolute path"),
                        format!("{vpath}.{key}"),
                        Some(n),
                    );
                }
            }
        }
        for key in ["shift", "propagate"] {
            if let Some(n) = non_null(vc, key) {
                if !matches!(n.value, Value::Bool(_)) {
                    d.err(
                        format!(
                            "shared_volumes.{vname}: {key} must be a boolean, got {}",
                            n.value.py_type()
                        ),
                        format!("{vpath}.{key}"),
                        Some(n),
                    );
                }
            }
        }
        let consumers = match non_null(vc, "consumers").and_then(|n| n.value.as_map()) {
            Some(c) if !c.is_empty() => c,
            _ => {
                d.err(
                    format!("shared_volumes.{vname}: consumers must be a non-empty mapping"),
                    format!("{vpath}.consumers"),
                    get(vc, "consumers").or(Some(vn)),
                );
                continue;
            }
        };
        let device = format!("sv-{vname}");
        let mount = match val(vc, "path").filter(|v| v.truthy()) {
            Some(p) => py_str(p),
            None => format!("/shared/{vname}"),
        };
        for (ck, cv) in consumers.iter() {
            let cname = name(ck);
            let cpath = format!("{vpath}.consumers.{cname}");
            if !(cv.value.is_str("ro") || cv.value.is_str("rw")) {
                d.err(
                    format!(
                        "shared_volumes.{vname}: consumer '{cname}' access must be 'ro' or 'rw', got '{}'",
                        py_str(&cv.value)
                    ),
                    &cpath,
                    Some(cv),
                );
            }
            let is_domain = ck.value.as_str().is_some_and(|s| doms.contains_key(s));
            let is_machine = ck
                .value
                .as_str()
                .is_some_and(|s| st.all_machines.contains_key(s));
            if !is_domain && !is_machine {
                d.err(
                    format!("shared_volumes.{vname}: consumer '{cname}' is not a known domain or machine"),
                    &cpath,
                    Some(ck),
                );
            }
            let resolved: Vec<String> = if is_domain {
                machines(doms.get(&cname).expect("known domain"))
                    .keys()
                    .map(name)
                    .collect()
            } else if is_machine {
                vec![cname.clone()]
            } else {
                Vec::new()
            };
            for m in resolved {
                if let Some(dn) = machine_domain.get(&m) {
                    let mnode = machines(dn).get(&m);
                    let devs =
                        map_or_empty(mnode.and_then(|n| get(map_or_empty(Some(n)), "devices")));
                    if devs.contains_key(&device) {
                        d.err(
                            format!(
                                "shared_volumes.{vname}: device name '{device}' conflicts with existing device on machine '{m}'"
                            ),
                            &cpath,
                            Some(ck),
                        );
                    }
                }
                let key = (m.clone(), mount.clone());
                if let Some(prev) = paths.get(&key) {
                    d.err(
                        format!(
                            "shared_volumes.{vname}: duplicate mount path '{mount}' on machine '{m}' (already used by volume '{prev}')"
                        ),
                        &cpath,
                        Some(ck),
                    );
                } else {
                    paths.insert(key, vname.clone());
                }
            }
        }
    }
    paths
}

pub(super) fn validate_persistent_data_collisions(st: &State, d: &mut Diags, sv: &MountPaths) {
    for (dk, dn) in domains(st.infra).iter() {
        for (mk, mn) in machines(dn).iter() {
            let m = map_or_empty(Some(mn));
            let Some(pd) = non_null(m, "persistent_data").and_then(|n| n.value.as_map()) else {
                continue;
            };
            for (vk, vn) in pd.iter() {
                let Some(vc) = vn.value.as_map() else {
                    continue;
                };
                let Some(p) = val(vc, "path").filter(|v| v.truthy()) else {
                    continue;
                };
                let pstr = py_str(p);
                if let Some(vol) = sv.get(&(name(mk), pstr.clone())) {
                    d.err(
                        format!(
                            "Machine '{}': persistent_data.{}: duplicate mount path '{pstr}' (already used by shared_volume '{vol}')",
                            name(mk),
                            name(vk)
                        ),
                        format!("domains.{}.machines.{}.persistent_data.{}.path", name(dk), name(mk), name(vk)),
                        get(vc, "path"),
                    );
                }
            }
        }
    }
}
