//! `anklume apply` on 20 domains × 5 containers against a private incusd
//! (its own network namespace, NAT off, a local busybox image):
//!
//! 1. the first apply (everything created and started), timed;
//! 2. no-op applies (nothing to change), timed: median and worst of 10;
//! 3. where one container's time goes in Incus: the image copy into a
//!    project, the creation from the image (on a `dir` pool: the rootfs
//!    unpacked), the start;
//! 4. the same first deployment done the reference's way, one `incus` CLI
//!    call per object and property, on a second fresh daemon, timed; the
//!    ratio of the two first deployments.
//!
//! With `-- --sweep`: the first apply again on fresh daemons with 1, 2, 4
//! and 8 changes at once, and the time spent in each kind of change (what
//! concurrency buys).
//!
//! Prints figures; asserts nothing about time. Run: `cargo bench -p anklume
//! --bench apply` (as root; several minutes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anklume_incus_testkit::testimage;
use anklume_incus_testkit::TestDaemon;
use anklume_reconciler::desired::ApplySettings;
use anklume_reconciler::{run, ApplyOptions};

const DOMAINS: usize = 20;
const MACHINES: usize = 5;
const IMAGE: &str = "anklume-test";

fn infra() -> String {
    let mut s = String::from(
        "project_name: apply-bench\nglobal:\n  addressing:\n    base_octet: 10\n    zone_base: 100\n  default_os_image: anklume-test\ndomains:\n",
    );
    for d in 0..DOMAINS {
        let _ = writeln!(s, "  bd{d}:\n    trust_level: trusted\n    machines:");
        for m in 0..MACHINES {
            let _ = writeln!(s, "      bd{d}-m{m}: {{type: lxc}}");
        }
    }
    s
}

fn daemon(dir: &Path) -> TestDaemon {
    let d = TestDaemon::start(dir).expect("incusd");
    let c = d.client().unwrap();
    testimage::create_dir_pool(&c, "default").unwrap();
    std::fs::create_dir_all(dir.join("../image")).unwrap();
    testimage::import(&c, &dir.join("../image"), IMAGE).unwrap();
    d
}

/// Busy and total CPU time of the whole machine so far (`/proc/stat`,
/// in clock ticks): the share of it busy over a run says whether the run
/// was CPU-bound.
fn cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = v[3] + v[4];
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

