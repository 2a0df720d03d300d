//! The desired Incus state, read from the same data `anklume sync` writes
//! (the group_vars of each enabled domain), so the reconciler and the
//! Ansible tree can never disagree.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use anklume_generator::generate::FileContent;
use anklume_yaml::{Mapping, Value};

/// Marks every object anklume creates; orphans are only ever looked for
/// among objects carrying it.
pub const MANAGED_KEY: &str = "user.anklume.managed";

/// Incus device maps: device name → its keys.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// One domain: its project, bridge, profiles and instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub domain: String,
    pub project: String,
    pub description: String,
    pub network: NetworkSpec,
    /// Custom profiles (`incus_profiles`), created in the project.
    pub profiles: Vec<ProfileSpec>,
    pub instances: Vec<InstanceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    Container,
    Vm,
}

impl InstanceKind {
    /// The name Incus's API uses.
    pub fn api_name(self) -> &'static str {
        match self {
            InstanceKind::Container => "container",
            InstanceKind::Vm => "virtual-machine",
        }
    }
}

/// Where an instance's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An alias on this Incus (`anklume-base`, `local:anklume-base`);
    /// copied into the domain's project when it is only in `default`.
    Local(String),
    /// `images:debian/13`: a simplestreams server Incus downloads from.
    Remote {
        remote: String,
        server: String,
        protocol: String,
        alias: String,
    },
}

impl ImageRef {
    /// The image source of an instance creation request.
    pub fn source(&self) -> serde_json::Value {
        match self {
            ImageRef::Local(alias) => serde_json::json!({"type": "image", "alias": alias}),
            ImageRef::Remote {
                server,
                protocol,
                alias,
                ..
            } => serde_json::json!({
                "type": "image", "alias": alias, "server": server, "protocol": protocol,
            }),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Local(a) => write!(f, "{a}"),
            ImageRef::Remote { remote, alias, .. } => write!(f, "{remote}:{alias}"),
        }
    }
}

/// The remotes `os_image` may name (those of a stock `incus` client).
const REMOTES: &[(&str, &str, &str)] = &[(
    "images",
    "https://images.linuxcontainers.org",
    "simplestreams",
)];

/// A custom storage volume an instance uses (`storage_volumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub pool: String,
    pub size: Option<String>,
    /// Where it is mounted in the instance (not attached without one).
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub name: String,
    pub domain: String,
    pub project: String,
    pub kind: InstanceKind,
    pub description: String,
    pub image: ImageRef,
    pub ip: Option<String>,
    pub profiles: Vec<String>,
    /// Every config key anklume owns on the instance, with its value.
    pub config: BTreeMap<String, String>,
    /// The instance's own devices, exactly (eth0 override, declared
    /// devices, shared-volume and persistent-data disks, volumes).
    pub devices: Devices,
    pub volumes: Vec<VolumeSpec>,
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
    /// Storage pool of the instances' root disks and volumes.
    pub pool: String,
    /// The network namespace Incus's bridges live in, for `nft` (`None`:
    /// this process's own).
    pub netns: Option<std::path::PathBuf>,
    /// Where the last loaded ruleset is kept (`None`: not kept).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Default of `--state-dir`.
pub const STATE_DIR: &str = "/var/lib/anklume";

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            nat: true,
            pool: "default".into(),
            netns: None,
            state_dir: Some(STATE_DIR.into()),
        }
    }
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

impl DomainSpec {
    /// The project's default profile: eth0 on the domain's bridge with MAC
    /// and IPv4 filtering (an instance cannot pose as another), root disk on
    /// the pool.
    pub fn default_profile(&self, s: &ApplySettings) -> ProfileSpec {
        ProfileSpec {
            name: "default".into(),
            config: BTreeMap::new(),
            devices: [
                ("eth0".to_string(), self.nic(None)),
                (
                    "root".to_string(),
                    strings(&[("type", "disk"), ("path", "/"), ("pool", &s.pool)]),
                ),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The eth0 device on the domain's bridge (with a static address for an
    /// instance's override).
    pub fn nic(&self, ip: Option<&str>) -> BTreeMap<String, String> {
        let mut d = strings(&[
            ("type", "nic"),
            ("name", "eth0"),
            ("network", &self.network.name),
            ("security.mac_filtering", "true"),
            ("security.ipv4_filtering", "true"),
        ]);
        if let Some(ip) = ip {
            d.insert("ipv4.address".into(), ip.into());
        }
        d
    }
}

fn strings(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An Incus config value from a YAML scalar (`true`, `4`, `8GiB`).
fn incus_value(v: &Value, file: &str, key: &str) -> Result<Option<String>> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => anklume_yaml::pyfmt::float_repr(*f),
        Value::Str(s) | Value::Timestamp(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => {
            bail!("{file}: {key} is a {}, expected a scalar", v.kind())
        }
    }))
}

/// A `key: scalar` mapping as Incus config.
fn config_map(v: Option<&Value>, file: &str, key: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Map(m)) => {
            for (k, val) in m.iter() {
                let k = k
                    .value
                    .as_str()
                    .with_context(|| format!("{file}: {key} has a non-string key"))?;
                if let Some(s) = incus_value(&val.value, file, &format!("{key}.{k}"))? {
                    out.insert(k.to_string(), s);
                }
            }
        }
        Some(other) => bail!("{file}: {key} is a {}, expected a mapping", other.kind()),
    }
    Ok(out)
}

