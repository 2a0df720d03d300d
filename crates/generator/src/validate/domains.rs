//! Domain and machine rules.

use std::sync::LazyLock;

use regex::Regex;

use super::{check_bool, is_int, is_valid_name, State};
use crate::access::{get, map_or_empty, name, non_null, seq_or_empty, val};
use crate::addressing::{base_octet, DEFAULT_TRUST_LEVEL, ZONE_OFFSETS};
use crate::diag::Diags;
use anklume_yaml::pyfmt::py_str;
use anklume_yaml::{Mapping, Node, Value};

static CRON: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\S+\s+){4}\S+$").expect("static regex"));
static EXPIRY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d+[dhm]$").expect("static regex"));

pub(super) fn validate_domains(st: &mut State, d: &mut Diags) {
    let infra = st.infra;
    let doms = map_or_empty(get(infra, "domains"));
    for (dk, dn) in doms.iter() {
        let dname = name(dk);
        let dpath = format!("domains.{dname}");
        let dm = map_or_empty(Some(dn));
        if !dk.value.as_str().is_some_and(is_valid_name) {
            d.err(
                format!("Domain '{dname}': invalid name (lowercase alphanumeric + hyphen, no trailing hyphen)"),
                &dpath,
                Some(dk),
            );
        }
        check_bool(d, dm, "enabled", &format!("Domain '{dname}': "), &dpath);

        let sid_node = non_null(dm, "subnet_id");
        let sid = sid_node.map(|n| &n.value);
        let sid_path = format!("{dpath}.subnet_id");
        let sid_ok = sid.and_then(is_int).filter(|s| (0..=254).contains(s));
        if st.has_addressing {
            if let Some(sv) = sid {
                match sid_ok {
                    None => d.err(
                        format!(
                            "Domain '{dname}': subnet_id must be 0-254, got {}",
                            py_str(sv)
                        ),
                        &sid_path,
                        sid_node,
                    ),
                    Some(s) => {
                        let trust = match get(dm, "trust_level") {
                            Some(n) => py_str(&n.value),
                            None => DEFAULT_TRUST_LEVEL.to_string(),
                        };
                        let key = (trust.clone(), s.to_string());
                        if let Some(other) = st.zone_subnet_ids.get(&key) {
                            d.err(
                                format!("Domain '{dname}': subnet_id {s} already used by '{other}' in zone '{trust}'"),
                                &sid_path,
                                sid_node,
                            );
                        } else {
                            st.zone_subnet_ids.insert(key, dname.clone());
                        }
                    }
                }
            }
        } else {
            match (sid, sid_ok) {
                (None, _) => d.err(
                    format!("Domain '{dname}': missing subnet_id"),
                    &dpath,
                    Some(dk),
                ),
                (Some(sv), None) => d.err(
                    format!(
                        "Domain '{dname}': subnet_id must be 0-254, got {}",
                        py_str(sv)
                    ),
                    &sid_path,
                    sid_node,
                ),
                (Some(_), Some(s)) => {
                    if let Some(other) = st.subnet_ids.get(&s.to_string()) {
                        d.err(
                            format!("Domain '{dname}': subnet_id {s} already used by '{other}'"),
                            &sid_path,
                            sid_node,
                        );
                    } else {
                        st.subnet_ids.insert(s.to_string(), dname.clone());
                    }
                }
            }
        }

        check_bool(d, dm, "ephemeral", &format!("Domain '{dname}': "), &dpath);
        if let Some(n) = non_null(dm, "trust_level") {
            if !n
                .value
                .as_str()
                .is_some_and(|t| ZONE_OFFSETS.iter().any(|(z, _)| *z == t))
            {
                d.err(
                    format!(
                        "Domain '{dname}': trust_level must be one of ('admin', 'trusted', 'semi-trusted', 'untrusted', 'disposable'), got '{}'",
                        py_str(&n.value)
                    ),
                    format!("{dpath}.trust_level"),
                    Some(n),
                );
            }
        }
        if let Some(n) = non_null(dm, "ai_provider") {
            if !n
                .value
                .as_str()
                .is_some_and(|t| ["local", "cloud", "local-first"].contains(&t))
            {
                d.err(
                    format!(
                        "Domain '{dname}': ai_provider must be one of ('local', 'cloud', 'local-first'), got '{}'",
                        py_str(&n.value)
                    ),
                    format!("{dpath}.ai_provider"),
                    Some(n),
                );
            }
        }
        if let Some(n) = non_null(dm, "ai_sanitize") {
            if !(matches!(n.value, Value::Bool(_)) || n.value.is_str("always")) {
                d.err(
                    format!(
                        "Domain '{dname}': ai_sanitize must be true, false, or 'always', got '{}'",
                        py_str(&n.value)
                    ),
                    format!("{dpath}.ai_sanitize"),
                    Some(n),
                );
            }
        }

        let profile_names: Vec<String> =
            map_or_empty(get(dm, "profiles")).keys().map(name).collect();
        for (mk, mn) in map_or_empty(get(dm, "machines")).iter() {
            validate_machine(st, d, mk, mn, &dname, sid, &profile_names);
        }
    }
}

