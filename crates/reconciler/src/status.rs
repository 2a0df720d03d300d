//! `anklume status`: what this boot runs on, and what runs on it.
//!
//! OS facts come from the initrd's boot facts (`anklume_contract::bootenv`),
//! from the mount table, and from `veritysetup status` for the kernel's
//! current verdict on the dm-verity device. Then: Incus (reachable, each
//! anklume domain's instances with state and address), the isolation
//! ruleset (present, and current against `infra.yml` when it is found),
//! and RAM encryption.
//!
//! [`collect`] gathers a [`Status`]; [`render`] prints it for people and
//! `anklume status --json` prints it as JSON (schema in
//! `docs/reconciler.md`, versioned by [`SCHEMA`]).

use std::io::Write;
use std::path::PathBuf;

use anklume_cmd::Cmd;
use anklume_contract::bootenv::{BootEnv, VERITY_NAME};
use anyhow::{Context, Result};
use serde::Serialize;

/// Version of the JSON output; bumped when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

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
    /// Root of the device tree the boot medium's ESP is looked up under
    /// (`/`; `$ANKLUME_DEV_ROOT`: a fake tree, for tests).
    pub root: PathBuf,
    /// The data pool's mount point.
    pub pool: PathBuf,
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
            root: std::env::var_os("ANKLUME_DEV_ROOT")
                .map_or_else(|| PathBuf::from("/"), PathBuf::from),
            pool: PathBuf::from(anklume_contract::pool::POOL_DIR),
        }
    }
}

/// Everything `anklume status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: u32,
    /// The boot facts; `None` when this is not an anklume Live OS boot.
    pub boot: Option<Boot>,
    pub root: Mount,
    pub incus: Incus,
    /// Anklume's domains (projects carrying its mark); `None` when Incus is
    /// unreachable or the listing failed (see `incus.error`).
    pub domains: Option<Vec<DomainStatus>>,
    pub ruleset: Ruleset,
    /// What the CPU and kernel say about memory encryption.
    pub ram_encryption: String,
    /// The boot state on the boot medium's ESP; `None` when this is not an
    /// anklume Live OS boot.
    pub boot_state: Option<BootStateStatus>,
    /// The data pool.
    pub pool: PoolStatus,
}

/// GRUB's boot state of the booted medium.
#[derive(Debug, Clone, Serialize)]
pub struct BootStateStatus {
    /// The state, when the ESP was reached and read.
    pub state: Option<anklume_bootstate::Report>,
    /// Why it was not (medium released, unreadable block).
    pub error: Option<String>,
}

