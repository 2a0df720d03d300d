//! The isolation ruleset: one nftables table, `inet anklume`, replaced in
//! one transaction.
//!
//! - `forward`: traffic between two domain bridges is dropped, traffic
//!   within a bridge accepted, `network_policies` become accept rules placed
//!   before the drop (domain → its bridge and subnet, machine → its bridge
//!   and IP, ports and protocol, both ways when bidirectional).
//! - `input`: a domain reaches the host only for DHCP, DNS and ICMP (the
//!   bridge's dnsmasq) and what a policy `to: host` allows; the host reaches
//!   the domains freely (its answers come back as established traffic).
//!
//! The table's comment carries a hash of the ruleset: `anklume apply` reads
//! it back to tell whether the live table is the one it would write, so a
//! no-op run costs one `nft list table`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::desired::DomainSpec;
use anklume_generator::model;

pub const TABLE: &str = "inet anklume";

/// One end of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Host,
    /// A bridge, and an address in it when the end is one machine.
    Bridge {
        bridge: String,
        addr: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    description: String,
    from: End,
    to: End,
    /// Empty: every port (and every protocol).
    ports: Vec<u16>,
    protocol: Option<String>,
    bidirectional: bool,
}

/// The ruleset for a set of domains, and where to load it.
#[derive(Debug, Clone)]
pub struct Firewall {
    pub text: String,
    pub hash: String,
    /// Run `nft` in this network namespace (where Incus's bridges are).
    netns: Option<PathBuf>,
    /// Copy of the last ruleset loaded, for `--dry-run`'s diff.
    state_file: Option<PathBuf>,
}

/// What the live table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    Absent,
    Current,
    Different,
}

impl Firewall {
    /// Build the ruleset from every enabled domain and the model's
    /// policies. Policies naming something not enabled are kept as a
    /// comment.
    pub fn new(
        domains: &[DomainSpec],
        model_policies: &[model::Policy],
        netns: Option<PathBuf>,
        state_dir: Option<&Path>,
    ) -> Firewall {
        let mut skipped = Vec::new();
        let mut policies = Vec::new();
        for p in model_policies {
            match policy(p, domains) {
                Ok(r) => policies.push(r),
                Err(why) => skipped.push(format!("network_policies[{}]: {why}", p.index)),
            }
        }
        let text = ruleset(domains, &policies, &skipped);
        let hash = hex16(&Sha256::digest(text.as_bytes()));
        let text = text.replacen(
            "table inet anklume {\n",
            &format!("table inet anklume {{\n\tcomment \"anklume {hash}\"\n"),
            1,
        );
        Firewall {
            text,
            hash,
            netns,
            state_file: state_dir.map(|d| d.join("nftables.rules")),
        }
    }

    fn nft(&self) -> Cmd {
        nft(self.netns.as_deref())
    }

    /// The whole transaction: replace the table, or create it.
    fn transaction(&self) -> String {
        format!("table {TABLE}\ndelete table {TABLE}\n{}", self.text)
    }

    /// Is the live table ours and current?
    pub fn live(&self) -> Result<Live> {
        Ok(match live_hash(self.netns.as_deref())? {
            None => Live::Absent,
            Some(h) if h == self.hash => Live::Current,
            Some(_) => Live::Different,
        })
    }

    /// `nft -c`: would the transaction load? (Changes nothing.)
    pub fn check(&self) -> Result<()> {
        self.nft()
            .args(["-c", "-f", "-"])
            .input(self.transaction())
            .run()
            .context("checking the nftables ruleset")
    }

    /// Load the ruleset in one transaction, then keep a copy for the next
    /// dry run's diff.
    pub fn load(&self) -> Result<()> {
        self.nft()
            .args(["-f", "-"])
            .input(self.transaction())
            .run()
            .context("loading the nftables ruleset")?;
        if let Some(f) = &self.state_file {
            anklume_generator::fsutil::write_atomic(f, self.text.as_bytes())
                .with_context(|| format!("keeping a copy of the ruleset in {}", f.display()))?;
        }
        Ok(())
    }

