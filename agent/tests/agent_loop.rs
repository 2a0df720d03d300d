//! `anklume agent` and `anklume health` against a real `incusd` started
//! here (its own network namespace, NAT off, the busybox image built
//! locally):
//! - the agent converges at start, converges again when `infra.yml` is
//!   replaced (a machine added), logs a broken `infra.yml` and keeps
//!   running, and converges again once it is fixed;
//! - each health check fails and passes for real: the pool mount, Incus,
//!   the last apply (failed, converged, infra.yml changed since), the
//!   ruleset (deleted by hand), and the extra checks folder (exit 0, exit
//!   1, a check that hangs past the timeout, a file that is not
//!   executable);
//! - the binary on a fake boot stick (sysfs, udev data, /dev with a FAT
//!   ESP): `anklume health --mark-good` unhealthy is exit 1 and marks
//!   nothing, healthy marks the booted slot good (off a Live OS boot: says
//!   there is nothing to mark), `anklume status` shows the boot state;
//!   `anklume agent` without a pool exits 0.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anklume_bootstate::testing::{FakeMachine, SLOT_PARTUUID};
use anklume_bootstate::{locate, Located};
use anklume_contract::bootenv::BootEnv;
use anklume_contract::bootstate::BootState;
use anklume_contract::Slot;
use anklume_resident::agent::{self, AgentOptions, Exit};
use anklume_resident::health::{self, Check, HealthOptions};
use anklume_resident::lastapply::Record;

const IMAGE: &str = "anklume-test";

fn infra(machines: &[&str]) -> String {
    let mut s = format!(
        "project_name: agent-test
global:
  addressing:
    base_octet: 10
    zone_base: 200
  default_os_image: {IMAGE}
domains:
  aga:
    trust_level: trusted
    description: agent test domain
    machines:
"
    );
    for m in machines {
        s.push_str(&format!("      {m}:\n        type: lxc\n"));
    }
    s
}

/// Replace a file the way editors do: a temp file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A log the agent thread writes and the test reads.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn check<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

