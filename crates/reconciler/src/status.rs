//! `anklume status`: what this boot runs on, and what runs on it.
//!
//! OS facts come from `/run/anklume/boot.env`, written by the initrd when it
//! set up the verified root (slot, version, root hash, device, toram,
//! persist), from the mount table, and from `veritysetup status` for the
//! kernel's current verdict on the dm-verity device. Then: Incus (reachable,
//! each anklume domain's instances with state and address), the isolation
//! ruleset (present, and current against `infra.yml` when it is found),
//! and RAM encryption.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

/// Name of the dm-verity mapping the initrd creates.
pub const VERITY_NAME: &str = "anklume-root";

#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Where `boot.env` lives (default `/run/anklume`; `$ANKLUME_RUN_DIR`).
    pub run_dir: PathBuf,
    /// mountinfo to read (default `/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// Incus socket.
    pub socket: PathBuf,
    /// `infra.yml` (or `infra/`) to judge the ruleset against (`None`: the
    /// default of `anklume sync`, when it exists).
    pub infra: Option<PathBuf>,
    pub context_dir: Option<PathBuf>,
    /// Network namespace of Incus's bridges, for `nft`.
    pub netns: Option<PathBuf>,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            run_dir: std::env::var_os("ANKLUME_RUN_DIR")
                .map_or_else(|| PathBuf::from("/run/anklume"), PathBuf::from),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            socket: anklume_incus::client::default_socket(),
            infra: None,
            context_dir: None,
            netns: None,
        }
    }
}

/// `key=value` lines; other lines are ignored.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// File system type and source of the mount at `/` (the last one wins).
pub fn root_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split_whitespace().nth(4)?;
            let mut p = post.split_whitespace();
            let fstype = p.next()?;
            let source = p.next()?;
            (mount_point == "/").then(|| (fstype.to_string(), source.to_string()))
        })
        .next_back()
}

/// The `status:` line of `veritysetup status anklume-root`.
fn verity_state() -> String {
    match Command::new("veritysetup")
        .args(["status", VERITY_NAME])
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let status = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("status:"))
                .map(|s| s.trim().to_string());
            match status {
                Some(s) => s,
                None if o.status.success() => "unknown".into(),
                None => format!("not active ({})", text.lines().next().unwrap_or("").trim()),
            }
        }
        Err(e) => format!("unknown (veritysetup: {e})"),
    }
}

/// Incus, the domains, the ruleset and RAM encryption, on any host.
fn host_lines(o: &StatusOptions, out: &mut dyn Write) -> Result<()> {
    let socket = &o.socket;
    let timeout = std::time::Duration::from_secs(5);
    let client = anklume_incus::Client::connect_with_timeout(socket, timeout);
    let incus = match client.as_ref().map_err(|e| e.to_string()).and_then(|c| {
        c.get::<serde_json::Value>("/1.0")
            .map_err(|e| e.to_string())
    }) {
        Ok(v) => format!(
            "reachable ({}, Incus {})",
            socket.display(),
            v["environment"]["server_version"].as_str().unwrap_or("?")
        ),
        Err(e) => format!("unreachable: {e}"),
    };
    writeln!(out, "incus:     {incus}")?;
    if let Ok(c) = &client {
        match domain_lines(c) {
            Ok(lines) => {
                for l in lines {
                    writeln!(out, "{l}")?;
                }
            }
            Err(e) => writeln!(out, "domains:   unreadable: {e:#}")?,
        }
    }
    writeln!(out, "nftables:  {}", firewall_line(o))?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let log = crate::ramcrypt::read_kernel_log().ok();
    writeln!(
        out,
        "ram crypt: {}",
        crate::ramcrypt::describe(&cpuinfo, log.as_deref())
    )?;
    Ok(())
}

