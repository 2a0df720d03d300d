//! The scheduling of [`super::execute`], apart from Incus: the ruleset
//! alone, the domains on worker threads (each domain's chain in order, its
//! instances at once, bridges one at a time and first), then the orphans;
//! failures skip what depends on them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use anyhow::{anyhow, Result};

use super::{Failure, Progress, RULESET_FAILED};
use crate::plan::{Change, Kind, Step};

/// Run one change, timed (the report names the change; the error says
/// what went wrong).
fn attempt(
    run: &mut dyn FnMut(&[Step]) -> Result<()>,
    steps: &[Step],
) -> (Duration, Result<(), String>) {
    let t = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(steps)))
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
            notes: Vec::new(),
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

/// Which steps of a change a task runs: an instance's creation (or
/// update), then its start, as a second task (a start is the costliest
/// step in CPU: the slot goes back to the queue, where a bridge comes
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Before,
    Start,
}

/// Where an instance change's start begins (its steps' length when it
/// has none; 0 for other kinds: they are all `Before`).
fn start_at(ch: &Change) -> usize {
    if ch.kind != Kind::Instance {
        return ch.steps.len();
    }
    ch.steps
        .iter()
        .position(|s| matches!(s, Step::State(..)))
        .unwrap_or(ch.steps.len())
}

fn part_steps(ch: &Change, part: Part) -> &[Step] {
    let at = start_at(ch);
    match part {
        Part::Before => &ch.steps[..at],
        Part::Start => &ch.steps[at..],
    }
}

/// The workers' queue and the domains' progress.
struct Pool<'p> {
    plan: &'p [Change],
    slots: usize,
    in_flight: usize,
    /// Bridges in flight (Incus sets them up one at a time anyway: more
    /// would only hold slots).
    bridges_in_flight: usize,
    tasks: mpsc::Sender<(usize, Part)>,
    done: mpsc::Receiver<(usize, Part, Duration, Result<(), String>)>,
    /// Ready to run, lowest plan index first (earlier domains finish
    /// first).
    ready: BTreeSet<(usize, Part)>,
    /// Time spent so far on changes run in parts.
    took: HashMap<usize, Duration>,
}

impl Pool<'_> {
    /// Make the domain's next change ready: the next of its chain, or,
    /// the chain done, all its instances.
    fn release(&mut self, w: &mut DomainWork) {
        match w.chain.pop_front() {
            Some(next) => {
                self.ready.insert((next, Part::Before));
            }
            None => {
                for i in std::mem::take(&mut w.instances) {
                    let part = if start_at(&self.plan[i]) == 0 {
                        Part::Start
                    } else {
                        Part::Before
                    };
                    self.ready.insert((i, part));
                }
            }
        }
    }

    /// The next task to hand out, if a slot is free: a bridge when none is
    /// being made (bridges are made one at a time, and every later change
    /// of their domains waits for them: they are the run's longest chain),
    /// else the ready task of the lowest plan index.
    fn next(&mut self) -> Option<(usize, Part)> {
        if self.in_flight >= self.slots {
            return None;
        }
        let plan = self.plan;
        let is_bridge = |(i, _): &&(usize, Part)| plan[*i].kind == Kind::Network;
        let task = if self.bridges_in_flight == 0 {
            self.ready
                .iter()
                .find(is_bridge)
                .or_else(|| self.ready.first())
        } else {
            self.ready.iter().find(|t| !is_bridge(t))
        };
        let task = *task?;
        self.ready.remove(&task);
        Some(task)
    }

    /// Run until nothing is ready or running. A failing bridge, project or
    /// profile skips the rest of its domain; a failing instance or volume
    /// fails only itself.
    fn run(
        &mut self,
        domains: &mut [DomainWork],
        names: &HashMap<&str, usize>,
        tally: &mut Tally<'_, '_>,
    ) {
        loop {
            while let Some((i, part)) = self.next() {
                if self.plan[i].kind == Kind::Network {
                    self.bridges_in_flight += 1;
                }
                self.tasks
                    .send((i, part))
                    .expect("the workers outlive the queue");
                self.in_flight += 1;
            }
            if self.in_flight == 0 {
                return;
            }
            let (i, part, took, r) = self.done.recv().expect("a worker answers every task");
            self.in_flight -= 1;
            let ch = &self.plan[i];
            let took = took + self.took.remove(&i).unwrap_or_default();
            if ch.kind == Kind::Instance {
                if part == Part::Before && r.is_ok() && start_at(ch) < ch.steps.len() {
                    self.took.insert(i, took);
                    self.ready.insert((i, Part::Start));
                } else {
                    tally.finish(i, took, r);
                }
                continue;
            }
            let ok = tally.finish(i, took, r);
            if ch.kind == Kind::Network {
                self.bridges_in_flight -= 1;
            }
            let w = &mut domains[names[ch.domain.as_str()]];
            if !ok && ch.kind.blocks_domain() {
                for j in w.chain.drain(..).chain(w.instances.drain(..)) {
                    tally.skip(j, "an earlier change of this domain failed");
                }
            } else {
                self.release(w);
            }
        }
    }
}