    /// A unified diff from the last ruleset loaded (when this host kept
    /// one) to this one.
    pub fn diff(&self) -> Result<String> {
        let old = match &self.state_file {
            None => String::new(),
            Some(f) => match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("reading the last loaded ruleset {}", f.display())
                    })
                }
            },
        };
        Ok(similar::TextDiff::from_lines(&old, &self.text)
            .unified_diff()
            .context_radius(2)
            .header("last loaded", "this run")
            .to_string())
    }
}

/// `nft`, in `netns` when given.
fn nft(netns: Option<&Path>) -> Cmd {
    match netns {
        Some(ns) => Cmd::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg("nft"),
        None => Cmd::new("nft"),
    }
}

/// The hash in the live table's comment: `None` when there is no table
/// `inet anklume`, `Some("")` when it has no anklume comment.
pub fn live_hash(netns: Option<&Path>) -> Result<Option<String>> {
    let out = nft(netns)
        .args(["list", "tables"])
        .output_string()
        .context("listing nftables tables")?;
    if !out.lines().any(|l| l.trim() == format!("table {TABLE}")) {
        return Ok(None);
    }
    let table = nft(netns)
        .args(["list", "table", "inet", "anklume"])
        .output_string()
        .context("reading table inet anklume")?;
    Ok(Some(
        table
            .lines()
            .find_map(|l| l.trim().strip_prefix("comment \"anklume "))
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_default()
            .to_string(),
    ))
}

