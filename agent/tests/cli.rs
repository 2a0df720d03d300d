//! `anklume sync` behaviours beyond the reference vectors, through the binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::tree;

const BASE: &str = "project_name: t\nglobal:\n  addressing:\n    base_octet: 10\n    zone_base: 100\n  default_os_image: images:debian/13\n";

fn sync(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_anklume"));
    c.current_dir(dir)
        .arg("sync")
        .args(args)
        .arg("--context-dir")
        .arg(&ctx);
    c.env("ANKLUME_SKIP_HOST_SUBNET_CHECK", "1")
        .env_remove("ANKLUME_HOST_SUBNETS");
    c.env_remove("ANKLUME_HOST_RESOURCES");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, rel: &str, s: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

#[test]
fn dry_run_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    machines:\n      a-1: {{}}\n"),
    );
    let o = sync(d.path(), &["--dry-run", "--base-dir", "out"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("[DRY-RUN] Would write: host_vars/a-1.yml"),
        "{}",
        text(&o)
    );
    assert!(!d.path().join("out").exists());
}

#[test]
fn default_input_prefers_an_infra_directory() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  file:\n    machines: {{}}\n"),
    );
    write(
        d.path(),
        "infra/base.yml",
        &format!("{BASE}domains:\n  dir:\n    machines: {{}}\n"),
    );
    let o = sync(d.path(), &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(d.path().join("group_vars/dir.yml").exists());
    assert!(!d.path().join("group_vars/file.yml").exists());
}

#[test]
fn clean_orphans_deletes_only_unprotected_files() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    machines:\n      a-1: {{}}\n"),
    );
    write(
        d.path(),
        "host_vars/old-eph.yml",
        "instance_ephemeral: true\n",
    );
    write(
        d.path(),
        "host_vars/old-keep.yml",
        "instance_ephemeral: false\n",
    );
    write(d.path(), "inventory/gone.yml", "all: {}\n");
    let o = sync(d.path(), &["--clean-orphans"], &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Deleted: host_vars/old-eph.yml"), "{t}");
    assert!(t.contains("Deleted: inventory/gone.yml"), "{t}");
    assert!(
        t.contains("Skipped (protected): host_vars/old-keep.yml"),
        "{t}"
    );
    assert!(!d.path().join("host_vars/old-eph.yml").exists());
    assert!(d.path().join("host_vars/old-keep.yml").exists());
}

#[test]
fn backslashes_survive_repeated_runs_and_no_anchors_are_written() {
    let d = tempfile::tempdir().unwrap();
    let infra = format!(
        "{BASE}domains:\n  a:\n    machines:\n      a-1:\n        description: 'tab \\t bs \\\\ digit \\d'\n        config: &c {{limits.cpu: '2'}}\n      a-2:\n        config: *c\n"
    );
    write(d.path(), "infra.yml", &infra);
    for _ in 0..3 {
        let o = sync(d.path(), &[], &[]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let a1 = std::fs::read_to_string(d.path().join("host_vars/a-1.yml")).unwrap();
    assert!(
        a1.contains("instance_description: tab \\t bs \\\\ digit \\d\n"),
        "{a1}"
    );
    let a2 = std::fs::read_to_string(d.path().join("host_vars/a-2.yml")).unwrap();
    assert!(a2.contains("instance_config:\n  limits.cpu: '2'\n"), "{a2}");
    assert!(
        !a1.contains('&') && !a2.contains('*'),
        "anchors/aliases written"
    );
}

#[test]
fn unchanged_files_are_not_rewritten() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    machines:\n      a-1: {{}}\n"),
    );
    assert!(sync(d.path(), &[], &[]).status.success());
    let p = d.path().join("host_vars/a-1.yml");
    let before = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = sync(d.path(), &[], &[]);
    assert!(
        text(&o).contains("Unchanged: host_vars/a-1.yml"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
}

#[test]
fn broken_inputs_get_clear_errors_and_write_nothing() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("null-global", b"project_name: x\nglobal:\ndomains: {}\n", "global must be a mapping, got null"),
        ("null-domain", b"project_name: x\nglobal: {}\ndomains:\n  a:\n", "domains.a must be a mapping"),
        ("wrong-type", b"project_name: x\nglobal: {}\ndomains:\n  a:\n    subnet_id: 1\n    machines:\n      m: {ip: 5}\n", "domains.a.machines.m.ip"),
        ("not-utf8", b"project_name: x\xff\n", "not valid UTF-8"),
        ("syntax", b"project_name: [x\n", "YAML syntax error"),
        ("empty", b"", "the file is empty"),
        ("float-base-subnet", b"project_name: x\nglobal:\n  base_subnet: 10.100\ndomains: {}\n", "quoted string"),
    ];
    for (name, input, needle) in cases {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("infra.yml"), input).unwrap();
        let o = sync(d.path(), &["--base-dir", "out"], &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(needle), "{name}: expected {needle:?} in:\n{t}");
        assert!(
            t.contains("infra.yml:"),
            "{name}: no file position in:\n{t}"
        );
        assert!(!d.path().join("out").exists(), "{name}: wrote output");
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("infra")).unwrap();
    let o = sync(d.path(), &["infra", "--base-dir", "out"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("base.yml not found in infra directory"),
        "{}",
        text(&o)
    );
}

