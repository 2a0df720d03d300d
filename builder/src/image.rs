//! The whole build: rootfs → slot A → per format (GRUB, ESP, container)
//! → hybrid ISO and/or raw GPT disk, plus `SHA256SUMS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::bootfiles;
use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::Slot;

use crate::bootfiles::{slot_folder, BootFiles};
use crate::esp::{self, EspFile};
use crate::gpt;
use crate::grub::{self, CoreImages, SlotBoot};
use crate::iso::{self, IsoInputs, ISO_SLOT_A_PART};
use crate::progress::Progress;
use crate::raw::{self, RawGuids, RawInputs, RawSizes};
use crate::rootfs;
use crate::signing::{self, SigningKey, UkiInputs};
use crate::slot;

/// Room on the ESP for everything but the slots' folders: GRUB EFI
/// (~4 MiB with our modules), `grub.cfg`, `grubenv`, FAT overhead.
pub const ESP_BASE: u64 = 8 << 20;
/// Each slot's folder gets room for this many times the boot files of the
/// build (a later version's kernel and initrd, which an update writes into
/// the other slot's folder, may be larger).
pub const ESP_SLOT_MARGIN: (u64, u64) = (3, 2);

/// Size of the ESP for boot files of `boot_files` bytes per slot: room for
/// two slots' folders (with [`ESP_SLOT_MARGIN`]) + [`ESP_BASE`], in whole MiB.
pub fn esp_size(boot_files: u64) -> u64 {
    let (num, den) = ESP_SLOT_MARGIN;
    let per_slot = (boot_files * num).div_ceil(den);
    (ESP_BASE + 2 * per_slot).div_ceil(1 << 20) << 20
}

/// The containers `anklume-build image` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hybrid ISO: boots as a CD and as a `dd`-written USB stick, BIOS and UEFI.
    Iso,
    /// GPT disk image with slots A and B and the persist partition.
    Raw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Iso => "iso",
            Format::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A prepared rootfs tree; when absent, mkosi builds one.
    pub rootfs: Option<PathBuf>,
    /// The mkosi definition (e.g. `mkosi/debian`).
    pub mkosi_dir: PathBuf,
    /// Our binaries to install into the tree (`target/release`).
    pub bin_dir: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub out_dir: PathBuf,
    pub version: String,
    pub epoch: u64,
    pub quiet: bool,
    /// At least one; each is written to `out/anklume-<version>.<format>`.
    pub formats: Vec<Format>,
    /// Raw image: bytes per slot partition.
    pub slot_size: u64,
    /// Raw image: bytes of the persist partition.
    pub persist_size: u64,
    /// Secure Boot signing key; `None`: an unsigned image (Secure Boot off).
    pub signing: Option<SigningKey>,
    /// Public update keys the OS will trust (`NAME.pub`; mkosi builds only).
    pub update_keys: Vec<PathBuf>,
}

/// Where the rootfs keeps the signed EFI binaries of a signed build.
pub const SIGNED_SHIM: &str = "usr/lib/shim/shimx64.efi.signed";
pub const SIGNED_MOK_MANAGER: &str = "usr/lib/shim/mmx64.efi.signed";
pub const SIGNED_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

/// The EFI side of a signed build (the same for every format).
#[derive(Debug)]
struct SignedBoot {
    /// Shim with Microsoft's signatures and ours.
    shim: Vec<u8>,
    grub: Vec<u8>,
    mok_manager: Vec<u8>,
    cert_der: Vec<u8>,
}

impl SignedBoot {
    fn prepare(rootfs: &Path, work: &Path, key: &SigningKey, epoch: u64) -> Result<SignedBoot> {
        let read = |rel: &str| {
            let p = rootfs.join(rel);
            std::fs::read(&p).with_context(|| {
                format!(
                    "reading {} (the rootfs needs shim-signed and grub-efi-amd64-signed)",
                    p.display()
                )
            })
        };
        let shim = work.join("shimx64.efi");
        key.sign(&rootfs.join(SIGNED_SHIM), &shim, epoch)?;
        Ok(SignedBoot {
            shim: std::fs::read(&shim).with_context(|| format!("reading {}", shim.display()))?,
            grub: read(SIGNED_GRUB)?,
            mok_manager: read(SIGNED_MOK_MANAGER)?,
            cert_der: key.cert_der.clone(),
        })
    }
}