fn hex16(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Resolve a policy's ends against the enabled domains and machines. A
/// machine end is its address, never its whole bridge: a machine without
/// one is refused (validation already reports it; this keeps the ruleset
/// from widening whatever the caller).
fn policy(p: &model::Policy, domains: &[DomainSpec]) -> std::result::Result<Policy, String> {
    let end = |k: &str, name: &str| -> std::result::Result<End, String> {
        if name == "host" {
            return Ok(End::Host);
        }
        if let Some(d) = domains.iter().find(|d| d.domain == name) {
            return Ok(End::Bridge {
                bridge: d.network.name.clone(),
                addr: Some(d.network.subnet.clone()),
            });
        }
        for d in domains {
            if let Some(i) = d.instances.iter().find(|i| i.name == name) {
                let Some(ip) = &i.ip else {
                    return Err(format!("{k}: machine {name} has no IP address"));
                };
                return Ok(End::Bridge {
                    bridge: d.network.name.clone(),
                    addr: Some(ip.clone()),
                });
            }
        }
        Err(format!("{k}: {name} is not an enabled domain or machine"))
    };
    Ok(Policy {
        description: p.description.clone(),
        from: end("from", &p.from)?,
        to: end("to", &p.to)?,
        ports: p.ports.clone(),
        protocol: p.protocol.clone(),
        bidirectional: p.bidirectional,
    })
}

fn quoted_set(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", q.join(", "))
}

/// `tcp dport { 80, 443 }`, `meta l4proto { tcp, udp } th dport { 53 }`, or
/// nothing (every port).
fn port_match(p: &Policy) -> String {
    if p.ports.is_empty() {
        return String::new();
    }
    let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
    let ports = format!("{{ {} }}", ports.join(", "));
    match p.protocol.as_deref() {
        Some(proto) => format!(" {proto} dport {ports}"),
        None => format!(" meta l4proto {{ tcp, udp }} th dport {ports}"),
    }
}

/// The accept rule for traffic `from` → `to` (None when the host is the
/// source: the host's own traffic is not filtered).
fn rule(from: &End, to: &End, p: &Policy) -> Option<(bool, String)> {
    let addr = |dir: &str, a: &Option<String>| match a {
        Some(a) => format!(" ip {dir} {a}"),
        None => String::new(),
    };
    let ports = port_match(p);
    match (from, to) {
        (End::Host, _) => None,
        (End::Bridge { bridge, addr: a }, End::Host) => Some((
            true,
            format!("iifname \"{bridge}\"{}{ports} accept", addr("saddr", a)),
        )),
        (
            End::Bridge {
                bridge: fb,
                addr: fa,
            },
            End::Bridge {
                bridge: tb,
                addr: ta,
            },
        ) => Some((
            false,
            format!(
                "iifname \"{fb}\"{} oifname \"{tb}\"{}{ports} accept",
                addr("saddr", fa),
                addr("daddr", ta)
            ),
        )),
    }
}

fn ruleset(domains: &[DomainSpec], policies: &[Policy], skipped: &[String]) -> String {
    let bridges: Vec<&str> = domains.iter().map(|d| d.network.name.as_str()).collect();
    let mut fwd = Vec::new();
    let mut input = Vec::new();
    for p in policies {
        let what = if p.description.is_empty() {
            "network policy".to_string()
        } else {
            p.description.replace(['\n', '"'], " ")
        };
        let mut dirs = vec![(&p.from, &p.to)];
        if p.bidirectional {
            dirs.push((&p.to, &p.from));
        }
        for (from, to) in dirs {
            if let Some((to_host, r)) = rule(from, to, p) {
                let target = if to_host { &mut input } else { &mut fwd };
                target.push(format!("\t\t# {what}\n\t\t{r}"));
            }
        }
    }
    let mut t = String::new();
    t.push_str("# Generated by `anklume apply` from infra.yml; the next apply replaces it.\n");
    for s in skipped {
        let _ = writeln!(t, "# skipped {s}");
    }
    t.push_str("table inet anklume {\n");
    t.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 1; policy accept;\n",
    );
    t.push_str("\t\tct state established,related accept\n");
    if !bridges.is_empty() {
        let set = quoted_set(&bridges);
        let _ = writeln!(t, "\t\tiifname {set} ct state invalid drop");
        for b in &bridges {
            let _ = writeln!(t, "\t\tiifname \"{b}\" oifname \"{b}\" accept");
        }
        for r in &fwd {
            let _ = writeln!(t, "{r}");
        }
        t.push_str("\t\t# between domains: nothing else\n");
        let _ = writeln!(t, "\t\tiifname {set} oifname {set} drop");
    }
    t.push_str("\t}\n");
    t.push_str("\tchain input {\n\t\ttype filter hook input priority filter - 1; policy accept;\n");
    if !bridges.is_empty() {
        let set = quoted_set(&bridges);
        t.push_str("\t\tct state established,related accept\n");
        t.push_str("\t\t# the bridges' DHCP and DNS (dnsmasq), and ping\n");
        let _ = writeln!(t, "\t\tiifname {set} udp dport {{ 53, 67 }} accept");
        let _ = writeln!(t, "\t\tiifname {set} tcp dport 53 accept");
        let _ = writeln!(t, "\t\tiifname {set} icmp type echo-request accept");
        for r in &input {
            let _ = writeln!(t, "{r}");
        }
        t.push_str("\t\t# the domains reach nothing else on the host\n");
        let _ = writeln!(t, "\t\tiifname {set} drop");
    }
    t.push_str("\t}\n}\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{InstanceKind, InstanceSpec, NetworkSpec};

    fn dom(name: &str, net: u8, machines: &[(&str, Option<&str>)]) -> DomainSpec {
        let mut d = DomainSpec {
            domain: name.into(),
            project: name.into(),
            description: String::new(),
            network: NetworkSpec {
                name: format!("net-{name}"),
                gateway: format!("10.{net}.0.254"),
                subnet: format!("10.{net}.0.0/24"),
            },
            profiles: vec![],
            instances: vec![],
        };
        for (m, ip) in machines {
            d.instances.push(InstanceSpec {
                name: m.to_string(),
                domain: name.into(),
                project: name.into(),
                kind: InstanceKind::Container,
                description: String::new(),
                image: crate::desired::ImageRef::Local("local-test".into()),
                ip: ip.map(str::to_string),
                profiles: vec![],
                config: Default::default(),
                devices: Default::default(),
                volumes: vec![],
            });
        }
        d
    }

    fn pol(
        i: usize,
        from: &str,
        to: &str,
        ports: &[u16],
        proto: Option<&str>,
        bi: bool,
    ) -> model::Policy {
        model::Policy {
            index: i,
            description: String::new(),
            from: from.into(),
            to: to.into(),
            ports: ports.to_vec(),
            protocol: proto.map(str::to_string),
            bidirectional: bi,
        }
    }

    #[test]
    fn isolation_policies_and_host_rules() {
        let ds = vec![
            dom("pro", 110, &[("pro-dev", Some("10.110.0.1"))]),
            dom(
                "ai",
                120,
                &[("ai-llm", Some("10.120.0.1")), ("ai-noip", None)],
            ),
        ];
        let all = vec![
            pol(0, "pro", "ai-llm", &[11434], Some("tcp"), false),
            pol(1, "ai", "pro", &[], None, true),
            pol(2, "pro-dev", "host", &[8080], None, false),
            pol(3, "host", "ai-llm", &[22], None, false),
            pol(4, "gone", "ai", &[], None, false),
            pol(5, "pro", "ai-noip", &[80], None, false),
        ];
        let fw = Firewall::new(&ds, &all, None, None);
        let t = &fw.text;
        assert!(
            t.contains(&format!("comment \"anklume {}\"", fw.hash)),
            "{t}"
        );
        assert!(
            t.contains("iifname \"net-pro\" oifname \"net-pro\" accept"),
            "{t}"
        );
        assert!(
            t.contains("iifname { \"net-pro\", \"net-ai\" } ct state invalid drop"),
            "{t}"
        );
        assert!(t.contains(
            "iifname \"net-pro\" ip saddr 10.110.0.0/24 oifname \"net-ai\" ip daddr 10.120.0.1 tcp dport { 11434 } accept"
        ), "{t}");
        assert!(t.contains("iifname \"net-ai\" ip saddr 10.120.0.0/24 oifname \"net-pro\" ip daddr 10.110.0.0/24 accept"), "{t}");
        assert!(t.contains("iifname \"net-pro\" ip saddr 10.110.0.0/24 oifname \"net-ai\" ip daddr 10.120.0.0/24 accept"), "{t}");
        assert!(t.contains("iifname \"net-pro\" ip saddr 10.110.0.1 meta l4proto { tcp, udp } th dport { 8080 } accept"), "{t}");
        assert!(
            t.contains(
                "# skipped network_policies[4]: from: gone is not an enabled domain or machine"
            ),
            "{t}"
        );
        // A machine without an address never becomes its whole bridge.
        assert!(
            t.contains("# skipped network_policies[5]: to: machine ai-noip has no IP address"),
            "{t}"
        );
        assert!(!t.contains("dport { 80 }"), "{t}");
        // Accept rules come before the drop between bridges.
        let drop = t
            .find("oifname { \"net-pro\", \"net-ai\" } drop")
            .expect("drop rule");
        assert!(t.find("dport { 11434 }").unwrap() < drop);
        // The host → machine policy needs no rule (host traffic is not filtered).
        assert!(!t.contains("dport { 22 }"), "{t}");
        // Same input, same text and hash; a change changes the hash.
        let again = Firewall::new(&ds, &all, None, None);
        assert_eq!(
            (again.text.as_str(), again.hash.as_str()),
            (t.as_str(), fw.hash.as_str())
        );
        let fewer = Firewall::new(&ds[..1], &all, None, None);
        assert_ne!(fewer.hash, fw.hash);
    }

    #[test]
    fn no_domains_gives_empty_chains() {
        let fw = Firewall::new(&[], &[], None, None);
        assert!(!fw.text.contains("drop"), "{}", fw.text);
    }
}
