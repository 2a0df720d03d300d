//! Files of the output tree that `infra.yml` no longer describes.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};

use super::access::{domains, machines, name};
use anklume_yaml::{Mapping, Value};

/// An orphan file, relative to the base directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub rel: String,
    /// It says `domain_ephemeral: false` / `instance_ephemeral: false`.
    pub protected: bool,
}

/// Orphans in `inventory/`, `group_vars/` and `host_vars/`, sorted.
pub fn detect(infra: &Mapping, base: &Path) -> Result<Vec<Orphan>> {
    let doms = domains(infra);
    let domain_names: HashSet<String> = doms.keys().map(name).collect();
    let machine_names: HashSet<String> = doms
        .values()
        .flat_map(|d| machines(d).keys().map(name))
        .collect();
    let mut out = Vec::new();
    for (sub, valid) in [
        ("inventory", &domain_names),
        ("group_vars", &domain_names),
        ("host_vars", &machine_names),
    ] {
        let dir = base.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = fname.strip_suffix(".yml") else {
                continue;
            };
            if stem.is_empty() || valid.contains(stem) || (sub == "group_vars" && stem == "all") {
                continue;
            }
            found.push(Orphan {
                rel: format!("{sub}/{fname}"),
                protected: is_protected(&entry.path()),
            });
        }
        found.sort_by(|a, b| a.rel.cmp(&b.rel));
        out.extend(found);
    }
    Ok(out)
}

/// A file is protected when its first ephemeral key is falsy.
fn is_protected(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok(loaded) = anklume_yaml::load::load_bytes(&bytes, 0) else {
        return false;
    };
    let Value::Map(m) = loaded.root.value else {
        return false;
    };
    for key in ["domain_ephemeral", "instance_ephemeral"] {
        if let Some(n) = m.get(key) {
            return !n.value.truthy();
        }
    }
    false
}
