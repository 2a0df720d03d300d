//! Carrying out the plan: the ruleset first, then the domains
//! concurrently, then orphan deletions, with failure isolation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

mod bridge;
mod schedule;

use self::schedule::carry_out;
use crate::firewall::Firewall;
use crate::images;
use crate::plan::{Change, Kind, Step};
use anklume_incus::Client;

/// How many changes run at once by default (each on its own connection).
pub const JOBS: usize = 6;

/// The reason given for every change a failed ruleset stops.
pub const RULESET_FAILED: &str = "the isolation ruleset could not be loaded";

/// A change that failed, or was not attempted because something it needs
/// failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub change: Change,
    pub skipped: bool,
    /// Incus's message or ours; for a skipped change, what it needed.
    pub reason: String,
}

/// One change carried out (or failed), for a progress line.
#[derive(Debug)]
pub struct Progress<'a> {
    /// How many changes are done, this one included.
    pub done: usize,
    pub total: usize,
    pub change: &'a Change,
    pub took: Duration,
    pub error: Option<&'a str>,
    /// What happened on the way that a person wants to know, before this
    /// change's line: e.g. an image copied into a project (by any change
    /// that finished since the last line). Written by the caller, on the
    /// caller's thread: workers never write to stderr themselves (the CLI
    /// holds stderr's lock for the whole run).
    pub notes: Vec<String>,
}

