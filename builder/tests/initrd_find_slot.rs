//! The initrd's search for the slot a signed UKI boots (`anklume-root.sh`,
//! whose command line names the image's root hash, not a partition): the
//! root hash its shell functions compute from a verity superblock and the
//! top hash block is the tree's, a tree with another salt or data gives
//! another, and the slot A of an ISO-like file (a GPT naming
//! `anklume-slot-a`, as Ventoy's ISO files) is found by its GPT entry.
//! Run with `dash`, the initrd's `/bin/sh` on Debian, and with `bash`.
//!
//! Needs `sgdisk` (gdisk, installed by `ci/setup-image`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anklume_build::verity;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../mkosi/debian/mkosi.extra/usr/lib/anklume/initrd/anklume-root.sh"
);

/// The named shell functions of the initrd script and its
/// `SLOT_A_NAME_HEX` line.
fn functions(names: &[&str]) -> String {
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let mut out = String::new();
    let line = script
        .lines()
        .find(|l| l.starts_with("SLOT_A_NAME_HEX="))
        .expect("SLOT_A_NAME_HEX in the script");
    out.push_str(line);
    out.push('\n');
    for n in names {
        let start = script
            .find(&format!("\n{n}() {{"))
            .unwrap_or_else(|| panic!("no function {n} in the script"))
            + 1;
        let end = start + script[start..].find("\n}\n").unwrap() + 3;
        out.push_str(&script[start..end]);
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A sealed slot at byte `at` of `file` (data, then the verity area at the
/// hash offset); returns the hash offset and the root hash.
fn seal_at(file: &Path, at: u64, seed: u64) -> (u64, String) {
    let data = noise(40 * 4096 + 123, seed);
    let slot = file.with_extension(format!("slot{seed}"));
    std::fs::write(&slot, &data).unwrap();
    let offset = 41 * 4096;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slot)
        .unwrap();
    f.set_len(offset).unwrap();
    let formatted = verity::format(
        &f,
        &f,
        &verity::FormatOptions {
            params: verity::Params {
                data_blocks: offset / 4096,
                salt: noise(32, seed ^ 0x5a17),
                uuid: verity::as_uuid_v4(noise(16, 7).try_into().unwrap()),
            },
            hash_offset: offset,
            data_offset: 0,
            threads: 1,
        },
        &|_| {},
    )
    .unwrap();
    let sealed = std::fs::read(&slot).unwrap();
    let out = OpenOptions::new().write(true).open(file).unwrap();
    out.write_all_at(&sealed, at).unwrap();
    (offset, verity::hex(&formatted.root_hash))
}

/// Run `body` after the script's functions under `shell`; stdout.
fn sh(shell: &str, body: &str) -> String {
    sh_with(&["hex_to_bin", "verity_root", "iso_has_slot"], shell, body)
}

/// Run `body` after the script's functions `names` under `shell`; stdout.
fn sh_with(names: &[&str], shell: &str, body: &str) -> String {
    let fns = functions(names);
    let out = Command::new(shell)
        .arg("-c")
        .arg(format!("set -eu\n{fns}{body}"))
        .output()
        .unwrap_or_else(|e| panic!("running {shell}: {e}"));
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_initrd_finds_a_ukis_slot_by_its_root_hash() {
    let d = tempfile::tempdir().unwrap();
    // An ISO-like file: a GPT whose third entry is slot A at sector 4096
    // (not a multiple of 8: the ISO's partitions need not be 4 KiB aligned
    // on the medium), the slot sealed there.
    let iso = d.path().join("anklume.iso");
    std::fs::File::create(&iso)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let first = 4097u64;
    let gpt = Command::new("sgdisk")
        .args(["-o", "-a", "1", "-n", "1:2048:+512K", "-c", "1:ISO9660"])
        .args(["-n", "2:3072:4095", "-t", "2:EF00", "-c", "2:anklume-esp"])
        .args(["-n", &format!("3:{first}:+3M")])
        .args(["-t", "3:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"])
        .args(["-c", "3:anklume-slot-a"])
        .arg(&iso)
        .output()
        .expect("running sgdisk (install gdisk: ci/setup-image)");
    assert!(
        gpt.status.success(),
        "sgdisk: {}",
        String::from_utf8_lossy(&gpt.stderr)
    );
    let (offset, root) = seal_at(&iso, first * 512, 1);
    // The same layout with other data and salt: another root hash.
    let other = d.path().join("other");
    std::fs::File::create(&other).unwrap();
    let (_, other_root) = seal_at(&other, 0, 2);
    let path = iso.display();

    for shell in ["dash", "bash"] {
        // The root hash computed from the superblock and top block.
        let got = sh(
            shell,
            &format!("verity_root '{path}' {}", first + offset / 512),
        );
        assert_eq!(got, root, "{shell}");
        // No superblock there: nothing.
        let got = sh(shell, &format!("verity_root '{path}' {first}"));
        assert_eq!(got, "", "{shell}");
        // The ISO file holds the slot with this root hash, not another's.
        let has = |want: &str| {
            sh(
                shell,
                &format!(
                    "SLOT_GUID_HEX=''; ROOTHASH={want}; HASHOFF={offset}\n\
                     if iso_has_slot '{path}'; then echo yes; else echo no; fi"
                ),
            )
        };
        assert_eq!(has(&root), "yes", "{shell}");
        assert_eq!(has(&other_root), "no", "{shell}");
    }
}

/// Under Ventoy the initrd mounts the stick's data partition to find the
/// ISO file. While Ventoy's own hooks set up `/dev/mapper/ventoy`, which
/// holds that partition, the mount fails ("Can't open blockdev": a CI boot
/// stopped 120 s later because the search never looked again, not even
/// for the map): it is tried again at the next round, the failure said
/// once, and once mounted and exposed it is not done twice.
#[test]
fn a_ventoy_data_partition_that_cannot_be_mounted_yet_is_tried_again() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().display();
    // Any block device of this machine stands for the data partition
    // (the mount itself is a stub).
    let block = std::fs::read_dir("/sys/class/block")
        .unwrap()
        .filter_map(|e| {
            let dev = Path::new("/dev").join(e.unwrap().file_name());
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(&dev)
                .is_ok_and(|m| m.file_type().is_block_device())
                .then_some(dev)
        })
        .next()
        .expect("a block device in /sys/class/block");
    // VentoyOsParam: the ISO's path at byte 49 (after the attributes).
    let mut var = vec![0u8; 49 + 384];
    var[49..49 + 17].copy_from_slice(b"/iso/anklume.iso\0");
    std::fs::write(d.path().join("var"), var).unwrap();
    std::fs::create_dir_all(d.path().join("mnt/iso")).unwrap();
    std::fs::write(d.path().join("mnt/iso/anklume.iso"), b"iso").unwrap();
    std::fs::write(d.path().join("count"), "0").unwrap();
    for shell in ["dash", "bash"] {
        std::fs::write(d.path().join("count"), "0").unwrap();
        let out = sh_with(
            &["expose_ventoy"],
            shell,
            &format!(
                r#"say() {{ echo "say: $*"; }}
expose() {{ echo "expose: $1 $2"; }}
ventoy_data_part() {{ echo {block}; }}
iso_has_slot() {{ [ "$1" = "{t}/mnt/iso/anklume.iso" ]; }}
mount() {{
    n=$(cat {t}/count); echo $((n + 1)) > {t}/count
    if [ "$n" -lt 2 ]; then echo "mount: Can't open blockdev." >&2; return 32; fi
}}
exposed=" "; vtoy_mount_said=""; VTOY_VAR={t}/var; VTOY_MNT={t}/mnt
for round in 1 2 3 4; do expose_ventoy; done
echo "mounts: $(cat {t}/count)"
"#,
                block = block.display()
            ),
        );
        let want = format!(
            "say: Ventoy: cannot mount its data partition {b} yet (mount: Can't open blockdev. ); trying again\n\
             say: Ventoy: the ISO is /iso/anklume.iso on {b}\n\
             expose: {t}/mnt/iso/anklume.iso ventoy\n\
             mounts: 3",
            b = block.display()
        );
        assert_eq!(out, want, "{shell}");
    }
}
