//! `anklume apply` against a real `incusd` started here: projects and
//! bridges created, a second run changes nothing, drift is corrected,
//! orphans are reported and deleted only when asked, a dry run changes
//! nothing. Bridges have NAT off.

use std::path::Path;

use anklume::apply::desired::ApplySettings;
use anklume::apply::{run, ApplyOptions, ApplySummary};
use anklume::incus::testd::TestDaemon;
use serde_json::{json, Value};

const INFRA: &str = "project_name: apply-test
global:
  addressing:
    base_octet: 10
    zone_base: 200
domains:
  akt1:
    trust_level: trusted
    description: first domain
    machines:
      akt1-m:
        type: lxc
  akt2:
    trust_level: untrusted
    description: second domain
    machines:
      akt2-m:
        type: lxc
";

fn apply(
    dir: &Path,
    socket: &Path,
    dry_run: bool,
    clean_orphans: bool,
) -> (i32, ApplySummary, String) {
    let o = ApplyOptions {
        infra: Some(dir.join("infra.yml")),
        context_dir: Some(dir.join("ctx")),
        domains: vec![],
        dry_run,
        clean_orphans,
        socket: socket.to_path_buf(),
        settings: ApplySettings { nat: false },
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (code, s) = run(&o, &mut out, &mut err).expect("apply runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    (code, s, text)
}

#[test]
fn projects_and_bridges_converge() {
    let tmp = tempfile::Builder::new()
        .prefix("anklume-apply-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("infra.yml"), INFRA).unwrap();
    let d = TestDaemon::start(&dir.join("incus")).expect("start incusd");
    let sock = d.socket();
    let c = d.client().unwrap();

    // Dry run on an empty Incus: a plan, no change.
    let (code, s, text) = apply(dir, &sock, true, false);
    assert_eq!(code, 0, "{text}");
    assert_eq!(s.created, 4, "{text}");
    assert!(c.get_opt::<Value>("/1.0/projects/akt1").unwrap().is_none());

    // From scratch.
    let (code, s, text) = apply(dir, &sock, false, false);
    assert_eq!((code, s.created, s.failed), (0, 4, 0), "{text}");
    let p: Value = c.get("/1.0/projects/akt1").unwrap();
    assert_eq!(p["description"], "first domain");
    assert_eq!(p["config"]["features.images"], "true");
    assert_eq!(p["config"]["features.networks"], "false");
    assert_eq!(p["config"]["user.anklume.managed"], "true");
    let n: Value = c.get("/1.0/networks/net-akt1").unwrap();
    assert_eq!(n["type"], "bridge");
    assert_eq!(n["config"]["ipv4.address"], "10.210.0.254/24");
    assert_eq!(n["config"]["ipv4.nat"], "false");
    assert_eq!(n["config"]["ipv4.dhcp.ranges"], "10.210.0.100-10.210.0.249");
    assert_eq!(n["config"]["ipv6.address"], "none");

    // A second run changes nothing.
    let (code, s, text) = apply(dir, &sock, false, false);
    assert_eq!(
        (code, s.created, s.updated, s.unchanged),
        (0, 0, 0, 4),
        "{text}"
    );

    // Drift (a config key, the description, a removed key) is corrected;
    // keys anklume does not own are left alone.
    c.patch(
        "/1.0/networks/net-akt2",
        &json!({"config": {"ipv4.dhcp.ranges": "10.240.0.10-10.240.0.20", "user.mine": "kept"}}),
    )
    .unwrap();
    c.patch(
        "/1.0/projects/akt1",
        &json!({"description": "edited by hand"}),
    )
    .unwrap();
    let (code, s, text) = apply(dir, &sock, false, false);
    assert_eq!((code, s.updated, s.unchanged), (0, 2, 2), "{text}");
    assert!(
        text.contains("ipv4.dhcp.ranges: 10.240.0.10-10.240.0.20 → 10.240.0.100-10.240.0.249"),
        "{text}"
    );
    let n: Value = c.get("/1.0/networks/net-akt2").unwrap();
    assert_eq!(n["config"]["ipv4.dhcp.ranges"], "10.240.0.100-10.240.0.249");
    assert_eq!(n["config"]["user.mine"], "kept");
    assert_eq!(
        c.get::<Value>("/1.0/projects/akt1").unwrap()["description"],
        "first domain"
    );

    // A domain removed from infra.yml: its project and bridge are orphans,
    // kept; a project anklume did not make is never one.
    c.post("/1.0/projects", &json!({"name": "handmade"}))
        .unwrap();
    std::fs::write(
        dir.join("infra.yml"),
        INFRA.split("  akt2:").next().unwrap(),
    )
    .unwrap();
    let (code, s, text) = apply(dir, &sock, false, false);
    assert_eq!((code, s.orphans, s.deleted), (0, 2, 0), "{text}");
    assert!(!text.contains("handmade"), "{text}");
    assert!(c.get_opt::<Value>("/1.0/projects/akt2").unwrap().is_some());
    let (code, s, text) = apply(dir, &sock, false, true);
    assert_eq!((code, s.deleted, s.failed), (0, 2, 0), "{text}");
    assert!(c.get_opt::<Value>("/1.0/projects/akt2").unwrap().is_none());
    assert!(c
        .get_opt::<Value>("/1.0/networks/net-akt2")
        .unwrap()
        .is_none());
    assert!(c
        .get_opt::<Value>("/1.0/projects/handmade")
        .unwrap()
        .is_some());

    // Clean up the host bridge before the daemon goes.
    c.delete("/1.0/projects/akt1").unwrap();
    c.delete("/1.0/networks/net-akt1").unwrap();
    let dir = d.dir().to_path_buf();
    d.close().unwrap();
    assert!(
        !dir.exists(),
        "the daemon's directory (and its mounts) must be gone"
    );
}
