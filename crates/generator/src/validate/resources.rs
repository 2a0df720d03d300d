//! `resource_policy` rules and host subnet conflicts.

use super::State;
use crate::access::{get, non_null};
use crate::context::Ipv4Net;
use crate::diag::Diags;
use crate::resources::parse_memory_value;
use anklume_yaml::pyfmt::{py_int_str, py_str};
use anklume_yaml::{Mapping, Value};

pub(super) fn validate_resource_policy(g: &Mapping, d: &mut Diags) {
    let Some(rn) = get(g, "resource_policy") else {
        return;
    };
    let path = "global.resource_policy";
    let rp = match &rn.value {
        Value::Null | Value::Bool(true) => return,
        Value::Map(m) => m,
        _ => {
            d.err(
                "global.resource_policy must be a mapping or true",
                path,
                Some(rn),
            );
            return;
        }
    };
    let enum_check = |d: &mut Diags, key: &str, default: &str, a: &str, b: &str| {
        let v = get(rp, key).map_or(Value::str(default), |n| n.value.clone());
        if !(v.is_str(a) || v.is_str(b)) {
            d.err(
                format!(
                    "resource_policy.{key} must be '{a}' or '{b}', got '{}'",
                    py_str(&v)
                ),
                format!("{path}.{key}"),
                get(rp, key),
            );
        }
    };
    enum_check(d, "mode", "proportional", "proportional", "equal");
    enum_check(d, "cpu_mode", "allowance", "allowance", "count");
    enum_check(d, "memory_enforce", "soft", "soft", "hard");
    if let Some(n) = get(rp, "overcommit") {
        if !matches!(n.value, Value::Bool(_)) {
            d.err(
                "resource_policy.overcommit must be a boolean",
                format!("{path}.overcommit"),
                Some(n),
            );
        }
    }
    let Some(hrn) = non_null(rp, "host_reserve") else {
        return;
    };
    let hpath = format!("{path}.host_reserve");
    let Some(hr) = hrn.value.as_map() else {
        d.err(
            "resource_policy.host_reserve must be a mapping",
            &hpath,
            Some(hrn),
        );
        return;
    };
    for field in ["cpu", "memory"] {
        let Some(n) = non_null(hr, field) else {
            continue;
        };
        let fpath = format!("{hpath}.{field}");
        let pre = format!("resource_policy.host_reserve.{field}");
        match &n.value {
            Value::Str(s) if s.ends_with('%') => match py_int_str(s.trim_end_matches('%')) {
                Some(pct) if 0 < pct && pct < 100 => {}
                Some(pct) => d.err(
                    format!("{pre}: percentage must be 1-99, got {pct}"),
                    &fpath,
                    Some(n),
                ),
                None => d.err(format!("{pre}: invalid format '{s}'"), &fpath, Some(n)),
            },
            Value::Int(_) | Value::Float(_) => {
                let positive = match n.value {
                    Value::Int(i) => i > 0,
                    Value::Float(f) => f > 0.0,
                    _ => unreachable!(),
                };
                if !positive {
                    d.err(
                        format!("{pre}: must be positive, got {}", py_str(&n.value)),
                        &fpath,
                        Some(n),
                    );
                }
            }
            Value::Str(s) if field == "memory" => {
                if parse_memory_value(s) <= 0 {
                    d.err(format!("{pre}: invalid value '{s}'"), &fpath, Some(n));
                }
            }
            other => d.err(
                format!(
                    "{pre}: must be 'N%' or a positive number, got '{}'",
                    py_str(other)
                ),
                &fpath,
                Some(n),
            ),
        }
    }
}

pub(super) fn validate_host_subnets(st: &State, d: &mut Diags) {
    if st.ctx.subnets.is_empty() {
        return;
    }
    let mut to_check: Vec<(String, Ipv4Net)> = Vec::new();
    if st.has_addressing && !st.computed.is_empty() {
        let addr = crate::access::map_or_empty(get(st.g, "addressing"));
        let bo = crate::addressing::base_octet(addr);
        for (dname, info) in &st.computed {
            if let Some(net) = Ipv4Net::parse(&format!("{}.0/24", info.prefix(&bo))) {
                to_check.push((dname.clone(), net));
            }
        }
    } else {
        for (sid, dname) in &st.subnet_ids {
            if let Some(net) = Ipv4Net::parse(&format!("{}.{sid}.0/24", py_str(&st.base_subnet))) {
                to_check.push((dname.clone(), net));
            }
        }
    }
    for (dname, net) in to_check {
        for (ifname, host) in &st.ctx.subnets {
            if net.overlaps(host) {
                let hint = if st.has_addressing {
                    "Adjust global.addressing.zone_base or use a different subnet_id.".to_string()
                } else {
                    let alt = if st.base_subnet.is_str("10.100") {
                        "10.200"
                    } else {
                        "10.100"
                    };
                    format!("Change global.base_subnet to '{alt}' or use a different subnet_id for this domain.")
                };
                d.err(
                    format!(
                        "SUBNET CONFLICT: Domain '{dname}' uses {net} which overlaps with host interface '{ifname}' ({host}). Incus would create a bridge on the same subnet, causing a routing loop and total loss of network connectivity. {hint}"
                    ),
                    format!("domains.{dname}"),
                    None,
                );
            }
        }
    }
}
