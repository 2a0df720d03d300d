use super::*;
use crate::inventory::Inventory;
use crate::testdata::*;

const EXAMPLE: &str = include_str!("../../../../anklume-seed.example.toml");

fn parse(text: &str) -> Result<Preseed> {
    Preseed::parse(text, "seed.toml", Path::new("/nonexistent"))
}

fn err(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

fn plan_err(text: &str, inv: &Inventory) -> String {
    format!("{:#}", parse(text).unwrap().plan(inv).unwrap_err())
}

const MINI: &str =
    "[disk]\nserial = \"ZFL0ABCD\"\n\n[encryption]\npassphrase = \"correct horse\"\n";

#[test]
fn the_example_parses_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passphrase.txt"), "from the file\n").unwrap();
    let p = Preseed::parse(EXAMPLE, "example", dir.path()).unwrap();
    assert_eq!(p.passphrase.expose(), "from the file");
    let plan = p.plan(&usb_boot()).unwrap();
    assert_eq!(plan.disk().disk().name, "nvme0n1");
    assert!(plan.wipe().is_none());
    assert_eq!(plan.filesystem, Filesystem::btrfs_default());
    assert_eq!(
        plan.luks.argon2id,
        Argon2id {
            memory_kib: 1 << 20,
            iterations: 4,
            parallel: 4
        }
    );
    assert!(!plan.tpm2);
}

#[test]
fn the_passphrase_is_kept_only_as_a_hidden_secret() {
    let p = parse(MINI).unwrap();
    assert_eq!(p.passphrase.expose(), "correct horse");
    assert!(!format!("{p:?}").contains("correct horse"));
}

#[test]
fn unknown_keys_are_refused_with_line_and_key() {
    let e = err(&format!("{MINI}\n[network]\ndhcp = true\n"));
    assert_eq!(e, "seed.toml: line 7, column 2: at `network`: unknown field `network`, expected one of `disk`, `pool`, `encryption`");
    let e = err("[disk]\nserial = \"x\"\nbi_id = \"y\"\n[encryption]\npassphrase = \"12345678\"\n");
    assert!(
        e.starts_with("seed.toml: line 3, column 1: at `disk.bi_id`: unknown field `bi_id`"),
        "{e}"
    );
    let e = err(&MINI.replace("passphrase =", "pasphrase ="));
    assert!(
        e.contains("line 5") && e.contains("unknown field `pasphrase`"),
        "{e}"
    );
}

#[test]
fn wrong_values_name_the_key_and_line() {
    let e = err(&format!("{MINI}tpm2 = \"yes\"\n"));
    assert!(
        e.starts_with("seed.toml: line 6, column 8: at `encryption.tpm2`:"),
        "{e}"
    );
    let e = err("[disk]\nmin_size = \"10 G\"\n[encryption]\npassphrase = \"12345678\"\n");
    assert!(
        e.starts_with("seed.toml: line 2, column 12: at `disk.min_size`: size \"10 G\""),
        "{e}"
    );
    let e = err(&format!(
        "{MINI}[pool]\nsubvolumes = [\"ok\", \"../etc\"]\n"
    ));
    assert!(e.starts_with("seed.toml: line 7, column"), "{e}");
    assert!(
        e.contains("at `pool.subvolumes[1]`: \"../etc\" is not a valid volume name"),
        "{e}"
    );
    let e = err(&format!("{MINI}[pool]\nfilesystem = \"ext4\"\n"));
    assert!(
        e.contains("line 7") && e.contains("`pool.filesystem`") && e.contains("ext4"),
        "{e}"
    );
    let e = err("[encryption]\npassphrase = \"12345678\"\n");
    assert!(e.contains("missing field `disk`"), "{e}");
}

