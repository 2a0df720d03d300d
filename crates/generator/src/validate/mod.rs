//! Validation of `infra.yml`: every rule of the reference generator, with
//! its messages, all errors collected before anything is written.
//!
//! Where the reference accepted nonsense because of Python's typing
//! (`True` is an integer, `10.0 == 10`), we refuse it; see
//! `docs/generator.md` for the list of deliberate differences.

mod domains;
pub mod policies;
mod resources;
pub mod shape;

use std::collections::HashMap;

use super::access::{domains, get, map_or_empty, val};
use super::addressing;
use super::context::HostContext;
use super::diag::Diags;
use anklume_yaml::pyfmt::py_str;
use anklume_yaml::{Mapping, Value};

/// Shared state of one validation pass.
pub(crate) struct State<'a> {
    pub infra: &'a Mapping,
    pub g: &'a Mapping,
    pub ctx: &'a HostContext,
    pub base_subnet: Value,
    pub has_addressing: bool,
    pub computed: indexmap::IndexMap<String, addressing::ZoneAddr>,
    /// (trust level, subnet id) → domain, in addressing mode.
    pub zone_subnet_ids: HashMap<(String, String), String>,
    /// subnet id → domain, in legacy mode.
    pub subnet_ids: indexmap::IndexMap<String, String>,
    /// machine → domain.
    pub all_machines: HashMap<String, String>,
    /// ip → machine.
    pub all_ips: HashMap<String, String>,
}

pub(crate) fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && ok(b[0]) && ok(b[b.len() - 1]) && b.iter().all(|&c| ok(c) || c == b'-')
}

pub(crate) fn is_int(v: &Value) -> Option<i128> {
    v.as_int()
}

/// Check a value that must be a boolean when present and not null.
pub(crate) fn check_bool(d: &mut Diags, m: &Mapping, key: &str, prefix: &str, path: &str) {
    if let Some(n) = get(m, key).filter(|n| !n.value.is_null()) {
        if !matches!(n.value, Value::Bool(_)) {
            d.err(
                format!("{prefix}{key} must be a boolean, got {}", n.value.py_type()),
                format!("{path}.{key}"),
                Some(n),
            );
        }
    }
}

