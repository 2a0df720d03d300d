//! Non-fatal findings (`get_warnings` of the reference).

use super::access::{domains, get, machines, map_or_empty, name, seq_or_empty, val};
use super::context::HostContext;
use super::validate::collect_gpu_instances;
use anklume_yaml::pyfmt::py_str;
use anklume_yaml::{Mapping, Value};

pub fn warnings(infra: &Mapping, ctx: &HostContext) -> Vec<String> {
    let mut w = Vec::new();
    let g = map_or_empty(get(infra, "global"));
    let doms = domains(infra);
    for (_, d) in doms.iter() {
        for (mk, mn) in machines(d).iter() {
            let m = map_or_empty(Some(mn));
            let lxc = val(m, "type").is_none_or(|t| t.is_str("lxc"));
            let privileged = val(map_or_empty(get(m, "config")), "security.privileged")
                .is_some_and(|v| py_str(v).to_lowercase() == "true");
            if privileged && lxc && ctx.vm_nested == Some(false) && ctx.yolo {
                w.push(format!(
                    "YOLO: Machine '{}' has security.privileged=true on LXC without VM isolation. This is unsafe for production.",
                    name(mk)
                ));
            }
        }
    }
    for (dk, d) in doms.iter() {
        let trust = val(map_or_empty(Some(d)), "trust_level")
            .map(py_str)
            .unwrap_or_default();
        if trust != "untrusted" && trust != "disposable" {
            continue;
        }
        for (mk, mn) in machines(d).iter() {
            if val(map_or_empty(Some(mn)), "type").is_none_or(|t| t.is_str("lxc")) {
                w.push(format!(
                    "Domain '{}' is {trust} but machine '{}' uses LXC. Consider type: vm for stronger isolation.",
                    name(dk),
                    name(mk)
                ));
            }
        }
    }
    let gpu = collect_gpu_instances(infra);
    if gpu.len() > 1 && val(g, "gpu_policy").is_some_and(|v| v.is_str("shared")) {
        w.push(format!(
            "GPU policy is 'shared': {} instances share GPU access ({}). No VRAM isolation on consumer GPUs.",
            gpu.len(),
            gpu.join(", ")
        ));
    }
    let disabled: Vec<String> = doms
        .iter()
        .filter(|(_, d)| {
            val(map_or_empty(Some(d)), "enabled").is_some_and(|v| matches!(v, Value::Bool(false)))
        })
        .map(|(k, _)| name(k))
        .collect();
    let policies = seq_or_empty(get(infra, "network_policies"));
    if !disabled.is_empty() {
        for (i, p) in policies.iter().enumerate() {
            let Some(pm) = p.value.as_map() else { continue };
            for field in ["from", "to"] {
                if let Some(r) = val(pm, field).and_then(Value::as_str) {
                    if disabled.iter().any(|d| d == r) {
                        w.push(format!(
                            "network_policies[{i}]: '{field}: {r}' references disabled domain '{r}'"
                        ));
                    }
                }
            }
        }
    }
    for (dk, d) in doms.iter() {
        for (mk, mn) in machines(d).iter() {
            let roles = seq_or_empty(get(map_or_empty(Some(mn)), "roles"));
            if !roles.iter().any(|r| r.value.is_str("openclaw_server")) {
                continue;
            }
            let (dname, mname) = (name(dk), name(mk));
            let has = policies.iter().any(|p| {
                p.value
                    .as_map()
                    .and_then(|pm| val(pm, "from"))
                    .and_then(Value::as_str)
                    .is_some_and(|f| f == dname || f == mname)
            });
            if !has {
                w.push(format!(
                    "Machine '{mname}' has role 'openclaw_server' but no network_policy grants access from domain '{dname}' to an LLM backend. Add a network_policy if AI access is needed."
                ));
            }
        }
    }
    w
}
