//! `anklume apply` never creates or starts an instance without its
//! isolation: against a real `incusd` (as in `apply_incus.rs`), with an
//! `nft` that really fails — a wrapper found first in `PATH` that refuses
//! one operation and hands the others to the real `nft`:
//! - the load (`nft -f -`) fails: nothing is made, every other change is
//!   reported skipped with the reason, exit 1;
//! - the check of a dry run (`nft -c`) fails: exit 1, the reason;
//! - reading the live table (`nft list`) fails: nothing is made, exit 1;
//! - an existing stopped instance is not started while the ruleset cannot
//!   be loaded;
//! - each change not made is listed `SKIPPED:` with the reason.
//! - with the real `nft`, the same runs converge.
//!
//! One test in its own binary: it changes this process's `PATH` (after the
//! daemon started, so only anklume's own `nft` calls see the wrapper).

mod common;

use std::path::PathBuf;
use std::process::Command;

use anklume_reconciler::ApplySummary;
use serde_json::Value;

const IMAGE: &str = "anklume-test";

const INFRA: &str = "project_name: ruleset-first
global:
  addressing:
    base_octet: 10
    zone_base: 200
  default_os_image: anklume-test
domains:
  rsf1:
    trust_level: trusted
    machines:
      rsf1-a:
        type: lxc
      rsf1-b:
        type: lxc
  rsf2:
    trust_level: untrusted
    machines:
      rsf2-a:
        type: lxc
";

/// `nft` that refuses what `$DIR/mode` says and runs the real one
/// otherwise. Arguments as anklume passes them: `-f -` (load), `-c -f -`
/// (check), `list tables`, `list table inet anklume`.
const WRAPPER: &str = r#"#!/bin/sh
mode=$(cat "$(dirname "$0")/mode")
case "$mode:$1" in
  no-load:-f) echo "Error: load refused by the test's nft" >&2; exit 1 ;;
  no-check:-c) echo "Error: check refused by the test's nft" >&2; exit 1 ;;
  no-list:list) echo "Error: listing refused by the test's nft" >&2; exit 1 ;;
esac
exec REAL "$@"
"#;

/// The shared lab and the real `nft` (for the test's own looks at the
/// table).
struct Lab {
    lab: common::lab::Lab,
    nft: PathBuf,
}

impl std::ops::Deref for Lab {
    type Target = common::lab::Lab;
    fn deref(&self) -> &common::lab::Lab {
        &self.lab
    }
}

impl Lab {
    fn new(infra: &str) -> Lab {
        let lab = common::lab::Lab::new("anklume-apply-", Some(infra));
        lab.import_image(IMAGE, false);
        Lab {
            lab,
            nft: which("nft"),
        }
    }

