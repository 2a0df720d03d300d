//! Ventoy scenarios: the ISO copied onto a Ventoy 1.1.17 stick (made from
//! the release files in `../shared/ventoy/release` with its own
//! `Ventoy2Disk.sh`, on a loop device) and booted as a USB disk by Ventoy,
//! unattended through `ventoy/ventoy.json`: in its normal mode (Ventoy
//! presents the ISO as a virtual CD and starts our GRUB) and in its GRUB2
//! mode (a copy named `*_VTGRUB2.iso`: Ventoy's own GRUB reads the ISO
//! tree's `/boot/grub/grub.cfg`), under SeaBIOS and OVMF (without Secure
//! Boot: Ventoy's shim is not part of the release files). Each boot must
//! reach the verified root, with the initrd reporting the slot found on a
//! Ventoy medium and no persist partition (volatile).
//!
//! The stick is made once and reused while the ISO and the release are
//! unchanged (`stick.stamp`); each scenario only rewrites `ventoy.json`
//! and boots it with writes discarded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anklume_cmd::Cmd;
use anyhow::{bail, ensure, Context, Result};

use anklume_contract::Slot;

use crate::qemu::{Firmware, Medium, VmConfig};
use crate::scenario::{boot_and_report, check_verified_boot, expect, ImageFacts, Outcome};

/// Where the Ventoy release files are looked for by default: beside the
/// repository (`make` runs in the repository's root).
pub const DEFAULT_RELEASE: &str = "../shared/ventoy/release";

/// The ISO's file names on the stick.
const NORMAL_ISO: &str = "anklume.iso";
const GRUB2_ISO: &str = "anklume_VTGRUB2.iso";

/// How Ventoy boots the ISO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ventoy's default: the ISO as a virtual CD, our GRUB.
    Normal,
    /// Ventoy's GRUB reads the ISO's `/boot/grub/grub.cfg`.
    Grub2,
}

impl Mode {
    fn iso_name(self) -> &'static str {
        match self {
            Mode::Normal => NORMAL_ISO,
            Mode::Grub2 => GRUB2_ISO,
        }
    }
}

/// Checks that `dir` is a Ventoy release (clear error otherwise).
pub fn check_release(dir: &Path) -> Result<()> {
    for f in [
        "Ventoy2Disk.sh",
        "boot/boot.img",
        "ventoy/ventoy.disk.img.xz",
    ] {
        ensure!(
            dir.join(f).is_file(),
            "no Ventoy release at {} ({f} is missing): the Ventoy scenarios need \
             Ventoy 1.1.17's release files there (see ../shared/ventoy/README.md), \
             or pass --ventoy-release DIR",
            dir.display()
        );
    }
    Ok(())
}

/// A loop device over a file; detached by [`LoopDev::close`] (or on drop).
#[derive(Debug)]
struct LoopDev {
    dev: Option<String>,
}

impl LoopDev {
    fn attach(file: &Path) -> Result<LoopDev> {
        // -P: the kernel scans the partition table and rescans it when
        // Ventoy2Disk.sh's fdisk writes one (without it the rescan fails
        // with EINVAL and Ventoy's partx/udev fallback raced: loop0p1 was
        // missing once in CI, "sed: can't read /sys/class/block/loop0p1/dev").
        let dev = Cmd::new("losetup")
            .args(["-f", "-P", "--show"])
            .arg(file)
            .output_string()
            .with_context(|| format!("attaching {} to a loop device", file.display()))?
            .trim()
            .to_string();
        ensure!(
            dev.starts_with("/dev/loop"),
            "losetup printed {dev:?}, not a loop device"
        );
        Ok(LoopDev { dev: Some(dev) })
    }

    fn path(&self) -> &str {
        self.dev.as_deref().unwrap_or("")
    }

