//! GRUB: the boot-selection `grub.cfg`, the per-slot config, and the core
//! images (BIOS El Torito/hybrid, x86_64 EFI) made with the rootfs's own
//! `grub-mkimage`, so GRUB comes from the same packages as the OS.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use anklume_contract::bootfiles::{
    self, ESP_DIR, INITRD, KERNEL, MOK_MANAGER, SB_CERT, SLOT_CFG, UKI,
};
use anklume_contract::bootstate::MAX_TRIES;
use anklume_contract::Slot;

/// The slot's parameters, `slot.cfg` and the kernel command line are
/// part of the on-disk contract (the updater writes them too).
pub use anklume_contract::slotcfg::{slot_cfg, uki_cmdline, SlotBoot, CMDLINE, UKI_ON_FAIL};

use crate::cmd::Cmd;

/// The config embedded in the core images: find our ESP by its FAT volume
/// ID and hand over to `grub.cfg` there. GRUB runs it with its rescue
/// parser, which knows no `if`: an `if` block here ran its body on every
/// boot (a "not found" message and a 30 s sleep, even when the ESP was
/// found). `search` sets its variable only when it finds something, so
/// the searches run from the weakest to the strongest match: first any
/// file system holding `grub.cfg` (the ISO 9660 tree of the ISO, which
/// carries a read-only copy: what a loader that presents the ISO as a
/// virtual CD without its partitions leaves visible, e.g. Ventoy), then our
/// ESP by its volume ID, which wins whenever it is visible. Neither found:
/// `configfile` fails and GRUB's prompt comes up.
pub fn early_cfg(esp_volume_id: &str) -> String {
    format!(
        "echo \"anklume: looking for the boot partition (FAT {esp_volume_id}, else the ISO 9660 tree)\"\n\
         search --no-floppy --file --set=anklume_esp /{grub_cfg}\n\
         search --no-floppy --fs-uuid --set=anklume_esp {esp_volume_id}\n\
         set root=$anklume_esp\n\
         export anklume_esp\n\
         configfile ($anklume_esp)/{grub_cfg}\n",
        grub_cfg = bootfiles::GRUB_CFG
    )
}

/// `/boot/grub/grub.cfg` of the ISO 9660 tree, for a GRUB that boots the
/// ISO by its files instead of starting ours (Ventoy's "GRUB2 mode" reads
/// this path with its own GRUB): the same search as [`early_cfg`], then our
/// `grub.cfg`. No `initrd` line: Ventoy collects literal `initrd` paths from
/// this folder's configs, and the initrd finds the ISO without its hooks.
pub fn iso_grub_cfg(esp_volume_id: &str) -> String {
    format!(
        "# anklume: for a boot loader that reads this ISO's files (e.g. Ventoy's GRUB2 mode).\n\
         # Our own GRUB (BIOS, UEFI) does the same from its embedded config.\n{}",
        early_cfg(esp_volume_id)
    )
}

/// One slot's try logic: counts its tries down (3 → 2 → 1 → 0) with
/// `save_env` before it boots; exhausted and never marked good → the other
/// slot. A failing `save_env` (read-only medium) means "no counting".
fn try_slot(s: Slot) -> String {
    let o = s.other();
    let mut f = format!(
        "function anklume_pick_{s} {{\n  set anklume_boot={s}\n  if [ \"$anklume_good_{s}\" != 1 -a \"$anklume_tries_{s}\" = 0 ]; then\n    set anklume_boot={o}\n"
    );
    for t in (1..=MAX_TRIES).rev() {
        f.push_str(&format!(
            "  elif [ \"$anklume_tries_{s}\" = {t} ]; then\n    set anklume_tries_{s}={n}\n    if save_env --file $anklume_env anklume_tries_{s}; then set anklume_counted=1; else echo \"anklume: read-only boot medium, tries not counted\"; fi\n",
            n = t - 1
        ));
    }
    f.push_str("  fi\n}\n");
    f
}