/// The data pool's mount.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub mount_point: PathBuf,
    pub mounted: bool,
    /// The device mounted there, and its file system type.
    pub source: Option<String>,
    pub fstype: Option<String>,
    /// Whether that device is a dm-crypt (LUKS) mapping.
    pub encrypted: Option<bool>,
    pub size_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    /// The encrypted partition and what unlocked it this boot (the TPM,
    /// the passphrase, or the first boot that made it), from the record
    /// the unlock leaves in the run folder.
    pub partition: Option<String>,
    pub unlocked_by: Option<anklume_contract::pool::UnlockedBy>,
    /// Why that record could not be read.
    pub unlock_record_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Boot {
    #[serde(flatten)]
    pub env: BootEnv,
    /// `veritysetup status`'s verdict on the verity device (`verified`, …).
    pub verity: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub fstype: String,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incus {
    pub socket: PathBuf,
    pub reachable: bool,
    pub version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainStatus {
    pub project: String,
    pub running: usize,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    /// Incus's status (`Running`, `Stopped`, …).
    pub status: String,
    pub ipv4: Vec<String>,
}

/// The `inet anklume` table.
#[derive(Debug, Clone, Serialize)]
pub struct Ruleset {
    /// `absent`, `current`, `different` (not what `infra.yml` gives),
    /// `present` (no valid `infra.yml` to compare with) or `unknown` (nft
    /// failed: see `error`).
    pub state: &'static str,
    /// The hash in the live table's comment.
    pub live_hash: Option<String>,
    /// The hash of the ruleset `infra.yml` gives, when it was read.
    pub want_hash: Option<String>,
    pub error: Option<String>,
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
    match Cmd::new("veritysetup")
        .args(["status", VERITY_NAME])
        .output_string()
    {
        Ok(text) => text
            .lines()
            .find_map(|l| l.trim().strip_prefix("status:"))
            .map_or_else(|| "unknown".into(), |s| s.trim().to_string()),
        Err(e) => format!(
            "not active ({})",
            format!("{e:#}").lines().last().unwrap_or("").trim()
        ),
    }
}

/// Gather the whole report. Nothing here fails the command: what cannot be
/// read is reported as such.
pub fn collect(o: &StatusOptions) -> Result<Status> {
    let boot_env = o.run_dir.join("boot.env");
    let (fstype, source) = std::fs::read_to_string(&o.mountinfo)
        .ok()
        .and_then(|m| root_mount(&m))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let boot = BootEnv::read(&boot_env)
        .with_context(|| format!("reading {}", boot_env.display()))?
        .map(|env| Boot {
            env,
            verity: verity_state(),
        });
    let boot_state = boot
        .as_ref()
        .map(|b| match anklume_bootstate::report(&o.root, &b.env) {
            Ok(Ok(r)) => BootStateStatus {
                state: Some(r),
                error: None,
            },
            Ok(Err(why)) => BootStateStatus {
                state: None,
                error: Some(why),
            },
            Err(e) => BootStateStatus {
                state: None,
                error: Some(format!("{e:#}")),
            },
        });
    let pool = pool_status(o);
    let timeout = std::time::Duration::from_secs(5);
    let client = anklume_incus::Client::connect_with_timeout(&o.socket, timeout);
    let version = client.as_ref().map_err(|e| e.to_string()).and_then(|c| {
        c.get::<serde_json::Value>("/1.0")
            .map_err(|e| e.to_string())
    });
    let mut incus = Incus {
        socket: o.socket.clone(),
        reachable: version.is_ok(),
        version: version.as_ref().ok().and_then(|v| {
            v["environment"]["server_version"]
                .as_str()
                .map(str::to_string)
        }),
        error: version.as_ref().err().cloned(),
    };
    let domains = match (&client, incus.reachable) {
        (Ok(c), true) => match domains(c) {
            Ok(d) => Some(d),
            Err(e) => {
                incus.error = Some(format!("listing the domains: {e:#}"));
                None
            }
        },
        _ => None,
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let log = crate::ramcrypt::read_kernel_log().ok();
    Ok(Status {
        schema: SCHEMA,
        boot,
        root: Mount { fstype, source },
        incus,
        domains,
        ruleset: ruleset(o),
        ram_encryption: crate::ramcrypt::describe(&cpuinfo, log.as_deref()),
        boot_state,
        pool,
    })
}

/// What is mounted at the pool's mount point, whether it is a LUKS
/// mapping, its size and free space.
fn pool_status(o: &StatusOptions) -> PoolStatus {
    let mut p = PoolStatus {
        mount_point: o.pool.clone(),
        mounted: false,
        source: None,
        fstype: None,
        encrypted: None,
        size_bytes: None,
        free_bytes: None,
        partition: None,
        unlocked_by: None,
        unlock_record_error: None,
    };
    match anklume_contract::pool::UnlockRecord::read(&o.run_dir) {
        Ok(Some(r)) => {
            p.partition = Some(r.partition);
            p.unlocked_by = Some(r.by);
        }
        Ok(None) => {}
        Err(e) => p.unlock_record_error = Some(e),
    }
    let mountinfo = std::fs::read_to_string(&o.mountinfo).unwrap_or_default();
    let Some((fstype, source)) = mount_at(&mountinfo, &o.pool) else {
        return p;
    };
    p.mounted = true;
    p.encrypted = std::fs::canonicalize(&source).ok().and_then(|dev| {
        let name = dev.file_name()?.to_str()?.to_string();
        let uuid =
            std::fs::read_to_string(o.root.join(format!("sys/class/block/{name}/dm/uuid"))).ok()?;
        Some(uuid.starts_with("CRYPT-"))
    });
    if let Ok(st) = nix::sys::statvfs::statvfs(&o.pool) {
        let frag = st.fragment_size();
        p.size_bytes = Some(st.blocks() * frag);
        p.free_bytes = Some(st.blocks_available() * frag);
    }
    p.source = Some(source);
    p.fstype = Some(fstype);
    p
}

/// File system type and source of the mount at `dir` (the last one wins).
pub fn mount_at(mountinfo: &str, dir: &std::path::Path) -> Option<(String, String)> {
    let dir = dir.to_str()?;
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split_whitespace().nth(4)?;
            let mut p = post.split_whitespace();
            let fstype = p.next()?;
            let source = p.next()?;
            (mount_point == dir).then(|| (fstype.to_string(), source.to_string()))
        })
        .next_back()
}

/// The report for people.
pub fn render(s: &Status, out: &mut dyn Write) -> Result<()> {
    match &s.boot {
        None => writeln!(out, "os:        not an anklume Live OS boot (no boot.env)")?,
        Some(b) => {
            let or_q = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
            let slot = b.env.slot.map_or("?".to_string(), |s| s.to_string());
            writeln!(out, "slot:      {slot}")?;
            writeln!(out, "version:   {}", or_q(&b.env.version))?;
            writeln!(out, "root hash: {}", or_q(&b.env.roothash))?;
            writeln!(
                out,
                "verity:    {} (/dev/mapper/{VERITY_NAME} on {})",
                b.verity,
                or_q(&b.env.device)
            )?;
        }
    }
    writeln!(out, "root:      {} ({})", s.root.fstype, s.root.source)?;
    if let Some(b) = &s.boot {
        writeln!(out, "toram:     {}", if b.env.toram { "yes" } else { "no" })?;
        writeln!(
            out,
            "persist:   {}",
            b.env.persist.as_deref().unwrap_or("none")
        )?;
        match b.env.medium.as_deref() {
            Some("ventoy") => writeln!(
                out,
                "medium:    ventoy (ISO file on a Ventoy stick: no persist partition, volatile: changes are lost at shutdown)"
            )?,
            Some(m) => writeln!(out, "medium:    {m}")?,
            None => {}
        }
    }
    let i = &s.incus;
    if i.reachable {
        writeln!(
            out,
            "incus:     reachable ({}, Incus {})",
            i.socket.display(),
            i.version.as_deref().unwrap_or("?")
        )?;
    } else {
        writeln!(
            out,
            "incus:     unreachable: {}",
            i.error.as_deref().unwrap_or("?")
        )?;
    }
    match &s.domains {
        Some(ds) if ds.is_empty() => {
            writeln!(out, "domains:   none (no project made by anklume apply)")?
        }
        Some(ds) => {
            for d in ds {
                writeln!(
                    out,
                    "domain:    {}: {}/{} running",
                    d.project,
                    d.running,
                    d.instances.len()
                )?;
                for inst in &d.instances {
                    let addrs = if inst.ipv4.is_empty() {
                        "-".to_string()
                    } else {
                        inst.ipv4.join(",")
                    };
                    writeln!(out, "             {} {} {addrs}", inst.name, inst.status)?;
                }
            }
        }
        None if i.reachable => writeln!(
            out,
            "domains:   unreadable: {}",
            i.error.as_deref().unwrap_or("?")
        )?,
        None => {}
    }
    let r = &s.ruleset;
    let live = r.live_hash.as_deref().unwrap_or("");
    let line = match r.state {
        "absent" => "table inet anklume absent: domains are not isolated".to_string(),
        "current" => format!("table inet anklume present, current ({live})"),
        "different" => format!(
            "table inet anklume present ({live}) but infra.yml gives {}: run anklume apply",
            r.want_hash.as_deref().unwrap_or("?")
        ),
        "present" => {
            format!("table inet anklume present ({live}); no valid infra.yml here to compare with")
        }
        _ => format!("unknown ({})", r.error.as_deref().unwrap_or("?")),
    };
    writeln!(out, "nftables:  {line}")?;
    if let Some(bs) = &s.boot_state {
        match (&bs.state, &bs.error) {
            (Some(r), _) => {
                let slot = |good: bool, tries: Option<u8>| match (good, tries) {
                    (true, _) => "good".to_string(),
                    (false, Some(t)) => format!("not good yet, {t} tries left"),
                    (false, None) => "not good".to_string(),
                };
                writeln!(
                    out,
                    "boot:      primary {}; a {}; b {} (ESP {}{})",
                    r.primary,
                    slot(r.good_a, r.tries_a),
                    slot(r.good_b, r.tries_b),
                    r.esp,
                    r.read_only
                        .as_deref()
                        .map(|w| format!(", read-only: {w}"))
                        .unwrap_or_default()
                )?;
            }
            (None, e) => writeln!(
                out,
                "boot:      state unknown: {}",
                e.as_deref().unwrap_or("?")
            )?,
        }
    }
    let p = &s.pool;
    if p.mounted {
        let gib = |b: Option<u64>| {
            b.map_or("?".into(), |b| {
                format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
            })
        };
        writeln!(
            out,
            "pool:      {} on {} ({}{}), {} free of {}",
            p.source.as_deref().unwrap_or("?"),
            p.mount_point.display(),
            p.fstype.as_deref().unwrap_or("?"),
            match p.encrypted {
                Some(true) => ", encrypted",
                Some(false) => ", NOT encrypted",
                None => "",
            },
            gib(p.free_bytes),
            gib(p.size_bytes)
        )?;
        if let (Some(part), Some(by)) = (&p.partition, p.unlocked_by) {
            writeln!(out, "           on {part}, unlocked by {by}")?;
        }
        if let Some(e) = &p.unlock_record_error {
            writeln!(out, "           unlock record unreadable: {e}")?;
        }
    } else {
        writeln!(
            out,
            "pool:      none mounted at {}",
            p.mount_point.display()
        )?;
    }
    writeln!(out, "ram crypt: {}", s.ram_encryption)?;
    Ok(())
}

/// `anklume status`: the report as text, or as JSON.
pub fn run(o: &StatusOptions, json: bool, out: &mut dyn Write) -> Result<i32> {
    let s = collect(o)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &s).context("writing the status as JSON")?;
        writeln!(out)?;
    } else {
        render(&s, out)?;
    }
    Ok(0)
}

