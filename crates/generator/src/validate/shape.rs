//! Structural checks the reference does not make (it crashes instead):
//! every section has the container type the rest of the code reads, names
//! are strings, IPs are IPv4 addresses.

use std::net::Ipv4Addr;

use crate::access::{get, name};
use crate::diag::Diags;
use anklume_yaml::{Mapping, Node, Value};

fn expect_map_or_null(d: &mut Diags, n: Option<&Node>, path: &str) {
    if let Some(n) = n {
        if !matches!(n.value, Value::Map(_) | Value::Null) {
            d.err(
                format!("{path} must be a mapping, got {}", n.value.kind()),
                path,
                Some(n),
            );
        }
    }
}

fn expect_map(d: &mut Diags, n: &Node, path: &str, hint: &str) {
    if !matches!(n.value, Value::Map(_)) {
        d.err(
            format!("{path} must be a mapping{hint}, got {}", n.value.kind()),
            path,
            Some(n),
        );
    }
}

fn expect_scalar(d: &mut Diags, n: Option<&Node>, path: &str) {
    if let Some(n) = n {
        if matches!(n.value, Value::Seq(_) | Value::Map(_)) {
            d.err(
                format!("{path} must be a single value, got {}", n.value.kind()),
                path,
                Some(n),
            );
        }
    }
}

fn expect_str_or_null(d: &mut Diags, n: Option<&Node>, path: &str) {
    if let Some(n) = n {
        if !matches!(n.value, Value::Str(_) | Value::Null) {
            d.err(
                format!("{path} must be a string, got {}", n.value.kind()),
                path,
                Some(n),
            );
        }
    }
}

/// Keys of a named section must be strings.
fn string_keys(d: &mut Diags, m: &Mapping, path: &str, what: &str) {
    for k in m.keys() {
        if !matches!(k.value, Value::Str(_)) {
            d.err(
                format!(
                    "{what} names must be strings, got {} {}",
                    k.value.kind(),
                    name(k)
                ),
                format!("{path}.{}", name(k)),
                Some(k),
            );
        }
    }
}

/// Check the structure of the whole document.
pub fn check(infra: &Mapping, d: &mut Diags) {
    if let Some(g) = get(infra, "global") {
        expect_map(d, g, "global", "");
        if let Some(gm) = g.value.as_map() {
            expect_str_or_null(d, get(gm, "ai_access_default"), "global.ai_access_default");
            if let Some(bs) = get(gm, "base_subnet") {
                let ok = bs.value.as_str().is_some_and(|s| {
                    let parts: Vec<&str> = s.split('.').collect();
                    parts.len() == 2 && parts.iter().all(|p| p.parse::<u8>().is_ok())
                });
                if !ok {
                    d.err(
                        format!(
                            "global.base_subnet must be the first two octets as a quoted string (e.g. \"10.100\"), got {}",
                            anklume_yaml::pyfmt::py_repr(&bs.value)
                        ),
                        "global.base_subnet",
                        Some(bs),
                    );
                }
            }
        }
    }
    expect_map_or_null(d, get(infra, "domains"), "domains");
    expect_map_or_null(d, get(infra, "shared_volumes"), "shared_volumes");
    if let Some(sv) = get(infra, "shared_volumes").and_then(|n| n.value.as_map()) {
        string_keys(d, sv, "shared_volumes", "shared volume");
    }
    if let Some(np) = get(infra, "network_policies") {
        match &np.value {
            Value::Seq(items) => {
                for (i, p) in items.iter().enumerate() {
                    if let Some(pm) = p.value.as_map() {
                        for f in ["from", "to"] {
                            expect_scalar(d, get(pm, f), &format!("network_policies[{i}].{f}"));
                        }
                    }
                }
            }
            Value::Null => {}
            other => d.err(
                format!("network_policies must be a list, got {}", other.kind()),
                "network_policies",
                Some(np),
            ),
        }
    }
    let Some(doms) = get(infra, "domains").and_then(|n| n.value.as_map()) else {
        return;
    };
    string_keys(d, doms, "domains", "domain");
    for (dk, dn) in doms.iter() {
        let dpath = format!("domains.{}", name(dk));
        expect_map(d, dn, &dpath, " (write {} for a domain with defaults)");
        let Some(dm) = dn.value.as_map() else {
            continue;
        };
        expect_scalar(d, get(dm, "trust_level"), &format!("{dpath}.trust_level"));
        expect_scalar(d, get(dm, "subnet_id"), &format!("{dpath}.subnet_id"));
        let ppath = format!("{dpath}.profiles");
        expect_map_or_null(d, get(dm, "profiles"), &ppath);
        if let Some(pm) = get(dm, "profiles").and_then(|n| n.value.as_map()) {
            for (pk, pn) in pm.iter() {
                let p = format!("{ppath}.{}", name(pk));
                expect_map(d, pn, &p, "");
                if let Some(pmm) = pn.value.as_map() {
                    check_devices(d, get(pmm, "devices"), &format!("{p}.devices"));
                    expect_map_or_null(d, get(pmm, "config"), &format!("{p}.config"));
                }
            }
        }
        let mpath = format!("{dpath}.machines");
        expect_map_or_null(d, get(dm, "machines"), &mpath);
        let Some(ms) = get(dm, "machines").and_then(|n| n.value.as_map()) else {
            continue;
        };
        string_keys(d, ms, &mpath, "machine");
        for (mk, mn) in ms.iter() {
            let p = format!("{mpath}.{}", name(mk));
            expect_map(d, mn, &p, " (write {} for a machine with defaults)");
            if let Some(mm) = mn.value.as_map() {
                check_machine(d, mm, &p);
            }
        }
    }
}

fn check_devices(d: &mut Diags, n: Option<&Node>, path: &str) {
    expect_map_or_null(d, n, path);
    if let Some(devs) = n.and_then(|n| n.value.as_map()) {
        for (k, v) in devs.iter() {
            expect_map(d, v, &format!("{path}.{}", name(k)), "");
        }
    }
}

fn check_machine(d: &mut Diags, m: &Mapping, path: &str) {
    expect_map_or_null(d, get(m, "config"), &format!("{path}.config"));
    check_devices(d, get(m, "devices"), &format!("{path}.devices"));
    expect_str_or_null(d, get(m, "os_image"), &format!("{path}.os_image"));
    expect_scalar(d, get(m, "type"), &format!("{path}.type"));
    if let Some(pd) = get(m, "persistent_data").and_then(|n| n.value.as_map()) {
        string_keys(
            d,
            pd,
            &format!("{path}.persistent_data"),
            "persistent_data volume",
        );
    }
    if let Some(p) = get(m, "profiles") {
        match &p.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    if !matches!(it.value, Value::Str(_)) {
                        d.err(
                            format!(
                                "{path}.profiles[{i}] must be a profile name, got {}",
                                it.value.kind()
                            ),
                            format!("{path}.profiles[{i}]"),
                            Some(it),
                        );
                    }
                }
            }
            Value::Null => {}
            other => d.err(
                format!("{path}.profiles must be a list, got {}", other.kind()),
                format!("{path}.profiles"),
                Some(p),
            ),
        }
    }
    if let Some(ip) = get(m, "ip").filter(|n| n.value.truthy()) {
        let ok = ip
            .value
            .as_str()
            .is_some_and(|s| s.parse::<Ipv4Addr>().is_ok());
        if !ok {
            d.err(
                format!(
                    "{path}.ip must be an IPv4 address such as \"10.110.0.5\", got {}",
                    anklume_yaml::pyfmt::py_repr(&ip.value)
                ),
                format!("{path}.ip"),
                Some(ip),
            );
        }
    }
}
