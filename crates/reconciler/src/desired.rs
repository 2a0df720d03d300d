//! The desired Incus state, from the generator's typed model (the same
//! model `anklume sync` renders), so the reconciler and the Ansible tree can
//! never disagree.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use anklume_generator::model::{self, incus_value, Machine, MachineType, Model};

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

/// A model config map in Incus's form (strings); `at` names where it is in
/// `infra.yml` for the error about a list or mapping value (Incus takes
/// only scalars).
fn incus_config(c: &model::Config, at: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in c {
        match incus_value(v) {
            Ok(Some(s)) => {
                out.insert(k.clone(), s);
            }
            Ok(None) => {}
            Err(kind) => bail!("{at}.{k} is a {kind}: Incus takes a single value there"),
        }
    }
    Ok(out)
}

fn incus_devices(d: &model::Devices, at: &str) -> Result<Devices> {
    d.iter()
        .map(|(k, c)| Ok((k.clone(), incus_config(c, &format!("{at}.{k}"))?)))
        .collect()
}

/// Parse `os_image`: `remote:alias` for a known remote, else a local alias.
pub fn image_ref(s: &str, at: &str) -> Result<ImageRef> {
    match s.split_once(':') {
        None => Ok(ImageRef::Local(s.to_string())),
        Some(("local", alias)) => Ok(ImageRef::Local(alias.to_string())),
        Some((remote, alias)) => {
            let Some((_, server, protocol)) = REMOTES.iter().find(|(r, ..)| *r == remote) else {
                bail!(
                    "{at}: os_image {s:?}: unknown remote {remote:?} (known: {}, or a local alias without a remote)",
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

/// The enabled domains of the generator's model, in Incus's terms.
pub fn domains(model: &Model, s: &ApplySettings) -> Result<Vec<DomainSpec>> {
    let mut out = Vec::new();
    for md in model.domains.iter().filter(|d| d.enabled) {
        let at = format!("domains.{}", md.name);
        let mut d = DomainSpec {
            domain: md.name.clone(),
            project: md.project.clone(),
            description: md.description.clone(),
            network: NetworkSpec {
                name: md.network.name.clone(),
                gateway: md.network.gateway.clone(),
                subnet: md.network.subnet.clone(),
            },
            profiles: md
                .profiles
                .iter()
                .map(|p| {
                    let at = format!("{at}.profiles.{}", p.name);
                    Ok(ProfileSpec {
                        name: p.name.clone(),
                        config: incus_config(&p.config, &format!("{at}.config"))?,
                        devices: incus_devices(&p.devices, &format!("{at}.devices"))?,
                    })
                })
                .collect::<Result<_>>()?,
            instances: Vec::new(),
        };
        for m in &md.machines {
            let i = instance(&d, m, &format!("{at}.machines.{}", m.name), s)?;
            d.instances.push(i);
        }
        out.push(d);
    }
    Ok(out)
}

pub(crate) fn instance(
    d: &DomainSpec,
    m: &Machine,
    at: &str,
    s: &ApplySettings,
) -> Result<InstanceSpec> {
    let mut config = incus_config(&m.config, &format!("{at}.config"))?;
    for (v, key, incus_key) in [
        (&m.boot_autostart, "boot_autostart", "boot.autostart"),
        (&m.boot_priority, "boot_priority", "boot.autostart.priority"),
        (
            &m.snapshots_schedule,
            "snapshots_schedule",
            "snapshots.schedule",
        ),
        (&m.snapshots_expiry, "snapshots_expiry", "snapshots.expiry"),
    ] {
        if let Some(v) = v {
            match incus_value(v) {
                Ok(Some(v)) => {
                    config.insert(incus_key.into(), v);
                }
                Ok(None) => {}
                Err(kind) => bail!("{at}.{key} is a {kind}, expected a single value"),
            }
        }
    }
    config.insert(
        "security.protection.delete".into(),
        (!m.ephemeral).to_string(),
    );
    config.insert(MANAGED_KEY.into(), "true".into());

    let mut devices = incus_devices(&m.devices, &format!("{at}.devices"))?;
    if let Some(ip) = &m.ip {
        devices.insert("eth0".into(), d.nic(Some(ip)));
    }
    let mut volumes = Vec::new();
    for (vname, opts) in &m.storage_volumes {
        let opts = incus_config(opts, &format!("{at}.storage_volumes.{vname}"))?;
        let vol = VolumeSpec {
            pool: opts.get("pool").cloned().unwrap_or_else(|| s.pool.clone()),
            size: opts.get("size").cloned(),
            path: opts.get("path").cloned(),
            name: vname.clone(),
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
    let image = match &m.os_image {
        Some(img) => image_ref(img, at)?,
        None => bail!("{at}: no os_image, and global.default_os_image is not set"),
    };
    Ok(InstanceSpec {
        name: m.instance_name.clone(),
        description: m.description.clone(),
        domain: d.domain.clone(),
        project: d.project.clone(),
        kind: match m.kind {
            MachineType::Vm => InstanceKind::Vm,
            MachineType::Lxc => InstanceKind::Container,
        },
        image,
        ip: m.ip.clone(),
        profiles: m
            .profiles
            .clone()
            .unwrap_or_else(|| vec!["default".to_string()]),
        config,
        devices,
        volumes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The generator's model of an `infra.yml` text (neutral host).
    pub(crate) fn model(infra: &str) -> Model {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("infra.yml");
        std::fs::write(&p, infra).unwrap();
        let mut err = Vec::new();
        let host = anklume_generator::context::HostContext::default();
        anklume_generator::prepare(Some(&p), None, Some(&host), &mut err)
            .unwrap()
            .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&err)))
            .model
    }

    const LAB: &str = "project_name: t\nglobal:\n  addressing:\n    base_octet: 10\n    zone_base: 100\n  default_os_image: base\ndomains:\n  lab:\n    trust_level: trusted\n    machines:\n";

    #[test]
    fn a_vm_machine_becomes_a_virtual_machine_with_its_settings() {
        let m = model(&format!(
            "{LAB}      lab-vm:\n        type: vm\n        ephemeral: true\n        os_image: images:debian/13\n\
             \x20       ip: 10.110.0.1\n        config:\n          limits.memory: 2GiB\n          limits.cpu: 2\n\
             \x20       boot_autostart: true\n        snapshots_expiry: 7d\n"
        ));
        let d = domains(&m, &ApplySettings::default()).unwrap();
        let i = &d[0].instances[0];
        assert_eq!(i.kind, InstanceKind::Vm);
        assert_eq!(i.kind.api_name(), "virtual-machine");
        assert_eq!(i.config["limits.cpu"], "2");
        assert_eq!(i.config["boot.autostart"], "true");
        assert_eq!(i.config["snapshots.expiry"], "7d");
        assert_eq!(i.config["security.protection.delete"], "false");
        assert_eq!(i.devices["eth0"]["ipv4.address"], "10.110.0.1");
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
        let e = image_ref("ubuntu:24.04", "domains.lab.machines.x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("domains.lab.machines.x") && e.contains("unknown remote \"ubuntu\""),
            "{e}"
        );
    }

    #[test]
    fn a_list_where_incus_takes_a_value_names_the_key() {
        let m = model(&format!(
            "{LAB}      x:\n        config:\n          limits.cpu: [1, 2]\n"
        ));
        let e = domains(&m, &ApplySettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("domains.lab.machines.x.config.limits.cpu is a"),
            "{e}"
        );
    }
}
