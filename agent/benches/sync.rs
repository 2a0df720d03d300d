//! `cargo bench -p anklume --bench sync`: time `anklume sync` (the release
//! binary, whole process) on generated infrastructures of 250 and 1,000
//! domains × 8 machines with 100 network policies, cold (empty output
//! directory) and warm (tree already present, nothing to change): wall
//! time, the process's user and system CPU time (`getrusage` of the
//! children) and the files it wrote. Prints figures; asserts nothing about
//! time.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

const TRUST: [&str; 5] = [
    "admin",
    "trusted",
    "semi-trusted",
    "untrusted",
    "disposable",
];

fn infra(domains: usize, machines: usize, policies: usize) -> String {
    let mut s = String::from(
        "project_name: bench\nglobal:\n  addressing:\n    base_octet: 10\n    zone_base: 100\n  default_os_image: images:debian/13\n  gpu_policy: shared\ndomains:\n",
    );
    for d in 0..domains {
        let _ = write!(s, "  dom{d:04}:\n    trust_level: {}\n    description: Domain number {d}\n    machines:\n", TRUST[d % 5]);
        for m in 0..machines {
            let _ = write!(
                s,
                "      d{d:04}-m{m}:\n        type: {}\n        roles: [base_system]\n        config:\n          limits.cpu: \"2\"\n          limits.memory: 1GiB\n",
                if m % 4 == 0 { "vm" } else { "lxc" }
            );
        }
    }
    s.push_str("network_policies:\n");
    for p in 0..policies {
        let a = (p * 7) % domains;
        let b = (p * 13 + 1) % domains;
        let _ = write!(s, "  - description: policy {p}\n    from: dom{a:04}\n    to: d{b:04}-m1\n    ports: [{}]\n    protocol: tcp\n", 1000 + p);
    }
    s
}

/// One whole-process run of `anklume sync`.
struct Sample {
    wall: Duration,
    /// CPU time of the process (all its threads), user and system.
    user: Duration,
    sys: Duration,
    /// Files written, as the run reports them.
    written: usize,
}

/// User and system CPU time of every child waited for so far.
fn children_cpu() -> (Duration, Duration) {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    (d(u.user_time()), d(u.system_time()))
}

fn run(bin: &str, input: &Path, out: &Path) -> Sample {
    let (u0, s0) = children_cpu();
    let t = Instant::now();
    let o = Command::new(bin)
        .arg("sync")
        .arg(input)
        .arg("--base-dir")
        .arg(out)
        .arg("--context-dir")
        .arg(input.parent().unwrap().join("ctx"))
        .env("ANKLUME_SKIP_HOST_SUBNET_CHECK", "1")
        .output()
        .expect("run anklume");
    let wall = t.elapsed();
    let (u1, s1) = children_cpu();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let written = stdout
        .rsplit_once("Done: ")
        .and_then(|(_, t)| t.split_once(" written"))
        .and_then(|(n, _)| n.parse().ok())
        .expect("a `Done: N written` line");
    Sample {
        wall,
        user: u1 - u0,
        sys: s1 - s0,
        written,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and minimum.
fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (ms(v[v.len() / 2]), ms(v[0]))
}

/// One line of the table; returns the median wall time.
fn report(what: &str, samples: Vec<Sample>) -> f64 {
    let mut written: Vec<usize> = samples.iter().map(|s| s.written).collect();
    written.sort();
    written.dedup();
    let (wall, wall_min) = stats(samples.iter().map(|s| s.wall).collect());
    let (user, _) = stats(samples.iter().map(|s| s.user).collect());
    let (sys, _) = stats(samples.iter().map(|s| s.sys).collect());
    let written = written
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("/");
    println!(
        "    {what}: wall {wall:6.1} ms ({wall_min:5.1}), user {user:5.1} ms, sys {sys:5.1} ms, {written:>5} files written"
    );
    wall
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_anklume");
    let runs = 7;
    println!(
        "anklume sync, {runs} runs each: median (min) wall time, median user and system CPU time \
         of the process, files written"
    );
    // The output tree on the disk's file system (what users get), and on a
    // tmpfs, which shows our own cost without the file system's. On an ext4
    // without a journal (this VM's disk), creating files while the inode
    // table blocks of recently deleted files are still dirty makes the
    // kernel scan past them (`recently_deleted` in `perf`), whatever writes
    // the files: run this bench well after any large deletion.
    let mut roots = vec![("disk", std::env::temp_dir())];
    if std::path::Path::new("/dev/shm").is_dir() {
        roots.push(("tmpfs", "/dev/shm".into()));
    }
    // Every output tree is kept until the end: deleting thousands of files
    // between measurements would slow the next creations (see below).
    let mut keep = Vec::new();
    for (what, root) in roots {
        println!("output on {what} ({})", root.display());
        let mut per_machine = Vec::new();
        for domains in [250usize, 1000] {
            let dir = tempfile::tempdir_in(&root).unwrap();
            std::fs::create_dir(dir.path().join("ctx")).unwrap();
            let input = dir.path().join("infra.yml");
            std::fs::write(&input, infra(domains, 8, 100)).unwrap();
            let mut cold = Vec::new();
            let mut warm = Vec::new();
            for i in 0..runs {
                // A fresh output directory, then an unchanged rerun on it.
                let out = dir.path().join(format!("out{i}"));
                cold.push(run(bin, &input, &out));
                warm.push(run(bin, &input, &out));
            }
            let files = 1 + domains * 2 + domains * 8;
            println!("  {domains:>4} domains x 8 machines + 100 policies ({files} files)");
            let cm = report("cold (fresh folder)  ", cold);
            let wm = report("warm (unchanged rerun)", warm);
            per_machine.push((domains * 8, cm, wm));
            keep.push(dir);
        }
        let (n0, c0, w0) = per_machine[0];
        let (n1, c1, w1) = per_machine[1];
        println!(
            "  scaling x{:.0} in size: cold x{:.2}, warm x{:.2} (linear = x{:.0})",
            n1 as f64 / n0 as f64,
            c1 / c0,
            w1 / w0,
            n1 as f64 / n0 as f64
        );
    }
}
