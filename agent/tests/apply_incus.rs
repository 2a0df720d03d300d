//! `anklume apply` against a real `incusd` started here, in its own network
//! namespace (bridges with NAT off, and no route out: no test traffic can
//! leave the machine), with a busybox image built locally:
//! - from scratch: bridges, projects, profiles, a volume, containers with
//!   static IPs, the ruleset; a second run changes nothing;
//! - drift in every owned setting is corrected (config key, deleted device,
//!   stopped instance, changed IP, profile device, project, bridge, the
//!   nftables table), and the run after that changes nothing;
//! - isolation, by packets between containers: another domain is refused,
//!   the policy-allowed pair and the same domain pass;
//! - orphans: reported, deleted only when asked, never when protected,
//!   never what anklume did not make; a failing instance stops nothing
//!   else.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anklume_incus_testkit::testimage;
use anklume_reconciler::ApplySummary;
use serde_json::{json, Value};

const IMAGE: &str = "anklume-test";

const INFRA: &str = "project_name: apply-test
global:
  addressing:
    base_octet: 10
    zone_base: 200
  default_os_image: anklume-test
domains:
  akt1:
    trust_level: trusted
    description: first domain
    profiles:
      small:
        config:
          limits.processes: 200
    machines:
      akt1-a:
        type: lxc
        profiles: [default, small]
        config:
          limits.memory: 256MiB
        snapshots_schedule: '0 3 * * *'
        boot_autostart: true
        boot_priority: 10
      akt1-b:
        type: lxc
        storage_volumes:
          data:
            size: 64MiB
            path: /srv/data
  akt2:
    trust_level: untrusted
    description: second domain
    machines:
      akt2-a:
        type: lxc
network_policies:
  - description: akt1-a reaches akt2-a's service
    from: akt1-a
    to: akt2-a
    ports: [7777]
    protocol: tcp
  - description: akt1-b reaches a service of the host
    from: akt1-b
    to: host
    ports: [7777]
";

/// The shared lab with this file's test image and probes.
struct Lab(common::lab::Lab);

impl std::ops::Deref for Lab {
    type Target = common::lab::Lab;
    fn deref(&self) -> &common::lab::Lab {
        &self.0
    }
}

impl Lab {
    fn new(infra: &str) -> Lab {
        let lab = common::lab::Lab::new("anklume-apply-", Some(infra));
        lab.import_image(IMAGE, false);
        Lab(lab)
    }

    fn apply(&self, dry_run: bool, clean_orphans: bool) -> (i32, ApplySummary, String) {
        self.apply_with(&self.options(dry_run, clean_orphans))
    }

    fn state(&self, project: &str, name: &str) -> Value {
        self.c
            .get(&format!("/1.0/instances/{name}/state?project={project}"))
            .unwrap()
    }

