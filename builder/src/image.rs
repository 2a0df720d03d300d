//! The whole build: rootfs → slot A → ESP → hybrid ISO, plus `SHA256SUMS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::Slot;

use crate::esp::{self, EspFile};
use crate::gpt;
use crate::grub::{self, SlotBoot};
use crate::iso::{self, IsoInputs, ISO_SLOT_A_PART};
use crate::progress::Progress;
use crate::rootfs;
use crate::slot;

/// Size of the ESP: GRUB EFI (~4 MiB with our modules) + config + manifests.
pub const ESP_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct IsoOptions {
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
}

/// Identifiers of one build, derived from version + epoch (DESIGN.md §3:
/// the same inputs give the same image bytes).
#[derive(Debug)]
struct BuildIds {
    disk_guid: String,
    iso_part_guid: String,
    esp_guid: String,
    slot_a_guid: String,
    esp_volume_id: u32,
}

impl BuildIds {
    fn derive(version: &str, epoch: u64) -> Self {
        let seed = |what: &str| format!("anklume {what}\0{version}\0{epoch}");
        let guid = |what: &str| gpt::derived_guid(seed(what).as_bytes());
        let vol = Sha256::digest(seed("esp-volume-id").as_bytes());
        BuildIds {
            disk_guid: guid("disk"),
            iso_part_guid: guid("iso9660"),
            esp_guid: guid("esp"),
            slot_a_guid: guid("slot-a"),
            esp_volume_id: u32::from_le_bytes(vol[..4].try_into().expect("4 bytes")),
        }
    }
}

/// FAT volume ID as GRUB and blkid print it.
pub fn fat_uuid(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

pub fn build_iso(o: &IsoOptions) -> Result<PathBuf> {
    let start = Instant::now();
    let p = Progress::new(o.quiet);
    std::fs::create_dir_all(&o.work_dir)
        .with_context(|| format!("creating {}", o.work_dir.display()))?;
    let _lock = lock_work_dir(&o.work_dir)?;
    std::fs::create_dir_all(&o.out_dir)
        .with_context(|| format!("creating {}", o.out_dir.display()))?;
    let rootfs = match &o.rootfs {
        Some(r) => r.clone(),
        None => {
            p.step("building the rootfs with mkosi");
            rootfs::build(&o.mkosi_dir, &o.work_dir, o.bin_dir.as_deref(), o.epoch)?
        }
    };
    let kernel_version = rootfs::kernel_version(&rootfs)?;
    let t = Instant::now();
    p.step("writing the squashfs of slot A");
    let slot_img = o.work_dir.join("slot-a.img");
    slot::mksquashfs(&rootfs, &slot_img, o.epoch)?;
    p.took("squashfs", t);
    let manifest = slot::seal(&slot_img, Slot::A, &o.version, &kernel_version, o.epoch, &p)?;

    let ids = BuildIds::derive(&o.version, o.epoch);
    p.step("building GRUB (BIOS + EFI)");
    let core = grub::build_core_images(&rootfs, &o.work_dir, &fat_uuid(ids.esp_volume_id))?;
    let efi = std::fs::read(&core.efi)?;
    let slot_cfg = grub::slot_cfg(&SlotBoot {
        slot: Slot::A,
        partition: ISO_SLOT_A_PART,
        partuuid: ids.slot_a_guid.clone(),
        root_hash: manifest.root_hash.clone(),
        hash_offset: manifest.hash_offset,
        version: o.version.clone(),
    });
    let env = encode_envblk(&BootState::fresh().to_vars())
        .map_err(|e| anyhow::anyhow!("encoding the GRUB environment block: {e}"))?;
    let grub_cfg = grub::grub_cfg();
    let manifest_json = manifest.to_json();
    let esp_img = o.work_dir.join("esp.img");
    p.step("writing the ESP");
    esp::write_esp(
        &esp_img,
        ESP_SIZE,
        ids.esp_volume_id,
        &[
            EspFile {
                path: grub::EFI_BOOT,
                data: &efi,
            },
            EspFile {
                path: grub::GRUB_CFG,
                data: grub_cfg.as_bytes(),
            },
            EspFile {
                path: grub::GRUBENV,
                data: &env,
            },
            EspFile {
                path: &grub::slot_cfg_path(Slot::A),
                data: slot_cfg.as_bytes(),
            },
            EspFile {
                path: &grub::manifest_path(Slot::A),
                data: manifest_json.as_bytes(),
            },
        ],
    )?;

    let iso_root = o.work_dir.join("iso-root");
    if iso_root.exists() {
        std::fs::remove_dir_all(&iso_root)?;
    }
    std::fs::create_dir_all(&iso_root)?;
    std::fs::write(iso_root.join("anklume-slot-a.json"), &manifest_json)?;
    std::fs::write(
        iso_root.join("README.txt"),
        format!(
            "anklume Live OS {}\n\nBoot this medium (CD or USB stick, BIOS or UEFI).\nThe OS is in GPT partition {ISO_SLOT_A_PART} (squashfs + dm-verity), root hash {}.\n",
            o.version, manifest.root_hash
        ),
    )?;
    let name = format!("anklume-{}.iso", o.version);
    let out = o.out_dir.join(&name);
    let tmp = o.out_dir.join(format!(".{name}.tmp"));
    p.step("mastering the hybrid ISO");
    iso::master(&IsoInputs {
        out: &tmp,
        volume_label: "ANKLUME",
        bios_eltorito: &core.bios_eltorito,
        bios_hybrid_mbr: &core.bios_hybrid_mbr,
        esp: &esp_img,
        slot_a: &slot_img,
        iso_root: &iso_root,
        epoch: o.epoch,
        disk_guid: &ids.disk_guid,
        iso_part_guid: &ids.iso_part_guid,
        esp_guid: &ids.esp_guid,
        slot_a_guid: &ids.slot_a_guid,
    })?;
    std::fs::rename(&tmp, &out).with_context(|| format!("moving the ISO to {}", out.display()))?;
    write_sums(&o.out_dir, &[&out])?;
    eprintln!(
        "==> {} ({} MiB, slot A root hash {}) in {:.1} s",
        out.display(),
        std::fs::metadata(&out)?.len() >> 20,
        manifest.root_hash,
        start.elapsed().as_secs_f64()
    );
    Ok(out)
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
