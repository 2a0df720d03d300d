//! `anklume agent`: converge to `infra.yml`, then again at every change.
//!
//! One run = `anklume sync` (the Ansible tree next to `infra.yml`) then
//! `anklume apply`, in-process, everything logged to the given writer
//! (stderr: the journal under systemd), and the outcome recorded for the
//! health check ([`crate::lastapply`]). A failed run is logged and
//! recorded; the loop goes on and tries again at the next change. The loop
//! ends only when `stop` is set (tests) or the process is signalled
//! (systemd); an interrupted run converges at the next start.
//!
//! Without a data pool mounted there is nothing to converge: the agent
//! says so and returns [`Exit::NoPool`] (the service then exits 0, and the
//! pool's mount unit starts it again once the pool is there).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::lastapply::{self, Record};
use crate::pool;
use crate::watch::Watcher;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `infra.yml` (or an `infra/` folder).
    pub infra: PathBuf,
    /// The data pool's mount point: nothing is done unless a file system is
    /// mounted there (`None`: no such requirement).
    pub pool: Option<PathBuf>,
    pub mountinfo: PathBuf,
    /// Where `anklume sync` writes the Ansible tree.
    pub base_dir: PathBuf,
    pub context_dir: Option<PathBuf>,
    /// What `anklume apply` would be given (its `infra` and `context_dir`
    /// are replaced by the ones above).
    pub apply: anklume_reconciler::ApplyOptions,
    /// Where the run's record goes.
    pub state_dir: PathBuf,
    /// Quiet time after a change before the run starts.
    pub debounce: Duration,
    /// Before each apply, make the storage pool and the bootstrap image
    /// when Incus lacks them (the Live OS on a new pool).
    pub bootstrap_incus: bool,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// No data pool is mounted yet.
    NoPool,
    /// `stop` was set.
    Stopped,
}

/// One run: sync, then apply; recorded in the state folder.
pub fn converge(o: &AgentOptions, log: &mut dyn Write) -> Record {
    let started = Instant::now();
    let rec = Record::new(&o.infra);
    let rec = match run_once(o, log) {
        Ok(Ok((code, summary))) => rec.with_summary(code, &summary),
        Ok(Err(why)) | Err(why) => Record {
            error: Some(why),
            ..rec
        },
    };
    let mut line = format!(
        "anklume agent: {} {} ({:.1} s)",
        if rec.converged() {
            "converged:"
        } else {
            "NOT converged:"
        },
        rec.describe(),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = lastapply::write(&o.state_dir, &rec) {
        line.push_str(&format!("; the record could not be written: {e:#}"));
    }
    let _ = writeln!(log, "{line}");
    rec
}

type Outcome = std::result::Result<(i32, anklume_reconciler::ApplySummary), String>;

fn run_once(o: &AgentOptions, log: &mut dyn Write) -> std::result::Result<Outcome, String> {
    let sync = anklume_generator::SyncOptions {
        infra: Some(o.infra.clone()),
        base_dir: o.base_dir.clone(),
        dry_run: false,
        clean_orphans: false,
        context_dir: o.context_dir.clone(),
        host: None,
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let synced = anklume_generator::run(&sync, &mut out, &mut err);
    let _ = log.write_all(&err);
    let _ = log.write_all(&out);
    match synced {
        Ok(anklume_generator::Outcome::Done(_)) => {}
        Ok(anklume_generator::Outcome::Invalid) => {
            return Err(format!(
                "{} is invalid (errors above); nothing applied",
                o.infra.display()
            ))
        }
        Err(e) => return Err(format!("sync: {e:#}")),
    }
    if o.bootstrap_incus {
        bootstrap_incus(o, log).map_err(|e| format!("preparing Incus: {e:#}"))?;
    }
    let mut a = o.apply.clone();
    a.infra = Some(o.infra.clone());
    a.context_dir = o.context_dir.clone();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let applied = anklume_reconciler::run(&a, &mut out, &mut err);
    let _ = log.write_all(&out);
    let _ = log.write_all(&err);
    Ok(applied.map_err(|e| format!("apply: {e:#}")))
}

/// What a fresh Incus on a new pool lacks: the storage pool apply puts
/// root disks on (a `dir` pool, on the encrypted pool's `incus` subvolume)
/// and the bootstrap image the first `infra.yml` names (made from this
/// machine's busybox: no network needed). Each is made only when missing.
fn bootstrap_incus(o: &AgentOptions, log: &mut dyn Write) -> Result<()> {
    use anklume_incus::localimage;
    let c = anklume_incus::Client::connect(&o.apply.socket)?;
    let pool = &o.apply.settings.pool;
    if localimage::ensure_dir_pool(&c, pool)? {
        writeln!(log, "anklume agent: made the storage pool {pool} (dir)")?;
    }
    let work = std::env::temp_dir().join(format!("anklume-base-{}", std::process::id()));
    if let Some(fp) = localimage::ensure_base(&c, &work)? {
        writeln!(
            log,
            "anklume agent: imported the bootstrap image {} ({})",
            localimage::BASE_ALIAS,
            &fp[..12.min(fp.len())]
        )?;
    }
    Ok(())
}

/// The loop (see the module docs); `on_run` sees each run's record.
pub fn run(
    o: &AgentOptions,
    stop: &AtomicBool,
    log: &mut dyn Write,
    on_run: &mut dyn FnMut(&Record),
) -> Result<Exit> {
    if let Some(p) = &o.pool {
        if pool::mounted_at(&o.mountinfo, p)?.is_none() {
            writeln!(
                log,
                "anklume agent: no data pool mounted at {} yet: nothing to converge",
                p.display()
            )?;
            return Ok(Exit::NoPool);
        }
    }
    // Watch first: a change made during the first run is not lost.
    let watcher = Watcher::new(&o.infra)?;
    writeln!(log, "anklume agent: watching {}", o.infra.display())?;
    let mut pending = true;
    let mut ready = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Exit::Stopped);
        }
        if pending {
            pending = false;
            let status = if o.infra.exists() {
                let rec = converge(o, log);
                on_run(&rec);
                format!(
                    "{}: {}",
                    if rec.converged() {
                        "converged"
                    } else {
                        "NOT converged"
                    },
                    rec.describe()
                )
            } else {
                writeln!(
                    log,
                    "anklume agent: {} does not exist yet; waiting for it",
                    o.infra.display()
                )?;
                format!("waiting for {}", o.infra.display())
            };
            // systemd: started once the first run is over (the health
            // check is ordered after that); then the latest outcome.
            let msg = if ready {
                format!("STATUS={status}")
            } else {
                format!("READY=1\nSTATUS={status}")
            };
            ready = true;
            if let Err(e) = crate::notify::notify(&msg) {
                writeln!(log, "anklume agent: {e:#}")?;
            }
        }
        if watcher.wait(Duration::from_millis(250))? {
            watcher.settle(o.debounce, stop)?;
            writeln!(log, "anklume agent: {} changed", o.infra.display())?;
            pending = true;
        }
    }
}