/// `cpu()` now minus `before`, as "N % busy".
fn busy(before: (u64, u64)) -> String {
    let (b, t) = cpu();
    format!(
        "CPU {:.0} % busy (all {} cores)",
        100.0 * (b - before.0) as f64 / (t - before.1).max(1) as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn apply(work: &Path, d: &TestDaemon) -> (Duration, i32, usize) {
    let o = ApplyOptions {
        infra: Some(work.join("infra.yml")),
        context_dir: Some(work.join("ctx")),
        domains: vec![],
        dry_run: false,
        clean_orphans: false,
        socket: d.socket(),
        settings: ApplySettings {
            nat: false,
            pool: "default".into(),
            netns: Some(d.netns_path()),
            state_dir: Some(work.join("state")),
        },
        progress: false,
        json: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let (code, s) = run(&o, &mut out, &mut err).expect("apply");
    let took = t.elapsed();
    if code != 0 {
        eprintln!("{}", String::from_utf8_lossy(&err));
    }
    (took, code, s.changes())
}

/// The reference's way: one `incus` call per object and per property.
fn cli_deploy(d: &TestDaemon, image_tar: &Path) -> (Duration, usize) {
    let mut calls = 0;
    let incus = |args: &[String]| {
        let out = Command::new("incus")
            .env("INCUS_DIR", d.dir())
            .args(args)
            .output()
            .expect("incus CLI");
        assert!(
            out.status.success(),
            "incus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let t = Instant::now();
    for dn in 0..DOMAINS {
        let (dom, net) = (format!("bd{dn}"), format!("net-bd{dn}"));
        let octet = 100 + dn;
        let mut run = |a: Vec<String>| {
            incus(&a);
            calls += 1;
        };
        run(s(&[
            "network",
            "create",
            &net,
            &format!("ipv4.address=10.{octet}.0.254/24"),
            "ipv4.nat=false",
            &format!("ipv4.dhcp.ranges=10.{octet}.0.100-10.{octet}.0.249"),
            "ipv6.address=none",
        ]));
        run(s(&["project", "create", &dom]));
        run(s(&[
            "project",
            "set",
            &dom,
            "features.images=true",
            "features.profiles=true",
            "features.storage.volumes=true",
            "features.networks=false",
        ]));
        run(s(&[
            "profile",
            "device",
            "add",
            "default",
            "eth0",
            "nic",
            &format!("network={net}"),
            "name=eth0",
            "--project",
            &dom,
        ]));
        run(s(&[
            "profile",
            "device",
            "add",
            "default",
            "root",
            "disk",
            "path=/",
            "pool=default",
            "--project",
            &dom,
        ]));
        run(vec![
            "image".into(),
            "import".into(),
            image_tar.display().to_string(),
            "--alias".into(),
            IMAGE.into(),
            "--project".into(),
            dom.clone(),
        ]);
        for m in 0..MACHINES {
            let name = format!("bd{dn}-m{m}");
            run(s(&[
                "init",
                IMAGE,
                &name,
                "--project",
                &dom,
                "-c",
                "security.protection.delete=true",
            ]));
            run(s(&[
                "config",
                "device",
                "override",
                &name,
                "eth0",
                &format!("ipv4.address=10.{octet}.0.{}", m + 1),
                "--project",
                &dom,
            ]));
            run(s(&["start", &name, "--project", &dom]));
        }
    }
    (t.elapsed(), calls)
}

/// Where a no-op run's time goes: reading infra.yml, Incus's listings,
/// the ruleset check.
fn breakdown(work: &Path, d: &TestDaemon) {
    use anklume_reconciler::{firewall::Firewall, reconcile};
    let settings = ApplySettings {
        nat: false,
        pool: "default".into(),
        netns: Some(d.netns_path()),
        state_dir: None,
    };
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let domains = desired_domains(work, &settings);
    let t_prepare = ms(t);
    let c = anklume_incus::Client::connect(&d.socket()).unwrap();
    let t = Instant::now();
    let plan = reconcile::plan(&c, &domains, &settings, false).unwrap();
    let t_reads = ms(t);
    let fw = Firewall::new(&domains, &[], settings.netns.clone(), None);
    let t = Instant::now();
    fw.live().unwrap();
    let t_nft = ms(t);
    let mut each = Vec::new();
    for path in [
        "/1.0/projects?recursion=1",
        "/1.0/networks?recursion=1",
        "/1.0/profiles?recursion=1&all-projects=true",
        "/1.0/instances?recursion=1&all-projects=true",
    ] {
        let t = Instant::now();
        let _: serde_json::Value = c.get(path).unwrap();
        each.push(format!(
            "{} {:.0} ms",
            path.split('?').next().unwrap(),
            ms(t)
        ));
    }
    println!(
        "  no-op breakdown: infra.yml read+validate+render {t_prepare:.1} ms, Incus reads {t_reads:.1} ms ({} plan lines; {}), nft list {t_nft:.1} ms",
        plan.len(),
        each.join(", ")
    );
}

/// The first apply through the plan and executor with `jobs` changes at
/// once: wall time, and the time spent in each kind of change.
fn first_apply_with(
    work: &Path,
    d: &TestDaemon,
    jobs: usize,
) -> (Duration, BTreeMap<&'static str, (usize, Duration)>) {
    use anklume_reconciler::{firewall::Firewall, plan, reconcile};
    let settings = ApplySettings {
        nat: false,
        pool: "default".into(),
        netns: Some(d.netns_path()),
        state_dir: None,
    };
    let t = Instant::now();
    let domains = desired_domains(work, &settings);
    let c = anklume_incus::Client::connect(&d.socket()).unwrap();
    let mut changes = reconcile::plan(&c, &domains, &settings, false).unwrap();
    let fw = Firewall::new(&domains, &[], settings.netns.clone(), None);
    changes.insert(
        0,
        plan::Change::new(
            plan::Kind::Firewall,
            "inet anklume",
            "",
            plan::Verb::Create,
            "",
        )
        .with_steps(vec![plan::Step::LoadRuleset]),
    );
    let mut kinds: BTreeMap<&'static str, (usize, Duration)> = BTreeMap::new();
    let failed = anklume_reconciler::execute::execute(&c, &changes, &fw, jobs, &mut |p| {
        let k = kinds.entry(p.change.kind.as_str()).or_default();
        k.0 += 1;
        k.1 += p.took;
    })
    .unwrap();
    assert!(
        failed.is_empty(),
        "first apply with {jobs} job(s): {failed:?}"
    );
    (t.elapsed(), kinds)
}

/// Where one container's time goes in Incus, one request at a time, on
/// the bench's daemon (its `bd0` project and image in place): copying the
/// image into a new project, creating a container from it (on a `dir`
/// pool the rootfs is unpacked), starting it. Medians of `n`.
fn anatomy(d: &TestDaemon, n: usize) {
    use serde_json::json;
    let c = d.client().unwrap();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    c.post("/1.0/projects", &json!({"name": "anatomy", "config": {"features.images": "true", "features.profiles": "false"}}))
        .unwrap();
    let t = Instant::now();
    anklume_reconciler::images::ensure_in_project_with(
        &c,
        IMAGE,
        "anatomy",
        &mut std::io::stderr(),
    )
    .unwrap();
    let copy = ms(t);
    anklume_reconciler::images::delete_all_in_project(&c, "anatomy").unwrap();
    c.delete("/1.0/projects/anatomy").unwrap();
    let (mut create, mut start, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("anatomy-{i}");
        let t = Instant::now();
        c.post(
            "/1.0/instances?project=bd0",
            &json!({"name": name, "source": {"type": "image", "alias": IMAGE}, "profiles": ["default"]}),
        )
        .unwrap();
        create.push(ms(t));
        let t = Instant::now();
        c.put(
            &format!("/1.0/instances/{name}/state?project=bd0"),
            &json!({"action": "start"}),
        )
        .unwrap();
        start.push(ms(t));
        let t = Instant::now();
        c.put(
            &format!("/1.0/instances/{name}/state?project=bd0"),
            &json!({"action": "stop", "force": true}),
        )
        .unwrap();
        c.delete(&format!("/1.0/instances/{name}?project=bd0"))
            .unwrap();
        delete.push(ms(t));
    }
    println!(
        "  one container, one request at a time (median of {n}): image copy into a project {copy:.0} ms (once per project), create from the image {:.0} ms, start {:.0} ms (stop + delete {:.0} ms)",
        median(create),
        median(start),
        median(delete)
    );
}

/// The first apply on fresh daemons with 1, 2, 4, 8 changes at once.
fn sweep(work: &Path) {
    println!(
        "  first apply by changes at once (time in each kind of change, summed over its changes):"
    );
    for jobs in [1, 2, 4, 8] {
        let d = daemon(&work.join(format!("sweep-{jobs}/incus")));
        let before = cpu();
        let (wall, kinds) = first_apply_with(work, &d, jobs);
        let cpu = busy(before);
        let parts: Vec<String> = kinds
            .iter()
            .map(|(k, (n, t))| format!("{n} {k} {:.1} s", t.as_secs_f64()))
            .collect();
        println!(
            "    {jobs} at once: {:>6.2} s wall, {cpu} ({})",
            wall.as_secs_f64(),
            parts.join(", ")
        );
        d.close().unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("apply: bench");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("anklume-apply-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let work = tmp.path();
    std::fs::create_dir(work.join("ctx")).unwrap();
    std::fs::write(work.join("infra.yml"), infra()).unwrap();
    println!(
        "anklume apply: {DOMAINS} domains × {MACHINES} containers ({} instances)",
        DOMAINS * MACHINES
    );

    let d = daemon(&work.join("a/incus"));
    let before = cpu();
    let (first, code, changes) = apply(work, &d);
    assert_eq!(code, 0, "first apply failed");
    println!(
        "  first apply:   {:>8.2} s ({changes} changes, {} at once; {})",
        first.as_secs_f64(),
        anklume_reconciler::execute::JOBS,
        busy(before)
    );
    let mut noop: Vec<Duration> = (0..10)
        .map(|_| {
            let (t, code, changes) = apply(work, &d);
            assert_eq!((code, changes), (0, 0), "a no-op apply changed something");
            t
        })
        .collect();
    noop.sort();
    println!(
        "  no-op apply:   {:>8.3} s median, {:.3} s worst of {} (target < 1 s)",
        noop[noop.len() / 2].as_secs_f64(),
        noop[noop.len() - 1].as_secs_f64(),
        noop.len()
    );
    breakdown(work, &d);
    anatomy(&d, 10);
    d.close().unwrap();

    let d = daemon(&work.join("b/incus"));
    let tar = testimage::build(&work.join("b/cli-image")).unwrap();
    let before = cpu();
    let (cli, calls) = cli_deploy(&d, &tar);
    println!(
        "  incus CLI:     {:>8.2} s ({calls} calls, the same objects; no drift check, no isolation ruleset; {})",
        cli.as_secs_f64(),
        busy(before)
    );
    println!(
        "  first apply / incus CLI: {:.2} (target <= 0.5)",
        first.as_secs_f64() / cli.as_secs_f64()
    );
    d.close().unwrap();

    if std::env::args().any(|a| a == "--sweep") {
        sweep(work);
    }
}

/// The bench's infra.yml through the generator, in the reconciler's terms.
fn desired_domains(
    work: &Path,
    settings: &anklume_reconciler::desired::ApplySettings,
) -> Vec<anklume_reconciler::desired::DomainSpec> {
    let mut sink = Vec::new();
    let prepared = anklume_generator::prepare(
        Some(&work.join("infra.yml")),
        Some(&work.join("ctx")),
        None,
        &mut sink,
    )
    .unwrap()
    .unwrap();
    anklume_reconciler::desired::domains(&prepared.model, settings).unwrap()
}