fn validate_machine(
    st: &mut State,
    d: &mut Diags,
    mk: &Node,
    mn: &Node,
    dname: &str,
    sid: Option<&Value>,
    profile_names: &[String],
) {
    let mname = name(mk);
    let mpath = format!("domains.{dname}.machines.{mname}");
    let m = map_or_empty(Some(mn));
    let who = format!("Machine '{mname}': ");
    if !mk.value.as_str().is_some_and(is_valid_name) {
        d.err(
            format!("{who}invalid name (lowercase alphanumeric + hyphen, no trailing hyphen)"),
            &mpath,
            Some(mk),
        );
    }
    if let Some(other) = st.all_machines.get(&mname) {
        d.err(
            format!("{who}duplicate (already in '{other}')"),
            &mpath,
            Some(mk),
        );
    } else {
        st.all_machines.insert(mname.clone(), dname.to_string());
    }
    let mtype = val(m, "type").cloned().unwrap_or(Value::str("lxc"));
    if !mtype.as_str().is_some_and(|t| t == "lxc" || t == "vm") {
        d.err(
            format!("{who}type must be 'lxc' or 'vm', got '{}'", py_str(&mtype)),
            format!("{mpath}.type"),
            get(m, "type"),
        );
    }
    if is_privileged(m) && mtype.is_str("lxc") && st.ctx.vm_nested == Some(false) && !st.ctx.yolo {
        d.err(
            format!("{who}security.privileged=true on LXC is forbidden when vm_nested=false (no VM in parent chain). Use a VM or enable --YOLO to bypass."),
            format!("{mpath}.config.security.privileged"),
            Some(mn),
        );
    }
    validate_ip(st, d, m, &mname, &mpath, dname, sid);

    check_bool(d, m, "ephemeral", &who, &mpath);
    for p in seq_or_empty(get(m, "profiles")) {
        let pn = py_str(&p.value);
        if pn != "default" && !profile_names.contains(&pn) {
            d.err(
                format!("{who}profile '{pn}' not defined in domain '{dname}'"),
                format!("{mpath}.profiles"),
                Some(p),
            );
        }
    }
    check_bool(d, m, "boot_autostart", &who, &mpath);
    if let Some(n) = non_null(m, "boot_priority") {
        if !is_int(&n.value).is_some_and(|p| (0..=100).contains(&p)) {
            d.err(
                format!(
                    "{who}boot_priority must be an integer 0-100, got {}",
                    py_str(&n.value)
                ),
                format!("{mpath}.boot_priority"),
                Some(n),
            );
        }
    }
    if let Some(n) = non_null(m, "snapshots_schedule") {
        if !n.value.as_str().is_some_and(|s| CRON.is_match(s)) {
            d.err(
                format!(
                    "{who}snapshots_schedule must be a cron expression (5 fields), got '{}'",
                    py_str(&n.value)
                ),
                format!("{mpath}.snapshots_schedule"),
                Some(n),
            );
        }
    }
    if let Some(n) = non_null(m, "snapshots_expiry") {
        if !n.value.as_str().is_some_and(|s| EXPIRY.is_match(s)) {
            d.err(
                format!(
                    "{who}snapshots_expiry must be a duration (e.g., '30d', '24h', '60m'), got '{}'",
                    py_str(&n.value)
                ),
                format!("{mpath}.snapshots_expiry"),
                Some(n),
            );
        }
    }
    if let Some(n) = non_null(m, "weight") {
        if is_int(&n.value).is_none_or(|w| w < 1) {
            d.err(
                format!(
                    "{who}weight must be a positive integer, got {}",
                    py_str(&n.value)
                ),
                format!("{mpath}.weight"),
                Some(n),
            );
        }
    }
    check_bool(d, m, "gpu", &who, &mpath);
    if let Some(n) = non_null(m, "roles") {
        if n.value.as_seq().is_none() {
            d.err(
                format!("{who}roles must be a list, got {}", n.value.py_type()),
                format!("{mpath}.roles"),
                Some(n),
            );
        }
    }
    if let Some(n) = non_null(m, "storage_volumes") {
        if n.value.as_map().is_none() {
            d.err(
                format!(
                    "{who}storage_volumes must be a mapping, got {}",
                    n.value.py_type()
                ),
                format!("{mpath}.storage_volumes"),
                Some(n),
            );
        }
    }
    validate_persistent_data(d, m, &who, &mpath);
}