/// The main `grub.cfg` (identical on every medium of a version). It boots
/// the chosen slot: with Secure Boot on (`$lockdown`, set by Debian's
/// signed GRUB) by chainloading the slot's signed UKI, which shim verifies;
/// otherwise with the kernel and initrd of that slot's folder on the ESP
/// ([`bootfiles`]).
pub fn grub_cfg() -> String {
    let mut c = format!(
        "# anklume Live OS boot selection. Boot state: the environment block next\n\
         # to this file (see anklume-contract bootstate.rs); each slot's boot\n\
         # files and parameters: slot-a/ and slot-b/ (see bootfiles.rs).\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=1\n\
         set default=0\n\
         set anklume_env=($anklume_esp)/{env}\n\
         load_env --file $anklume_env anklume_primary anklume_tries_a anklume_tries_b anklume_good_a anklume_good_b anklume_toram\n\
         if [ \"$anklume_toram\" = 1 ]; then set default=anklume-toram; fi\n",
        env = bootfiles::GRUBENV
    );
    c.push_str(&try_slot(Slot::A));
    c.push_str(&try_slot(Slot::B));
    c.push_str(&format!(
        "set anklume_counted=0\n\
         if [ \"$anklume_primary\" = b ]; then anklume_pick_b; else anklume_pick_a; fi\n\
         # A counted try that fails must end in a reboot, so that the next\n\
         # try (or the other slot) comes: kernel panics reboot, and so does\n\
         # the initrd when it cannot open the slot (anklume.onfail=reboot).\n\
         set anklume_panic=\n\
         set anklume_onfail=\n\
         if [ \"$anklume_counted\" = 1 ]; then set anklume_panic=panic=10; set anklume_onfail=anklume.onfail=reboot; fi\n\
         # {SLOT_CFG} is written last into a slot's folder: without it the slot is empty.\n\
         if [ ! -f ($anklume_esp)/{ESP_DIR}/slot-$anklume_boot/{SLOT_CFG} ]; then\n\
         \x20 echo \"anklume: slot $anklume_boot is empty, booting slot a\"\n\
         \x20 set anklume_boot=a\n\
         fi\n\
         set anklume_slotdir=($anklume_esp)/{ESP_DIR}/slot-$anklume_boot\n\
         source $anklume_slotdir/{SLOT_CFG}\n\
         export anklume_boot anklume_slotdir anklume_partuuid anklume_roothash anklume_hashoffset anklume_version anklume_panic anklume_onfail\n\
         function anklume_linux {{\n\
         \x20 echo \"anklume: loading slot $anklume_boot ($anklume_version) from $anklume_slotdir\"\n\
         \x20 if [ \"$lockdown\" = y ]; then\n\
         \x20   # Secure Boot: only the signed UKI, whose command line (root hash\n\
         \x20   # included) and initrd are covered by its signature. Arguments\n\
         \x20   # given here are ignored by its stub.\n\
         \x20   echo \"anklume: Secure Boot is on: starting the signed UKI of slot $anklume_boot\"\n\
         \x20   chainloader $anklume_slotdir/{UKI}\n\
         \x20 else\n\
         \x20   linux $anklume_slotdir/{KERNEL} {CMDLINE} $anklume_panic $anklume_onfail $1\n\
         \x20   initrd $anklume_slotdir/{INITRD}\n\
         \x20 fi\n\
         }}\n\
         menuentry \"anklume Live OS $anklume_version (slot $anklume_boot)\" --id anklume {{\n\
         \x20 anklume_linux \"\"\n\
         }}\n\
         menuentry \"anklume Live OS $anklume_version (slot $anklume_boot), copied to RAM\" --id anklume-toram {{\n\
         \x20 anklume_linux anklume.toram=1\n\
         }}\n\
         if [ \"$lockdown\" = y ]; then\n\
         \x20 # The UKI refused (its key not enrolled yet, or a changed file):\n\
         \x20 # MokManager, to enrol {SB_CERT} once.\n\
         \x20 # GRUB takes the fallback by number only (an id is ignored).\n\
         \x20 set fallback=2\n\
         \x20 menuentry \"Secure Boot: enrol the anklume signing key (MokManager)\" --id anklume-mok {{\n\
         \x20   echo \"anklume: the signed UKI was refused: this machine does not trust its key yet, or a boot file was changed.\"\n\
         \x20   echo \"anklume: MokManager: Enroll key from disk, then {SB_CERT}, Continue, Yes, Reboot.\"\n\
         \x20   chainloader ($anklume_esp)/{MOK_MANAGER}\n\
         \x20 }}\n\
         fi\n",
    ));
    c
}

