//! Reading the loosely typed document the way the reference does
//! (`d.get("k") or {}`), tolerating shapes that validation reports.

use std::sync::LazyLock;

use anklume_yaml::{Mapping, Node, Value};

static EMPTY: LazyLock<Mapping> = LazyLock::new(Mapping::new);

/// `m.get(key)`.
pub fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Node> {
    m.get(key)
}

/// The value at `key`, when present.
pub fn val<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).map(|n| &n.value)
}

/// `m.get(key)` unless it is null (Python `m.get(key)` then `is not None`).
pub fn non_null<'a>(m: &'a Mapping, key: &str) -> Option<&'a Node> {
    m.get(key).filter(|n| !n.value.is_null())
}

/// `x or {}`: the mapping, or an empty one (for null and wrong shapes,
/// which the shape check reports).
pub fn map_or_empty(n: Option<&Node>) -> &Mapping {
    n.and_then(|n| n.value.as_map()).unwrap_or(&EMPTY)
}

/// `x or []` for sequences.
pub fn seq_or_empty(n: Option<&Node>) -> &[Node] {
    n.and_then(|n| n.value.as_seq()).unwrap_or(&[])
}

/// The `domains` mapping.
pub fn domains(infra: &Mapping) -> &Mapping {
    map_or_empty(get(infra, "domains"))
}

/// The `machines` of a domain node.
pub fn machines(domain: &Node) -> &Mapping {
    map_or_empty(get(map_or_empty(Some(domain)), "machines"))
}

/// Mapping keys are printed with Python's `str()`.
pub fn name(key: &Node) -> String {
    anklume_yaml::pyfmt::py_str(&key.value)
}

/// Every machine: (domain name, machine name, machine node), in order.
pub fn all_machines(infra: &Mapping) -> Vec<(String, String, &Node)> {
    let mut out = Vec::new();
    for (dk, d) in domains(infra).iter() {
        for (mk, m) in machines(d).iter() {
            out.push((name(dk), name(mk), m));
        }
    }
    out
}
