//! The reference generator's vectors (`crates/generator/tests/vectors/`),
//! judged as their README says, through the real `anklume` binary.

mod common;

use std::path::Path;
use std::process::Command;

use common::{tree, vectors_dir};

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Run one vector; returns a list of failures (empty = pass).
fn check_vector(case: &Path) -> Vec<String> {
    let mut fails = Vec::new();
    let out_dir = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    if case.join("before").is_dir() {
        copy_dir(&case.join("before"), out_dir.path());
    }
    let input = if case.join("input/infra").is_dir() {
        case.join("input/infra")
    } else {
        case.join("input/infra.yml")
    };
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_anklume"))
            .arg("sync")
            .arg(&input)
            .arg("--base-dir")
            .arg(out_dir.path())
            .arg("--context-dir")
            .arg(ctx_dir.path())
            .env("ANKLUME_SKIP_HOST_SUBNET_CHECK", "1")
            .env_remove("ANKLUME_HOST_RESOURCES")
            .output()
            .unwrap()
    };
    let res = run();
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    let both = format!("{stdout}\n{stderr}");
    let want_rc: i32 = std::fs::read_to_string(case.join("expected.rc"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rc = res.status.code().unwrap_or(-1);
    if (rc == 0) != (want_rc == 0) {
        fails.push(format!("exit code {rc}, expected {want_rc}\n{stderr}"));
    }
    let got = tree(out_dir.path());
    let want = if case.join("expected").is_dir() {
        tree(&case.join("expected"))
    } else {
        Default::default()
    };
    if got != want {
        for (k, v) in &want {
            match got.get(k) {
                None => fails.push(format!("missing file {k}")),
                Some(g) if g != v => fails.push(format!(
                    "{k} differs:\n--- expected\n{}\n--- got\n{}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(g)
                )),
                _ => {}
            }
        }
        for k in got.keys().filter(|k| !want.contains_key(*k)) {
            fails.push(format!("unexpected file {k}"));
        }
    }
    let exp_err = std::fs::read_to_string(case.join("expected.stderr")).unwrap();
    for line in exp_err.lines() {
        let judged = line.starts_with("  - ")
            || line.starts_with("WARNING: ")
            || line.starts_with("ERROR: ");
        if judged && !both.contains(line) {
            fails.push(format!("missing message: {line}"));
        }
    }
    let exp_out = std::fs::read_to_string(case.join("expected.stdout")).unwrap();
    for line in exp_out.lines() {
        if (line.contains("ORPHAN: ") || line.contains("PROTECTED ")) && !stdout.contains(line) {
            fails.push(format!("missing orphan line: {line}"));
        }
    }
    // A second run over its own output changes nothing.
    if rc == 0 {
        let res2 = run();
        if !res2.status.success() || tree(out_dir.path()) != got {
            fails.push("second run changed the tree".into());
        }
    }
    fails
}

#[test]
fn every_reference_vector_passes() {
    let dir = vectors_dir();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 18,
        "expected the 18 reference vectors, found {}",
        cases.len()
    );
    let mut report = String::new();
    for case in &cases {
        let fails = check_vector(case);
        if !fails.is_empty() {
            report.push_str(&format!("\n## {}\n{}\n", case.display(), fails.join("\n")));
        }
    }
    assert!(report.is_empty(), "vector failures:{report}");
}