pub fn run(o: &StatusOptions, out: &mut dyn Write) -> Result<i32> {
    let boot_env = o.run_dir.join("boot.env");
    let root = std::fs::read_to_string(&o.mountinfo)
        .ok()
        .and_then(|m| root_mount(&m));
    let (fstype, source) = root.unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let env = match std::fs::read_to_string(&boot_env) {
        Ok(t) => parse_env(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            writeln!(
                out,
                "os:        not an anklume Live OS boot (no {})",
                boot_env.display()
            )?;
            writeln!(out, "root:      {fstype} ({source})")?;
            host_lines(o, out)?;
            return Ok(0);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", boot_env.display())),
    };
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("?");
    let yes_no = |k: &str| if get(k) == "1" { "yes" } else { "no" };
    writeln!(out, "slot:      {}", get("slot"))?;
    writeln!(out, "version:   {}", get("version"))?;
    writeln!(out, "root hash: {}", get("roothash"))?;
    writeln!(
        out,
        "verity:    {} (/dev/mapper/{VERITY_NAME} on {})",
        verity_state(),
        get("device")
    )?;
    writeln!(out, "root:      {fstype} ({source})")?;
    writeln!(out, "toram:     {}", yes_no("toram"))?;
    let persist = match get("persist") {
        "" | "?" => "none".to_string(),
        p => p.to_string(),
    };
    writeln!(out, "persist:   {persist}")?;
    host_lines(o, out)?;
    Ok(0)
}

/// One line per anklume domain (project carrying anklume's mark), then one
/// per instance: state and IPv4 addresses.
fn domain_lines(c: &anklume_incus::Client) -> Result<Vec<String>> {
    use crate::desired::MANAGED_KEY;
    use serde_json::Value;
    let projects: Vec<Value> = c.get("/1.0/projects?recursion=1")?;
    let instances: Vec<Value> = c.get("/1.0/instances?recursion=2&all-projects=true")?;
    let mut lines = Vec::new();
    for p in projects
        .iter()
        .filter(|p| p["config"][MANAGED_KEY] == "true")
    {
        let name = p["name"].as_str().unwrap_or("?");
        let mine: Vec<&Value> = instances.iter().filter(|i| i["project"] == name).collect();
        let running = mine.iter().filter(|i| i["status"] == "Running").count();
        lines.push(format!(
            "domain:    {name}: {running}/{} running",
            mine.len()
        ));
        for i in mine {
            let addrs: Vec<&str> = i["state"]["network"]
                .as_object()
                .into_iter()
                .flat_map(|nics| nics.iter())
                .filter(|(nic, _)| nic.as_str() != "lo")
                .flat_map(|(_, n)| n["addresses"].as_array().into_iter().flatten())
                .filter(|a| a["family"] == "inet")
                .filter_map(|a| a["address"].as_str())
                .collect();
            lines.push(format!(
                "             {} {} {}",
                i["name"].as_str().unwrap_or("?"),
                i["status"].as_str().unwrap_or("?"),
                if addrs.is_empty() {
                    "-".to_string()
                } else {
                    addrs.join(",")
                }
            ));
        }
    }
    if lines.is_empty() {
        lines.push("domains:   none (no project made by anklume apply)".into());
    }
    Ok(lines)
}

/// Is table `inet anklume` there, and is it the ruleset `infra.yml` gives?
fn firewall_line(o: &StatusOptions) -> String {
    use crate::firewall::{live_hash, Firewall};
    let live = match live_hash(o.netns.as_deref()) {
        Ok(None) => return "table inet anklume absent: domains are not isolated".into(),
        Ok(Some(h)) => h,
        Err(e) => return format!("unknown ({e:#})"),
    };
    let mut sink = Vec::new();
    let want = anklume_generator::prepare(
        o.infra.as_deref(),
        o.context_dir.as_deref(),
        None,
        &mut sink,
    )
    .ok()
    .flatten()
    .and_then(|prepared| {
        let settings = crate::desired::ApplySettings::default();
        let domains = crate::desired::domains(&prepared.model, &settings).ok()?;
        let all = &prepared.model.policies;
        Some(Firewall::new(&domains, all, None, None))
    });
    match want {
        Some(fw) if fw.hash == live => format!("table inet anklume present, current ({live})"),
        Some(fw) => format!(
            "table inet anklume present ({live}) but infra.yml gives {}: run anklume apply",
            fw.hash
        ),
        None => {
            format!("table inet anklume present ({live}); no valid infra.yml here to compare with")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay anklume-root rw,lowerdir=/run/anklume/ro
30 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw
";

    #[test]
    fn root_mount_is_read_from_mountinfo() {
        assert_eq!(
            root_mount(MOUNTINFO),
            Some(("overlay".into(), "anklume-root".into()))
        );
        assert_eq!(root_mount(""), None);
    }

    #[test]
    fn prints_the_boot_facts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("boot.env"),
            "slot=b\nversion=0.2.0\nroothash=abc\ndevice=/dev/sda3\ntoram=1\npersist=\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("mountinfo"), MOUNTINFO).unwrap();
        let o = StatusOptions {
            run_dir: dir.path().to_path_buf(),
            mountinfo: dir.path().join("mountinfo"),
            socket: dir.path().join("no-incus.socket"),
            ..StatusOptions::default()
        };
        let mut out = Vec::new();
        assert_eq!(run(&o, &mut out).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("slot:      b\n"), "{text}");
        assert!(text.contains("version:   0.2.0\n"), "{text}");
        assert!(text.contains("toram:     yes\n"), "{text}");
        assert!(text.contains("persist:   none\n"), "{text}");
        assert!(
            text.contains("root:      overlay (anklume-root)\n"),
            "{text}"
        );
        assert!(text.contains("verity:    "), "{text}");
    }

    #[test]
    fn off_an_anklume_medium_it_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let o = StatusOptions {
            run_dir: dir.path().to_path_buf(),
            mountinfo: dir.path().join("none"),
            socket: dir.path().join("no-incus.socket"),
            ..StatusOptions::default()
        };
        let mut out = Vec::new();
        run(&o, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("os:        not an anklume Live OS boot"));
    }
}