/// GRUB modules of every core image: GPT/MBR and FAT (the ESP), ISO 9660
/// (a CD's file tree), no squashfs or xz since GRUB no longer reads a slot.
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "iso9660",
    "search",
    "search_fs_uuid",
    "configfile",
    "loadenv",
    "linux",
    "normal",
    "echo",
    "test",
    "serial",
    "terminal",
    "sleep",
    "ls",
    "cat",
    "halt",
    "reboot",
    "true",
];

/// `grub-mkimage` of the rootfs, run with the rootfs's own loader and
/// libraries (no chroot, nothing written into the tree).
fn mkimage(rootfs: &Path, image: &MkImage<'_>) -> Result<()> {
    let ld = rootfs.join("usr/lib64/ld-linux-x86-64.so.2");
    ensure!(
        ld.exists(),
        "{} has no x86-64 dynamic loader; is it a built rootfs?",
        rootfs.display()
    );
    Cmd::new(ld)
        .arg("--library-path")
        .arg(rootfs.join("usr/lib/x86_64-linux-gnu"))
        .arg(rootfs.join("usr/bin/grub-mkimage"))
        .arg("-d")
        .arg(image.modules_dir)
        .args(["-O", image.format, "-p", image.prefix, "-c"])
        .arg(image.config)
        .arg("-o")
        .arg(image.out)
        .args(COMMON_MODULES)
        .args(image.extra_modules)
        .run()
        .with_context(|| format!("building the GRUB {} image", image.format))
}

/// One `grub-mkimage` run.
struct MkImage<'a> {
    modules_dir: &'a Path,
    format: &'a str,
    prefix: &'a str,
    config: &'a Path,
    out: &'a Path,
    extra_modules: &'a [&'a str],
}

/// Core images built from the rootfs.
#[derive(Debug)]
pub struct CoreImages {
    /// i386-pc El Torito image (CD, and disk through `boot_hybrid.img`).
    pub bios_eltorito: PathBuf,
    /// The hybrid MBR boot code.
    pub bios_hybrid_mbr: PathBuf,
    /// i386-pc core image for a GPT disk's BIOS boot partition (raw image).
    pub bios_core: PathBuf,
    /// GRUB's MBR boot code for `bios_core` (raw image).
    pub bios_boot_img: PathBuf,
    /// BOOTX64.EFI.
    pub efi: PathBuf,
}

