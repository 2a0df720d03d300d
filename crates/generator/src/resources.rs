//! `resource_policy`: share the host's CPU and memory among machines that
//! have no explicit limits (the reference's `_enrich_resources`).

use super::access::{get, val};
use super::context::HostResources;
use anklume_yaml::pyfmt::{py_float_str, py_int, py_int_str, py_str};
use anklume_yaml::{Mapping, Node, Value};

/// Parse an Incus memory size (`2GiB`, `512MiB`, `1GB`, bytes) to bytes;
/// 0 when unreadable (`_parse_memory_value`).
pub fn parse_memory_value(text: &str) -> i128 {
    let v = text.trim();
    for (suffix, mult) in [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
    ] {
        if let Some(num) = v.strip_suffix(suffix) {
            return match py_float_str(num) {
                Some(f) if f.is_finite() => (f * mult as f64) as i128,
                _ => 0,
            };
        }
    }
    py_int_str(v).unwrap_or(0)
}

/// `_format_memory`: whole GiB, else whole MiB, else bytes.
pub fn format_memory(bytes: i128) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 && gib.trunc() == gib {
        return format!("{}GiB", gib as i128);
    }
    let mib = bytes as f64 / (1u64 << 20) as f64;
    if mib >= 1.0 {
        return format!("{}MiB", mib as i128);
    }
    bytes.to_string()
}

/// What allocation did, for the caller to print.
#[derive(Debug, Default)]
pub struct Outcome {
    pub warnings: Vec<String>,
}