#[test]
fn existing_non_utf8_output_file_aborts_before_writing() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    machines:\n      a-1: {{}}\n"),
    );
    std::fs::create_dir_all(d.path().join("host_vars")).unwrap();
    std::fs::write(d.path().join("host_vars/a-1.yml"), b"\xff\xfe").unwrap();
    let o = sync(d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not UTF-8"), "{}", text(&o));
    assert!(!d.path().join("group_vars/all.yml").exists());
}

#[test]
fn nesting_context_prefixes_incus_names() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    machines:\n      a-1: {{}}\n"),
    );
    write(d.path(), "ctx/absolute_level", "1\n");
    assert!(sync(d.path(), &[], &[]).status.success());
    let g = std::fs::read_to_string(d.path().join("group_vars/a.yml")).unwrap();
    assert!(
        g.contains("incus_project: 001-a\n") && g.contains("name: 001-net-a\n"),
        "{g}"
    );
    let h = std::fs::read_to_string(d.path().join("host_vars/a-1.yml")).unwrap();
    assert!(h.contains("instance_name: 001-a-1\n"), "{h}");
}

#[test]
fn privileged_lxc_needs_a_vm_or_yolo() {
    let d = tempfile::tempdir().unwrap();
    let infra = format!("{BASE}domains:\n  a:\n    machines:\n      a-1:\n        config: {{security.privileged: 'true'}}\n");
    write(d.path(), "infra.yml", &infra);
    write(d.path(), "ctx/vm_nested", "false\n");
    let o = sync(d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("security.privileged=true on LXC is forbidden"),
        "{}",
        text(&o)
    );
    write(d.path(), "ctx/yolo", "true\n");
    let o = sync(d.path(), &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("WARNING: YOLO: Machine 'a-1'"),
        "{}",
        text(&o)
    );
}