/// `str(config.get("security.privileged", "false")).lower() == "true"`.
pub(crate) fn is_privileged(m: &Mapping) -> bool {
    let cfg = map_or_empty(get(m, "config"));
    val(cfg, "security.privileged").is_some_and(|v| py_str(v).to_lowercase() == "true")
}

fn validate_ip(
    st: &mut State,
    d: &mut Diags,
    m: &Mapping,
    mname: &str,
    mpath: &str,
    dname: &str,
    sid: Option<&Value>,
) {
    let Some(ipn) = get(m, "ip").filter(|n| n.value.truthy()) else {
        return;
    };
    // Non-strings are reported by the shape check.
    let Some(ip) = ipn.value.as_str() else { return };
    let path = format!("{mpath}.ip");
    if let Some(other) = st.all_ips.get(ip) {
        d.err(
            format!("Machine '{mname}': IP {ip} already used by '{other}'"),
            &path,
            Some(ipn),
        );
    } else {
        st.all_ips.insert(ip.to_string(), mname.to_string());
    }
    if st.has_addressing {
        if let Some(info) = st.computed.get(dname) {
            let addr = map_or_empty(get(st.g, "addressing"));
            let prefix = format!("{}.", info.prefix(&base_octet(addr)));
            if !ip.starts_with(&prefix) {
                d.err(
                    format!("Machine '{mname}': IP {ip} not in subnet {prefix}0/24"),
                    &path,
                    Some(ipn),
                );
            }
        }
    } else if let Some(s) = sid {
        let prefix = format!("{}.{}.", py_str(&st.base_subnet), py_str(s));
        if !ip.starts_with(&prefix) {
            d.err(
                format!("Machine '{mname}': IP {ip} not in subnet {prefix}0/24"),
                &path,
                Some(ipn),
            );
        }
    }
}

fn validate_persistent_data(d: &mut Diags, m: &Mapping, who: &str, mpath: &str) {
    let Some(pdn) = non_null(m, "persistent_data") else {
        return;
    };
    let path = format!("{mpath}.persistent_data");
    let Some(pd) = pdn.value.as_map() else {
        d.err(
            format!("{who}persistent_data must be a mapping"),
            &path,
            Some(pdn),
        );
        return;
    };
    let user_devices = map_or_empty(get(m, "devices"));
    for (vk, vn) in pd.iter() {
        let vname = name(vk);
        let vpath = format!("{path}.{vname}");
        let Some(vc) = vn.value.as_map() else {
            d.err(
                format!("{who}persistent_data.{vname} must be a mapping"),
                &vpath,
                Some(vn),
            );
            continue;
        };
        if !vk.value.as_str().is_some_and(is_valid_name) {
            d.err(
                format!(
                    "{who}persistent_data.{vname}: invalid name (lowercase alphanumeric + hyphen)"
                ),
                &vpath,
                Some(vk),
            );
        }
        match non_null(vc, "path") {
            None => d.err(
                format!("{who}persistent_data.{vname}: path is required"),
                &vpath,
                Some(vn),
            ),
            Some(p) if !p.value.as_str().is_some_and(|s| s.starts_with('/')) => d.err(
                format!("{who}persistent_data.{vname}: path must be an absolute path"),
                format!("{vpath}.path"),
                Some(p),
            ),
            Some(_) => {}
        }
        if let Some(ro) = non_null(vc, "readonly") {
            if !matches!(ro.value, Value::Bool(_)) {
                d.err(
                    format!(
                        "{who}persistent_data.{vname}: readonly must be a boolean, got {}",
                        ro.value.py_type()
                    ),
                    format!("{vpath}.readonly"),
                    Some(ro),
                );
            }
        }
        let dev = format!("pd-{vname}");
        if user_devices.contains_key(&dev) {
            d.err(
                format!("{who}persistent_data.{vname}: device name '{dev}' collision with existing device"),
                format!("{mpath}.devices.{dev}"),
                get(user_devices, &dev),
            );
        }
    }
}