    /// Put the wrapper first in `PATH`, in `mode` (`real` passes all).
    fn install_wrapper(&self) {
        let bin = self.dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("nft");
        std::fs::write(
            &script,
            WRAPPER.replace("REAL", &self.nft.display().to_string()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.nft_mode("real");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin];
        dirs.extend(std::env::split_paths(&path));
        std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
        assert_eq!(which("nft"), script);
    }

    fn nft_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("bin/mode"), mode).unwrap();
    }

    fn apply(&self, dry_run: bool) -> (i32, ApplySummary, String) {
        self.apply_with(&self.options(dry_run, false))
    }

    /// Every instance, in every project: `project/name status`.
    fn instances(&self) -> Vec<String> {
        let all: Vec<Value> = self
            .c
            .get("/1.0/instances?recursion=1&all-projects=true")
            .unwrap();
        let mut v: Vec<String> = all
            .iter()
            .map(|i| {
                format!(
                    "{}/{} {}",
                    i["project"].as_str().unwrap(),
                    i["name"].as_str().unwrap(),
                    i["status"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Incus's own objects anklume would make: managed networks, projects
    /// other than `default`.
    fn domain_objects(&self) -> Vec<String> {
        let nets: Vec<Value> = self.c.get("/1.0/networks?recursion=1").unwrap();
        let projects: Vec<Value> = self.c.get("/1.0/projects?recursion=1").unwrap();
        nets.iter()
            .filter(|n| n["managed"] == true)
            .map(|n| format!("network {}", n["name"].as_str().unwrap()))
            .chain(
                projects
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .filter(|p| *p != "default")
                    .map(|p| format!("project {p}")),
            )
            .collect()
    }

    /// The real `nft` in the daemon's namespace.
    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.daemon().netns_path().display()))
            .arg(&self.nft)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn close(self) {
        self.lab.close()
    }
}

/// The first `name` in `PATH`.
fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not in PATH (install nftables: ci/setup-image)"))
}

/// Every change but the ruleset reported skipped for `why`.
fn assert_all_skipped(s: &ApplySummary, text: &str, why: &str) {
    // ruleset + 2 × (network, project, default profile) + 3 instances
    assert_eq!((s.created, s.failed, s.skipped), (10, 1, 9), "{text}");
    for change in [
        "create network net-rsf1",
        "create project rsf1",
        "create profile rsf1/default",
        "create instance rsf1/rsf1-a",
        "create instance rsf1/rsf1-b",
        "create network net-rsf2",
        "create project rsf2",
        "create profile rsf2/default",
        "create instance rsf2/rsf2-a",
    ] {
        let line = format!("SKIPPED: {change}: {why}");
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("] create instance"),
        "an instance change ran:\n{text}"
    );
}

#[test]
fn no_instance_without_its_isolation_ruleset() {
    let lab = Lab::new(INFRA);
    lab.install_wrapper();
    let ns = lab.daemon().netns_path();
    let nft_line = |op: &str| format!("`nsenter --net={} nft {op}` failed", ns.display());

    // The load fails: nothing is made.
    lab.nft_mode("no-load");
    let (code, s, text) = lab.apply(false);
    assert_eq!(code, 1, "{text}");
    let why = format!(
        "the isolation ruleset could not be loaded: loading the nftables ruleset: {} (exit status: 1)",
        nft_line("-f -")
    );
    assert_all_skipped(&s, &text, &why);
    assert!(
        text.contains("FAILED: create nftables inet anklume: loading the nftables ruleset")
            && text.contains("Error: load refused by the test's nft"),
        "{text}"
    );
    assert_eq!(lab.instances(), Vec::<String>::new());
    assert_eq!(lab.domain_objects(), Vec::<String>::new());
    assert!(!lab.nft(&["list", "tables"]).contains("anklume"));
    assert!(
        !lab.dir.join("state/nftables.rules").exists(),
        "a ruleset that did not load must not be kept as the last loaded"
    );

    // The dry run's check fails: exit 1, the reason.
    lab.nft_mode("no-check");
    let (code, s, text) = lab.apply(true);
    assert_eq!((code, s.failed, s.skipped), (1, 1, 9), "{text}");
    assert!(
        text.contains("FAILED: create nftables inet anklume: checking the nftables ruleset")
            && text.contains("Error: check refused by the test's nft")
            && text.contains(
                "the isolation ruleset could not be checked: a run would make none of the 9 other change(s)"
            ),
        "{text}"
    );

    // The live table cannot be read: nothing is made.
    lab.nft_mode("no-list");
    let (code, s, text) = lab.apply(false);
    assert_eq!(code, 1, "{text}");
    let why = format!(
        "the isolation ruleset could not be loaded: listing nftables tables: {} (exit status: 1)",
        nft_line("list tables")
    );
    // The ruleset line is an update: its state is unknown.
    assert_eq!((s.created, s.updated), (9, 1), "{text}");
    assert_eq!((s.failed, s.skipped), (1, 9), "{text}");
    assert!(
        text.contains("update     nftables  inet anklume")
            && text.contains("the live table could not be read")
            && text.contains("Error: listing refused by the test's nft"),
        "{text}"
    );
    for change in ["create instance rsf1/rsf1-a", "create network net-rsf2"] {
        let line = format!("SKIPPED: {change}: {why}");
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    assert_eq!(lab.instances(), Vec::<String>::new());
    assert_eq!(lab.domain_objects(), Vec::<String>::new());

    // The real nft: everything converges, then nothing to do.
    lab.nft_mode("real");
    let (code, s, text) = lab.apply(false);
    assert_eq!(
        (code, s.created, s.failed, s.skipped),
        (0, 10, 0, 0),
        "{text}"
    );
    assert_eq!(
        lab.instances(),
        [
            "rsf1/rsf1-a Running",
            "rsf1/rsf1-b Running",
            "rsf2/rsf2-a Running"
        ]
    );
    assert!(lab.nft(&["list", "tables"]).contains("table inet anklume"));
    let (code, s, text) = lab.apply(false);
    assert_eq!((code, s.changes(), s.failed), (0, 0, 0), "{text}");

    // A stopped instance is not started while the ruleset cannot be loaded
    // (the table is gone, so the run must load it first).
    lab.c
        .put(
            "/1.0/instances/rsf1-b/state?project=rsf1",
            &serde_json::json!({"action": "stop", "force": true, "timeout": 30}),
        )
        .unwrap();
    lab.nft(&["delete", "table", "inet", "anklume"]);
    lab.nft_mode("no-load");
    let (code, s, text) = lab.apply(false);
    assert_eq!((code, s.created, s.updated), (1, 1, 1), "{text}");
    assert_eq!((s.failed, s.skipped), (1, 1), "{text}");
    assert!(
        text.contains(&format!(
            "SKIPPED: update instance rsf1/rsf1-b: the isolation ruleset could not be loaded: loading the nftables ruleset: {}",
            nft_line("-f -")
        )),
        "{text}"
    );
    assert!(lab.instances().contains(&"rsf1/rsf1-b Stopped".to_string()));

    lab.nft_mode("real");
    let (code, s, text) = lab.apply(false);
    assert_eq!(
        (code, s.created, s.updated, s.failed),
        (0, 1, 1, 0),
        "{text}"
    );
    assert!(lab.instances().contains(&"rsf1/rsf1-b Running".to_string()));
    lab.close();
}