/// Identifiers of one image, derived from version + epoch + format
/// (DESIGN.md §3: the same inputs give the same image bytes). The two
/// formats get different ones, so a machine with the ISO stick plugged in
/// and the raw image on its disk never sees the same PARTUUID twice.
#[derive(Debug)]
struct BuildIds {
    disk_guid: String,
    iso_part_guid: String,
    bios_boot_guid: String,
    esp_guid: String,
    slot_a_guid: String,
    slot_b_guid: String,
    persist_guid: String,
    esp_volume_id: u32,
}

impl BuildIds {
    fn derive(version: &str, epoch: u64, format: Format) -> Self {
        let f = format.name();
        let seed = |what: &str| format!("anklume {f} {what}\0{version}\0{epoch}");
        let guid = |what: &str| gpt::derived_guid(seed(what).as_bytes());
        let vol = Sha256::digest(seed("esp-volume-id").as_bytes());
        BuildIds {
            disk_guid: guid("disk"),
            iso_part_guid: guid("iso9660"),
            bios_boot_guid: guid("bios-boot"),
            esp_guid: guid("esp"),
            slot_a_guid: guid("slot-a"),
            slot_b_guid: guid("slot-b"),
            persist_guid: guid("persist"),
            esp_volume_id: u32::from_le_bytes(vol[..4].try_into().expect("4 bytes")),
        }
    }
}

