//! Our verity writer against the real `veritysetup` (cryptsetup-bin): the
//! hash files must be byte-identical and each tool must accept the other's
//! output. `veritysetup format/verify` need no device-mapper.
//!
//! Needs `veritysetup` (installed by `ci/setup-image`); the test fails, it
//! does not skip, when it is missing.

use std::path::Path;
use std::process::Command;

const UUID: &str = "0b5e6f3a-2c1d-4e8f-9a7b-6c5d4e3f2a1b";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_anklume-build")
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("running {cmd:?}: {e} (install cryptsetup-bin: ci/setup-image)")
    });
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Deterministic pseudo-random data (xorshift), so failures reproduce.
fn data(blocks: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..blocks * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn root_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .expect("a Root hash: line")
        .trim()
        .to_string()
}

fn compare(dir: &Path, blocks: usize, salt: &str, hash_offset: u64, same_file: bool) {
    let d = data(blocks, blocks as u64);
    let ours_data = dir.join(format!("ours-{blocks}"));
    let theirs_data = dir.join(format!("theirs-{blocks}"));
    std::fs::write(&ours_data, &d).unwrap();
    std::fs::write(&theirs_data, &d).unwrap();
    let (ours_hash, theirs_hash) = if same_file {
        (ours_data.clone(), theirs_data.clone())
    } else {
        (
            dir.join(format!("ours-{blocks}.hash")),
            dir.join(format!("theirs-{blocks}.hash")),
        )
    };
    let args = |data: &Path, hash: &Path| {
        let mut v: Vec<String> = vec![
            "format".into(),
            data.display().to_string(),
            hash.display().to_string(),
            "--salt".into(),
            salt.into(),
            "--uuid".into(),
            UUID.into(),
            "--data-blocks".into(),
            blocks.to_string(),
        ];
        if hash_offset > 0 {
            v.push("--hash-offset".into());
            v.push(hash_offset.to_string());
        }
        v
    };
    let (c1, out1, err1) = run(Command::new(bin())
        .arg("verity")
        .args(args(&ours_data, &ours_hash)));
    assert_eq!(c1, 0, "anklume-build verity format failed: {err1}");
    let (c2, out2, err2) = run(Command::new("veritysetup").args(args(&theirs_data, &theirs_hash)));
    assert_eq!(c2, 0, "veritysetup format failed: {err2}");
    // Same report, apart from the file name in the first line.
    let strip = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        strip(&out1),
        strip(&out2),
        "{blocks} blocks: reports differ"
    );
    let a = std::fs::read(&ours_hash).unwrap();
    let b = std::fs::read(&theirs_hash).unwrap();
    assert_eq!(a.len(), b.len(), "{blocks} blocks: hash file sizes differ");
    assert!(a == b, "{blocks} blocks: hash files differ");
    let root = root_of(&out1);
    let off = hash_offset.to_string();
    // Each tool verifies the other's tree.
    let (c, _, e) = run(Command::new("veritysetup")
        .args(["verify", "--hash-offset", &off])
        .arg(&ours_data)
        .arg(&ours_hash)
        .arg(&root));
    assert_eq!(c, 0, "veritysetup rejects our tree: {e}");
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "verify", "--hash-offset", &off])
        .arg(&theirs_data)
        .arg(&theirs_hash)
        .arg(&root));
    assert_eq!(c, 0, "we reject veritysetup's tree: {e}");
}

#[test]
fn byte_identical_to_veritysetup_on_the_issue_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for blocks in [1, 127, 128, 129, 16385, 100_000] {
        compare(dir.path(), blocks, "5a17ab1e00c0ffee", 0, false);
    }
}

#[test]
fn byte_identical_in_the_slot_layout_and_without_salt() {
    let dir = tempfile::tempdir().unwrap();
    // Data and tree in one file, tree at the 4 KiB-aligned end of the data.
    compare(
        dir.path(),
        300,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        300 * 4096,
        true,
    );
    // Separate hash file with an offset, empty salt.
    compare(dir.path(), 129, "-", 8192, false);
}

#[test]
fn verify_detects_corruption_like_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let hash = dir.path().join("h");
    std::fs::write(&data, data_blocks(200)).unwrap();
    let (c, out, e) = run(Command::new(bin())
        .args(["verity", "format", "--salt", "ab"])
        .arg(&data)
        .arg(&hash));
    assert_eq!(c, 0, "{e}");
    let root = root_of(&out);
    // Flip one byte in data block 150.
    let mut d = std::fs::read(&data).unwrap();
    d[150 * 4096 + 17] ^= 0x40;
    std::fs::write(&data, &d).unwrap();
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "verify"])
        .arg(&data)
        .arg(&hash)
        .arg(&root));
    assert_eq!(c, 2, "corrupt data must exit 2: {e}");
    assert!(e.contains("data block 150"), "{e}");
    assert!(e.contains("Verification of data area failed."), "{e}");
    let (c, _, _) = run(Command::new("veritysetup")
        .args(["verify"])
        .arg(&data)
        .arg(&hash)
        .arg(&root));
    assert_eq!(c, 2, "veritysetup agrees the data is corrupt");
    // Restore the data, use a wrong root hash.
    d[150 * 4096 + 17] ^= 0x40;
    std::fs::write(&data, &d).unwrap();
    let wrong = format!("{}0", &root[..63]);
    let wrong = if wrong == root {
        format!("{}1", &root[..63])
    } else {
        wrong
    };
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "verify"])
        .arg(&data)
        .arg(&hash)
        .arg(&wrong));
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("Verification of root hash failed."), "{e}");
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "verify"])
        .arg(&data)
        .arg(&hash)
        .arg("zz"));
    assert_eq!(c, 1);
    assert!(e.contains("Invalid root hash string specified."), "{e}");
    let (c, _, _) = run(Command::new(bin())
        .args(["verity", "verify"])
        .arg(&data)
        .arg(&hash)
        .arg(&root));
    assert_eq!(c, 0);
}

#[test]
fn format_refuses_overlap_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::write(&data, data_blocks(10)).unwrap();
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "format", "--hash-offset", "4096"])
        .arg(&data)
        .arg(&data));
    assert_eq!(c, 1);
    assert!(e.contains("Data area overlaps with hash area."), "{e}");
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "format", "--hash-offset", "4097"])
        .arg(&data)
        .arg(dir.path().join("h")));
    assert_eq!(c, 1);
    assert!(e.contains("not a multiple of 4096"), "{e}");
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "format", "--salt", "xyz"])
        .arg(&data)
        .arg(dir.path().join("h")));
    assert_eq!(c, 1);
    assert!(e.contains("--salt"), "{e}");
    let (c, _, e) = run(Command::new(bin())
        .args(["verity", "format", "--data-blocks", "11"])
        .arg(&data)
        .arg(dir.path().join("h")));
    assert_eq!(c, 1);
    assert!(e.contains("exceeds the 10 blocks"), "{e}");
}

fn data_blocks(n: usize) -> Vec<u8> {
    data(n, 7)
}