#[test]
fn resource_policy_shares_the_declared_host() {
    let d = tempfile::tempdir().unwrap();
    let infra = format!(
        "{BASE}  resource_policy:\n    cpu_mode: count\n    overcommit: true\ndomains:\n  a:\n    machines:\n      a-1: {{weight: 3}}\n      a-2: {{}}\n      a-3:\n        config: {{limits.memory: 1GiB}}\n"
    );
    write(d.path(), "infra.yml", &infra);
    let o = sync(
        d.path(),
        &[],
        &[("ANKLUME_HOST_RESOURCES", "cpu=10,memory=10GiB")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let a1 = std::fs::read_to_string(d.path().join("host_vars/a-1.yml")).unwrap();
    // 8 CPUs available (20 % reserved) for three machines, weights 3:1:1.
    assert!(a1.contains("limits.cpu: '4'"), "{a1}");
    // 8 GiB available shared 3:1 among the two machines without a limit.
    assert!(
        a1.contains("limits.memory: 6GiB") && a1.contains("limits.memory.enforce: soft"),
        "{a1}"
    );
    // 6 + 2 + 1 GiB > 8 GiB: allowed, but said.
    assert!(
        text(&o).contains("WARNING: Resource overcommit: Memory: 9GiB > 8GiB"),
        "{}",
        text(&o)
    );
    let a3 = std::fs::read_to_string(d.path().join("host_vars/a-3.yml")).unwrap();
    assert!(
        a3.contains("limits.memory: 1GiB") && a3.contains("limits.memory.enforce: soft"),
        "{a3}"
    );

    let over = format!(
        "{BASE}  resource_policy: true\ndomains:\n  a:\n    machines:\n      a-1:\n        config: {{limits.memory: 64GiB}}\n      a-2: {{}}\n"
    );
    write(d.path(), "infra.yml", &over);
    let o = sync(
        d.path(),
        &["--base-dir", "o2"],
        &[("ANKLUME_HOST_RESOURCES", "cpu=4,memory=8GiB")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("Resource overcommit: Memory:"),
        "{}",
        text(&o)
    );
}

#[test]
fn host_subnet_conflicts_are_refused() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!("{BASE}domains:\n  a:\n    trust_level: trusted\n    machines: {{}}\n"),
    );
    let o = sync(
        d.path(),
        &[],
        &[
            ("ANKLUME_SKIP_HOST_SUBNET_CHECK", "0"),
            ("ANKLUME_HOST_SUBNETS", "eth0=10.110.0.0/16"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("SUBNET CONFLICT: Domain 'a' uses 10.110.0.0/24 which overlaps with host interface 'eth0' (10.110.0.0/16)"),
        "{}",
        text(&o)
    );
    assert!(tree(&d.path().join("group_vars")).is_empty());
}

const POLICY_TO_MACHINE: &str = "network_policies:\n  - description: only work-one's service\n    from: admin\n    to: work-noip\n    ports: [80]\n";

/// A policy end naming a machine without an address would have to open the
/// machine's whole bridge: refused by sync and apply with the policy and the
/// machine named, before anything is written or any daemon is contacted.
#[test]
fn a_policy_to_a_machine_without_an_address_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!(
            "project_name: legacy\nglobal:\n  base_subnet: \"10.100\"\n  default_os_image: images:debian/13\n\
             domains:\n  admin:\n    subnet_id: 0\n    machines:\n      admin-one:\n        ip: 10.100.0.10\n\
             \x20 work:\n    subnet_id: 1\n    machines:\n      work-one:\n        ip: 10.100.1.10\n      work-noip: {{}}\n{POLICY_TO_MACHINE}"
        ),
    );
    let o = sync(d.path(), &["--base-dir", "out"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("network_policies[0]: 'to: work-noip' names machine work-noip (domain work), which has no IP address"),
        "{t}"
    );
    assert!(
        t.contains("at network_policies[0].to (") && t.contains("infra.yml:20:9)"),
        "{t}"
    );
    assert!(!d.path().join("out").exists());

    // apply: the same finding, and no attempt to reach Incus (the socket
    // does not exist; reaching for it would be a different error).
    let o = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .current_dir(d.path())
        .args([
            "apply",
            "--infra",
            "infra.yml",
            "--socket",
            "/nonexistent/unix.socket",
        ])
        .arg("--context-dir")
        .arg(d.path().join("ctx"))
        .env("ANKLUME_SKIP_HOST_SUBNET_CHECK", "1")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("'to: work-noip' names machine work-noip"), "{t}");
    assert!(!t.contains("nonexistent"), "{t}");
}

/// With zone addressing every machine gets an address, so the same policy
/// is accepted and stays narrow (its IP in the machine's host_vars).
#[test]
fn a_policy_to_a_machine_is_accepted_with_zone_addressing() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "infra.yml",
        &format!(
            "{BASE}domains:\n  admin:\n    trust_level: admin\n    machines:\n      admin-one: {{}}\n\
             \x20 work:\n    trust_level: trusted\n    machines:\n      work-one: {{}}\n      work-noip: {{}}\n{POLICY_TO_MACHINE}"
        ),
    );
    let o = sync(d.path(), &["--base-dir", "out"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let hv = std::fs::read_to_string(d.path().join("out/host_vars/work-noip.yml")).unwrap();
    assert!(hv.contains("instance_ip: 10.110.0."), "{hv}");
}