/// FAT volume ID as GRUB and blkid print it.
pub fn fat_uuid(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

/// Build every requested format; returns the images written.
pub fn build(o: &BuildOptions) -> Result<Vec<PathBuf>> {
    let start = Instant::now();
    ensure!(!o.formats.is_empty(), "no image format requested");
    let p = Progress::new(o.quiet);
    std::fs::create_dir_all(&o.work_dir)
        .with_context(|| format!("creating {}", o.work_dir.display()))?;
    let _lock = lock_work_dir(&o.work_dir)?;
    std::fs::create_dir_all(&o.out_dir)
        .with_context(|| format!("creating {}", o.out_dir.display()))?;
    let rootfs = match &o.rootfs {
        Some(r) => {
            ensure!(
                o.update_keys.is_empty(),
                "update keys go into the tree mkosi builds; {} is a prepared tree (put the keys in its /{} yourself)",
                r.display(),
                rootfs::UPDATE_KEYS_DIR
            );
            r.clone()
        }
        None => {
            p.step("building the rootfs with mkosi");
            let extra = rootfs::Extra {
                bin_dir: o.bin_dir.as_deref(),
                update_keys: &o.update_keys,
            };
            rootfs::build(&o.mkosi_dir, &o.work_dir, &extra, o.epoch)?
        }
    };
    let boot = BootFiles::from_rootfs(&rootfs)?;
    let signed = match &o.signing {
        Some(key) => {
            p.step(&format!("Secure Boot: signing with {}", key.subject));
            Some(SignedBoot::prepare(&rootfs, &o.work_dir, key, o.epoch)?)
        }
        None => {
            eprintln!(
                "anklume-build: note: no signing key (--signing-key/--signing-cert or \
                 ${}/${}): the image boots with Secure Boot off only",
                signing::KEY_ENV,
                signing::CERT_ENV
            );
            None
        }
    };
    // A signed slot's folder also holds its UKI (kernel + initrd + stub).
    let per_slot = match signed {
        Some(_) => 2 * boot.size() + (1 << 20),
        None => boot.size(),
    };
    let esp_size = esp_size(per_slot);
    let t = Instant::now();
    p.step("writing the squashfs of slot A");
    let slot_img = o.work_dir.join("slot-a.img");
    slot::mksquashfs(&rootfs, &slot_img, o.epoch)?;
    p.took("squashfs", t);
    let mut manifest = slot::seal(&slot_img, Slot::A, &o.version, &boot, o.epoch, &p)?;
    // The UKI names the image, not a partition (`uki_cmdline`): one for
    // every format, and the same file an update bundle carries.
    let uki_path = o.work_dir.join(crate::bundle::SLOT_UKI);
    let uki = match &o.signing {
        Some(key) => {
            p.step("building and signing slot A's UKI");
            signing::build_uki(
                &UkiInputs {
                    rootfs: &rootfs,
                    kernel: &rootfs.join(format!("boot/vmlinuz-{}", boot.kernel_version)),
                    initrd: &rootfs.join(format!("boot/initrd.img-{}", boot.kernel_version)),
                    kernel_version: &boot.kernel_version,
                    cmdline: &grub::uki_cmdline(&manifest),
                    epoch: o.epoch,
                },
                key,
                &o.work_dir,
                &uki_path,
            )?;
            let data = std::fs::read(&uki_path)
                .with_context(|| format!("reading {}", uki_path.display()))?;
            manifest
                .boot_files
                .push(crate::bootfiles::entry(bootfiles::UKI, &data));
            Some(data)
        }
        None => {
            // No stale UKI of an earlier signed build for `bundle` to find.
            match std::fs::remove_file(&uki_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", uki_path.display()))
                }
            }
            None
        }
    };
    crate::bundle::save_manifest(&o.work_dir, &manifest)?;
    let raw_sizes = RawSizes {
        esp: esp_size,
        slot: o.slot_size,
        persist: o.persist_size,
    };
    if o.formats.contains(&Format::Raw) {
        // Refuse before spending time on the other formats.
        raw::check_slot_fits(&slot_img, &raw_sizes)?;
    }

    let mut outputs = Vec::new();
    let mut formats = o.formats.clone();
    formats.dedup();
    for format in formats {
        let ids = BuildIds::derive(&o.version, o.epoch, format);
        let work = o.work_dir.join(format.name());
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        p.step(&format!(
            "building GRUB (BIOS + EFI) for the {} image",
            format.name()
        ));
        let core = grub::build_core_images(&rootfs, &work, &fat_uuid(ids.esp_volume_id))?;
        let slot_boot = SlotBoot {
            slot: Slot::A,
            partuuid: ids.slot_a_guid.clone(),
            root_hash: manifest.root_hash.clone(),
            hash_offset: manifest.hash_offset,
            version: o.version.clone(),
        };
        let slot_cfg = grub::slot_cfg(&slot_boot);
        let manifest_json = manifest.to_json();
        let slot_a = slot_folder(Slot::A, &boot, uki.as_deref(), &manifest_json, &slot_cfg);
        let esp_img = work.join("esp.img");
        p.step(&format!("writing the ESP ({} MiB)", esp_size >> 20));
        write_esp(&esp_img, esp_size, &ids, &core, signed.as_ref(), &slot_a)?;
        let name = format!("anklume-{}.{}", o.version, format.name());
        let out = o.out_dir.join(&name);
        let tmp = o.out_dir.join(format!(".{name}.tmp"));
        match format {
            Format::Iso => {
                p.step("mastering the hybrid ISO");
                master_iso(&tmp, &work, &core, &esp_img, &slot_img, &ids, &slot_a, o)?;
            }
            Format::Raw => {
                p.step("writing the raw disk image");
                raw::assemble(&RawInputs {
                    out: &tmp,
                    sizes: raw_sizes,
                    guids: RawGuids {
                        disk: ids.disk_guid.clone(),
                        bios_boot: ids.bios_boot_guid.clone(),
                        esp: ids.esp_guid.clone(),
                        slot_a: ids.slot_a_guid.clone(),
                        slot_b: ids.slot_b_guid.clone(),
                        persist: ids.persist_guid.clone(),
                    },
                    esp: &esp_img,
                    slot_a: &slot_img,
                    bios_boot_img: &core.bios_boot_img,
                    bios_core: &core.bios_core,
                })?;
            }
        }
        std::fs::rename(&tmp, &out)
            .with_context(|| format!("moving the image to {}", out.display()))?;
        outputs.push(out);
    }
    let refs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
    p.step("writing SHA256SUMS");
    write_sums(&o.out_dir, &refs)?;
    for out in &outputs {
        eprintln!(
            "==> {} ({} MiB)",
            out.display(),
            std::fs::metadata(out)?.len() >> 20
        );
    }
    eprintln!(
        "==> slot A root hash {} ({:.1} s)",
        manifest.root_hash,
        start.elapsed().as_secs_f64()
    );
    Ok(outputs)
}

