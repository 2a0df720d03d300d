//! Carrying out the plan: the ruleset first, then the domains
//! concurrently, then orphan deletions, with failure isolation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

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
}

/// Carry out the plan, with failure isolation:
///
/// 1. the ruleset, alone: if it cannot be loaded, nothing else is done
///    (every other change is reported skipped, with the reason): no
///    instance may be created or started without its isolation, and a run
///    that stops there is easier to read than a half-applied one;
/// 2. the domains, up to `jobs` changes at once on their own connections:
///    domains are independent; within one, its bridge, project, profiles
///    and volumes go one after the other, then its instances all at once.
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
    let copies = ImageCopies::default();
    let wanted = jobs.max(1).min(parallel_work(plan));
    let mut workers = Vec::with_capacity(wanted);
    for n in 0..wanted {
        let conn = c
            .another()
            .with_context(|| format!("opening connection {} of {wanted} to Incus", n + 1))?;
        let copies = &copies;
        workers.push(move |ch: &Change| run_change(&conn, ch, fw, copies));
    }
    let main = |ch: &Change| run_change(c, ch, fw, &copies);
    Ok(carry_out(plan, main, workers, progress))
}

/// The changes that run on the workers: those of the domains.
fn parallel_work(plan: &[Change]) -> usize {
    plan.iter()
        .filter(|ch| !ch.steps.is_empty() && !ch.domain.is_empty())
        .count()
}

fn run_change(c: &Client, ch: &Change, fw: &Firewall, copies: &ImageCopies) -> Result<()> {
    ch.steps.iter().try_for_each(|s| run_step(c, s, fw, copies))
}

/// Run one change, timed (the report names the change; the error says
/// what went wrong).
fn attempt(
    run: &mut dyn FnMut(&Change) -> Result<()>,
    ch: &Change,
) -> (Duration, Result<(), String>) {
    let t = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(ch)))
        .unwrap_or_else(|_| Err(anyhow!("panicked (a bug in anklume)")))
        .map_err(|e| format!("{e:#}"));
    (t.elapsed(), r)
}

/// What has been done so far.
struct Tally<'p, 'f> {
    plan: &'p [Change],
    total: usize,
    done: usize,
    /// (index in the plan, skipped, reason)
    failed: Vec<(usize, bool, String)>,
    progress: &'f mut dyn FnMut(Progress<'_>),
}

impl Tally<'_, '_> {
    fn finish(&mut self, i: usize, took: Duration, r: Result<(), String>) -> bool {
        self.done += 1;
        (self.progress)(Progress {
            done: self.done,
            total: self.total,
            change: &self.plan[i],
            took,
            error: r.as_ref().err().map(String::as_str),
        });
        match r {
            Ok(()) => true,
            Err(e) => {
                self.failed.push((i, false, e));
                false
            }
        }
    }

    fn skip(&mut self, i: usize, why: &str) {
        self.failed.push((i, true, why.to_string()));
    }

    fn into_failed(mut self) -> Vec<Failure> {
        self.failed.sort_by_key(|(i, _, _)| *i);
        self.failed
            .into_iter()
            .map(|(i, skipped, reason)| Failure {
                change: self.plan[i].clone(),
                skipped,
                reason,
            })
            .collect()
    }
}

/// One domain's changes still to run.
#[derive(Default)]
struct DomainWork {
    /// Bridge, project, profiles, volumes: one after the other.
    chain: VecDeque<usize>,
    /// Released when the chain is done.
    instances: Vec<usize>,
}

