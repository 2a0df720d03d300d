//! What the generator reads from the host, and how tests pin it down.
//!
//! The reference reads the nesting context from `/etc/anklume`
//! (`absolute_level`, `vm_nested`, `yolo`), host CPU/memory for
//! `resource_policy`, and host interface subnets for conflict checks. Each
//! has an override so that runs are deterministic:
//!
//! | what | override |
//! |---|---|
//! | context directory | `--context-dir DIR` or `ANKLUME_CONTEXT_DIR` |
//! | host CPU and memory | `ANKLUME_HOST_RESOURCES="cpu=8,memory=16GiB"` |
//! | host subnets | `ANKLUME_HOST_SUBNETS="eth0=192.168.1.0/24,..."` (empty: none) |
//! | skip the subnet check | `ANKLUME_SKIP_HOST_SUBNET_CHECK=1` (as the reference) |

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::resources::parse_memory_value;

/// Default directory of the nesting context files.
pub const DEFAULT_CONTEXT_DIR: &str = "/etc/anklume";

/// An IPv4 network (address masked to its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = Self::mask(prefix);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = Self::mask(p);
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok().filter(|&p| p <= 32)?;
        Some(Ipv4Net::new(addr, prefix))
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Host CPU count and memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostResources {
    pub cpu: u64,
    pub memory_bytes: u64,
}

/// Everything the generator knows about the host.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// `/etc/anklume/absolute_level`: nesting depth, gives the `NNN-` prefix.
    pub absolute_level: Option<i64>,
    /// `/etc/anklume/vm_nested`: a VM in the parent chain.
    pub vm_nested: Option<bool>,
    /// `/etc/anklume/yolo`: unsafe mode acknowledged.
    pub yolo: bool,
    /// `None`: could not be detected.
    pub resources: Option<HostResources>,
    /// Interface subnets; empty when the check is skipped.
    pub subnets: Vec<(String, Ipv4Net)>,
    /// What could not be read from the host (printed as warnings).
    pub warnings: Vec<String>,
}

impl HostContext {
    /// Read the context from `context_dir` (or the default / environment) and
    /// the host, honouring the environment overrides.
    pub fn detect(context_dir: Option<&Path>) -> Result<Self> {
        let dir = context_dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ANKLUME_CONTEXT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTEXT_DIR));
        let read = |name: &str| -> Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            }
        };
        let absolute_level = read("absolute_level")?
            .and_then(|s| anklume_yaml::pyfmt::py_int_str(&s))
            .and_then(|v| i64::try_from(v).ok());
        let vm_nested = read("vm_nested")?.map(|s| s.to_lowercase() == "true");
        let yolo = read("yolo")?.is_some_and(|s| s.to_lowercase() == "true");

        let resources = match std::env::var("ANKLUME_HOST_RESOURCES") {
            Ok(spec) => Some(parse_resources(&spec)?),
            Err(_) => detect_resources(),
        };
        let mut warnings = Vec::new();
        let subnets = if std::env::var("ANKLUME_SKIP_HOST_SUBNET_CHECK").as_deref() == Ok("1") {
            Vec::new()
        } else {
            match std::env::var("ANKLUME_HOST_SUBNETS") {
                Ok(spec) => parse_subnets(&spec)?,
                Err(_) => detect_subnets().unwrap_or_else(|e| {
                    warnings.push(format!(
                        "cannot list host interfaces ({e}); host subnet conflicts are not checked"
                    ));
                    Vec::new()
                }),
            }
        };
        Ok(HostContext {
            absolute_level,
            vm_nested,
            yolo,
            resources,
            subnets,
            warnings,
        })
    }
}

fn parse_resources(spec: &str) -> Result<HostResources> {
    let (mut cpu, mut mem) = (None, None);
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("cpu", v)) => cpu = v.trim().parse::<u64>().ok(),
            Some(("memory", v)) => mem = Some(parse_memory_value(v.trim())).filter(|&m| m > 0),
            _ => bail!("ANKLUME_HOST_RESOURCES: cannot read {part:?} (expected cpu=N,memory=SIZE)"),
        }
    }
    match (cpu, mem) {
        (Some(cpu), Some(m)) if cpu > 0 => Ok(HostResources {
            cpu,
            memory_bytes: m as u64,
        }),
        _ => bail!("ANKLUME_HOST_RESOURCES={spec:?}: expected cpu=N,memory=SIZE with N > 0"),
    }
}

fn parse_subnets(spec: &str) -> Result<Vec<(String, Ipv4Net)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (ifname, net) = part.split_once('=').with_context(|| {
                format!("ANKLUME_HOST_SUBNETS: {part:?} is not IFNAME=A.B.C.D/N")
            })?;
            let net = Ipv4Net::parse(net)
                .with_context(|| format!("ANKLUME_HOST_SUBNETS: {net:?} is not an IPv4 network"))?;
            Ok((ifname.to_string(), net))
        })
        .collect()
}

/// CPU count and memory from `/proc` (what `incus info --resources` reports
/// on the host itself).
fn detect_resources() -> Option<HostResources> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let cpu = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (cpu > 0 && kib > 0).then_some(HostResources {
        cpu,
        memory_bytes: kib * 1024,
    })
}

/// IPv4 subnets of the host's interfaces, skipping loopback and Incus
/// bridges (`net-*`), as the reference does.
fn detect_subnets() -> nix::Result<Vec<(String, Ipv4Net)>> {
    let addrs = nix::ifaddrs::getifaddrs()?;
    let mut out = Vec::new();
    for ifa in addrs {
        if ifa.interface_name == "lo" || ifa.interface_name.starts_with("net-") {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let prefix = u32::from(m.ip()).leading_ones() as u8;
        out.push((ifa.interface_name.clone(), Ipv4Net::new(a.ip(), prefix)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let a = Ipv4Net::parse("10.120.0.7/24").unwrap();
        assert_eq!(a.to_string(), "10.120.0.0/24");
        assert!(a.overlaps(&Ipv4Net::parse("10.0.0.0/8").unwrap()));
        assert!(!a.overlaps(&Ipv4Net::parse("10.121.0.0/24").unwrap()));
        assert!(Ipv4Net::parse("10.1.2.3/33").is_none());
    }

    #[test]
    fn overrides_parse() {
        let r = parse_resources("cpu=8, memory=16GiB").unwrap();
        assert_eq!(r.cpu, 8);
        assert_eq!(r.memory_bytes, 16 << 30);
        assert!(parse_resources("cpu=0,memory=1GiB").is_err());
        assert!(parse_resources("disk=1").is_err());
        let s = parse_subnets("eth0=192.168.1.5/24,").unwrap();
        assert_eq!(
            s,
            vec![("eth0".into(), Ipv4Net::parse("192.168.1.0/24").unwrap())]
        );
        assert!(parse_subnets("eth0").is_err());
    }

    #[test]
    fn context_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("absolute_level"), "2\n").unwrap();
        std::fs::write(d.path().join("vm_nested"), "False\n").unwrap();
        std::fs::write(d.path().join("yolo"), "TRUE").unwrap();
        let c = HostContext::detect(Some(d.path())).unwrap();
        assert_eq!(c.absolute_level, Some(2));
        assert_eq!(c.vm_nested, Some(false));
        assert!(c.yolo);
        let empty = tempfile::tempdir().unwrap();
        let c = HostContext::detect(Some(empty.path())).unwrap();
        assert_eq!((c.absolute_level, c.vm_nested, c.yolo), (None, None, false));
    }
}