/// [`execute`]'s scheduling, apart from Incus: `main` runs the ruleset and
/// the orphans on this thread, each of `workers` runs domain changes on its
/// own thread.
pub(super) fn carry_out<W>(
    plan: &[Change],
    mut main: impl FnMut(&Change, &[Step]) -> Result<()>,
    workers: Vec<W>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Vec<Failure>
where
    W: FnMut(&Change, &[Step]) -> Result<()> + Send,
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
        let (took, r) = attempt(&mut |s| main(&plan[i], s), &plan[i].steps);
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
        match ch.kind {
            Kind::Instance => domains[d].instances.push(i),
            _ => domains[d].chain.push_back(i),
        }
    }
    if !domains.is_empty() {
        assert!(!workers.is_empty(), "domain changes to run and no worker");
        let slots = workers.len();
        let (task_tx, task_rx) = mpsc::channel::<(usize, Part)>();
        let task_rx = Mutex::new(task_rx);
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|s| {
            for mut w in workers {
                let (task_rx, done_tx) = (&task_rx, done_tx.clone());
                s.spawn(move || loop {
                    let next = task_rx
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    let Ok((i, part)) = next else { break };
                    let ch = &plan[i];
                    let (took, r) = attempt(&mut |s| w(ch, s), part_steps(ch, part));
                    if done_tx.send((i, part, took, r)).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);
            let mut pool = Pool {
                plan,
                slots,
                in_flight: 0,
                bridges_in_flight: 0,
                tasks: task_tx,
                done: done_rx,
                ready: BTreeSet::new(),
                took: HashMap::new(),
            };
            for w in &mut domains {
                pool.release(w);
            }
            pool.run(&mut domains, &names, &mut tally);
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
        let (took, r) = attempt(&mut |s| main(&plan[i], s), &plan[i].steps);
        tally.finish(i, took, r);
    }
    tally.into_failed()
}

/// The first line of an error chain, without a trailing colon.
fn headline(e: &str) -> &str {
    e.lines().next().unwrap_or("").trim_end_matches(':')
}

#[cfg(test)]
mod tests {
    use crate::plan::Verb;
    use serde_json::Value;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn ch(kind: Kind, name: &str, domain: &str, verb: Verb) -> Change {
        let steps = if kind == Kind::Instance && verb == Verb::Create {
            vec![
                Step::Post(name.into(), Value::Null),
                Step::State(name.into(), Value::Null),
            ]
        } else {
            vec![Step::Delete(name.into())]
        };
        Change::new(kind, name, domain, verb, "").with_steps(steps)
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

    /// What a runner was asked: the change's name, `+ start` for its
    /// start.
    fn call(c: &Change, steps: &[Step]) -> String {
        match steps.first() {
            Some(Step::State(..)) => format!("{} start", c.name),
            _ => c.name.clone(),
        }
    }

    fn run(
        plan: &[Change],
        jobs: usize,
        main: impl FnMut(&Change, &[Step]) -> Result<()>,
        worker: impl Fn(&Change, &[Step]) -> Result<()> + Sync,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let worker = &worker;
        let workers: Vec<_> = (0..jobs)
            .map(|_| move |c: &Change, s: &[Step]| worker(c, s))
            .collect();
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
            |c, _| {
                main_calls.push(c.name.clone());
                anyhow::bail!("`nft -f -` failed (exit status: 1):\nError: no such thing")
            },
            |c, _| panic!("{} ran although the ruleset failed", c.name),
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
            |c, _| {
                main_calls.push(c.name.clone());
                Ok(())
            },
            |c, steps| {
                worker_calls.lock().unwrap().push(call(c, steps));
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
        assert_eq!(
            worked,
            [
                "b",
                "b/default",
                "b/x",
                "b/y",
                "b/y start",
                "net-a",
                "net-b"
            ]
        );
        assert_eq!(seen.len(), 9);
        assert_eq!(seen.first().map(String::as_str), Some("inet anklume"));
    }

    #[test]
    fn one_bridge_at_a_time_and_instances_start_while_other_bridges_are_made() {
        let plan = sample();
        let bridges_running = AtomicUsize::new(0);
        let profile_done = [AtomicBool::new(false), AtomicBool::new(false)];
        let started_during_a_bridge = AtomicUsize::new(0);
        let (failed, _) = run(
            &plan,
            4,
            |_, _| Ok(()),
            |c, steps| {
                let d = usize::from(c.domain == "b");
                match (c.kind, steps.first()) {
                    (Kind::Network, _) => {
                        anyhow::ensure!(
                            bridges_running.fetch_add(1, Ordering::SeqCst) == 0,
                            "two bridges at once"
                        );
                        // net-b is slow: domain a's instances are made and
                        // started meanwhile.
                        let t = Instant::now();
                        while c.name == "net-b"
                            && started_during_a_bridge.load(Ordering::SeqCst) < 2
                        {
                            anyhow::ensure!(
                                t.elapsed() < Duration::from_secs(10),
                                "domain a's instances waited for net-b"
                            );
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        bridges_running.fetch_sub(1, Ordering::SeqCst);
                    }
                    (Kind::Profile, _) => profile_done[d].store(true, Ordering::SeqCst),
                    (Kind::Instance, Some(Step::State(..))) => {
                        anyhow::ensure!(
                            profile_done[d].load(Ordering::SeqCst),
                            "{} started before its domain's profile",
                            c.name
                        );
                        if bridges_running.load(Ordering::SeqCst) == 1 {
                            started_during_a_bridge.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    (Kind::Instance, _) => anyhow::ensure!(
                        profile_done[d].load(Ordering::SeqCst),
                        "{} created before its domain's profile",
                        c.name
                    ),
                    _ => {}
                }
                Ok(())
            },
        );
        assert_eq!(failed, []);
        assert_eq!(started_during_a_bridge.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn one_worker_makes_the_bridges_first_then_goes_in_plan_order() {
        let plan = sample();
        let order = Mutex::new(Vec::new());
        let (failed, seen) = run(
            &plan,
            1,
            |c, s| {
                order.lock().unwrap().push(call(c, s));
                Ok(())
            },
            |c, s| {
                order.lock().unwrap().push(call(c, s));
                Ok(())
            },
        );
        assert_eq!(failed, []);
        assert_eq!(
            *order.lock().unwrap(),
            [
                "inet anklume",
                "net-a",
                "net-b",
                "a",
                "a/default",
                "a/x",
                "a/x start",
                "a/y",
                "a/y start",
                "b",
                "b/default",
                "b/x",
                "b/x start",
                "b/y",
                "b/y start",
                "old/z",
                "net-old",
            ]
        );
        // Each change is reported once, when it is done.
        assert_eq!(
            seen,
            [
                "inet anklume",
                "net-a",
                "net-b",
                "a",
                "a/default",
                "a/x",
                "a/y",
                "b",
                "b/default",
                "b/x",
                "b/y",
                "old/z",
                "net-old",
            ]
        );
    }
}
