//! `anklume health`: is this boot healthy enough to be kept?
//!
//! Checks, each reported with what it found:
//!
//! | check | passes when |
//! |---|---|
//! | `pool` | a file system is mounted at the pool's mount point |
//! | `incus` | Incus answers `GET /1.0` on its socket (5 s) |
//! | `apply` | the last apply recorded in the state folder converged, on the `infra.yml` that is there now |
//! | `ruleset` | table `inet anklume` is loaded and is the one `infra.yml` gives |
//! | `health.d/<name>` | each executable in the checks folder exits 0 within the timeout |
//!
//! Extra checks: regular files with an execute bit in the folder
//! (`/etc/anklume/health.d` by default), run in name order with no
//! arguments and stdin closed; other files are listed as ignored. A check
//! still running at the timeout is killed (with its process group) and
//! fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{lastapply, pool};

/// The folder of extra checks.
pub const CHECKS_DIR: &str = "/etc/anklume/health.d";
/// How long one extra check may run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// The data pool's mount point.
    pub pool: PathBuf,
    pub mountinfo: PathBuf,
    pub socket: PathBuf,
    /// Where the last apply left its record.
    pub state_dir: PathBuf,
    /// `infra.yml` the ruleset and the last apply are judged against.
    pub infra: PathBuf,
    pub context_dir: Option<PathBuf>,
    /// Network namespace of Incus's bridges (for `nft`).
    pub netns: Option<PathBuf>,
    pub checks_dir: PathBuf,
    pub check_timeout: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        let pool = PathBuf::from(pool::POOL_DIR);
        HealthOptions {
            infra: pool::default_infra(&pool),
            pool,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            socket: anklume_incus::client::default_socket(),
            state_dir: PathBuf::from(anklume_reconciler::desired::STATE_DIR),
            context_dir: None,
            netns: None,
            checks_dir: PathBuf::from(CHECKS_DIR),
            check_timeout: CHECK_TIMEOUT,
        }
    }
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn verdict(name: &str, r: std::result::Result<String, String>) -> Check {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        name: name.to_string(),
        ok,
        detail,
    }
}

/// Run every check; none is skipped because another failed.
pub fn run_checks(o: &HealthOptions) -> Vec<Check> {
    let mut out = vec![
        verdict("pool", check_pool(o)),
        verdict("incus", check_incus(o)),
        verdict("apply", check_apply(o)),
        verdict("ruleset", check_ruleset(o)),
    ];
    out.extend(extra_checks(&o.checks_dir, o.check_timeout));
    out
}

/// Print the verdicts; true when all passed.
pub fn report(checks: &[Check], out: &mut dyn Write) -> Result<bool> {
    for c in checks {
        writeln!(
            out,
            "{} {:<10} {}",
            if c.ok { "ok    " } else { "FAILED" },
            c.name,
            c.detail
        )?;
    }
    Ok(checks.iter().all(|c| c.ok))
}

fn check_pool(o: &HealthOptions) -> std::result::Result<String, String> {
    match pool::mounted_at(&o.mountinfo, &o.pool) {
        Ok(Some(m)) => Ok(format!(
            "{} mounted at {} ({})",
            m.source,
            o.pool.display(),
            m.fstype
        )),
        Ok(None) => Err(format!(
            "nothing is mounted at {}: the data pool is not unlocked and mounted",
            o.pool.display()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn check_incus(o: &HealthOptions) -> std::result::Result<String, String> {
    let c = anklume_incus::Client::connect_with_timeout(&o.socket, Duration::from_secs(5))
        .map_err(|e| format!("{}: {e:#}", o.socket.display()))?;
    let v: serde_json::Value = c
        .get("/1.0")
        .map_err(|e| format!("{}: {e:#}", o.socket.display()))?;
    Ok(format!(
        "Incus {} answers on {}",
        v["environment"]["server_version"].as_str().unwrap_or("?"),
        o.socket.display()
    ))
}

fn check_apply(o: &HealthOptions) -> std::result::Result<String, String> {
    let path = o.state_dir.join(lastapply::FILE);
    let r = lastapply::read(&o.state_dir)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("no apply recorded ({} is missing)", path.display()))?;
    if !r.converged() {
        return Err(format!("the last apply did not converge: {}", r.describe()));
    }
    if r.infra_sha256.is_some() && lastapply::sha256_of(&o.infra) != r.infra_sha256 {
        return Err(format!(
            "{} changed since the last apply (of {})",
            o.infra.display(),
            r.infra.display()
        ));
    }
    Ok(format!("the last apply converged ({})", r.describe()))
}

fn check_ruleset(o: &HealthOptions) -> std::result::Result<String, String> {
    let so = anklume_reconciler::status::StatusOptions {
        infra: Some(o.infra.clone()),
        context_dir: o.context_dir.clone(),
        netns: o.netns.clone(),
        ..anklume_reconciler::status::StatusOptions::default()
    };
    let r = anklume_reconciler::status::ruleset(&so);
    let live = r.live_hash.clone().unwrap_or_default();
    match r.state {
        "current" => Ok(format!("table inet anklume is current ({live})")),
        "absent" => Err("table inet anklume is not loaded: domains are not isolated".into()),
        "different" => Err(format!(
            "table inet anklume ({live}) is not the ruleset {} gives ({})",
            o.infra.display(),
            r.want_hash.unwrap_or_default()
        )),
        "present" => Err(format!(
            "table inet anklume is loaded ({live}) but {} could not be read to compare",
            o.infra.display()
        )),
        _ => Err(format!(
            "nft could not be asked: {}",
            r.error.unwrap_or_default()
        )),
    }
}

/// The folder's executables, in name order.
fn extra_checks(dir: &Path, timeout: Duration) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
        Err(e) => {
            return vec![verdict(
                "health.d",
                Err(format!("listing {}: {e}", dir.display())),
            )]
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = format!(
            "health.d/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                out.push(verdict(&name, Err(format!("{}: {e}", p.display()))));
                continue;
            }
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            // Not a check: a README, a disabled check (chmod -x).
            continue;
        }
        out.push(verdict(&name, run_one(&p, timeout)));
    }
    out
}

fn run_one(p: &Path, timeout: Duration) -> std::result::Result<String, String> {
    use std::process::Stdio;
    let mut child = anklume_cmd::Cmd::new(p)
        .process_group(0)
        .spawn(Stdio::piped(), Stdio::piped())
        .map_err(|e| format!("{e:#}"))?;
    // Drain both pipes while waiting: a chatty check must not block.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let so = drain(child.stdout.take().map(|x| Box::new(x) as _));
    let se = drain(child.stderr.take().map(|x| Box::new(x) as _));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s: killed",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {}: {e}", p.display())),
        }
    };
    let stdout = so.join().unwrap_or_default();
    let stderr = se.join().unwrap_or_default();
    let tail = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let said = {
        let e = tail(&stderr);
        if e.is_empty() {
            tail(&stdout)
        } else {
            e
        }
    };
    if status.success() {
        Ok(if said.is_empty() {
            "exit 0".into()
        } else {
            said
        })
    } else {
        Err(format!(
            "{status}{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))
    }
}

/// `anklume health`: run the checks, print them; `Ok(true)` when healthy.
pub fn run(o: &HealthOptions, out: &mut dyn Write) -> Result<bool> {
    let checks = run_checks(o);
    report(&checks, out).context("writing the health report")
}