    /// Partition `n` of the loop device, once the kernel shows it.
    fn partition(&self, n: u32) -> Result<String> {
        let p = format!("{}p{n}", self.path());
        // Ventoy2Disk.sh writes the table; the kernel may not have read it.
        Cmd::new("partx")
            .args(["-u", self.path()])
            .run()
            .with_context(|| format!("reading the partitions of {}", self.path()))?;
        let t = Instant::now();
        while !Path::new(&p).exists() {
            ensure!(
                t.elapsed() < Duration::from_secs(10),
                "{p} did not appear after partx"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(p)
    }

    fn close(mut self) -> Result<()> {
        self.detach()
    }

    fn detach(&mut self) -> Result<()> {
        if let Some(d) = self.dev.take() {
            Cmd::new("losetup")
                .args(["-d", &d])
                .run()
                .with_context(|| format!("detaching {d}"))?;
        }
        Ok(())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// The stick's exFAT partition mounted through FUSE (`exfat-fuse`);
/// unmounted by [`ExfatMount::close`] (or on drop).
#[derive(Debug)]
struct ExfatMount {
    dir: Option<PathBuf>,
}

impl ExfatMount {
    fn mount(dev: &str, dir: &Path) -> Result<ExfatMount> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Cmd::new("mount.exfat-fuse")
            .arg(dev)
            .arg(dir)
            .run()
            .with_context(|| format!("mounting the exFAT partition {dev} (exfat-fuse)"))?;
        Ok(ExfatMount {
            dir: Some(dir.to_path_buf()),
        })
    }

    fn path(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    fn close(mut self) -> Result<()> {
        self.unmount()
    }

    fn unmount(&mut self) -> Result<()> {
        if let Some(d) = self.dir.take() {
            Cmd::new("umount")
                .arg(&d)
                .run()
                .with_context(|| format!("unmounting {}", d.display()))?;
            std::fs::remove_dir(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }
}

impl Drop for ExfatMount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// What the stick was made from: reuse it only when this is unchanged.
fn stamp(iso: &Path, release: &Path) -> Result<String> {
    let m = std::fs::metadata(iso).with_context(|| format!("reading {}", iso.display()))?;
    let r = std::fs::metadata(release.join("Ventoy2Disk.sh"))?;
    Ok(format!(
        "iso {} size {} mtime {}.{}\nrelease {} mtime {}\n",
        iso.canonicalize()?.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        release.canonicalize()?.display(),
        r.mtime()
    ))
}

/// The stick image in `dir` (made when missing or made from another ISO).
pub fn stick(iso: &Path, release: &Path, dir: &Path) -> Result<PathBuf> {
    check_release(release)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let img = dir.join("stick.img");
    let stamp_file = dir.join("stick.stamp");
    let want = stamp(iso, release)?;
    if img.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&want) {
        eprintln!("  reusing the Ventoy stick {}", img.display());
        return Ok(img);
    }
    let t = Instant::now();
    let _ = std::fs::remove_file(&stamp_file);
    let tmp = dir.join("stick.img.tmp");
    make_stick(iso, release, dir, &tmp)?;
    std::fs::rename(&tmp, &img).with_context(|| format!("moving {}", img.display()))?;
    std::fs::write(&stamp_file, want)?;
    eprintln!(
        "  made the Ventoy stick {} in {:.0} s",
        img.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(img)
}

fn make_stick(iso: &Path, release: &Path, dir: &Path, out: &Path) -> Result<()> {
    let iso_size = std::fs::metadata(iso)?.len();
    // Two copies of the ISO (normal and GRUB2 mode), Ventoy's 32 MiB
    // partition and room for exFAT: whole GiB.
    let size = (2 * iso_size + (512 << 20)).div_ceil(1 << 30) << 30;
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.set_len(size)?;
    drop(f);
    let lo = LoopDev::attach(out)?;
    // Ventoy2Disk.sh runs from (and writes a log into) its own folder.
    let work = dir.join("release");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    Cmd::new("cp")
        .arg("-a")
        .arg(release)
        .arg(&work)
        .run()
        .context("copying the Ventoy release files")?;
    let installed = Cmd::new("sh")
        .arg("./Ventoy2Disk.sh")
        .args(["-i", "-S", lo.path()])
        .current_dir(&work)
        .input("y\ny\n")
        .output_string();
    let log = std::fs::read_to_string(work.join("log.txt")).unwrap_or_default();
    let out_text = installed
        .with_context(|| format!("Ventoy2Disk.sh -i on {}; its log:\n{log}", lo.path()))?;
    std::fs::remove_dir_all(&work)?;
    ensure!(
        out_text.contains("successfully"),
        "Ventoy2Disk.sh did not report success:\n{out_text}\n{log}"
    );
    let part = lo.partition(1)?;
    let mnt = ExfatMount::mount(&part, &dir.join("mnt"))?;
    for name in [NORMAL_ISO, GRUB2_ISO] {
        let to = mnt.path().join(name);
        std::fs::copy(iso, &to).with_context(|| format!("copying the ISO to {}", to.display()))?;
    }
    std::fs::create_dir_all(mnt.path().join("ventoy"))?;
    std::fs::write(
        mnt.path().join("ventoy/ventoy.json"),
        ventoy_json(Mode::Normal),
    )?;
    mnt.close()?;
    lo.close()
}

/// Boot `/<the mode's ISO>` at once: no menu timeout to speak of, no
/// secondary menu (normal / GRUB2 / memdisk), whose default waits for a key.
pub fn ventoy_json(mode: Mode) -> String {
    format!(
        "{{\"control\":[{{\"VTOY_DEFAULT_IMAGE\":\"/{}\"}},{{\"VTOY_MENU_TIMEOUT\":\"1\"}},{{\"VTOY_SECONDARY_BOOT_MENU\":\"0\"}}]}}\n",
        mode.iso_name()
    )
}

/// Point the stick's `ventoy.json` at the mode's ISO.
fn select(stick: &Path, dir: &Path, mode: Mode) -> Result<()> {
    let lo = LoopDev::attach(stick)?;
    let part = lo.partition(1)?;
    let mnt = ExfatMount::mount(&part, &dir.join("mnt"))?;
    let json = mnt.path().join("ventoy/ventoy.json");
    let tmp = mnt.path().join("ventoy/ventoy.json.tmp");
    std::fs::write(&tmp, ventoy_json(mode))?;
    std::fs::rename(&tmp, &json).with_context(|| format!("writing {}", json.display()))?;
    mnt.close()?;
    lo.close()
}

/// Boot the ISO from the Ventoy stick and check the verified, volatile boot.
pub fn run(
    facts: &ImageFacts,
    mut cfg: VmConfig,
    iso: &Path,
    release: &Path,
    stick_dir: &Path,
    mode: Mode,
) -> Result<Outcome> {
    let t = Instant::now();
    let stick = stick(iso, release, stick_dir)?;
    select(&stick, stick_dir, mode)?;
    let prep = t.elapsed().as_secs_f64();
    cfg.image = stick;
    cfg.medium = Medium::UsbDisk;
    let mut out = boot_and_report(&cfg, Duration::from_secs(900))?;
    out.stage_times.insert(0, ("stick".into(), prep));
    let r = &out.report;
    check_verified_boot(r, facts, Slot::A)?;
    expect(r, "boot_medium", "ventoy")?;
    expect(r, "boot_persist", "")?;
    expect(r, "persist_mounted", "0")?;
    match r.get("status_medium") {
        Some(m) if m.starts_with("ventoy (") && m.contains("volatile") => {}
        other => {
            bail!("anklume status reports medium {other:?}, expected ventoy (... volatile ...)")
        }
    }
    let console = crate::qemu::strip_escapes(&String::from_utf8_lossy(&std::fs::read(
        cfg.dir.join("console.log"),
    )?));
    // Which boot loader read our grub.cfg: ours from Ventoy's virtual CD
    // (normal mode), or Ventoy's GRUB from its loopback of the ISO file,
    // with its own init in front of ours (GRUB2 mode).
    let loading = console
        .lines()
        .find(|l| l.contains("anklume: loading slot a"))
        .context("the console has no GRUB line loading slot a")?;
    let vtoy_init = console.contains("rdinit=/vtoy/vtoy");
    match mode {
        Mode::Normal => ensure!(
            loading.contains(" from (cd") && !vtoy_init,
            "normal mode: expected our GRUB on Ventoy's virtual CD: {loading}"
        ),
        Mode::Grub2 => ensure!(
            loading.contains(" from (loop,") && vtoy_init,
            "GRUB2 mode: expected Ventoy's GRUB on its loopback of the ISO (and rdinit=/vtoy/vtoy): {loading}"
        ),
    }
    eprintln!("  {}", loading.trim());
    let how = console
        .lines()
        .find(|l| l.contains("anklume-root: exposing the partitions of") && l.contains("(ventoy)"))
        .context("the console does not show how the initrd found the ISO")?;
    eprintln!("  {}", how.trim());
    if cfg.firmware == Firmware::Uefi {
        expect(r, "secure_boot", "off")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ventoy_json_boots_the_modes_iso_without_menus() {
        let n = ventoy_json(Mode::Normal);
        let g = ventoy_json(Mode::Grub2);
        assert!(n.contains("\"VTOY_DEFAULT_IMAGE\":\"/anklume.iso\""), "{n}");
        assert!(
            g.contains("\"VTOY_DEFAULT_IMAGE\":\"/anklume_VTGRUB2.iso\""),
            "{g}"
        );
        for j in [n, g] {
            assert!(j.contains("\"VTOY_SECONDARY_BOOT_MENU\":\"0\""));
            assert!(j.contains("\"VTOY_MENU_TIMEOUT\":\"1\""));
        }
        // Ventoy's GRUB2 mode is chosen by this file name suffix.
        assert!(GRUB2_ISO.ends_with("_VTGRUB2.iso"));
    }

    /// The initrd's shell function that spells a PARTUUID as the bytes of
    /// a GPT entry (to find the ISO file holding our slot) agrees with the
    /// builder's GPT writer.
    #[test]
    fn the_initrds_partuuid_bytes_are_the_gpts() {
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../mkosi/debian/mkosi.extra/usr/lib/anklume/initrd/anklume-root.sh"
        ))
        .unwrap();
        let start = script.find("guid_bytes() {").unwrap();
        let end = start + script[start..].find("\n}\n").unwrap() + 3;
        let func = &script[start..end];
        for g in [
            "1a579c85-e616-4c32-9115-493407aa3081",
            "3E6C8CBB-6086-4968-8C2E-96E474B58190",
            &anklume_build::gpt::derived_guid(b"ventoy test"),
        ] {
            let out = Cmd::new("sh")
                .arg("-c")
                .arg(format!("{func}guid_bytes \"$1\"",))
                .arg("sh")
                .arg(g)
                .output_string()
                .unwrap();
            let want: String = anklume_build::gpt::guid_to_bytes(g)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(out.trim(), want, "{g}");
        }
    }

    #[test]
    fn a_missing_release_is_a_clear_error() {
        let e = check_release(Path::new("/nonexistent/ventoy")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("/nonexistent/ventoy"), "{msg}");
        assert!(msg.contains("--ventoy-release"), "{msg}");
    }
}