    /// Wait until eth0 of the instance has `ip` (from the bridge's DHCP).
    fn wait_ip(&self, project: &str, name: &str, ip: &str) {
        let start = Instant::now();
        loop {
            let st = self.state(project, name);
            let addrs = &st["network"]["eth0"]["addresses"];
            if addrs
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["address"] == ip))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{project}/{name} never got {ip} from DHCP: {addrs}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Connect from `from`'s network namespace to `ip`:7777; the answer
    /// (`pong`) or the failure.
    fn probe(&self, project: &str, from: &str, ip: &str) -> Result<String, String> {
        let pid = self.state(project, from)["pid"].as_i64().unwrap();
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args([testimage::BUSYBOX, "nc", "-w", "3", ip])
            .arg(testimage::PONG_PORT.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && text == "pong" {
            Ok(text)
        } else {
            Err(format!(
                "{} {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn nft_tables(&self) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.daemon().netns_path().display()))
            .args(["nft", "list", "tables"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> String {
        let o = anklume_reconciler::status::StatusOptions {
            run_dir: self.dir.join("run"),
            mountinfo: self.dir.join("no-mountinfo"),
            socket: self.daemon().socket(),
            infra: Some(self.dir.join("infra.yml")),
            context_dir: Some(self.dir.join("ctx")),
            netns: Some(self.daemon().netns_path()),
            ..anklume_reconciler::status::StatusOptions::default()
        };
        let mut out = Vec::new();
        anklume_reconciler::status::run(&o, false, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn close(self) {
        self.0.close()
    }
}

#[test]
fn converges_corrects_drift_and_isolates() {
    let lab = Lab::new(INFRA);
    let c = &lab.c;

    // Dry run on an empty Incus: the plan and the ruleset (checked by
    // nft -c), no change.
    let (code, s, text) = lab.apply(true, false);
    assert_eq!(code, 0, "{text}");
    // ruleset + 2 × (network, project, default profile) + profile small
    // + volume data + 3 instances
    assert_eq!(s.created, 12, "{text}");
    assert!(text.contains("checked with nft -c"), "{text}");
    assert!(text.contains("+table inet anklume {"), "{text}");
    assert!(
        text.contains("image anklume-test would be copied into project akt1"),
        "{text}"
    );
    assert!(c.get_opt::<Value>("/1.0/projects/akt1").unwrap().is_none());
    assert!(!lab.nft_tables().contains("anklume"));

    // From scratch.
    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.created, s.failed), (0, 12, 0), "{text}");
    let n: Value = c.get("/1.0/networks/net-akt1").unwrap();
    assert_eq!(n["config"]["ipv4.address"], "10.210.0.254/24");
    assert_eq!(n["config"]["ipv4.nat"], "false");
    assert_eq!(n["config"]["ipv4.dhcp.ranges"], "10.210.0.100-10.210.0.249");
    assert_eq!(n["config"]["ipv6.address"], "none");
    let p: Value = c.get("/1.0/projects/akt1").unwrap();
    assert_eq!(p["config"]["features.images"], "true");
    let prof: Value = c.get("/1.0/profiles/default?project=akt1").unwrap();
    assert_eq!(prof["devices"]["eth0"]["network"], "net-akt1");
    assert_eq!(prof["devices"]["eth0"]["security.ipv4_filtering"], "true");
    assert_eq!(prof["devices"]["root"]["pool"], "default");
    let a = lab.instance("akt1", "akt1-a");
    assert_eq!(a["status"], "Running");
    assert_eq!(a["profiles"], json!(["default", "small"]));
    assert_eq!(a["config"]["limits.memory"], "256MiB");
    assert_eq!(a["config"]["snapshots.schedule"], "0 3 * * *");
    assert_eq!(a["config"]["boot.autostart"], "true");
    assert_eq!(a["config"]["boot.autostart.priority"], "10");
    assert_eq!(a["config"]["security.protection.delete"], "true");
    assert_eq!(a["expanded_config"]["limits.processes"], "200");
    assert_eq!(a["devices"]["eth0"]["ipv4.address"], "10.210.0.1");
    let b = lab.instance("akt1", "akt1-b");
    assert_eq!(b["devices"]["data"]["source"], "data");
    assert_eq!(b["devices"]["data"]["path"], "/srv/data");
    let vol: Value = c
        .get("/1.0/storage-pools/default/volumes/custom/data?project=akt1")
        .unwrap();
    assert_eq!(vol["config"]["size"], "64MiB");
    lab.wait_ip("akt1", "akt1-a", "10.210.0.1");
    lab.wait_ip("akt1", "akt1-b", "10.210.0.2");
    lab.wait_ip("akt2", "akt2-a", "10.240.0.1");
    assert!(lab.nft_tables().contains("table inet anklume"));
    let st = lab.status();
    assert!(st.contains("domain:    akt1: 2/2 running"), "{st}");
    assert!(st.contains("akt1-a Running 10.210.0.1\n"), "{st}");
    assert!(st.contains("akt2-a Running 10.240.0.1\n"), "{st}");
    assert!(
        st.contains("nftables:  table inet anklume present, current"),
        "{st}"
    );

    // A second run changes nothing.
    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.changes(), s.failed), (0, 0, 0), "{text}");

    // Isolation, by packets: the policy-allowed pair passes, the same
    // domain passes, anything else between domains is refused (also the
    // way back: the policy is not bidirectional).
    assert_eq!(lab.probe("akt1", "akt1-a", "10.240.0.1"), Ok("pong".into()));
    assert_eq!(lab.probe("akt1", "akt1-b", "10.210.0.1"), Ok("pong".into()));
    let refused = lab.probe("akt1", "akt1-b", "10.240.0.1");
    assert!(refused.is_err(), "akt1-b reached akt2-a: {refused:?}");
    let refused = lab.probe("akt2", "akt2-a", "10.210.0.1");
    assert!(refused.is_err(), "akt2-a reached akt1-a: {refused:?}");

    // The host (here: the daemon's network namespace) runs a service on
    // 7777: only the machine with a `to: host` policy reaches it.
    let mut host_service = Command::new("nsenter")
        .arg(format!("--net={}", lab.daemon().netns_path().display()))
        .args([
            testimage::BUSYBOX,
            "nc",
            "-ll",
            "-p",
            "7777",
            "-e",
            "/bin/echo",
            "pong",
        ])
        .spawn()
        .unwrap();
    // Allowed: answered as soon as the listener is up.
    let start = Instant::now();
    let allowed = loop {
        let r = lab.probe("akt1", "akt1-b", "10.210.0.254");
        if r.is_ok() || start.elapsed() > Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(allowed, Ok("pong".into()));
    let refused = lab.probe("akt1", "akt1-a", "10.210.0.254");
    assert!(refused.is_err(), "akt1-a reached the host: {refused:?}");
    let refused = lab.probe("akt2", "akt2-a", "10.240.0.254");
    assert!(refused.is_err(), "akt2-a reached the host: {refused:?}");
    host_service.kill().unwrap();
    host_service.wait().unwrap();

    // Drift everywhere anklume owns something.
    c.patch(
        "/1.0/instances/akt1-a?project=akt1",
        &json!({"config": {"limits.memory": "1GiB"}}),
    )
    .unwrap();
    let mut b = lab.instance("akt1", "akt1-b");
    b["devices"].as_object_mut().unwrap().remove("data");
    b["devices"]["eth0"]["ipv4.address"] = json!("10.210.0.77");
    c.put("/1.0/instances/akt1-b?project=akt1", &b).unwrap();
    c.put(
        "/1.0/instances/akt2-a/state?project=akt2",
        &json!({"action": "stop", "timeout": 30}),
    )
    .unwrap();
    let mut prof: Value = c.get("/1.0/profiles/default?project=akt2").unwrap();
    prof["devices"]["root"]["size"] = json!("1GiB");
    c.put("/1.0/profiles/default?project=akt2", &prof).unwrap();
    c.patch(
        "/1.0/networks/net-akt2",
        &json!({"config": {"ipv4.dhcp.ranges": "10.240.0.10-10.240.0.20", "user.mine": "kept"}}),
    )
    .unwrap();
    let nft = |args: &[&str]| {
        let st = Command::new("nsenter")
            .arg(format!("--net={}", lab.daemon().netns_path().display()))
            .arg("nft")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success());
    };
    nft(&["delete", "table", "inet", "anklume"]);
    let st = lab.status();
    assert!(st.contains("domain:    akt2: 0/1 running"), "{st}");
    assert!(st.contains("table inet anklume absent"), "{st}");

    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.failed), (0, 0), "{text}");
    // ruleset, net-akt2, akt2/default, akt1-a, akt1-b, akt2-a
    assert_eq!(s.updated + s.created, 6, "{text}");
    assert!(text.contains("limits.memory: 1GiB → 256MiB"), "{text}");
    assert!(text.contains("device data: missing"), "{text}");
    assert!(text.contains("state: Stopped → Running"), "{text}");
    let a = lab.instance("akt1", "akt1-a");
    assert_eq!(a["config"]["limits.memory"], "256MiB");
    let b = lab.instance("akt1", "akt1-b");
    assert_eq!(b["devices"]["data"]["path"], "/srv/data");
    assert_eq!(b["devices"]["eth0"]["ipv4.address"], "10.210.0.2");
    assert_eq!(lab.instance("akt2", "akt2-a")["status"], "Running");
    let prof: Value = c.get("/1.0/profiles/default?project=akt2").unwrap();
    assert!(prof["devices"]["root"].get("size").is_none(), "{prof}");
    let n: Value = c.get("/1.0/networks/net-akt2").unwrap();
    assert_eq!(n["config"]["ipv4.dhcp.ranges"], "10.240.0.100-10.240.0.249");
    assert_eq!(n["config"]["user.mine"], "kept");
    assert!(lab.nft_tables().contains("table inet anklume"));
    // The restarted instance took its address back; isolation holds.
    lab.wait_ip("akt1", "akt1-b", "10.210.0.2");
    lab.wait_ip("akt2", "akt2-a", "10.240.0.1");
    assert_eq!(lab.probe("akt1", "akt1-a", "10.240.0.1"), Ok("pong".into()));
    assert!(lab.probe("akt1", "akt1-b", "10.240.0.1").is_err());

    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.changes(), s.failed), (0, 0, 0), "{text}");
    let (code, s, text) = lab.apply(true, false);
    assert_eq!((code, s.changes()), (0, 0), "{text}");
    assert!(!text.contains("checked with nft -c"), "{text}");

    // Tear down what protection keeps (the daemon's close stops the rest).
    lab.close();
}

#[test]
fn orphans_protection_and_failure_isolation() {
    let infra = "project_name: orphan-test
global:
  addressing:
    base_octet: 10
    zone_base: 200
  default_os_image: anklume-test
domains:
  akt3:
    trust_level: trusted
    machines:
      akt3-a: {type: lxc}
      akt3-bad: {type: lxc, os_image: no-such-image}
  akt4:
    trust_level: untrusted
    ephemeral: true
    machines:
      akt4-eph: {type: lxc}
      akt4-kept: {type: lxc, ephemeral: false}
";
    let lab = Lab::new(infra);
    let c = &lab.c;

    // One failing instance: the others are made, the run says what failed.
    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.failed), (1, 1), "{text}");
    assert!(
        text.contains("FAILED: create instance akt3/akt3-bad"),
        "{text}"
    );
    assert!(text.contains("no-such-image"), "{text}");
    for (p, n) in [
        ("akt3", "akt3-a"),
        ("akt4", "akt4-eph"),
        ("akt4", "akt4-kept"),
    ] {
        assert_eq!(lab.instance(p, n)["status"], "Running", "{p}/{n}: {text}");
    }
    assert_eq!(
        lab.instance("akt4", "akt4-eph")["config"]["security.protection.delete"],
        "false"
    );

    // Something anklume did not make, in a project it manages.
    c.post(
        "/1.0/instances?project=akt3",
        &json!({"name": "handmade", "source": {"type": "none"}}),
    )
    .unwrap();

    // akt4 and akt3-bad leave infra.yml.
    let fixed = infra
        .split("  akt4:")
        .next()
        .unwrap()
        .replace("      akt3-bad: {type: lxc, os_image: no-such-image}\n", "");
    std::fs::write(lab.dir.join("infra.yml"), fixed).unwrap();
    let (code, s, text) = lab.apply(false, false);
    // akt4-eph, akt4-kept (protected), project akt4, net-akt4; the ruleset
    // loses akt4's bridge.
    assert_eq!(
        (code, s.orphans, s.deleted, s.updated),
        (0, 4, 0, 1),
        "{text}"
    );
    assert!(!text.contains("handmade"), "{text}");
    assert!(text.contains("protected"), "{text}");

    let (code, s, text) = lab.apply(false, true);
    assert_eq!((code, s.failed), (0, 0), "{text}");
    // Deleted: the unprotected instance. Kept: the protected one, hence its
    // project and its bridge.
    assert_eq!(s.deleted, 1, "{text}");
    assert!(c
        .get_opt::<Value>("/1.0/instances/akt4-eph?project=akt4")
        .unwrap()
        .is_none());
    assert_eq!(lab.instance("akt4", "akt4-kept")["status"], "Running");
    assert!(c.get_opt::<Value>("/1.0/projects/akt4").unwrap().is_some());
    assert!(c
        .get_opt::<Value>("/1.0/instances/handmade?project=akt3")
        .unwrap()
        .is_some());

    // Unprotected by hand: now the whole domain goes.
    c.patch(
        "/1.0/instances/akt4-kept?project=akt4",
        &json!({"config": {"security.protection.delete": "false"}}),
    )
    .unwrap();
    let (code, s, text) = lab.apply(false, true);
    assert_eq!((code, s.failed), (0, 0), "{text}");
    assert!(
        c.get_opt::<Value>("/1.0/projects/akt4").unwrap().is_none(),
        "{text}"
    );
    assert!(
        c.get_opt::<Value>("/1.0/networks/net-akt4")
            .unwrap()
            .is_none(),
        "{text}"
    );
    let (code, s, text) = lab.apply(false, true);
    assert_eq!((code, s.changes(), s.orphans), (0, 0, 0), "{text}");

    // The same through the command line.
    let d = lab.daemon();
    let common = |cmd: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_anklume"));
        c.arg(cmd)
            .arg("--infra")
            .arg(lab.dir.join("infra.yml"))
            .arg("--context-dir")
            .arg(lab.dir.join("ctx"))
            .arg("--socket")
            .arg(d.socket())
            .arg("--netns")
            .arg(d.netns_path())
            .env_remove("ANKLUME_CMD_LOG");
        c
    };
    let out = common("apply")
        .args(["--dry-run", "--no-nat", "--state-dir"])
        .arg(lab.dir.join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("unchanged  instance  akt3/akt3-a"), "{text}");
    assert!(
        text.contains("[DRY-RUN] would create 0, update 0, delete 0"),
        "{text}"
    );
    let out = common("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("domain:    akt3: 1/2 running"), "{text}");
    assert!(
        text.contains("table inet anklume present, current"),
        "{text}"
    );
    // No command traces anywhere unless asked (they used to run into the
    // report on a terminal); --verbose shows them on stderr only.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("nft list tables"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("+ "), "{text}");
    let out = common("status").arg("--verbose").output().unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace
            .lines()
            .any(|l| l.starts_with("+ ") && l.contains("nft list tables")),
        "{trace}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("nft list tables"));

    // The same as JSON.
    let out = common("status").arg("--json").output().unwrap();
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(j["schema"], 1);
    assert_eq!(j["incus"]["reachable"], true);
    assert_eq!(j["ruleset"]["state"], "current");
    let akt3 = j["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["project"] == "akt3")
        .expect("akt3 in status --json");
    assert_eq!(akt3["running"], 1);
    assert_eq!(akt3["instances"].as_array().unwrap().len(), 2);
    let out = common("apply")
        .args(["--dry-run", "--json", "--no-nat", "--state-dir"])
        .arg(lab.dir.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("apply --dry-run --json is JSON");
    assert_eq!(j["schema"], 1);
    assert_eq!(j["summary"]["create"], 0);
    assert_eq!(j["ruleset"]["live"], "current");
    assert!(
        j["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "unchanged"
                && c["kind"] == "instance"
                && c["name"] == "akt3/akt3-a"),
        "{j}"
    );
    let out = common("apply").args(["--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--json without --dry-run is a usage error"
    );

    // An instance cannot change type: refused with the reason, nothing else
    // stops.
    std::fs::write(
        lab.dir.join("infra.yml"),
        std::fs::read_to_string(lab.dir.join("infra.yml"))
            .unwrap()
            .replace("akt3-a: {type: lxc}", "akt3-a: {type: vm}"),
    )
    .unwrap();
    let (code, s, text) = lab.apply(false, false);
    assert_eq!((code, s.failed), (1, 1), "{text}");
    assert!(text.contains("type: container → virtual-machine"), "{text}");
    assert!(text.contains("an instance cannot change type"), "{text}");
    assert_eq!(lab.instance("akt3", "akt3-a")["status"], "Running");
    lab.close();
}
