//! The CLI end to end on plain files (`--system` describes the machine).

use std::path::Path;
use std::process::{Command, Output};

use anklume_contract::bootfiles::{self, GRUBENV, MANIFEST, SLOT_CFG};
use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::Slot;
use anklume_update::esp::Esp;
use anklume_update::make::{seal, write_bundle};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anklume-update"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn data(path: &Path, seed: u8, len: usize) {
    std::fs::write(
        path,
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3))
            .collect::<Vec<_>>(),
    )
    .unwrap();
}

#[test]
fn status_update_rollback_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let s = |n: &str| p(n).to_string_lossy().into_owned();
    std::fs::create_dir(p("keys")).unwrap();
    let o = cli(&["--new-key", &s("keys/release")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("release.pub"));
    // Slot A running 0.1.0, as the builder leaves it.
    for (n, c) in [
        ("vmlinuz", "k1"),
        ("initrd.img", "i1"),
        ("vmlinuz2", "k2"),
        ("initrd2", "i2"),
    ] {
        std::fs::write(p(n), c.repeat(1000)).unwrap();
    }
    data(&p("v1.data"), 3, 200_000);
    let a = seal(
        &p("v1.data"),
        &p("slot-a.dev"),
        "0.1.0",
        "6.12",
        vec![p("vmlinuz"), p("initrd.img")],
        "0.1.0",
        1,
    )
    .unwrap();
    let esp = Esp::new(p("esp"));
    std::fs::create_dir_all(p("esp").join(bootfiles::slot_dir(Slot::A))).unwrap();
    std::fs::write(
        esp.path(GRUBENV),
        encode_envblk(&BootState::fresh().to_vars()).unwrap(),
    )
    .unwrap();
    esp.write_slot_file(Slot::A, MANIFEST, a.slot.to_json().as_bytes())
        .unwrap();
    esp.write_slot_file(Slot::A, SLOT_CFG, b"# slot a\n")
        .unwrap();
    std::fs::write(p("slot-b.dev"), vec![0u8; 1 << 20]).unwrap();
    let system = format!(
        r#"{{"esp": "{}", "running": "a", "running_version": "0.1.0", "slot_a": "{}", "slot_b": "{}", "partuuid_a": "aa", "partuuid_b": "bb"}}"#,
        s("esp"),
        s("slot-a.dev"),
        s("slot-b.dev")
    );
    std::fs::write(p("system.json"), system).unwrap();
    let sysf = s("system.json");
    let o = cli(&["--status", "--system", &sysf]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("slot a: 0.1.0  good") && text(&o).contains("slot b: -  empty"),
        "{}",
        text(&o)
    );
    // A bundle of 0.2.0: v1 with a few bytes changed, most blocks reused.
    let mut v2 = std::fs::read(p("v1.data")).unwrap();
    v2[100_000] ^= 0xff;
    std::fs::write(p("v2.data"), v2).unwrap();
    let input = seal(
        &p("v2.data"),
        &p("v2.img"),
        "0.2.0",
        "6.12",
        vec![p("vmlinuz2"), p("initrd2")],
        "0.1.0",
        1,
    )
    .unwrap();
    let key = anklume_update::keys::load_signing_key(&p("keys/release.key")).unwrap();
    write_bundle(&input, &key, &p("v2.bundle")).unwrap();
    let keys = s("keys");
    let before = std::fs::read(p("slot-b.dev")).unwrap();
    let o = cli(&[
        "--from",
        &s("v2.bundle"),
        "--system",
        &sysf,
        "--keys",
        &keys,
    ]);
    assert!(
        !o.status.success() && text(&o).contains("add --yes"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(p("slot-b.dev")).unwrap(), before);
    let o = cli(&[
        "--from",
        &s("v2.bundle"),
        "--yes",
        "--reuse",
        "--system",
        &sysf,
        "--keys",
        &keys,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("slot b now holds 0.2.0"), "{}", text(&o));
    assert!(
        text(&o).contains("image bytes: 4096 from the bundle"),
        "{}",
        text(&o)
    );
    let o = cli(&["--status", "--system", &sysf]);
    assert!(
        text(&o).contains("next boot: slot b")
            && text(&o).contains("slot b: 0.2.0  on trial, 3 tries left"),
        "{}",
        text(&o)
    );
    let o = cli(&["--rollback", "--system", &sysf]);
    assert!(
        o.status.success() && text(&o).contains("next boot: slot a"),
        "{}",
        text(&o)
    );
    // Usage errors say what to do.
    let o = cli(&[]);
    assert!(
        !o.status.success() && text(&o).contains("nothing to do"),
        "{}",
        text(&o)
    );
    let o = cli(&["--status", "--rollback", "--system", &sysf]);
    assert!(
        !o.status.success() && text(&o).contains("only one of"),
        "{}",
        text(&o)
    );
}