/// Carry out the plan, with failure isolation:
///
/// 1. the ruleset, alone: if it cannot be loaded, nothing else is done
///    (every other change is reported skipped, with the reason): no
///    instance may be created or started without its isolation, and a run
///    that stops there is easier to read than a half-applied one;
/// 2. the domains, up to `jobs` changes at once on their own connections.
///    Domains are independent; within one, its bridge, project, profiles
///    and volumes go one after the other, then its instances are created
///    all at once and started. Bridges go one at a time (Incus sets them
///    up one at a time anyway) while the other domains go on, their
///    instances starting meanwhile: a bridge set-up that fails because a
///    starting container's veth vanished is tried again ([`bridge`]).
///    A failing bridge, project or profile skips the rest of its domain;
///    a failing instance (or volume) fails only itself;
/// 3. orphan deletions, one at a time: instances, volumes, profiles,
///    projects, bridges.
///
/// Returns the failed and skipped changes, in plan order
/// (`progress` sees changes in the order they finish). Errs only when the
/// extra connections to Incus cannot be opened (before any change).
pub fn execute(
    c: &Client,
    plan: &[Change],
    fw: &Firewall,
    jobs: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<Failure>> {
    let shared = Shared::default();
    let mut with_notes = |mut p: Progress<'_>| {
        p.notes = std::mem::take(
            &mut *shared
                .copies
                .notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        progress(p)
    };
    let progress = &mut with_notes;
    let wanted = jobs.max(1).min(parallel_work(plan));
    let mut workers = Vec::with_capacity(wanted);
    for n in 0..wanted {
        let conn = c
            .another()
            .with_context(|| format!("opening connection {} of {wanted} to Incus", n + 1))?;
        let shared = &shared;
        workers.push(move |ch: &Change, steps: &[Step]| run_steps(&conn, ch, steps, fw, shared));
    }
    let main = |ch: &Change, steps: &[Step]| run_steps(c, ch, steps, fw, &shared);
    Ok(carry_out(plan, main, workers, progress))
}

/// The changes that run on the workers: those of the domains.
fn parallel_work(plan: &[Change]) -> usize {
    plan.iter()
        .filter(|ch| !ch.steps.is_empty() && !ch.domain.is_empty())
        .count()
}

fn run_steps(
    c: &Client,
    ch: &Change,
    steps: &[Step],
    fw: &Firewall,
    shared: &Shared,
) -> Result<()> {
    let run = || steps.iter().try_for_each(|s| run_step(c, s, fw, shared));
    if ch.kind == Kind::Network {
        bridge::retry(&shared.starts, run, bridge::PAUSE)
    } else {
        run()
    }
}

/// What the changes of one run share.
#[derive(Default)]
struct Shared {
    copies: ImageCopies,
    starts: bridge::Starts,
}

/// Image copies into projects, each done once per run even when several
/// instances of the project need it at the same time.
#[derive(Default)]
struct ImageCopies {
    done: Mutex<HashMap<(String, String), Arc<CopyResult>>>,
    /// The copies' progress lines, for the next [`Progress`].
    notes: Mutex<Vec<String>>,
}

/// Set once the copy was attempted: its outcome.
type CopyResult = OnceLock<Result<(), String>>;

impl ImageCopies {
    fn ensure(&self, c: &Client, alias: &str, project: &str) -> Result<()> {
        let cell = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((alias.to_string(), project.to_string()))
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let mut said = Vec::new();
            let r = images::ensure_in_project_with(c, alias, project, &mut said);
            let text = String::from_utf8_lossy(&said);
            self.notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(text.lines().map(str::to_string));
            r.map(drop).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
    }
}

/// An instance state change. A start that Incus refuses because the
/// instance runs already is done, not failed: at boot Incus starts the
/// instances that were running (`boot.autostart`, the last state) while the
/// agent's first apply, planned a moment before, starts them too (the
/// second boot of the VM scenario pool-btrfs failed on this).
fn set_state(c: &Client, path: &str, body: &serde_json::Value) -> Result<()> {
    match c.put(path, body) {
        Ok(_) => Ok(()),
        Err(e) if body["action"] == "start" => {
            let now: Option<serde_json::Value> = c.get_opt(path).ok().flatten();
            if now.as_ref().and_then(|v| v["status"].as_str()) == Some("Running") {
                Ok(())
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn run_step(c: &Client, s: &Step, fw: &Firewall, shared: &Shared) -> Result<()> {
    match s {
        Step::Post(p, b) => c.post(p, b).map(drop)?,
        Step::Put(p, b) => c.put(p, b).map(drop)?,
        Step::Patch(p, b) => c.patch(p, b).map(drop)?,
        Step::State(p, b) => {
            let _starting = shared.starts.start();
            set_state(c, p, b)?
        }
        Step::Delete(p) => c.delete(p).map(drop)?,
        Step::EnsureImage { alias, project } => shared.copies.ensure(c, alias, project)?,
        Step::DeleteProjectImages(project) => images::delete_all_in_project(c, project)?,
        Step::LoadRuleset => fw.load()?,
        Step::Refuse(why) => anyhow::bail!("{why}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::set_state;
    use anklume_incus_testkit::{testimage, TestDaemon};
    use serde_json::json;

    /// A real incusd: the plan's start of an instance that Incus has
    /// started meanwhile succeeds; a start that fails for another reason
    /// (no such instance) still fails.
    #[test]
    fn a_start_finding_the_instance_running_is_done() {
        let tmp = tempfile::Builder::new()
            .prefix("anklume-start-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let d = TestDaemon::start(&tmp.path().join("incus")).unwrap();
        let c = d.client().unwrap();
        testimage::create_dir_pool(&c, "default").unwrap();
        testimage::import(&c, &tmp.path().join("image"), "t").unwrap();
        c.post(
            "/1.0/instances",
            &json!({
                "name": "r1",
                "type": "container",
                "source": {"type": "image", "alias": "t"},
                "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            }),
        )
        .unwrap();
        let path = "/1.0/instances/r1/state?project=default";
        let start = json!({"action": "start", "timeout": 60});
        // Incus (its autostart) gets there first.
        c.put(path, &start).unwrap();
        set_state(&c, path, &start).unwrap();
        let e = set_state(&c, "/1.0/instances/nope/state?project=default", &start).unwrap_err();
        assert!(format!("{e:#}").contains("not found"), "{e:#}");
        c.put(
            path,
            &json!({"action": "stop", "timeout": 30, "force": true}),
        )
        .unwrap();
        d.close().unwrap();
    }
}