fn script(dir: &Path, name: &str, body: &str, exec: bool) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_agent_converges_follows_changes_and_survives_bad_input_and_health_judges_it() {
    let lab = common::lab::Lab::new("anklume-agent-", Some(&infra(&["aga-1"])));
    lab.import_image(IMAGE, false);
    let dir = lab.dir.clone();
    let infra_path = dir.join("infra.yml");
    let state = dir.join("state");
    let o = AgentOptions {
        infra: infra_path.clone(),
        pool: None,
        mountinfo: PathBuf::from("/proc/self/mountinfo"),
        base_dir: dir.join("tree"),
        context_dir: Some(dir.join("ctx")),
        apply: lab.options(false, false),
        state_dir: state.clone(),
        debounce: Duration::from_millis(300),
        bootstrap_incus: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Record>();
    let log = Log::default();
    let handle = {
        let (o, stop, mut log) = (o.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || {
            agent::run(&o, &stop, &mut log, &mut |r| tx.send(r.clone()).unwrap())
        })
    };
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|e| panic!("{what}: no run: {e}; log:\n{}", log.text()))
    };

    // 1. At start: converged, the instance runs, the Ansible tree written.
    let r = next("first run");
    assert!(r.converged(), "{r:?}\n{}", log.text());
    assert!(r.created > 0, "{r:?}");
    assert_eq!(lab.instance("aga", "aga-1")["status"], "Running");
    assert!(dir.join("tree/inventory").is_dir(), "sync wrote the tree");

    // Health: every built-in check but the pool (nothing is mounted at the
    // lab's folder) passes; then with a mount point that is one.
    let mut h = HealthOptions {
        pool: dir.clone(),
        socket: lab.daemon().socket(),
        state_dir: state.clone(),
        infra: infra_path.clone(),
        context_dir: Some(dir.join("ctx")),
        netns: Some(lab.daemon().netns_path()),
        checks_dir: dir.join("health.d"),
        check_timeout: Duration::from_secs(2),
        ..HealthOptions::default()
    };
    let c = health::run_checks(&h);
    assert!(!check(&c, "pool").ok);
    assert!(check(&c, "pool")
        .detail
        .contains("the data pool is not unlocked and mounted"));
    for name in ["incus", "apply", "ruleset"] {
        assert!(check(&c, name).ok, "{name}: {c:?}");
    }
    h.pool = PathBuf::from("/proc");
    assert!(health::run_checks(&h).iter().all(|c| c.ok));

    // 2. A machine added: a second run makes it.
    replace(&infra_path, &infra(&["aga-1", "aga-2"]));
    let r = next("after the change");
    assert!(r.converged(), "{r:?}\n{}", log.text());
    assert_eq!(r.created, 1, "{r:?}");
    assert_eq!(lab.instance("aga", "aga-2")["status"], "Running");

    // 3. Broken YAML: logged, recorded as failed, the loop goes on.
    replace(&infra_path, "domains: [\n");
    let r = next("after the broken file");
    assert!(!r.converged());
    assert!(r.error.as_deref().unwrap().contains("is invalid"), "{r:?}");
    assert!(log.text().contains("NOT converged"), "{}", log.text());
    assert!(!handle.is_finished(), "the agent keeps running");
    let c = health::run_checks(&h);
    assert!(!check(&c, "apply").ok);
    assert!(
        check(&c, "apply").detail.contains("did not converge"),
        "{c:?}"
    );
    assert!(
        !check(&c, "ruleset").ok,
        "no valid infra.yml to compare with"
    );

    // 4. Fixed: converged again (nothing left to create).
    replace(&infra_path, &infra(&["aga-1", "aga-2"]));
    let r = next("after the fix");
    assert!(r.converged(), "{r:?}\n{}", log.text());
    assert_eq!(r.created, 0, "{r:?}");
    assert!(health::run_checks(&h).iter().all(|c| c.ok));

    stop.store(true, Ordering::Relaxed);
    assert_eq!(handle.join().unwrap().unwrap(), Exit::Stopped);

    // infra.yml changed after the last apply (the agent is stopped).
    std::fs::write(&infra_path, infra(&["aga-1", "aga-2", "aga-3"])).unwrap();
    let c = health::run_checks(&h);
    assert!(
        check(&c, "apply")
            .detail
            .contains("changed since the last apply"),
        "{c:?}"
    );
    std::fs::write(&infra_path, infra(&["aga-1", "aga-2"])).unwrap();

    // The extra checks folder.
    let hd = dir.join("health.d");
    std::fs::create_dir(&hd).unwrap();
    script(&hd, "10-ok", "echo all fine", true);
    script(&hd, "20-disabled", "exit 1", false);
    std::fs::write(hd.join("README"), "not a check").unwrap();
    let c = health::run_checks(&h);
    assert!(c.iter().all(|c| c.ok), "{c:?}");
    assert_eq!(check(&c, "health.d/10-ok").detail, "all fine");
    assert!(c
        .iter()
        .all(|c| c.name != "health.d/20-disabled" && c.name != "health.d/README"));
    script(&hd, "30-fails", "echo 'disk too hot' >&2; exit 4", true);
    script(&hd, "40-hangs", "sleep 60", true);
    let c = health::run_checks(&h);
    let f = check(&c, "health.d/30-fails");
    assert!(
        !f.ok && f.detail.contains("disk too hot") && f.detail.contains('4'),
        "{f:?}"
    );
    let f = check(&c, "health.d/40-hangs");
    assert!(!f.ok && f.detail.contains("killed"), "{f:?}");

    // The binary, on a fake boot stick (ANKLUME_DEV_ROOT: sysfs, udev
    // data and /dev, the ESP a FAT image): B was armed and fell back to A.
    let devroot = dir.join("devroot");
    let stick = FakeMachine::at(&devroot);
    let mut armed = BootState::fresh();
    armed.arm(Slot::B, 2);
    stick.stick("sda", 8, &armed, false, None);
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::write(
        dir.join("run/boot.env"),
        format!("slot=a\nversion=0.1.0\npartuuid={SLOT_PARTUUID}\ntoram=0\n"),
    )
    .unwrap();
    let esp_before = stick.file("dev/sda1");
    let bin = |args: &[&str], run_dir: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anklume"));
        cmd.arg("health")
            .arg("--socket")
            .arg(lab.daemon().socket())
            .arg("--netns")
            .arg(lab.daemon().netns_path())
            .arg("--state-dir")
            .arg(&state)
            .arg("--infra")
            .arg(&infra_path)
            .arg("--context-dir")
            .arg(dir.join("ctx"))
            .arg("--checks-dir")
            .arg(&hd)
            .arg("--check-timeout")
            .arg("2")
            .args(args)
            .env("ANKLUME_RUN_DIR", dir.join(run_dir))
            .env("ANKLUME_DEV_ROOT", &devroot);
        cmd.output().unwrap()
    };
    // Unhealthy: exit 1, says which check failed, marks nothing.
    let out = bin(&["--pool-dir", "/proc", "--mark-good"], "run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED health.d/30-fails"), "{text}");
    assert!(
        text.contains("unhealthy: the boot is not marked good"),
        "{text}"
    );
    assert_eq!(stick.file("dev/sda1"), esp_before, "nothing marked");
    // --fall-back on a trial boot (another stick: B armed by an update,
    // booted, primary): checked twice more, then B gives way to A; this
    // host's systemd is not starting, so no reboot, said.
    let trial_root = dir.join("devroot-trial");
    let trial = FakeMachine::at(&trial_root);
    trial.stick("sda", 8, &armed, false, None);
    std::fs::create_dir_all(dir.join("run-b")).unwrap();
    std::fs::write(
        dir.join("run-b/boot.env"),
        format!("slot=b\nversion=0.2.0\npartuuid={SLOT_PARTUUID}\ntoram=0\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .args([
            "health",
            "--pool-dir",
            "/proc",
            "--mark-good",
            "--fall-back",
        ])
        .args(["--recheck-interval", "0", "--check-timeout", "2"])
        .arg("--socket")
        .arg(lab.daemon().socket())
        .arg("--netns")
        .arg(lab.daemon().netns_path())
        .arg("--state-dir")
        .arg(&state)
        .arg("--infra")
        .arg(&infra_path)
        .arg("--context-dir")
        .arg(dir.join("ctx"))
        .arg("--checks-dir")
        .arg(&hd)
        .env("ANKLUME_RUN_DIR", dir.join("run-b"))
        .env("ANKLUME_DEV_ROOT", &trial_root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text.matches("unhealthy on a trial boot: checking again in 0 s")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("slot b failed its trial: slot a boots next"),
        "{text}"
    );
    assert!(text.contains("(not starting): not rebooting"), "{text}");
    let env_b = BootEnv::read(&dir.join("run-b/boot.env")).unwrap().unwrap();
    let Located::Esp(esp_b) = locate(&trial_root, &env_b).unwrap() else {
        panic!("the fake ESP is found")
    };
    let st = anklume_bootstate::read(&esp_b).unwrap().state;
    assert_eq!(
        (st.primary, st.is_good(Slot::A), st.tries(Slot::B)),
        (Slot::A, true, Some(0))
    );
    // The same on slot A (good, not on trial): no second chance, nothing
    // written.
    let out = bin(
        &["--pool-dir", "/proc", "--mark-good", "--fall-back"],
        "run",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("checking again"), "{text}");
    assert!(
        text.contains("no fallback: slot a is not on trial"),
        "{text}"
    );
    assert_eq!(stick.file("dev/sda1"), esp_before, "nothing written");
    std::fs::remove_file(hd.join("30-fails")).unwrap();
    std::fs::remove_file(hd.join("40-hangs")).unwrap();
    // Healthy, off a Live OS boot: nothing to mark, exit 0.
    let out = bin(&["--pool-dir", "/proc", "--mark-good"], "run-none");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("healthy\n"), "{text}");
    assert!(text.contains("not an anklume Live OS boot"), "{text}");
    assert_eq!(stick.file("dev/sda1"), esp_before);
    // Healthy on the stick: slot a marked good, primary again.
    let out = bin(&["--pool-dir", "/proc", "--mark-good"], "run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("slot a marked good"), "{text}");
    let env = BootEnv::read(&dir.join("run/boot.env")).unwrap().unwrap();
    let Located::Esp(esp) = locate(&devroot, &env).unwrap() else {
        panic!("the fake ESP is found")
    };
    let st = anklume_bootstate::read(&esp).unwrap().state;
    assert_eq!(
        (st.primary, st.is_good(Slot::A), st.tries(Slot::B)),
        (Slot::A, true, Some(2))
    );
    // Without --mark-good nothing is written.
    let marked = stick.file("dev/sda1");
    let out = bin(&["--pool-dir", "/proc"], "run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stick.file("dev/sda1"), marked);
    // anklume status shows the boot state and the pool.
    let out = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .arg("status")
        .arg("--socket")
        .arg(lab.daemon().socket())
        .env("ANKLUME_RUN_DIR", dir.join("run"))
        .env("ANKLUME_DEV_ROOT", &devroot)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("boot:      primary a; a good; b not good yet, 2 tries left (ESP /dev/sda1)"),
        "{text}"
    );
    assert!(
        text.contains("pool:      none mounted at /var/lib/anklume/pool"),
        "{text}"
    );

    // The ruleset deleted by hand: the ruleset check fails.
    let del = Command::new("nsenter")
        .arg(format!("--net={}", lab.daemon().netns_path().display()))
        .args(["nft", "delete", "table", "inet", "anklume"])
        .status()
        .unwrap();
    assert!(del.success());
    let c = health::run_checks(&h);
    assert!(check(&c, "ruleset").detail.contains("not loaded"), "{c:?}");

    // Incus gone: the incus check fails.
    let socket = lab.daemon().socket();
    lab.close();
    h.socket = socket;
    let c = health::run_checks(&h);
    assert!(!check(&c, "incus").ok, "{c:?}");
}

#[test]
fn the_agent_without_a_pool_says_so_and_exits_0() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .arg("agent")
        .arg("--pool-dir")
        .arg(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!(
        "no data pool mounted at {} yet: nothing to converge",
        d.path().display()
    )));
}

#[test]
fn the_agent_tells_systemd_it_is_ready_after_its_first_round() {
    use std::os::unix::net::UnixDatagram;
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("notify");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let infra = d.path().join("infra.yml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .arg("agent")
        .arg("--no-pool-check")
        .arg("--infra")
        .arg(&infra)
        .arg("--state-dir")
        .arg(d.path().join("state"))
        .arg("--socket")
        .arg(d.path().join("no-incus.socket"))
        .env("NOTIFY_SOCKET", &sock)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = rx.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(
        msg,
        format!("READY=1\nSTATUS=waiting for {}", infra.display())
    );
    // infra.yml appears (invalid: no Incus is needed to fail): a run, its
    // outcome as the new status, and the agent is still there.
    std::fs::write(&infra, "domains: [\n").unwrap();
    let n = rx.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("STATUS=NOT converged: failed: "), "{msg}");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist yet; waiting for it"), "{err}");
    assert!(
        err.contains("is invalid (errors above); nothing applied"),
        "{err}"
    );
}
