//! The desired Incus state, read from the same data `anklume sync` writes
//! (the group_vars of each enabled domain), so the reconciler and the
//! Ansible tree can never disagree.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::sync::generate::FileContent;
use crate::yaml::{Mapping, Value};

/// Marks every object anklume creates; orphans are only ever looked for
/// among objects carrying it.
pub const MANAGED_KEY: &str = "user.anklume.managed";

/// One domain's project and bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub domain: String,
    pub project: String,
    pub description: String,
    pub network: NetworkSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// `10.110.0.254`
    pub gateway: String,
    /// `10.110.0.0/24`
    pub subnet: String,
}

/// Settings of the run that are not in `infra.yml`.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// NAT on the domain bridges (off in tests: no traffic leaves the host).
    pub nat: bool,
}

impl DomainSpec {
    /// Project config, as the reference sets it (roles/incus_projects).
    pub fn project_config(&self) -> BTreeMap<String, String> {
        [
            ("features.images", "true"),
            ("features.profiles", "true"),
            ("features.storage.volumes", "true"),
            ("features.networks", "false"),
            (MANAGED_KEY, "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Bridge config: `<gateway>/24`, DHCP .100–.249, no IPv6.
    pub fn network_config(&self, s: &ApplySettings) -> Result<BTreeMap<String, String>> {
        let net = self.network.subnet.strip_suffix(".0/24").with_context(|| {
            format!(
                "domain {}: subnet {} is not a /24 ending in .0",
                self.domain, self.network.subnet
            )
        })?;
        Ok([
            ("ipv4.address", format!("{}/24", self.network.gateway)),
            ("ipv4.nat", s.nat.to_string()),
            ("ipv4.dhcp", "true".to_string()),
            ("ipv4.dhcp.ranges", format!("{net}.100-{net}.249")),
            ("ipv6.address", "none".to_string()),
            (MANAGED_KEY, "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }
}

fn str_at(m: &Mapping, key: &str, file: &str) -> Result<String> {
    match m.get(key).map(|n| &n.value) {
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(other) => bail!("{file}: {key} is {other:?}, expected a string"),
        None => bail!("{file}: {key} is missing"),
    }
}

/// Domains from the generated files: every `group_vars/<domain>.yml` that
/// names an `incus_project` (disabled domains have no file).
pub fn domains(files: &[FileContent]) -> Result<Vec<DomainSpec>> {
    let mut out = Vec::new();
    for f in files {
        if !f.rel.starts_with("group_vars/") || f.rel == "group_vars/all.yml" {
            continue;
        }
        let m = &f.data;
        if m.get("incus_project").is_none() {
            continue;
        }
        let net = match m.get("incus_network").map(|n| &n.value) {
            Some(Value::Map(n)) => n,
            _ => bail!("{}: incus_network is missing", f.rel),
        };
        out.push(DomainSpec {
            domain: str_at(m, "domain_name", &f.rel)?,
            project: str_at(m, "incus_project", &f.rel)?,
            description: m
                .get("domain_description")
                .map(|n| match &n.value {
                    Value::Str(s) => s.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default(),
            network: NetworkSpec {
                name: str_at(net, "name", &f.rel)?,
                gateway: str_at(net, "gateway", &f.rel)?,
                subnet: str_at(net, "subnet", &f.rel)?,
            },
        });
    }
    Ok(out)
}