fn machines_mut(infra: &mut Mapping) -> Vec<&mut Node> {
    let mut out = Vec::new();
    if let Some(doms) = infra.get_mut("domains").and_then(|n| n.value.as_map_mut()) {
        for (_, d) in doms.iter_mut() {
            if let Some(ms) = d
                .value
                .as_map_mut()
                .and_then(|dm| dm.get_mut("machines"))
                .and_then(|n| n.value.as_map_mut())
            {
                for (_, m) in ms.iter_mut() {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// The machine's `config` mapping, created when absent or null.
fn config_mut(m: &mut Node) -> Option<&mut Mapping> {
    let mm = m.value.as_map_mut()?;
    if !mm
        .get("config")
        .is_some_and(|n| matches!(n.value, Value::Map(_)))
    {
        mm.insert_str("config", Value::Map(Mapping::new()));
    }
    mm.get_mut("config").and_then(|n| n.value.as_map_mut())
}

/// Allocate resources. `Err` carries the overcommit message.
pub fn allocate(infra: &mut Mapping, host: Option<HostResources>) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let g = super::access::map_or_empty(get(infra, "global"));
    let policy = match val(g, "resource_policy") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Bool(true)) => Mapping::new(),
        Some(Value::Map(m)) => m.clone(),
        Some(_) => return Ok(out),
    };
    let Some(host) = host else {
        out.warnings
            .push("Could not detect host resources, skipping resource allocation.".into());
        return Ok(out);
    };
    let empty = Mapping::new();
    let hr = val(&policy, "host_reserve")
        .and_then(Value::as_map)
        .unwrap_or(&empty);
    let mode_equal = val(&policy, "mode").is_some_and(|v| v.is_str("equal"));
    let cpu_count_mode = val(&policy, "cpu_mode").is_some_and(|v| v.is_str("count"));
    let soft = val(&policy, "memory_enforce").is_none_or(|v| v.is_str("soft"));
    let overcommit = val(&policy, "overcommit").is_some_and(Value::truthy);

    let host_cpu = host.cpu as f64;
    let host_mem = host.memory_bytes as i128;
    let pct = |v: &Value| -> Option<i128> {
        v.as_str()
            .and_then(|s| s.strip_suffix('%'))
            .and_then(|s| py_int_str(s.trim_end_matches('%')))
    };
    let cpu_reserve = val(hr, "cpu").cloned().unwrap_or(Value::str("20%"));
    let reserve_cpu = match pct(&cpu_reserve) {
        Some(p) => host_cpu * p as f64 / 100.0,
        None => match &cpu_reserve {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            other => py_float_str(&py_str(other)).unwrap_or(0.0),
        },
    };
    let mem_reserve = val(hr, "memory").cloned().unwrap_or(Value::str("20%"));
    let reserve_mem: i128 = match pct(&mem_reserve) {
        Some(p) => (host_mem as f64 * p as f64 / 100.0) as i128,
        None => match &mem_reserve {
            Value::Str(s) => parse_memory_value(s),
            Value::Float(f) => *f as i128,
            other => py_int(other).unwrap_or(0),
        },
    };
    let avail_cpu = host_cpu - reserve_cpu;
    let avail_mem = host_mem - reserve_mem;
    if avail_cpu <= 0.0 || avail_mem <= 0 {
        out.warnings
            .push("Host reserve exceeds available resources, skipping resource allocation.".into());
        return Ok(out);
    }

    // (index, weight, needs cpu, needs mem)
    let mut entries = Vec::new();
    {
        let ms = machines_mut(infra);
        for (i, m) in ms.into_iter().enumerate() {
            let Some(mm) = m.value.as_map() else { continue };
            let cfg = super::access::map_or_empty(get(mm, "config"));
            let needs_cpu =
                !cfg.contains_key("limits.cpu") && !cfg.contains_key("limits.cpu.allowance");
            let needs_mem = !cfg.contains_key("limits.memory");
            if needs_cpu || needs_mem {
                let w = val(mm, "weight").and_then(Value::as_int).unwrap_or(1);
                entries.push((i, w, needs_cpu, needs_mem));
            }
        }
    }
    if !entries.is_empty() {
        let mut ms = machines_mut(infra);
        let cpu_e: Vec<_> = entries.iter().filter(|e| e.2).collect();
        if !cpu_e.is_empty() {
            let total = if mode_equal {
                cpu_e.len() as i128
            } else {
                cpu_e.iter().map(|e| e.1).sum()
            };
            for e in cpu_e {
                let w = if mode_equal { 1 } else { e.1 };
                let share = avail_cpu * w as f64 / total as f64;
                let cfg = config_mut(ms[e.0]).expect("machine is a mapping");
                if cpu_count_mode {
                    cfg.insert_str("limits.cpu", Value::Str((share as i128).max(1).to_string()));
                } else {
                    let p = ((share / host_cpu * 100.0) as i128).max(1);
                    cfg.insert_str("limits.cpu.allowance", Value::Str(format!("{p}%")));
                }
            }
        }
        let mem_e: Vec<_> = entries.iter().filter(|e| e.3).collect();
        if !mem_e.is_empty() {
            let total = if mode_equal {
                mem_e.len() as i128
            } else {
                mem_e.iter().map(|e| e.1).sum()
            };
            for e in mem_e {
                let w = if mode_equal { 1 } else { e.1 };
                let share = ((avail_mem as f64 * w as f64 / total as f64) as i128).max(128 << 20);
                let cfg = config_mut(ms[e.0]).expect("machine is a mapping");
                cfg.insert_str("limits.memory", Value::Str(format_memory(share)));
            }
        }
    }
    if soft {
        for m in machines_mut(infra) {
            if let Some(cfg) = m
                .value
                .as_map_mut()
                .and_then(|mm| mm.get_mut("config"))
                .and_then(|n| n.value.as_map_mut())
            {
                if cfg.contains_key("limits.memory") && !cfg.contains_key("limits.memory.enforce") {
                    cfg.insert_str("limits.memory.enforce", Value::str("soft"));
                }
            }
        }
    }
    if entries.is_empty() {
        return Ok(out);
    }
    check_overcommit(infra, avail_cpu, avail_mem, host_cpu, overcommit, &mut out)?;
    Ok(out)
}

fn check_overcommit(
    infra: &mut Mapping,
    avail_cpu: f64,
    avail_mem: i128,
    host_cpu: f64,
    allowed: bool,
    out: &mut Outcome,
) -> Result<(), String> {
    let (mut cpu_count, mut cpu_pct, mut mem) = (0f64, 0f64, 0i128);
    for m in machines_mut(infra) {
        let Some(mm) = m.value.as_map() else { continue };
        let cfg = super::access::map_or_empty(get(mm, "config"));
        if let Some(c) = val(cfg, "limits.cpu") {
            cpu_count += py_int(c).unwrap_or(0) as f64;
        } else if let Some(a) = val(cfg, "limits.cpu.allowance") {
            if let Some(p) = py_str(a)
                .strip_suffix('%')
                .and_then(|s| py_int_str(s.trim_end_matches('%')))
            {
                cpu_pct += p as f64;
            }
        }
        if let Some(v) = val(cfg, "limits.memory") {
            mem += parse_memory_value(&py_str(v));
        }
    }
    let max_pct = avail_cpu / host_cpu * 100.0;
    let mut parts = Vec::new();
    if cpu_count > avail_cpu * 1.001 {
        parts.push(format!(
            "CPU: {cpu_count:.0} cores > {avail_cpu:.0} available"
        ));
    }
    if cpu_pct > max_pct * 1.001 {
        parts.push(format!(
            "CPU allowance: {cpu_pct:.0}% > {max_pct:.0}% available"
        ));
    }
    if mem > avail_mem {
        parts.push(format!(
            "Memory: {} > {}",
            format_memory(mem),
            format_memory(avail_mem)
        ));
    }
    if parts.is_empty() {
        return Ok(());
    }
    let msg = format!("Resource overcommit: {}", parts.join("; "));
    if allowed {
        out.warnings.push(msg);
        Ok(())
    } else {
        Err(format!(
            "{msg}. Set resource_policy.overcommit: true to allow."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values() {
        assert_eq!(parse_memory_value("2GiB"), 2 << 30);
        assert_eq!(parse_memory_value("1.5GiB"), 3 << 29);
        assert_eq!(parse_memory_value("512MiB"), 512 << 20);
        assert_eq!(parse_memory_value("1GB"), 1_000_000_000);
        assert_eq!(parse_memory_value("1024"), 1024);
        assert_eq!(parse_memory_value("lots"), 0);
        assert_eq!(format_memory(2 << 30), "2GiB");
        assert_eq!(format_memory(3 << 29), "1536MiB");
        assert_eq!(format_memory(100), "100");
    }
}