/// Validate the document. `check_host_subnets` is false for the pass that
/// re-validates after enrichment, as in the reference.
pub fn validate(infra: &Mapping, ctx: &HostContext, check_host_subnets: bool) -> Diags {
    let mut d = Diags::default();
    shape::check(infra, &mut d);
    for key in ["project_name", "global", "domains"] {
        if !infra.contains_key(key) {
            d.err(format!("Missing required key: {key}"), key, None);
        }
    }
    if ["project_name", "global", "domains"]
        .iter()
        .any(|k| !infra.contains_key(k))
    {
        return d;
    }
    let g = map_or_empty(get(infra, "global"));
    let base_subnet = val(g, "base_subnet")
        .cloned()
        .unwrap_or(Value::str("10.100"));
    let has_addressing = g.contains_key("addressing");
    let mut computed = indexmap::IndexMap::new();
    if has_addressing {
        let an = get(g, "addressing").expect("present");
        match an.value.as_map() {
            None => d.err(
                "global.addressing must be a mapping",
                "global.addressing",
                Some(an),
            ),
            Some(addr) => {
                let bo = get(addr, "base_octet");
                if bo.is_some_and(|n| is_int(&n.value) != Some(10)) {
                    let n = bo.expect("checked");
                    d.err(
                        format!(
                            "global.addressing.base_octet must be 10 (only RFC 1918 /8), got {}",
                            py_str(&n.value)
                        ),
                        "global.addressing.base_octet",
                        Some(n),
                    );
                }
                if let Some(n) = get(addr, "zone_base") {
                    if !is_int(&n.value).is_some_and(|z| (0..=245).contains(&z)) {
                        d.err(
                            format!(
                                "global.addressing.zone_base must be 0-245, got {}",
                                py_str(&n.value)
                            ),
                            "global.addressing.zone_base",
                            Some(n),
                        );
                    }
                }
                if let Some(n) = get(addr, "zone_step") {
                    if is_int(&n.value).is_none_or(|z| z < 1) {
                        d.err(
                            format!(
                                "global.addressing.zone_step must be a positive integer, got {}",
                                py_str(&n.value)
                            ),
                            "global.addressing.zone_step",
                            Some(n),
                        );
                    }
                }
                computed = addressing::compute(infra);
            }
        }
    }

    for key in ["nesting_prefix", "ai_vram_flush"] {
        check_bool(&mut d, g, key, "global.", "global");
    }
    for key in ["default_os_image", "default_connection", "default_user"] {
        if let Some(n) = get(g, key).filter(|n| !n.value.is_null()) {
            if n.value.as_str().is_none() {
                d.err(
                    format!("global.{key} must be a string, got {}", n.value.py_type()),
                    format!("global.{key}"),
                    Some(n),
                );
            }
        }
    }
    let enum_check = |d: &mut Diags, key: &str, default: &str, allowed: &[&str], msg: &str| {
        let v = val(g, key).cloned().unwrap_or(Value::str(default));
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            d.err(
                format!("global.{key} must be {msg}, got '{}'", py_str(&v)),
                format!("global.{key}"),
                get(g, key),
            );
        }
    };
    enum_check(
        &mut d,
        "gpu_policy",
        "exclusive",
        &["exclusive", "shared"],
        "'exclusive' or 'shared'",
    );
    enum_check(
        &mut d,
        "firewall_mode",
        "host",
        &["host", "vm"],
        "'host' or 'vm'",
    );
    enum_check(
        &mut d,
        "ai_access_policy",
        "open",
        &["exclusive", "open"],
        "'exclusive' or 'open'",
    );

    let mut st = State {
        infra,
        g,
        ctx,
        base_subnet,
        has_addressing,
        computed,
        zone_subnet_ids: HashMap::new(),
        subnet_ids: indexmap::IndexMap::new(),
        all_machines: HashMap::new(),
        all_ips: HashMap::new(),
    };
    domains::validate_domains(&mut st, &mut d);

    let gpu_policy = val(g, "gpu_policy")
        .cloned()
        .unwrap_or(Value::str("exclusive"));
    let gpu = collect_gpu_instances(infra);
    if gpu.len() > 1 && gpu_policy.is_str("exclusive") {
        d.err(
            format!(
                "GPU policy is 'exclusive' but {} instances have GPU access: {}. Set global.gpu_policy: shared to allow this.",
                gpu.len(),
                gpu.join(", ")
            ),
            "global.gpu_policy",
            get(g, "gpu_policy"),
        );
    }

    policies::validate_network_policies(&st, &mut d);
    if !check_host_subnets {
        // After enrichment every machine has the address it will have.
        policies::validate_policy_addresses(&st, &mut d);
    }
    policies::validate_ai_access(&st, &mut d);
    for (key, what) in [
        ("shared_volumes_base", "shared_volumes_base"),
        ("persistent_data_base", "persistent_data_base"),
    ] {
        if let Some(n) = get(g, key).filter(|n| !n.value.is_null()) {
            if !n.value.as_str().is_some_and(|s| s.starts_with('/')) {
                d.err(
                    format!("global.{what} must be an absolute path"),
                    format!("global.{key}"),
                    Some(n),
                );
            }
        }
    }
    let sv_paths = policies::validate_shared_volumes(&st, &mut d);
    policies::validate_persistent_data_collisions(&st, &mut d, &sv_paths);
    resources::validate_resource_policy(g, &mut d);
    if check_host_subnets {
        resources::validate_host_subnets(&st, &mut d);
    }
    d
}

/// Machines with GPU access: `gpu: true`, or a profile with a `gpu` device.
pub fn collect_gpu_instances(infra: &Mapping) -> Vec<String> {
    let mut out = Vec::new();
    for (_, dn) in domains(infra).iter() {
        let dm = map_or_empty(Some(dn));
        let profiles = map_or_empty(get(dm, "profiles"));
        for (mk, mn) in map_or_empty(get(dm, "machines")).iter() {
            let m = map_or_empty(Some(mn));
            let mut has_gpu = val(m, "gpu").is_some_and(Value::truthy);
            if !has_gpu {
                for p in super::access::seq_or_empty(get(m, "profiles")) {
                    let Some(pname) = p.value.as_str() else {
                        continue;
                    };
                    if let Some(pn) = get(profiles, pname) {
                        let devs = map_or_empty(get(map_or_empty(Some(pn)), "devices"));
                        if devs.values().any(|dv| {
                            val(map_or_empty(Some(dv)), "type").is_some_and(|t| t.is_str("gpu"))
                        }) {
                            has_gpu = true;
                            break;
                        }
                    }
                }
            }
            if has_gpu {
                out.push(py_str(&mk.value));
            }
        }
    }
    out
}