/// The ESP: the EFI boot loader (our GRUB; on a signed build shim,
/// Debian's signed GRUB with its config, MokManager and our certificate),
/// grub.cfg, a fresh boot state, slot A's folder (kernel, initrd, UKI,
/// manifest, slot.cfg).
fn write_esp(
    out: &Path,
    size: u64,
    ids: &BuildIds,
    core: &CoreImages,
    signed: Option<&SignedBoot>,
    slot_a: &[(String, &[u8])],
) -> Result<()> {
    let efi = match signed {
        Some(s) => s.shim.clone(),
        None => {
            std::fs::read(&core.efi).with_context(|| format!("reading {}", core.efi.display()))?
        }
    };
    let env = encode_envblk(&BootState::fresh().to_vars())
        .map_err(|e| anyhow::anyhow!("encoding the GRUB environment block: {e}"))?;
    let grub_cfg = grub::grub_cfg();
    let early = grub::early_cfg(&fat_uuid(ids.esp_volume_id));
    let mut files = vec![
        EspFile {
            path: bootfiles::EFI_BOOT,
            data: &efi,
        },
        EspFile {
            path: bootfiles::GRUB_CFG,
            data: grub_cfg.as_bytes(),
        },
        EspFile {
            path: bootfiles::GRUBENV,
            data: &env,
        },
    ];
    if let Some(s) = signed {
        files.extend([
            EspFile {
                path: bootfiles::SHIM_NEXT,
                data: &s.grub,
            },
            EspFile {
                path: bootfiles::MOK_MANAGER,
                data: &s.mok_manager,
            },
            EspFile {
                path: bootfiles::SIGNED_GRUB_CFG,
                data: early.as_bytes(),
            },
            EspFile {
                path: bootfiles::SB_CERT,
                data: &s.cert_der,
            },
        ]);
    }
    files.extend(slot_a.iter().map(|(path, data)| EspFile { path, data }));
    esp::write_esp(out, size, ids.esp_volume_id, &files)
}