/// Anklume's domains (projects carrying its mark), each instance's state
/// and IPv4 addresses.
fn domains(c: &anklume_incus::Client) -> Result<Vec<DomainStatus>> {
    use crate::desired::MANAGED_KEY;
    use serde_json::Value;
    let projects: Vec<Value> = c.get("/1.0/projects?recursion=1")?;
    let instances: Vec<Value> = c.get("/1.0/instances?recursion=2&all-projects=true")?;
    let mut out = Vec::new();
    for p in projects
        .iter()
        .filter(|p| p["config"][MANAGED_KEY] == "true")
    {
        let name = p["name"].as_str().unwrap_or("?");
        let mine: Vec<InstanceStatus> = instances
            .iter()
            .filter(|i| i["project"] == name)
            .map(|i| InstanceStatus {
                name: i["name"].as_str().unwrap_or("?").to_string(),
                status: i["status"].as_str().unwrap_or("?").to_string(),
                ipv4: i["state"]["network"]
                    .as_object()
                    .into_iter()
                    .flat_map(|nics| nics.iter())
                    .filter(|(nic, _)| nic.as_str() != "lo")
                    .flat_map(|(_, n)| n["addresses"].as_array().into_iter().flatten())
                    .filter(|a| a["family"] == "inet")
                    .filter_map(|a| a["address"].as_str().map(str::to_string))
                    .collect(),
            })
            .collect();
        out.push(DomainStatus {
            project: name.to_string(),
            running: mine.iter().filter(|i| i.status == "Running").count(),
            instances: mine,
        });
    }
    Ok(out)
}