/// `name: {key: scalar}` mappings as Incus devices.
fn devices_map(v: Option<&Value>, file: &str, key: &str) -> Result<Devices> {
    let mut out = Devices::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Map(m)) => {
            for (k, val) in m.iter() {
                let k = k
                    .value
                    .as_str()
                    .with_context(|| format!("{file}: {key} has a non-string key"))?;
                out.insert(
                    k.to_string(),
                    config_map(Some(&val.value), file, &format!("{key}.{k}"))?,
                );
            }
        }
        Some(other) => bail!("{file}: {key} is a {}, expected a mapping", other.kind()),
    }
    Ok(out)
}

/// Parse `os_image`: `remote:alias` for a known remote, else a local alias.
pub fn image_ref(s: &str, file: &str) -> Result<ImageRef> {
    match s.split_once(':') {
        None => Ok(ImageRef::Local(s.to_string())),
        Some(("local", alias)) => Ok(ImageRef::Local(alias.to_string())),
        Some((remote, alias)) => {
            let Some((_, server, protocol)) = REMOTES.iter().find(|(r, ..)| *r == remote) else {
                bail!(
                    "{file}: instance_os_image {s:?}: unknown remote {remote:?} (known: {}, or a local alias without a remote)",
                    REMOTES.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
                );
            };
            Ok(ImageRef::Remote {
                remote: remote.to_string(),
                server: server.to_string(),
                protocol: protocol.to_string(),
                alias: alias.to_string(),
            })
        }
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

/// The generated file holding the global variables (`network_policies`).
pub const ALL_VARS: &str = "group_vars/all.yml";

/// The global variables among the generated files.
pub fn all_vars(files: &[FileContent]) -> Option<&Mapping> {
    files.iter().find(|f| f.rel == ALL_VARS).map(|f| &f.data)
}

/// Domains from the generated files: every `group_vars/<domain>.yml` that
/// names an `incus_project` (disabled domains have no file), with their
/// profiles and the instances of their `host_vars`.
pub fn domains(files: &[FileContent], s: &ApplySettings) -> Result<Vec<DomainSpec>> {
    let mut out = Vec::new();
    for f in files {
        if !f.rel.starts_with("group_vars/") || f.rel == ALL_VARS {
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
            profiles: profiles(m.get("incus_profiles").map(|n| &n.value), &f.rel)?,
            instances: Vec::new(),
        });
    }
    for f in files {
        if !f.rel.starts_with("host_vars/") {
            continue;
        }
        let dom = str_at(&f.data, "instance_domain", &f.rel)?;
        let Some(d) = out.iter_mut().find(|d| d.domain == dom) else {
            continue;
        };
        let inst = instance(d, &f.data, &f.rel, s)?;
        d.instances.push(inst);
    }
    Ok(out)
}

fn profiles(v: Option<&Value>, file: &str) -> Result<Vec<ProfileSpec>> {
    let mut out = Vec::new();
    if let Some(Value::Map(m)) = v {
        for (k, p) in m.iter() {
            let name = k.value.as_str().unwrap_or_default().to_string();
            let key = format!("incus_profiles.{name}");
            let pm = p.value.as_map();
            out.push(ProfileSpec {
                config: config_map(
                    pm.and_then(|m| m.get("config")).map(|n| &n.value),
                    file,
                    &format!("{key}.config"),
                )?,
                devices: devices_map(
                    pm.and_then(|m| m.get("devices")).map(|n| &n.value),
                    file,
                    &format!("{key}.devices"),
                )?,
                name,
            });
        }
    }
    Ok(out)
}

pub(crate) fn instance(
    d: &DomainSpec,
    m: &Mapping,
    file: &str,
    s: &ApplySettings,
) -> Result<InstanceSpec> {
    let get = |k: &str| m.get(k).map(|n| &n.value);
    let name = str_at(m, "instance_name", file)?;
    let kind = match get("instance_type").and_then(Value::as_str) {
        Some("vm") => InstanceKind::Vm,
        Some("lxc") | None => InstanceKind::Container,
        Some(other) => bail!("{file}: instance_type {other:?} is neither lxc nor vm"),
    };
    let ephemeral = get("instance_ephemeral")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ip = get("instance_ip")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut config = config_map(get("instance_config"), file, "instance_config")?;
    for (key, incus_key) in [
        ("instance_boot_autostart", "boot.autostart"),
        ("instance_boot_priority", "boot.autostart.priority"),
        ("instance_snapshots_schedule", "snapshots.schedule"),
        ("instance_snapshots_expiry", "snapshots.expiry"),
    ] {
        if let Some(v) = get(key) {
            if let Some(v) = incus_value(v, file, key)? {
                config.insert(incus_key.into(), v);
            }
        }
    }
    config.insert(
        "security.protection.delete".into(),
        (!ephemeral).to_string(),
    );
    config.insert(MANAGED_KEY.into(), "true".into());

    let mut devices = devices_map(get("instance_devices"), file, "instance_devices")?;
    if let Some(ip) = &ip {
        devices.insert("eth0".into(), d.nic(Some(ip)));
    }
    let mut volumes = Vec::new();
    if let Some(Value::Map(vm)) = get("instance_storage_volumes") {
        for (k, v) in vm.iter() {
            let vname = k.value.as_str().unwrap_or_default().to_string();
            let key = format!("instance_storage_volumes.{vname}");
            let opts = config_map(Some(&v.value), file, &key)?;
            let vol = VolumeSpec {
                pool: opts.get("pool").cloned().unwrap_or_else(|| s.pool.clone()),
                size: opts.get("size").cloned(),
                path: opts.get("path").cloned(),
                name: vname,
            };
            if let Some(path) = &vol.path {
                devices.insert(
                    vol.name.clone(),
                    strings(&[
                        ("type", "disk"),
                        ("pool", &vol.pool),
                        ("source", &vol.name),
                        ("path", path),
                    ]),
                );
            }
            volumes.push(vol);
        }
    }
    let profiles = match get("instance_profiles") {
        Some(Value::Seq(items)) => items
            .iter()
            .map(|n| {
                n.value
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{file}: instance_profiles holds a non-string"))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => vec!["default".to_string()],
    };
    let image = image_ref(&str_at(m, "instance_os_image", file)?, file)?;
    Ok(InstanceSpec {
        description: get("instance_description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        domain: d.domain.clone(),
        project: d.project.clone(),
        kind,
        image,
        ip,
        profiles,
        config,
        devices,
        volumes,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> DomainSpec {
        DomainSpec {
            domain: "lab".into(),
            project: "lab".into(),
            description: String::new(),
            network: NetworkSpec {
                name: "net-lab".into(),
                gateway: "10.140.0.254".into(),
                subnet: "10.140.0.0/24".into(),
            },
            profiles: vec![],
            instances: vec![],
        }
    }

    fn host_vars(yaml: &str) -> Mapping {
        let l = anklume_yaml::load::load_bytes(yaml.as_bytes(), 0).unwrap();
        l.root.value.as_map().unwrap().clone()
    }

    #[test]
    fn a_vm_machine_becomes_a_virtual_machine_with_its_settings() {
        let m = host_vars(
            "instance_name: lab-vm\ninstance_type: vm\ninstance_domain: lab\n\
             instance_ephemeral: true\ninstance_os_image: images:debian/13\n\
             instance_ip: 10.140.0.1\ninstance_config:\n  limits.memory: 2GiB\n  limits.cpu: 2\n\
             instance_boot_autostart: true\ninstance_snapshots_expiry: 7d\n",
        );
        let i = instance(
            &domain(),
            &m,
            "host_vars/lab-vm.yml",
            &ApplySettings::default(),
        )
        .unwrap();
        assert_eq!(i.kind, InstanceKind::Vm);
        assert_eq!(i.kind.api_name(), "virtual-machine");
        assert_eq!(i.config["limits.cpu"], "2");
        assert_eq!(i.config["boot.autostart"], "true");
        assert_eq!(i.config["snapshots.expiry"], "7d");
        assert_eq!(i.config["security.protection.delete"], "false");
        assert_eq!(i.devices["eth0"]["ipv4.address"], "10.140.0.1");
        assert_eq!(i.devices["eth0"]["network"], "net-lab");
        assert_eq!(i.profiles, ["default"]);
        assert_eq!(
            i.image.source(),
            serde_json::json!({"type": "image", "alias": "debian/13",
                "server": "https://images.linuxcontainers.org", "protocol": "simplestreams"})
        );
    }

    #[test]
    fn images_are_local_or_a_known_remote() {
        assert_eq!(
            image_ref("base", "f").unwrap(),
            ImageRef::Local("base".into())
        );
        assert_eq!(
            image_ref("local:base", "f").unwrap(),
            ImageRef::Local("base".into())
        );
        let e = image_ref("ubuntu:24.04", "host_vars/x.yml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host_vars/x.yml") && e.contains("unknown remote \"ubuntu\""),
            "{e}"
        );
    }

    #[test]
    fn wrong_shapes_name_the_file_and_key() {
        let m = host_vars(
            "instance_name: x\ninstance_domain: lab\ninstance_os_image: base\ninstance_config:\n  limits.cpu: [1, 2]\n",
        );
        let e = instance(&domain(), &m, "host_vars/x.yml", &ApplySettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host_vars/x.yml: instance_config.limits.cpu is a"),
            "{e}"
        );
    }
}
