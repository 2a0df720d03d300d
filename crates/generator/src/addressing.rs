//! Trust-zone addressing (ADR-038 of the reference): `10.<zone>.<seq>.0/24`.
//!
//! Each trust level is a zone whose second octet is `zone_base + offset`;
//! within a zone, domains get the third octet from an explicit `subnet_id`
//! or, alphabetically, the lowest free number. Machines without `ip` get
//! `.1`–`.99` in declaration order.

use indexmap::IndexMap;

use super::access::{domains, get, map_or_empty};
use anklume_yaml::{Key, Mapping, Value};

/// Offsets of the trust zones, in the reference's order.
pub const ZONE_OFFSETS: [(&str, i128); 5] = [
    ("admin", 0),
    ("trusted", 10),
    ("semi-trusted", 20),
    ("untrusted", 40),
    ("disposable", 50),
];
pub const DEFAULT_TRUST_LEVEL: &str = "semi-trusted";

pub fn zone_offset(trust: &Value) -> i128 {
    let t = trust.as_str().unwrap_or(DEFAULT_TRUST_LEVEL);
    ZONE_OFFSETS
        .iter()
        .find(|(n, _)| *n == t)
        .or_else(|| ZONE_OFFSETS.iter().find(|(n, _)| *n == DEFAULT_TRUST_LEVEL))
        .map(|(_, o)| *o)
        .expect("default zone exists")
}

/// The subnet of one domain.
#[derive(Debug, Clone)]
pub struct ZoneAddr {
    pub second_octet: i128,
    /// The third octet: an explicit `subnet_id` as written, or assigned.
    pub domain_seq: Value,
}

impl ZoneAddr {
    /// `bo.so.seq` (what the reference formats into its strings).
    pub fn prefix(&self, base_octet: &Value) -> String {
        format!(
            "{}.{}.{}",
            anklume_yaml::pyfmt::py_str(base_octet),
            self.second_octet,
            anklume_yaml::pyfmt::py_str(&self.domain_seq)
        )
    }
}

/// `global.addressing` values with the reference's defaults.
pub fn base_octet(addressing: &Mapping) -> Value {
    get(addressing, "base_octet").map_or(Value::Int(10), |n| n.value.clone())
}

/// Compute every domain's zone subnet (`_compute_addressing`). Returns an
/// empty map when `zone_base` is unusable (validation reports it).
pub fn compute(infra: &Mapping) -> IndexMap<String, ZoneAddr> {
    let g = map_or_empty(get(infra, "global"));
    let addr = map_or_empty(get(g, "addressing"));
    let zone_base = match get(addr, "zone_base") {
        None => 100,
        Some(n) => match n.value.as_int() {
            Some(z) => z,
            None => return IndexMap::new(),
        },
    };
    let doms = domains(infra);
    // Group domains by trust level, in first-seen order.
    let mut zones: IndexMap<String, (i128, Vec<String>)> = IndexMap::new();
    for (name, d) in doms.iter() {
        let dm = map_or_empty(Some(d));
        let trust =
            get(dm, "trust_level").map_or(Value::str(DEFAULT_TRUST_LEVEL), |n| n.value.clone());
        let zone_key = anklume_yaml::pyfmt::py_repr(&trust);
        zones
            .entry(zone_key)
            .or_insert_with(|| (zone_offset(&trust), Vec::new()))
            .1
            .push(anklume_yaml::pyfmt::py_str(&name.value));
    }
    let mut result = IndexMap::new();
    for (_, (offset, mut names)) in zones {
        let second_octet = zone_base + offset;
        names.sort();
        // Python dict keyed by subnet id: a repeated id replaces the domain
        // but keeps the first position.
        let mut seqs: IndexMap<Key, (Value, String)> = IndexMap::new();
        let mut auto = Vec::new();
        for dname in names {
            let sid = doms
                .get(&dname)
                .and_then(|d| get(map_or_empty(Some(d)), "subnet_id"))
                .map(|n| n.value.clone())
                .filter(|v| !v.is_null());
            match sid.as_ref().and_then(|v| Key::of(v).map(|k| (k, v))) {
                Some((k, v)) => {
                    seqs.insert(k, (v.clone(), dname));
                }
                None => auto.push(dname),
            }
        }
        let mut seq: i128 = 0;
        for dname in auto {
            while seqs.contains_key(&Key::Num(seq)) {
                seq += 1;
            }
            seqs.insert(Key::Num(seq), (Value::Int(seq), dname));
            seq += 1;
        }
        for (_, (v, dname)) in seqs {
            result.insert(
                dname,
                ZoneAddr {
                    second_octet,
                    domain_seq: v,
                },
            );
        }
    }
    result
}

/// Give machines without an `ip` the lowest free host number in `.1`–`.99`
/// (`_auto_assign_ips`). Errors when the range is exhausted.
pub fn auto_assign_ips(domain: &mut Mapping, prefix: &str) -> Result<(), String> {
    let Some(machines) = domain
        .get_mut("machines")
        .and_then(|n| n.value.as_map_mut())
    else {
        return Ok(());
    };
    let dotted = format!("{prefix}.");
    let mut used = std::collections::HashSet::new();
    for m in machines.values() {
        if let Some(ip) = m
            .value
            .as_map()
            .and_then(|mm| get(mm, "ip"))
            .and_then(|n| n.value.as_str())
        {
            if let Some(host) = ip.strip_prefix(&dotted) {
                if let Some(h) = anklume_yaml::pyfmt::py_int_str(host) {
                    used.insert(h);
                }
            }
        }
    }
    let mut next: i128 = 1;
    for (name, m) in machines.iter_mut() {
        let Some(mm) = m.value.as_map_mut() else {
            continue;
        };
        if get(mm, "ip").is_some_and(|n| n.value.truthy()) {
            continue;
        }
        while used.contains(&next) && next <= 99 {
            next += 1;
        }
        if next > 99 {
            return Err(format!(
                "Domain ran out of static IPs (.1-.99) for machine '{}'",
                anklume_yaml::pyfmt::py_str(&name.value)
            ));
        }
        mm.insert_str("ip", Value::Str(format!("{prefix}.{next}")));
        used.insert(next);
        next += 1;
    }
    Ok(())
}