/// [`execute`]'s scheduling, apart from Incus: `main` runs the ruleset and
/// the orphans on this thread, each of `workers` runs domain changes on its
/// own thread.
fn carry_out<W>(
    plan: &[Change],
    mut main: impl FnMut(&Change) -> Result<()>,
    workers: Vec<W>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Vec<Failure>
where
    W: FnMut(&Change) -> Result<()> + Send,
{
    let todo: Vec<usize> = (0..plan.len())
        .filter(|&i| !plan[i].steps.is_empty())
        .collect();
    let mut tally = Tally {
        plan,
        total: todo.len(),
        done: 0,
        failed: Vec::new(),
        progress,
    };

    // 1. The ruleset.
    let mut ruleset_error = None;
    for &i in todo.iter().filter(|&&i| plan[i].kind == Kind::Firewall) {
        let (took, r) = attempt(&mut main, &plan[i]);
        if let Err(e) = &r {
            ruleset_error = Some(format!("{RULESET_FAILED}: {}", headline(e)));
        }
        tally.finish(i, took, r);
    }
    if let Some(why) = ruleset_error {
        for &i in todo.iter().filter(|&&i| plan[i].kind != Kind::Firewall) {
            tally.skip(i, &why);
        }
        return tally.into_failed();
    }

    // 2. The domains.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut domains: Vec<DomainWork> = Vec::new();
    for &i in &todo {
        let ch = &plan[i];
        if ch.domain.is_empty() || ch.kind == Kind::Firewall {
            continue;
        }
        let d = *names.entry(ch.domain.as_str()).or_insert_with(|| {
            domains.push(DomainWork::default());
            domains.len() - 1
        });
        if ch.kind == Kind::Instance {
            domains[d].instances.push(i);
        } else {
            domains[d].chain.push_back(i);
        }
    }
    // Lowest plan index first: earlier domains finish first.
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    let release = |w: &mut DomainWork, ready: &mut BTreeSet<usize>| match w.chain.pop_front() {
        Some(next) => {
            ready.insert(next);
        }
        None => ready.extend(w.instances.drain(..)),
    };
    for w in &mut domains {
        release(w, &mut ready);
    }
    if !ready.is_empty() {
        assert!(!workers.is_empty(), "domain changes to run and no worker");
        let slots = workers.len();
        let (task_tx, task_rx) = mpsc::channel::<usize>();
        let task_rx = Mutex::new(task_rx);
        let (done_tx, done_rx) = mpsc::channel::<(usize, Duration, Result<(), String>)>();
        std::thread::scope(|s| {
            for mut w in workers {
                let (task_rx, done_tx) = (&task_rx, done_tx.clone());
                s.spawn(move || loop {
                    let next = task_rx
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    let Ok(i) = next else { break };
                    let (took, r) = attempt(&mut w, &plan[i]);
                    if done_tx.send((i, took, r)).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);
            let mut in_flight = 0;
            loop {
                while in_flight < slots {
                    let Some(i) = ready.pop_first() else { break };
                    task_tx.send(i).expect("the workers outlive the queue");
                    in_flight += 1;
                }
                if in_flight == 0 {
                    break;
                }
                let (i, took, r) = done_rx.recv().expect("a worker answers every task");
                in_flight -= 1;
                let ch = &plan[i];
                let ok = tally.finish(i, took, r);
                if ch.kind == Kind::Instance {
                    continue;
                }
                let w = &mut domains[names[ch.domain.as_str()]];
                if !ok && ch.kind.blocks_domain() {
                    for j in w.chain.drain(..).chain(w.instances.drain(..)) {
                        tally.skip(j, "an earlier change of this domain failed");
                    }
                } else {
                    release(w, &mut ready);
                }
            }
            drop(task_tx);
        });
    }

    // 3. Orphans, the most dependent kind first.
    let mut orphans: Vec<usize> = todo
        .iter()
        .copied()
        .filter(|&i| plan[i].domain.is_empty() && plan[i].kind != Kind::Firewall)
        .collect();
    orphans.sort_by_key(|&i| std::cmp::Reverse(plan[i].kind));
    for i in orphans {
        let (took, r) = attempt(&mut main, &plan[i]);
        tally.finish(i, took, r);
    }
    tally.into_failed()
}

/// The first line of an error chain, without a trailing colon.
fn headline(e: &str) -> &str {
    e.lines().next().unwrap_or("").trim_end_matches(':')
}

/// Image copies into projects, each done once per run even when several
/// instances of the project need it at the same time.
#[derive(Default)]
struct ImageCopies(Mutex<HashMap<(String, String), Arc<CopyResult>>>);

/// Set once the copy was attempted: its outcome.
type CopyResult = OnceLock<Result<(), String>>;

impl ImageCopies {
    fn ensure(&self, c: &Client, alias: &str, project: &str) -> Result<()> {
        let cell = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((alias.to_string(), project.to_string()))
            .or_default()
            .clone();
        cell.get_or_init(|| {
            images::ensure_in_project(c, alias, project).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
    }
}

fn run_step(c: &Client, s: &Step, fw: &Firewall, copies: &ImageCopies) -> Result<()> {
    match s {
        Step::Post(p, b) => c.post(p, b).map(drop)?,
        Step::Put(p, b) => c.put(p, b).map(drop)?,
        Step::Patch(p, b) => c.patch(p, b).map(drop)?,
        Step::Delete(p) => c.delete(p).map(drop)?,
        Step::EnsureImage { alias, project } => copies.ensure(c, alias, project)?,
        Step::DeleteProjectImages(project) => images::delete_all_in_project(c, project)?,
        Step::LoadRuleset => fw.load()?,
        Step::Refuse(why) => anyhow::bail!("{why}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::plan::Verb;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn ch(kind: Kind, name: &str, domain: &str, verb: Verb) -> Change {
        Change::new(kind, name, domain, verb, "").with_steps(vec![Step::Delete(name.into())])
    }

    /// The ruleset, two domains (bridge, project, profile, two instances
    /// each), an unchanged line and two orphans.
    fn sample() -> Vec<Change> {
        let mut plan = vec![ch(Kind::Firewall, "inet anklume", "", Verb::Create)];
        for d in ["a", "b"] {
            plan.push(ch(Kind::Network, &format!("net-{d}"), d, Verb::Create));
            plan.push(ch(Kind::Project, d, d, Verb::Create));
            plan.push(ch(Kind::Profile, &format!("{d}/default"), d, Verb::Create));
            plan.push(Change::new(
                Kind::Volume,
                "unchanged",
                d,
                Verb::Unchanged,
                "",
            ));
            plan.push(ch(Kind::Instance, &format!("{d}/x"), d, Verb::Create));
            plan.push(ch(Kind::Instance, &format!("{d}/y"), d, Verb::Create));
        }
        plan.push(ch(Kind::Network, "net-old", "", Verb::Delete));
        plan.push(ch(Kind::Instance, "old/z", "", Verb::Delete));
        plan
    }

    fn run(
        plan: &[Change],
        jobs: usize,
        main: impl FnMut(&Change) -> Result<()>,
        worker: impl Fn(&Change) -> Result<()> + Sync,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let worker = &worker;
        let workers: Vec<_> = (0..jobs).map(|_| move |c: &Change| worker(c)).collect();
        let mut seen = Vec::new();
        let failed = carry_out(plan, main, workers, &mut |p| {
            seen.push(p.change.name.clone());
        });
        let failed = failed
            .into_iter()
            .map(|f| {
                let skipped = if f.skipped { "skipped: " } else { "" };
                (f.change.name, format!("{skipped}{}", f.reason))
            })
            .collect();
        (failed, seen)
    }

    #[test]
    fn a_failed_ruleset_stops_everything_else_with_the_reason() {
        let plan = sample();
        let mut main_calls = Vec::new();
        let (failed, seen) = run(
            &plan,
            4,
            |c| {
                main_calls.push(c.name.clone());
                anyhow::bail!("`nft -f -` failed (exit status: 1):\nError: no such thing")
            },
            |c| panic!("{} ran although the ruleset failed", c.name),
        );
        assert_eq!(main_calls, ["inet anklume"]);
        assert_eq!(seen, ["inet anklume"]);
        let why = "skipped: the isolation ruleset could not be loaded: `nft -f -` failed (exit status: 1)";
        let mut want = vec![(
            "inet anklume".to_string(),
            "`nft -f -` failed (exit status: 1):\nError: no such thing".to_string(),
        )];
        for c in plan.iter().skip(1).filter(|c| !c.steps.is_empty()) {
            want.push((c.name.clone(), why.to_string()));
        }
        assert_eq!(failed, want);
        assert_eq!(failed.len(), 13);
    }

    #[test]
    fn a_failed_bridge_stops_its_domain_a_failed_instance_only_itself() {
        let plan = sample();
        let mut main_calls = Vec::new();
        let worker_calls = Mutex::new(Vec::new());
        let (failed, seen) = run(
            &plan,
            3,
            |c| {
                main_calls.push(c.name.clone());
                Ok(())
            },
            |c| {
                worker_calls.lock().unwrap().push(c.name.clone());
                match c.name.as_str() {
                    "net-a" => anyhow::bail!("bridge refused"),
                    "b/x" => anyhow::bail!("image missing"),
                    _ => Ok(()),
                }
            },
        );
        let skipped = "skipped: an earlier change of this domain failed".to_string();
        assert_eq!(
            failed,
            [
                ("net-a".to_string(), "bridge refused".to_string()),
                ("a".into(), skipped.clone()),
                ("a/default".into(), skipped.clone()),
                ("a/x".into(), skipped.clone()),
                ("a/y".into(), skipped),
                ("b/x".into(), "image missing".into()),
            ]
        );
        // The ruleset first, the orphans last (instances before bridges).
        assert_eq!(main_calls, ["inet anklume", "old/z", "net-old"]);
        let mut worked = worker_calls.into_inner().unwrap();
        worked.sort();
        assert_eq!(worked, ["b", "b/default", "b/x", "b/y", "net-a", "net-b"]);
        assert_eq!(seen.len(), 9);
        assert_eq!(seen.first().map(String::as_str), Some("inet anklume"));
    }

    #[test]
    fn instances_wait_for_their_domain_then_run_together() {
        let plan = sample();
        let profile_done = [AtomicBool::new(false), AtomicBool::new(false)];
        let started = AtomicUsize::new(0);
        let (failed, _) = run(
            &plan,
            4,
            |_| Ok(()),
            |c| {
                let d = usize::from(c.domain == "b");
                match c.kind {
                    Kind::Profile => profile_done[d].store(true, Ordering::SeqCst),
                    Kind::Instance => {
                        anyhow::ensure!(
                            profile_done[d].load(Ordering::SeqCst),
                            "{} started before its domain's profile",
                            c.name
                        );
                        // All four instances must be in flight at once.
                        started.fetch_add(1, Ordering::SeqCst);
                        let t = Instant::now();
                        while started.load(Ordering::SeqCst) < 4 {
                            anyhow::ensure!(
                                t.elapsed() < Duration::from_secs(10),
                                "{} never saw the other instances run with it",
                                c.name
                            );
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    _ => {}
                }
                Ok(())
            },
        );
        assert_eq!(failed, []);
    }

    #[test]
    fn one_worker_runs_everything_in_order() {
        let plan = sample();
        let order = Mutex::new(Vec::new());
        let (failed, seen) = run(
            &plan,
            1,
            |c| {
                order.lock().unwrap().push(c.name.clone());
                Ok(())
            },
            |c| {
                order.lock().unwrap().push(c.name.clone());
                Ok(())
            },
        );
        assert_eq!(failed, []);
        let want = [
            "inet anklume",
            "net-a",
            "a",
            "a/default",
            "a/x",
            "a/y",
            "net-b",
            "b",
            "b/default",
            "b/x",
            "b/y",
            "old/z",
            "net-old",
        ];
        assert_eq!(*order.lock().unwrap(), want);
        assert_eq!(seen, want);
    }
}
