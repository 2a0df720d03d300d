//! The GPT patcher against `sgdisk` (gdisk, installed by ci/setup-image):
//! a table made by sgdisk, edited by us, must verify and read back as edited,
//! with the MBR untouched.

use std::process::Command;

use anklume_build::gpt::{self, Edit};

fn sgdisk(args: &[&str]) -> String {
    let out = Command::new("sgdisk")
        .args(args)
        .output()
        .expect("sgdisk (gdisk) must be installed: ci/setup-image");
    assert!(
        out.status.success(),
        "sgdisk {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn edits_names_guids_and_keeps_both_tables_valid() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let p = img.to_str().unwrap();
    sgdisk(&[
        "-n",
        "1:2048:+2M",
        "-t",
        "1:EF00",
        "-n",
        "2:0:+3M",
        "-t",
        "2:8304",
        p,
    ]);
    // Boot code in the MBR must survive.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[0..4].copy_from_slice(b"\xeb\x63\x90\x10");
    std::fs::write(&img, &bytes).unwrap();
    let mbr_before = bytes[..512].to_vec();

    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let esp_guid = gpt::derived_guid(b"esp");
    let disk_guid = gpt::derived_guid(b"disk");
    gpt::edit(
        &f,
        Some(&disk_guid),
        &[
            (
                1,
                Edit {
                    name: Some("anklume-esp".into()),
                    unique_guid: Some(esp_guid.clone()),
                    type_guid: None,
                },
            ),
            (
                2,
                Edit {
                    name: Some("anklume-slot-a".into()),
                    ..Edit::default()
                },
            ),
        ],
    )
    .unwrap();
    drop(f);

    assert!(sgdisk(&["-v", p]).contains("No problems found"));
    let info = sgdisk(&["-i", "1", p]);
    assert!(
        info.contains(&format!("Partition unique GUID: {esp_guid}")),
        "{info}"
    );
    assert!(info.contains("Partition name: 'anklume-esp'"), "{info}");
    assert!(sgdisk(&["-i", "2", p]).contains("Partition name: 'anklume-slot-a'"));
    assert!(sgdisk(&["-p", p]).contains(&format!("Disk identifier (GUID): {disk_guid}")));
    assert_eq!(std::fs::read(&img).unwrap()[..512], mbr_before[..]);

    let f = std::fs::File::open(&img).unwrap();
    let parts = gpt::read(&f).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].name, "anklume-esp");
    assert_eq!(parts[0].offset(), 2048 * 512);
    assert_eq!(parts[0].size(), 2 << 20);

    // Errors: a name too long, an unused entry.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let long = Edit {
        name: Some("x".repeat(37)),
        ..Edit::default()
    };
    assert!(gpt::edit(&f, None, &[(1, long)])
        .unwrap_err()
        .to_string()
        .contains("longer than 36"));
    assert!(gpt::edit(&f, None, &[(5, Edit::default())])
        .unwrap_err()
        .to_string()
        .contains("unused"));
}