#[allow(clippy::too_many_arguments)]
fn master_iso(
    out: &Path,
    work: &Path,
    core: &CoreImages,
    esp_img: &Path,
    slot_img: &Path,
    ids: &BuildIds,
    slot_a: &[(String, &[u8])],
    o: &BuildOptions,
) -> Result<()> {
    let iso_root = work.join("iso-root");
    if iso_root.exists() {
        std::fs::remove_dir_all(&iso_root)
            .with_context(|| format!("removing {}", iso_root.display()))?;
    }
    std::fs::create_dir_all(&iso_root)?;
    // Slot A's folder, at the same paths as on the ESP: what boots the ISO
    // by its files (Ventoy, some firmware) finds the kernel and initrd.
    let put = |path: &str, data: &[u8]| -> Result<()> {
        let f = iso_root.join(path);
        let dir = f.parent().context("an ISO file has a folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&f, data).with_context(|| format!("writing {}", f.display()))
    };
    for (path, data) in slot_a {
        put(path, data)?;
    }
    // The boot selection too, for a GRUB that sees this tree but not the
    // ESP (the ISO presented as a virtual CD, e.g. by Ventoy): the same
    // grub.cfg, and a fresh boot state that is read-only here (save_env
    // fails: no counting). Ventoy's GRUB2 mode reads /boot/grub/grub.cfg.
    let env = encode_envblk(&BootState::fresh().to_vars())
        .map_err(|e| anyhow::anyhow!("encoding the GRUB environment block: {e}"))?;
    let esp_id = fat_uuid(ids.esp_volume_id);
    put(bootfiles::GRUB_CFG, grub::grub_cfg().as_bytes())?;
    put(bootfiles::GRUBENV, &env)?;
    put("boot/grub/grub.cfg", grub::iso_grub_cfg(&esp_id).as_bytes())?;
    if o.signing.is_some() {
        // Debian's signed GRUB reads grub.cfg beside itself; a loader that
        // starts it from the ISO 9660 view looks for it here.
        put(
            bootfiles::SIGNED_GRUB_CFG,
            grub::early_cfg(&esp_id).as_bytes(),
        )?;
    }
    std::fs::write(
        iso_root.join("README.txt"),
        format!(
            "anklume Live OS {}\n\nBoot this medium (CD or USB stick, BIOS or UEFI).\nThe OS is in GPT partition {ISO_SLOT_A_PART} (squashfs + dm-verity, root hash in\n{}); its kernel and initrd are in {}/.\n",
            o.version,
            bootfiles::slot_file(Slot::A, bootfiles::MANIFEST),
            bootfiles::slot_dir(Slot::A),
        ),
    )?;
    iso::master(&IsoInputs {
        out,
        volume_label: "ANKLUME",
        bios_eltorito: &core.bios_eltorito,
        bios_hybrid_mbr: &core.bios_hybrid_mbr,
        esp: esp_img,
        slot_a: slot_img,
        iso_root: &iso_root,
        epoch: o.epoch,
        disk_guid: &ids.disk_guid,
        iso_part_guid: &ids.iso_part_guid,
        esp_guid: &ids.esp_guid,
        slot_a_guid: &ids.slot_a_guid,
    })
}

/// Two builds in one work directory would write the same files: refuse.
fn lock_work_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join(".anklume-build.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{} is in use by another anklume-build ({e}); wait for it or use another --work-dir",
            dir.display()
        )
    })
}

/// `SHA256SUMS` next to the images (atomically replaced).
pub fn write_sums(dir: &Path, files: &[&Path]) -> Result<()> {
    let mut text = String::new();
    for f in files {
        use std::io::Read;
        let mut h = Sha256::new();
        let mut r = std::fs::File::open(f)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let name = f.file_name().context("file name")?.to_string_lossy();
        text.push_str(&format!("{}  {name}\n", crate::verity::hex(&h.finalize())));
    }
    ensure!(!text.is_empty(), "nothing to checksum");
    let tmp = dir.join(".SHA256SUMS.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("SHA256SUMS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_gets_its_own_stable_ids() {
        let iso = BuildIds::derive("0.1.0", 1_700_000_000, Format::Iso);
        let raw = BuildIds::derive("0.1.0", 1_700_000_000, Format::Raw);
        let again = BuildIds::derive("0.1.0", 1_700_000_000, Format::Iso);
        assert_eq!(iso.slot_a_guid, again.slot_a_guid);
        assert_eq!(iso.esp_volume_id, again.esp_volume_id);
        for (a, b) in [
            (&iso.disk_guid, &raw.disk_guid),
            (&iso.esp_guid, &raw.esp_guid),
            (&iso.slot_a_guid, &raw.slot_a_guid),
        ] {
            assert_ne!(a, b);
        }
        assert_ne!(iso.esp_volume_id, raw.esp_volume_id);
        let other = BuildIds::derive("0.1.1", 1_700_000_000, Format::Iso);
        assert_ne!(iso.slot_a_guid, other.slot_a_guid);
    }

    #[test]
    fn the_esp_holds_two_slots_with_margin() {
        const MIB: u64 = 1 << 20;
        // 11 MiB kernel + 35 MiB initrd: 2 × 69 MiB + 8 MiB.
        assert_eq!(esp_size(46 * MIB), 146 * MIB);
        for boot in [1, MIB - 1, 46 * MIB + 3, 300 * MIB] {
            let s = esp_size(boot);
            assert_eq!(s % MIB, 0);
            assert!(s >= ESP_BASE + 2 * boot + boot / 2 * 2, "{boot} -> {s}");
        }
    }
}