/// Is table `inet anklume` there, and is it the ruleset `infra.yml` gives?
/// (Also the health check's `ruleset` check.)
pub fn ruleset(o: &StatusOptions) -> Ruleset {
    use crate::firewall::{live_hash, Firewall};
    let mut r = Ruleset {
        state: "unknown",
        live_hash: None,
        want_hash: None,
        error: None,
    };
    let live = match live_hash(o.netns.as_deref()) {
        Ok(None) => {
            r.state = "absent";
            return r;
        }
        Ok(Some(h)) => h,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
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
        Some(Firewall::new(
            &domains,
            &prepared.model.policies,
            None,
            None,
        ))
    });
    r.state = match &want {
        Some(fw) if fw.hash == live => "current",
        Some(_) => "different",
        None => "present",
    };
    r.want_hash = want.map(|fw| fw.hash);
    r.live_hash = Some(live);
    r
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

    /// Status options over a boot.env of `boot_env`, this module's
    /// mountinfo sample and no Incus (the folder lives as long as the guard).
    fn booted_with(boot_env: &str) -> (tempfile::TempDir, StatusOptions) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("boot.env"), boot_env).unwrap();
        std::fs::write(dir.path().join("mountinfo"), MOUNTINFO).unwrap();
        let o = StatusOptions {
            run_dir: dir.path().to_path_buf(),
            mountinfo: dir.path().join("mountinfo"),
            socket: dir.path().join("no-incus.socket"),
            ..StatusOptions::default()
        };
        (dir, o)
    }

    #[test]
    fn prints_the_boot_facts() {
        let (_dir, o) = booted_with(
            "slot=b\nversion=0.2.0\nroothash=abc\ndevice=/dev/sda3\ntoram=1\npersist=\n",
        );
        let mut out = Vec::new();
        assert_eq!(run(&o, false, &mut out).unwrap(), 0);
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

        let mut out = Vec::new();
        run(&o, true, &mut out).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["schema"], SCHEMA);
        assert_eq!(j["boot"]["slot"], "b");
        assert_eq!(j["boot"]["version"], "0.2.0");
        assert_eq!(j["boot"]["toram"], true);
        assert_eq!(j["boot"]["persist"], serde_json::Value::Null);
        assert_eq!(j["root"]["fstype"], "overlay");
        assert_eq!(j["incus"]["reachable"], false);
        assert!(j["incus"]["error"].is_string(), "{j}");
        assert_eq!(j["domains"], serde_json::Value::Null);
    }

    #[test]
    fn a_ventoy_boot_says_it_is_volatile() {
        let (dir, o) = booted_with("slot=a\nversion=0.2.0\nroothash=abc\ndevice=/dev/loop0p3\ntoram=0\npersist=\nmedium=ventoy\n");
        let mut out = Vec::new();
        assert_eq!(run(&o, false, &mut out).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("persist:   none\n"), "{text}");
        assert!(
            text.contains(
                "medium:    ventoy (ISO file on a Ventoy stick: no persist partition, volatile"
            ),
            "{text}"
        );
        let mut out = Vec::new();
        run(&o, true, &mut out).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["boot"]["medium"], "ventoy");
        // Without the key (an older initrd), no medium line.
        std::fs::write(dir.path().join("boot.env"), "slot=a\n").unwrap();
        let mut out = Vec::new();
        run(&o, false, &mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("medium:"));
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
        run(&o, false, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("os:        not an anklume Live OS boot"));
    }

    #[test]
    fn boot_state_and_pool_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("boot.env"),
            "slot=a\npartuuid=6a2f1c5e-0b7d-4e1a-9c3f-2d8e5b7a4c10\ntoram=1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(anklume_contract::pool::UNLOCK_RECORD),
            r#"{"partition":"/dev/vdb1","by":"tpm2"}"#,
        )
        .unwrap();
        let o = StatusOptions {
            run_dir: dir.path().to_path_buf(),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            socket: dir.path().join("no-incus.socket"),
            root: dir.path().join("fake-root"),
            pool: PathBuf::from("/proc"),
            ..StatusOptions::default()
        };
        let mut out = Vec::new();
        run(&o, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("boot:      state unknown: the boot medium was released (toram)"),
            "{text}"
        );
        assert!(text.contains("pool:      proc on /proc (proc"), "{text}");
        assert!(
            text.contains("\n           on /dev/vdb1, unlocked by the TPM\n"),
            "{text}"
        );
        let mut out = Vec::new();
        run(&o, true, &mut out).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["boot_state"]["state"], serde_json::Value::Null);
        assert!(j["boot_state"]["error"].as_str().unwrap().contains("toram"));
        assert_eq!(j["pool"]["mounted"], true);
        assert_eq!(j["pool"]["fstype"], "proc");
        assert_eq!(j["pool"]["unlocked_by"], "tpm2");
        assert_eq!(j["pool"]["partition"], "/dev/vdb1");

        let o = StatusOptions {
            pool: dir.path().to_path_buf(),
            ..o
        };
        let mut out = Vec::new();
        run(&o, true, &mut out).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["pool"]["mounted"], false);
        assert_eq!(j["pool"]["source"], serde_json::Value::Null);
    }
}
