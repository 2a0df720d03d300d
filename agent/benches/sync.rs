//! `cargo bench -p anklume --bench sync`: time `anklume sync` (the release
//! binary, whole process) on generated infrastructures of 250 and 1,000
//! domains × 8 machines with 100 network policies, cold (empty output
//! directory) and warm (tree already present). Prints figures; asserts
//! nothing about time.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

fn run(bin: &str, input: &Path, out: &Path) -> Duration {
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
    let dt = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dt
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[0]))
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_anklume");
    let runs = 7;
    println!("anklume sync, {runs} runs each, median (min) wall time");
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
                let out = dir.path().join(format!("out{i}"));
                cold.push(run(bin, &input, &out));
                warm.push(run(bin, &input, &out));
            }
            let files = 1 + domains * 2 + domains * 8;
            let (cm, cmin) = stats(cold);
            let (wm, wmin) = stats(warm);
            println!(
                "  {domains:>4} domains x 8 machines + 100 policies ({files} files): cold {cm:7.1} ms ({cmin:.1}), warm {wm:7.1} ms ({wmin:.1})"
            );
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
