//! `anklume update` is `anklume-update`'s command line over the same
//! library: the same refusals and the same key making, through the binary.

use std::process::Command;

fn anklume(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_anklume"))
        .arg("update")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn update_needs_one_operation() {
    let (code, out) = anklume(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing to do: give --from FILE"), "{out}");
    let (code, out) = anklume(&["--status", "--rollback"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("give only one of"), "{out}");
}

#[test]
fn update_makes_a_key_pair_and_refuses_to_overwrite_it() {
    let d = tempfile::tempdir().unwrap();
    let name = d.path().join("release");
    let (code, out) = anklume(&["--new-key", name.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(d.path().join("release.key").is_file());
    let public = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "pub"));
    assert!(public, "no .pub written");
    let (code, out) = anklume(&["--new-key", name.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
}
