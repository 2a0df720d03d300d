//! The updater on plain files: refusals before any write, a complete
//! update, a power cut after every step, delta reuse, status, mark-good,
//! rollback.

mod common;

use anklume_contract::bootfiles::{INITRD, KERNEL, MANIFEST, SLOT_CFG, UKI};
use anklume_contract::Slot;
use anklume_update::esp::would_boot;
use anklume_update::ops::{self, SlotState};
use anklume_update::{update, FileSource, OpenBundle, Step, UpdateOptions};
use common::*;

fn opts() -> UpdateOptions {
    UpdateOptions {
        chunk_blocks: 64,
        threads: 2,
        ..UpdateOptions::default()
    }
}

fn no_hook() -> impl FnMut(&Step) -> anyhow::Result<()> {
    |_| Ok(())
}

fn v2_data() -> Vec<u8> {
    noise(2, 400 * BS + 777)
}

#[test]
fn a_complete_update_writes_the_signed_image_and_arms_the_slot_last() {
    let fx = Fixture::new();
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    let ob = fx.open(&b).unwrap();
    assert_eq!(ob.key, "release.pub");
    let mut steps = Vec::new();
    let r = update(&fx.sys, &ob, &opts(), &mut |s| {
        steps.push(s.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(r.target, Slot::B);
    assert_eq!(r.root_hash, ob.manifest.slot.root_hash);
    // The target holds exactly the bundle's image (the verity area we
    // recomputed equals the builder's), the rest of the partition untouched.
    let t = fx.target_bytes();
    let img = image_of(&ob, &b);
    assert_eq!(&t[..img.len()], &img[..]);
    assert!(t[img.len()..].iter().all(|&x| x == 0xee));
    // veritysetup's own check of what we wrote (host: no dm needed).
    let root = &ob.manifest.slot.root_hash;
    let dev = fx.sys.device(Slot::B);
    let out = std::process::Command::new("veritysetup")
        .args([
            "verify",
            "--hash-offset",
            &ob.manifest.slot.hash_offset.to_string(),
        ])
        .arg(dev)
        .arg(dev)
        .arg(root)
        .output()
        .expect("veritysetup (cryptsetup-bin) must be installed: ci/setup-image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The folder, slot.cfg naming the target's PARTUUID and the root hash.
    let esp = &fx.sys.esp;
    for (f, data) in ob.manifest.slot.boot_files.iter().zip(&ob.boot_files) {
        assert_eq!(
            &std::fs::read(esp.slot_file(Slot::B, &f.name)).unwrap(),
            data
        );
    }
    assert_eq!(
        esp.slot_manifest(Slot::B).unwrap().unwrap(),
        ob.manifest.slot
    );
    let cfg = std::fs::read_to_string(esp.slot_file(Slot::B, SLOT_CFG)).unwrap();
    assert!(
        cfg.contains("set anklume_partuuid=bbbb\n") && cfg.contains(root.as_str()),
        "{cfg}"
    );
    // The order: checks, disarm, clear, the image in 7 chunks of 64
    // blocks, files with slot.cfg last, then the arming.
    let data_blocks = ob.manifest.slot.data_blocks;
    let mut want = vec![Step::Checked, Step::Disarmed, Step::Cleared];
    want.extend((1..=data_blocks.div_ceil(64)).map(|c| Step::Chunk((c * 64).min(data_blocks))));
    want.push(Step::Image);
    want.extend([KERNEL, INITRD, MANIFEST, SLOT_CFG].map(|n| Step::File(n.into())));
    want.push(Step::Armed);
    assert_eq!(steps, want);
    let (st, _) = esp.read_state().unwrap();
    assert_eq!(
        (st.primary, st.tries(Slot::B), st.is_good(Slot::B)),
        (Slot::B, Some(3), false)
    );
    assert!(st.is_good(Slot::A));
    assert_eq!(would_boot(&st, esp), Slot::B);
    // No temporary file left on the ESP.
    assert!(fx
        .esp_snapshot()
        .iter()
        .all(|(p, _)| !p.to_string_lossy().ends_with(".tmp")));
}

/// Run `f` on a fixture and check nothing on the target or the ESP moved.
fn refused(fx: &Fixture, bundle: &std::path::Path, want: &str, allow_downgrade: bool) {
    let target = fx.target_bytes();
    let esp = fx.esp_snapshot();
    let mut wrote = false;
    let res = fx.open(bundle).and_then(|ob| {
        let o = UpdateOptions {
            allow_downgrade,
            ..opts()
        };
        update(&fx.sys, &ob, &o, &mut |s| {
            wrote |= *s != Step::Checked;
            Ok(())
        })
    });
    let e = format!("{:#}", res.expect_err("the bundle must be refused"));
    assert!(e.contains(want), "expected {want:?} in: {e}");
    assert!(!wrote, "refused only after writing: {e}");
    assert!(fx.target_bytes() == target, "the target changed ({e})");
    assert!(fx.esp_snapshot() == esp, "the ESP changed ({e})");
}

fn good_for(fx: &Fixture) -> std::path::PathBuf {
    fx.bundle("v2", "0.2.0", &v2_data())
}

fn flip(path: &std::path::Path, at: u64) -> std::path::PathBuf {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x01;
    let out = path.with_extension(format!("flip{at}"));
    std::fs::write(&out, b).unwrap();
    out
}

#[test]
fn bad_bundles_are_refused_before_any_write() {
    let fx = Fixture::new();
    let good = fx.bundle("v2", "0.2.0", &v2_data());
    let m = fx.open(&good).unwrap().manifest;
    // Another key: not trusted.
    let other =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(other.as_ref()).unwrap();
    let foreign = fx.bundle_with("foreign", "0.2.0", "0.1.0", &v2_data(), Some(&other));
    refused(&fx, &foreign, "not among the 1 trusted key", false);
    // One flipped bit in each part.
    refused(&fx, &flip(&good, 4096 + 40), "bad signature", false);
    refused(&fx, &flip(&good, 30), "bad signature", false);
    refused(
        &fx,
        &flip(&good, m.image.offset + 123 * 4096 + 5),
        "image block 123",
        false,
    );
    refused(
        &fx,
        &flip(&good, m.index.offset + 77),
        "block index does not match",
        false,
    );
    refused(
        &fx,
        &flip(&good, m.boot_files[1].offset + 3),
        "boot file initrd.img",
        false,
    );
    // Truncated (anywhere) and extended files.
    for keep in [
        100,
        4096 + 10,
        m.image.offset + 5000,
        m.boot_files[1].offset + 1,
    ] {
        let t = fx.path(&format!("trunc{keep}.bundle"));
        std::fs::write(&t, &std::fs::read(&good).unwrap()[..keep as usize]).unwrap();
        refused(&fx, &t, "truncated", false);
    }
    let long = fx.path("long.bundle");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.extend([0u8; 4096]);
    std::fs::write(&long, bytes).unwrap();
    refused(&fx, &long, "bytes after its last part", false);
    // Version rules.
    let older = fx.bundle_with("old", "0.0.9", "0.0.1", &v2_data(), None);
    refused(&fx, &older, "older than the running 0.1.0", false);
    let same = fx.bundle("same", "0.1.0", &v2_data());
    refused(&fx, &same, "the same as the running", false);
    let jump = fx.bundle_with("jump", "0.3.0", "0.2.0", &v2_data(), None);
    refused(&fx, &jump, "install an intermediate version", false);
    refused(&fx, &jump, "install an intermediate version", true);
    // Both slots naming the running slot's device (a link to it).
    let mut same = Fixture::new();
    let link = same.path("link-to-a");
    std::os::unix::fs::symlink(same.sys.device(Slot::A), &link).unwrap();
    same.sys.devices[1] = link;
    refused(
        &same,
        &good_for(&same),
        "refusing to write the running system",
        false,
    );
    // A slot too small for the image.
    let big = fx.bundle("big", "0.2.0", &noise(3, 600 * BS));
    refused(&fx, &big, "the new image needs", false);
    // Still updatable with the good bundle afterwards; --allow-downgrade
    // accepts the older one.
    update(
        &fx.sys,
        &fx.open(&older).unwrap(),
        &UpdateOptions {
            allow_downgrade: true,
            ..opts()
        },
        &mut no_hook(),
    )
    .unwrap();
}

#[test]
fn an_update_is_refused_while_the_running_slot_is_on_trial() {
    let fx = Fixture::new();
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    update(&fx.sys, &fx.open(&b).unwrap(), &opts(), &mut no_hook()).unwrap();
    // Reboot into B, not yet marked good: an update would overwrite A, its fallback.
    let mut on_b = fx.sys.clone();
    on_b.running = Slot::B;
    on_b.running_version = "0.2.0".into();
    let b3 = fx.bundle_with("v3", "0.3.0", "0.2.0", &noise(4, 200 * BS), None);
    let ob = fx.open(&b3).unwrap();
    let e = format!(
        "{:#}",
        update(&on_b, &ob, &opts(), &mut no_hook()).unwrap_err()
    );
    assert!(e.contains("not marked good"), "{e}");
    ops::mark_good(&on_b).unwrap();
    let r = update(&on_b, &ob, &opts(), &mut no_hook()).unwrap();
    assert_eq!(r.target, Slot::A);
    let st = ops::status(&on_b).unwrap();
    assert_eq!(st.next_boot, Slot::A);
    assert_eq!(st.slots[0].state, SlotState::Trying(3));
    assert_eq!(st.slots[0].version.as_deref(), Some("0.3.0"));
    assert_eq!(st.slots[1].state, SlotState::Good);
}

/// A Secure Boot machine (its running slot boots a signed UKI) takes only
/// bundles that carry one, and the update writes it into the new slot's
/// folder; an unsigned machine takes either.
#[test]
fn a_secure_boot_machine_needs_a_bundle_with_a_signed_uki() {
    let fx = Fixture::new();
    let unsigned = fx.bundle("v2", "0.2.0", &v2_data());
    let signed = fx.signed_bundle("v2s", "0.2.0", &v2_data());
    // Unsigned machine: a signed bundle is written with its UKI.
    let plain = Fixture::new();
    let signed_there = plain.signed_bundle("v2s", "0.2.0", &v2_data());
    update(
        &plain.sys,
        &plain.open(&signed_there).unwrap(),
        &opts(),
        &mut no_hook(),
    )
    .unwrap();
    assert!(plain.sys.esp.slot_file(Slot::B, UKI).is_file());

    fx.sign_slot_a();
    refused(&fx, &unsigned, "this machine boots signed UKIs", false);
    let ob = fx.open(&signed).unwrap();
    update(&fx.sys, &ob, &opts(), &mut no_hook()).unwrap();
    let esp = &fx.sys.esp;
    let m = esp.slot_manifest(Slot::B).unwrap().unwrap();
    assert_eq!(m.boot_files.last().unwrap().name, UKI);
    assert_eq!(
        std::fs::read(esp.slot_file(Slot::B, UKI)).unwrap(),
        *ob.boot_files.last().unwrap()
    );
}

/// With Secure Boot on, the bundle's UKI must be signed by a certificate
/// in the firmware's db or shim's MOK list: one signed by another key is
/// refused before anything is written (it would never boot); with Secure
/// Boot off it is not the firmware's to judge.
#[test]
fn a_uki_the_firmware_does_not_trust_is_refused_under_secure_boot() {
    use anklume_update::trust::testing::{cert_pair, der_of, efivars, minimal_pe, sign, x509_list};
    use anklume_update::trust::FirmwareDirs;
    let mut fx = Fixture::new();
    fx.sign_slot_a();
    let d = fx.path("keys");
    std::fs::create_dir_all(&d).unwrap();
    let (k, c) = cert_pair(&d, "enrolled");
    let (k2, c2) = cert_pair(&d, "stranger");
    let pe = d.join("uki.efi");
    std::fs::write(&pe, minimal_pe()).unwrap();
    let (good, bad) = (d.join("good.efi"), d.join("bad.efi"));
    sign(&k, &c, &pe, &good);
    sign(&k2, &c2, &pe, &bad);
    let trusted = fx.bundle_with_pe("v2g", "0.2.0", &v2_data(), &std::fs::read(&good).unwrap());
    let stranger = fx.bundle_with_pe("v2b", "0.2.0", &v2_data(), &std::fs::read(&bad).unwrap());
    let with_firmware = |fx: &mut Fixture, on: bool| {
        let db = x509_list(&[&der_of(&c)]);
        let ev = efivars(&d.join(if on { "on" } else { "off" }), on, Some(&db), None);
        fx.sys.firmware = Some(FirmwareDirs {
            mok_variables: d.join("none"),
            efivars: ev,
        });
    };
    with_firmware(&mut fx, true);
    refused(
        &fx,
        &stranger,
        "the bundle's anklume.efi (slot b's) is not signed by any certificate this machine's firmware trusts (1 in db, 0 in shim's MOK list)",
        false,
    );
    update(
        &fx.sys,
        &fx.open(&trusted).unwrap(),
        &opts(),
        &mut no_hook(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(fx.sys.esp.slot_file(Slot::B, UKI)).unwrap(),
        std::fs::read(&good).unwrap()
    );

    // Secure Boot off: any signed build goes.
    let mut off = Fixture::new();
    off.sign_slot_a();
    with_firmware(&mut off, false);
    let stranger = off.bundle_with_pe("v2b", "0.2.0", &v2_data(), &std::fs::read(&bad).unwrap());
    update(
        &off.sys,
        &off.open(&stranger).unwrap(),
        &opts(),
        &mut no_hook(),
    )
    .unwrap();
}

/// A power cut after each step: until the arming, GRUB boots the running
/// slot; then a new update succeeds from whatever was left.
#[test]
fn a_power_cut_after_any_step_boots_the_old_slot_and_the_next_update_succeeds() {
    let probe = Fixture::new();
    let b = probe.bundle("v2", "0.2.0", &v2_data());
    let mut all = Vec::new();
    update(&probe.sys, &probe.open(&b).unwrap(), &opts(), &mut |s| {
        all.push(s.clone());
        Ok(())
    })
    .unwrap();
    assert!(all.len() > 12, "{all:?}");
    for (i, cut) in all.iter().enumerate() {
        for (old_b, second_reuses) in [(false, false), (false, true), (true, false)] {
            let fx = Fixture::new();
            if old_b {
                fx.old_good_b();
            }
            let b = fx.bundle("v2", "0.2.0", &v2_data());
            let ob = fx.open(&b).unwrap();
            let mut n = 0;
            let e = update(&fx.sys, &ob, &opts(), &mut |_| {
                n += 1;
                if n > i {
                    anyhow::bail!("power cut")
                }
                Ok(())
            });
            assert!(e.is_err());
            let (st, _) = fx.sys.esp.read_state().unwrap();
            let next = would_boot(&st, &fx.sys.esp);
            let status = ops::status(&fx.sys).unwrap();
            if *cut == Step::Armed {
                assert_eq!(next, Slot::B);
                continue;
            }
            assert_eq!(next, Slot::A, "cut after {cut:?}: {status}");
            assert!(st.is_good(Slot::A), "cut after {cut:?}");
            // What the next run finds: a stale, unbootable target.
            let want_b = match cut {
                // Not touched yet: the old slot as it was.
                Step::Checked if old_b => SlotState::Good,
                // Disarmed, its folder still complete.
                Step::Disarmed if old_b => SlotState::NotArmed,
                // Everything written but the arming.
                Step::File(f) if f == SLOT_CFG => SlotState::NotArmed,
                // Some of the new folder, no slot.cfg.
                Step::File(_) => SlotState::Incomplete,
                // An empty folder (the image is being or was written).
                _ => SlotState::Empty,
            };
            assert_eq!(status.slots[1].state, want_b, "cut after {cut:?}");
            // Rolling back to it is refused; a new update cleans it and succeeds.
            if want_b != SlotState::Good {
                assert!(ops::rollback(&fx.sys).is_err(), "cut after {cut:?}");
            }
            let o = UpdateOptions {
                reuse: second_reuses,
                ..opts()
            };
            let r = update(&fx.sys, &fx.open(&b).unwrap(), &o, &mut no_hook()).unwrap();
            let img = image_of(&ob, &b);
            assert_eq!(
                &fx.target_bytes()[..img.len()],
                &img[..],
                "cut after {cut:?}"
            );
            let (st, _) = fx.sys.esp.read_state().unwrap();
            assert_eq!(would_boot(&st, &fx.sys.esp), Slot::B);
            if second_reuses {
                // Blocks the cut run had written are found in place.
                let written = match cut {
                    Step::Chunk(c) => *c,
                    Step::Image | Step::File(_) => ob.manifest.slot.data_blocks,
                    _ => 0,
                };
                assert!(
                    r.stats.present >= written * 4096,
                    "cut after {cut:?}: {:?}",
                    r.stats
                );
            }
        }
    }
}

#[test]
fn delta_reuses_shifted_blocks_of_the_running_slot() {
    // v2 = v1 with 1000 bytes inserted after block 50 and blocks 200..210
    // changed: everything else is found in slot A, shifted or not.
    let fx = Fixture::new();
    let mut v2 = fx.v1[..50 * BS].to_vec();
    v2.extend(noise(9, 1000));
    v2.extend(&fx.v1[50 * BS..]);
    let at = 200 * BS + 1000;
    v2[at..at + 10 * BS].copy_from_slice(&noise(10, 10 * BS));
    let b = fx.bundle("v2", "0.2.0", &v2);
    let full_len = std::fs::metadata(&b).unwrap().len();
    let ob = fx.open(&b).unwrap();
    let before = ob.source.bytes_read();
    let r = update(
        &fx.sys,
        &ob,
        &UpdateOptions {
            reuse: true,
            ..opts()
        },
        &mut no_hook(),
    )
    .unwrap();
    let img = image_of(&ob, &b);
    assert_eq!(&fx.target_bytes()[..img.len()], &img[..]);
    let blocks = ob.manifest.slot.data_blocks;
    // New: the block holding the insertion, the partial block straddling it,
    // the 10 changed blocks and their neighbours sharing bytes, the tail.
    let fetched = r.stats.from_bundle / 4096;
    assert!(fetched <= 15, "{:?}", r.stats);
    assert_eq!(
        r.stats.from_bundle + r.stats.reused + r.stats.present,
        blocks * 4096
    );
    assert!(r.stats.reused >= (blocks - 15) * 4096, "{:?}", r.stats);
    // Bytes read from the bundle for the image (pre-check + write) versus
    // the whole file.
    let image_read = r.bundle_bytes_read - before;
    assert_eq!(image_read, 2 * r.stats.from_bundle);
    eprintln!(
        "delta: {} of {} image blocks fetched; {} bytes read from a {} byte bundle",
        fetched, blocks, r.bundle_bytes_read, full_len
    );
    assert!(r.bundle_bytes_read * 10 < full_len);
}

#[test]
fn a_running_slot_that_cannot_be_read_only_disables_reuse() {
    // Copied to RAM, its medium gone: the update still works, from the bundle.
    let mut fx = Fixture::new();
    fx.sys.devices[0] = fx.path("gone");
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    let o = UpdateOptions {
        reuse: true,
        ..opts()
    };
    let r = update(&fx.sys, &fx.open(&b).unwrap(), &o, &mut no_hook()).unwrap();
    assert_eq!(r.stats.reused, 0);
    assert!(
        r.notes.len() == 1 && r.notes[0].contains("not reusing"),
        "{:?}",
        r.notes
    );
}

#[test]
fn mark_good_and_rollback_move_the_boot_state() {
    let fx = Fixture::new();
    // Nothing to roll back to on a fresh medium.
    let e = format!("{:#}", ops::rollback(&fx.sys).unwrap_err());
    assert!(e.contains("slot b: it is empty"), "{e}");
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    update(&fx.sys, &fx.open(&b).unwrap(), &opts(), &mut no_hook()).unwrap();
    // Before rebooting: --rollback cancels the pending update.
    let st = ops::rollback(&fx.sys).unwrap();
    assert_eq!(would_boot(&st, &fx.sys.esp), Slot::A);
    update(&fx.sys, &fx.open(&b).unwrap(), &opts(), &mut no_hook()).unwrap();
    // B boots and passes its health check.
    let mut on_b = fx.sys.clone();
    on_b.running = Slot::B;
    let st = ops::mark_good(&on_b).unwrap();
    assert!(st.is_good(Slot::B) && st.tries(Slot::B).is_none() && st.primary == Slot::B);
    // Rolling back to A, good: primary A; and back again from A.
    let st = ops::rollback(&on_b).unwrap();
    assert_eq!(would_boot(&st, &fx.sys.esp), Slot::A);
    let st = ops::rollback(&fx.sys).unwrap();
    assert_eq!(would_boot(&st, &fx.sys.esp), Slot::B);
    // The block keeps variables that are not the boot state.
    let text = String::from_utf8(
        std::fs::read(fx.sys.esp.path(anklume_contract::bootfiles::GRUBENV)).unwrap(),
    )
    .unwrap();
    assert!(text.starts_with("# GRUB Environment Block\n"));
}

/// The bundle changes after the checks (a medium swapped, a file
/// rewritten): the verity root recomputed while writing catches it, and the
/// target is never made bootable.
#[test]
fn a_bundle_changed_during_the_write_never_becomes_bootable() {
    let fx = Fixture::new();
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    let ob = fx.open(&b).unwrap();
    let at = ob.manifest.image.offset + 250 * 4096 + 9;
    let e = update(&fx.sys, &ob, &opts(), &mut |s| {
        if *s == Step::Checked {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
            f.write_all_at(b"X", at).unwrap();
        }
        Ok(())
    })
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("verity root hash") && e.contains("unbootable"),
        "{e}"
    );
    let (st, _) = fx.sys.esp.read_state().unwrap();
    assert_eq!(would_boot(&st, &fx.sys.esp), Slot::A);
    assert_eq!(
        ops::status(&fx.sys).unwrap().slots[1].state,
        SlotState::Empty
    );
}

/// Streaming (no pre-check): a flipped image byte is caught by the verity
/// root while writing; the target was made unbootable first and stays so.
#[test]
fn streaming_catches_a_corrupt_image_while_writing() {
    let fx = Fixture::new();
    fx.old_good_b();
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    let m = fx.open(&b).unwrap().manifest;
    let bad = flip(&b, m.image.offset + 10 * 4096);
    let o = UpdateOptions {
        precheck: false,
        ..opts()
    };
    let e = format!(
        "{:#}",
        update(&fx.sys, &fx.open(&bad).unwrap(), &o, &mut no_hook()).unwrap_err()
    );
    assert!(e.contains("verity root hash"), "{e}");
    let st = ops::status(&fx.sys).unwrap();
    assert_eq!(
        (st.next_boot, &st.slots[1].state),
        (Slot::A, &SlotState::Empty)
    );
    // The same bundle, intact, streams fine.
    update(&fx.sys, &fx.open(&b).unwrap(), &o, &mut no_hook()).unwrap();
    assert_eq!(ops::status(&fx.sys).unwrap().next_boot, Slot::B);
}

/// A boot file the ESP already has (same SHA-256) is not read from the
/// bundle; a local copy with other bytes is ignored and the bundle's used.
#[test]
fn boot_files_already_on_the_esp_are_not_read_again() {
    let fx = Fixture::new();
    let b = fx.bundle("v2", "0.2.0", &v2_data());
    let trusted = anklume_update::keys::load_trusted(&fx.trusted).unwrap();
    let full = fx.open(&b).unwrap();
    let files: Vec<(String, Vec<u8>)> = full
        .manifest
        .slot
        .boot_files
        .iter()
        .map(|f| f.name.clone())
        .zip(full.boot_files.iter().cloned())
        .collect();
    let full_read = full.source.bytes_read();
    let open = |local: &dyn Fn(&str) -> Vec<Vec<u8>>| {
        OpenBundle::open_reusing(Box::new(FileSource::open(&b).unwrap()), &trusted, local).unwrap()
    };
    // Every boot file present locally (among other candidates): none read.
    let all = open(&|name: &str| {
        let mine = files.iter().find(|f| f.0 == name).unwrap().1.clone();
        vec![b"an older kernel".to_vec(), mine]
    });
    assert_eq!(all.boot_files, full.boot_files);
    let saved: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(all.source.bytes_read(), full_read - saved);
    // Local copies with other bytes (a changed kernel): read from the bundle.
    let stale = open(&|_: &str| vec![b"an older kernel".to_vec()]);
    assert_eq!(stale.boot_files, full.boot_files);
    assert_eq!(stale.source.bytes_read(), full_read);
}