pub fn build_core_images(rootfs: &Path, work: &Path, esp_volume_id: &str) -> Result<CoreImages> {
    let early = work.join("grub-early.cfg");
    std::fs::write(&early, early_cfg(esp_volume_id)).context("writing grub-early.cfg")?;
    let pc = rootfs.join("usr/lib/grub/i386-pc");
    let efi = rootfs.join("usr/lib/grub/x86_64-efi");
    for d in [&pc, &efi] {
        ensure!(
            d.is_dir(),
            "{} is missing: the rootfs needs grub-pc-bin and grub-efi-amd64-bin",
            d.display()
        );
    }
    let out = CoreImages {
        bios_eltorito: work.join("bios-eltorito.img"),
        bios_hybrid_mbr: pc.join("boot_hybrid.img"),
        bios_core: work.join("bios-core.img"),
        bios_boot_img: pc.join("boot.img"),
        efi: work.join("BOOTX64.EFI"),
    };
    mkimage(
        rootfs,
        &MkImage {
            modules_dir: &pc,
            format: "i386-pc-eltorito",
            prefix: "/boot/grub",
            config: &early,
            out: &out.bios_eltorito,
            extra_modules: &["biosdisk"],
        },
    )?;
    mkimage(
        rootfs,
        &MkImage {
            modules_dir: &pc,
            format: "i386-pc",
            prefix: "/boot/grub",
            config: &early,
            out: &out.bios_core,
            extra_modules: &["biosdisk"],
        },
    )?;
    mkimage(
        rootfs,
        &MkImage {
            modules_dir: &efi,
            format: "x86_64-efi",
            prefix: "/EFI/BOOT",
            config: &early,
            out: &out.efi,
            extra_modules: &["efi_gop", "efi_uga", "all_video"],
        },
    )?;
    for f in [&out.bios_hybrid_mbr, &out.bios_boot_img] {
        ensure!(f.is_file(), "{} is missing", f.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_counts_every_state_and_falls_back() {
        let c = grub_cfg();
        for s in ["a", "b"] {
            for t in 1..=3 {
                assert!(c.contains(&format!(
                    "\"$anklume_tries_{s}\" = {t} ]; then\n    set anklume_tries_{s}={}",
                    t - 1
                )));
            }
        }
        assert!(c.contains("if [ \"$anklume_good_b\" != 1 -a \"$anklume_tries_b\" = 0 ]; then\n    set anklume_boot=a"));
        assert!(c.contains("console=ttyS0,115200"));
        // Only a counted try reboots on failure.
        assert!(c.contains("then set anklume_counted=1; else echo"));
        assert!(c.contains("if [ \"$anklume_counted\" = 1 ]; then set anklume_panic=panic=10; set anklume_onfail=anklume.onfail=reboot; fi"));
        assert!(c.contains("$anklume_panic $anklume_onfail $1"));
    }

    #[test]
    fn grub_cfg_loads_the_chosen_slots_files_from_the_esp() {
        let c = grub_cfg();
        // The slot's folder is chosen after the fallback to slot a.
        let fallback = c.find("set anklume_boot=a\nfi\n").unwrap();
        let dir = c
            .find("set anklume_slotdir=($anklume_esp)/EFI/anklume/slot-$anklume_boot\n")
            .unwrap();
        assert!(fallback < dir);
        assert!(c.contains("if [ ! -f ($anklume_esp)/EFI/anklume/slot-$anklume_boot/slot.cfg ]"));
        assert!(c.contains("source $anklume_slotdir/slot.cfg\n"));
        assert!(c.contains("    linux $anklume_slotdir/vmlinuz root=anklume "));
        assert!(c.contains("    initrd $anklume_slotdir/initrd.img\n"));
        assert!(c.contains("set anklume_env=($anklume_esp)/EFI/anklume/grubenv\n"));
        // Nothing is read from a slot partition any more.
        for gone in ["$anklume_disk", "anklume_part=", "$anklume_part)"] {
            assert!(!c.contains(gone), "{gone}");
        }
        assert!(!COMMON_MODULES.contains(&"squash4") && !COMMON_MODULES.contains(&"xzio"));
    }

    #[test]
    fn under_secure_boot_only_the_signed_uki_is_started() {
        let c = grub_cfg();
        let f = c.find("function anklume_linux").unwrap();
        let body = &c[f..c[f..].find("\n}\n").unwrap() + f];
        let sb = body.find("if [ \"$lockdown\" = y ]; then").unwrap();
        let chain = body
            .find("chainloader $anklume_slotdir/anklume.efi\n")
            .unwrap();
        let other = body.find("  else\n").unwrap();
        let linux = body.find("linux $anklume_slotdir/vmlinuz").unwrap();
        assert!(sb < chain && chain < other && other < linux, "{body}");
        // The fallback to MokManager exists only under Secure Boot.
        let mok = c.find("set fallback=2\n").unwrap();
        // ... which is the MokManager entry: the third one.
        let titles: Vec<&str> = c
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("menuentry \""))
            .collect();
        assert!(titles[2].starts_with("Secure Boot: enrol"), "{titles:?}");
        let guard = c[..mok].rfind("if [ \"$lockdown\" = y ]; then\n").unwrap();
        assert!(!c[guard..mok].contains("\nfi\n"), "{}", &c[guard..mok]);
        assert!(c.contains("chainloader ($anklume_esp)/EFI/BOOT/mmx64.efi\n"));
    }

    #[test]
    fn grubs_command_line_is_the_template_slot_cfg_fills_in() {
        let b = SlotBoot {
            slot: Slot::B,
            partuuid: "ABCD-EF".into(),
            root_hash: "12".repeat(32),
            hash_offset: 4096,
            version: "0.2.0".into(),
        };
        // GRUB's linux line is the same template.
        assert!(grub_cfg().contains(&format!("vmlinuz {CMDLINE} $anklume_panic")));
        // Every variable of the template is one slot.cfg sets.
        let cfg = slot_cfg(&b);
        for var in CMDLINE.split('$').skip(1) {
            let name = var.split_whitespace().next().unwrap();
            assert!(
                name == "anklume_boot" || cfg.contains(&format!("set {name}=")),
                "{name}"
            );
        }
    }

    #[test]
    fn early_cfg_is_for_the_rescue_parser() {
        let c = early_cfg("1234-ABCD");
        for line in c.lines() {
            let cmd = line.split_whitespace().next().unwrap();
            assert!(
                ["echo", "search", "set", "export", "configfile"].contains(&cmd),
                "{line}"
            );
        }
        assert!(c.ends_with("configfile ($anklume_esp)/EFI/anklume/grub.cfg\n"));
    }

    #[test]
    fn early_cfg_prefers_the_esp_and_falls_back_to_the_iso_tree() {
        let c = early_cfg("1234-ABCD");
        let file = c
            .find("search --no-floppy --file --set=anklume_esp /EFI/anklume/grub.cfg\n")
            .expect("a search by file");
        let esp = c
            .find("search --no-floppy --fs-uuid --set=anklume_esp 1234-ABCD\n")
            .expect("a search for the ESP");
        // `search` sets the variable only on success: the later search wins
        // when both find something, so the ESP must come last.
        assert!(file < esp, "{c}");
        let root = c.find("set root=$anklume_esp\n").unwrap();
        assert!(esp < root);
        // Every search sets the one variable configfile reads.
        for l in c.lines().filter(|l| l.starts_with("search")) {
            assert!(l.contains("--set=anklume_esp "), "{l}");
        }
    }

    #[test]
    fn the_iso_trees_grub_cfg_runs_the_same_search_without_initrd_lines() {
        let c = iso_grub_cfg("1234-ABCD");
        assert!(c.ends_with(&early_cfg("1234-ABCD")));
        for l in c.lines() {
            let l = l.trim_start();
            assert!(l.starts_with('#') || !l.starts_with("initrd"), "{l}");
            assert!(!l.starts_with("linux"), "{l}");
        }
    }

    #[test]
    fn slot_cfg_sets_what_the_command_line_needs() {
        let c = slot_cfg(&SlotBoot {
            slot: Slot::B,
            partuuid: "ABCD-EF".into(),
            root_hash: "12".repeat(32),
            hash_offset: 4096,
            version: "0.2.0".into(),
        });
        assert!(c.starts_with("# anklume slot b:"));
        assert!(c.contains("set anklume_version=\"0.2.0\"\n"));
        assert!(c.contains("set anklume_partuuid=abcd-ef\n"));
        assert!(c.contains(&format!("set anklume_roothash={}\n", "12".repeat(32))));
        assert!(c.contains("set anklume_hashoffset=4096\n"));
        for var in [
            "anklume_partuuid",
            "anklume_roothash",
            "anklume_hashoffset",
            "anklume_version",
        ] {
            assert!(grub_cfg().contains(&format!("${var}")), "{var}");
        }
    }
}