#[test]
fn cross_field_errors_name_the_section_and_line() {
    let e = err("[disk]\nserial = \"x\"\n\n[encryption]\ntpm2 = false\n");
    assert_eq!(
        e,
        "seed.toml: line 4: [encryption]: give passphrase or passphrase_file"
    );
    let e = err(&format!("{MINI}passphrase_file = \"p\"\n"));
    assert!(
        e.ends_with("[encryption]: give passphrase or passphrase_file, not both"),
        "{e}"
    );
    let e = err(&MINI.replace("correct horse", "short"));
    assert!(e.contains("at least 8 characters"), "{e}");
    let e = err(&MINI.replace(
        "passphrase = \"correct horse\"",
        "passphrase_file = \"missing.txt\"",
    ));
    assert!(
        e.contains("passphrase_file /nonexistent/missing.txt"),
        "{e}"
    );
    let e = err("[disk]\n\n[encryption]\npassphrase = \"12345678\"\n");
    assert_eq!(e, "seed.toml: line 1: [disk]: give at least one of by_id, serial, model, min_size, max_size, removable, rotational");
    let e = err(&format!(
        "{MINI}[pool]\nfilesystem = \"zfs\"\nsubvolumes = [\"a\"]\n"
    ));
    assert!(
        e.contains("line 6: [pool]: subvolumes are for filesystem = \"btrfs\""),
        "{e}"
    );
}

#[test]
fn the_selector_must_match_exactly_one_offered_disk() {
    let e = plan_err(
        &MINI.replace("serial = \"ZFL0ABCD\"", "removable = false"),
        &usb_boot(),
    );
    assert!(
        e.starts_with("seed.toml: line 1: [disk]: 2 disks match removable = false"),
        "{e}"
    );
    let e = plan_err(&MINI.replace("ZFL0ABCD", "4C530001230519"), &usb_boot());
    assert!(
        e.contains("matching but never offered: sda (the boot medium"),
        "{e}"
    );
}

#[test]
fn a_disk_with_data_is_wiped_only_when_the_preseed_names_it() {
    let mut inv = usb_boot();
    inv.devices
        .iter_mut()
        .find(|d| d.name == "sdb")
        .unwrap()
        .fs_type = Some("ext4".into());
    let e = plan_err(MINI, &inv);
    assert!(
        e.contains("ata-ST2000DM008_ZFL0ABCD is not blank (ext4 signature on the whole disk); to wipe it, add wipe = \"ata-ST2000DM008_ZFL0ABCD\""),
        "{e}"
    );
    let e = plan_err(
        &MINI.replace("\n\n[enc", "\nwipe = \"S466NX0M123456\"\n\n[enc"),
        &inv,
    );
    assert!(
        e.contains("wipe = \"S466NX0M123456\": \"S466NX0M123456\" does not name"),
        "{e}"
    );
    let ok = parse(&MINI.replace("\n\n[enc", "\nwipe = \"ZFL0ABCD\"\n\n[enc")).unwrap();
    let plan = ok.plan(&inv).unwrap();
    assert_eq!(plan.wipe().unwrap().named_as(), "ZFL0ABCD");
    assert!(plan.wipe().unwrap().covers(plan.disk()));
}

#[test]
fn tpm2_needs_a_tpm_and_zfs_takes_datasets() {
    let text = format!("{MINI}tpm2 = true\n[pool]\nfilesystem = \"zfs\"\nzfs_pool = \"tank\"\ndatasets = [\"incus\"]\n");
    let mut inv = usb_boot();
    let e = plan_err(&text, &inv);
    assert!(
        e.contains("line 4: [encryption]: tpm2 = true, but this machine has no TPM 2.0"),
        "{e}"
    );
    inv.tpm2 = true;
    inv.mem_total_kib = Some(2 << 20);
    let plan = parse(&text).unwrap().plan(&inv).unwrap();
    assert!(plan.tpm2);
    assert_eq!(
        plan.filesystem,
        Filesystem::Zfs {
            pool: "tank".into(),
            datasets: vec!["incus".into()]
        }
    );
    assert_eq!(plan.luks.argon2id.memory_kib, 512 << 10);
}

#[test]
fn explicit_argon2_costs_are_checked() {
    let e = plan_err(
        &format!("{MINI}argon2id = {{ memory_kib = 1024, iterations = 4, parallel = 4 }}\n"),
        &usb_boot(),
    );
    assert!(e.contains("argon2id.memory_kib = 1024"), "{e}");
    let e = err(&format!(
        "{MINI}argon2id = {{ memory_kib = 65536, iterations = 4 }}\n"
    ));
    assert!(e.contains("missing field `parallel`"), "{e}");
}
