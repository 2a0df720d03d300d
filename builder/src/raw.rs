//! The raw GPT disk image (`--format raw`), for SD cards and internal disks:
//! both slots and the persist partition pre-created, BIOS and UEFI boot.
//!
//! | # | PARTLABEL           | size          | content                                 |
//! |---|---------------------|---------------|-----------------------------------------|
//! | 1 | `anklume-bios-boot` | 1 MiB         | GRUB i386-pc core.img (BIOS boot)       |
//! | 2 | `anklume-esp`       | two slots' boot files | the same ESP as the ISO's (`image::esp_size`) |
//! | 3 | `anklume-slot-a`    | `--slot-size` | squashfs + verity tree                  |
//! | 4 | `anklume-slot-b`    | `--slot-size` | empty until the first update            |
//! | 5 | `anklume-persist`   | `--persist-size` | empty: the initrd formats it (ext4) on first boot |
//!
//! Every partition starts on a 1 MiB boundary; slot A keeps partition
//! number 3 as in the ISO. The file
//! is sparse: empty partitions take no space until written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};

use anklume_contract::partition::{
    slot_label, BIOS_BOOT_TYPE, ESP_LABEL, ESP_TYPE, PERSIST_LABEL, PERSIST_TYPE, SLOT_TYPE_X86_64,
};
use anklume_contract::Slot;

use crate::biosboot;
use crate::gpt::{self, NewPart};

pub const RAW_BIOS_PART: u32 = 1;
pub const RAW_ESP_PART: u32 = 2;
pub const RAW_SLOT_A_PART: u32 = 3;
pub const RAW_SLOT_B_PART: u32 = 4;
pub const RAW_PERSIST_PART: u32 = 5;
/// PARTLABEL of the BIOS boot partition.
pub const BIOS_BOOT_LABEL: &str = "anklume-bios-boot";

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
const BIOS_BOOT_SIZE: u64 = MIB;

/// Sizes chosen by the user.
#[derive(Debug, Clone, Copy)]
pub struct RawSizes {
    /// ESP size in bytes.
    pub esp: u64,
    /// Size of each slot partition in bytes (rounded up to MiB).
    pub slot: u64,
    /// Size of the persist partition in bytes (rounded up to MiB).
    pub persist: u64,
}

/// PARTUUIDs and disk GUID of one raw image.
#[derive(Debug, Clone)]
pub struct RawGuids {
    pub disk: String,
    pub bios_boot: String,
    pub esp: String,
    pub slot_a: String,
    pub slot_b: String,
    pub persist: String,
}

/// Where each partition goes: `(number, label, type, first LBA, last LBA)`
/// and the disk size in sectors.
pub fn layout(s: &RawSizes, g: &RawGuids) -> (Vec<NewPart>, u64) {
    let round = |b: u64| b.div_ceil(MIB) * MIB;
    let plan: [(&str, &str, &str, u64); 5] = [
        (
            BIOS_BOOT_LABEL,
            BIOS_BOOT_TYPE,
            &g.bios_boot,
            BIOS_BOOT_SIZE,
        ),
        (ESP_LABEL, ESP_TYPE, &g.esp, round(s.esp)),
        (
            slot_label(Slot::A),
            SLOT_TYPE_X86_64,
            &g.slot_a,
            round(s.slot),
        ),
        (
            slot_label(Slot::B),
            SLOT_TYPE_X86_64,
            &g.slot_b,
            round(s.slot),
        ),
        (PERSIST_LABEL, PERSIST_TYPE, &g.persist, round(s.persist)),
    ];
    let mut at = MIB;
    let mut parts = Vec::new();
    for (label, ty, guid, size) in plan {
        parts.push(NewPart {
            type_guid: ty.to_string(),
            unique_guid: guid.to_string(),
            first_lba: at / SECTOR,
            last_lba: (at + size) / SECTOR - 1,
            name: label.to_string(),
            attributes: 0,
        });
        at += size;
    }
    // 1 MiB at the end holds the backup GPT (33 sectors) with room to spare.
    (parts, (at + MIB) / SECTOR)
}

/// What goes into a raw image.
#[derive(Debug)]
pub struct RawInputs<'a> {
    pub out: &'a Path,
    pub sizes: RawSizes,
    pub guids: RawGuids,
    pub esp: &'a Path,
    pub slot_a: &'a Path,
    pub bios_boot_img: &'a Path,
    pub bios_core: &'a Path,
}

/// Refuse a slot image larger than a slot partition of `sizes` (the build
/// calls this before spending time on the other formats).
pub fn check_slot_fits(slot_img: &Path, sizes: &RawSizes) -> Result<()> {
    let len = std::fs::metadata(slot_img)
        .with_context(|| format!("reading {}", slot_img.display()))?
        .len();
    let room = sizes.slot.div_ceil(MIB) * MIB;
    ensure!(
        len <= room,
        "slot A is {} MiB but --slot-size gives each slot {} MiB; raise --slot-size",
        len.div_ceil(MIB),
        room / MIB
    );
    Ok(())
}

/// Write the raw image to `out` (created or replaced).
pub fn assemble(i: &RawInputs<'_>) -> Result<()> {
    let (parts, total) = layout(&i.sizes, &i.guids);
    let part = |n: u32| &parts[n as usize - 1];
    check_slot_fits(i.slot_a, &i.sizes)?;
    let esp_len = std::fs::metadata(i.esp)?.len();
    let esp_room = (part(RAW_ESP_PART).last_lba + 1 - part(RAW_ESP_PART).first_lba) * SECTOR;
    ensure!(
        esp_len <= esp_room,
        "the ESP image is larger than its partition"
    );
    let boot_img = std::fs::read(i.bios_boot_img)
        .with_context(|| format!("reading {}", i.bios_boot_img.display()))?;
    let core =
        std::fs::read(i.bios_core).with_context(|| format!("reading {}", i.bios_core.display()))?;

    if i.out.exists() {
        std::fs::remove_file(i.out)
            .with_context(|| format!("removing the old {}", i.out.display()))?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(i.out)
        .with_context(|| format!("creating {}", i.out.display()))?;
    f.set_len(total * SECTOR)
        .with_context(|| format!("sizing {} to {} MiB", i.out.display(), total * SECTOR / MIB))?;
    gpt::write_new(&f, total, &i.guids.disk, &parts).context("writing the GPT")?;
    let bios = part(RAW_BIOS_PART);
    biosboot::install(
        &f,
        &boot_img,
        &core,
        bios.first_lba,
        (bios.last_lba + 1 - bios.first_lba) * SECTOR,
    )?;
    copy_into(&mut f, i.esp, part(RAW_ESP_PART).first_lba * SECTOR).context("writing the ESP")?;
    copy_into(&mut f, i.slot_a, part(RAW_SLOT_A_PART).first_lba * SECTOR)
        .context("writing slot A")?;
    f.sync_all()
        .with_context(|| format!("flushing {}", i.out.display()))?;
    Ok(())
}

/// Copy `src` into `dst` at byte `at`, leaving all-zero MiBs as holes.
fn copy_into(dst: &mut File, src: &Path, at: u64) -> Result<()> {
    let mut r = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = at;
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
}

fn read_full(r: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guids() -> RawGuids {
        let g = |s: &str| gpt::derived_guid(s.as_bytes());
        RawGuids {
            disk: g("disk"),
            bios_boot: g("bios"),
            esp: g("esp"),
            slot_a: g("a"),
            slot_b: g("b"),
            persist: g("p"),
        }
    }

    #[test]
    fn layout_is_aligned_ordered_and_numbered_as_the_contract_says() {
        let s = RawSizes {
            esp: 16 * MIB,
            slot: 300 * MIB + 1,
            persist: 64 * MIB,
        };
        let (p, total) = layout(&s, &guids());
        assert_eq!(p.len(), 5);
        assert_eq!(p[RAW_SLOT_A_PART as usize - 1].name, "anklume-slot-a");
        assert_eq!(p[RAW_SLOT_B_PART as usize - 1].name, "anklume-slot-b");
        assert_eq!(p[RAW_ESP_PART as usize - 1].name, ESP_LABEL);
        assert_eq!(p[RAW_PERSIST_PART as usize - 1].name, PERSIST_LABEL);
        assert_eq!(RAW_SLOT_A_PART, crate::iso::ISO_SLOT_A_PART);
        for w in p.windows(2) {
            assert_eq!(w[0].last_lba + 1, w[1].first_lba);
        }
        for x in &p {
            assert_eq!(x.first_lba % 2048, 0, "{} aligned", x.name);
        }
        assert_eq!(p[2].last_lba + 1 - p[2].first_lba, 301 * 2048, "rounded up");
        assert!(p[4].last_lba < total - 34);
    }

    #[test]
    fn assembles_an_image_that_sgdisk_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let esp = d.join("esp.img");
        crate::esp::write_esp(&esp, 4 * MIB, 7, &[]).unwrap();
        let slot = d.join("slot.img");
        std::fs::write(&slot, vec![0x5a; 3 * MIB as usize + 17]).unwrap();
        let mut boot = vec![0u8; 512];
        boot[510..].copy_from_slice(&[0x55, 0xaa]);
        std::fs::write(d.join("boot.img"), &boot).unwrap();
        std::fs::write(d.join("core.img"), vec![1u8; 4000]).unwrap();
        let out = d.join("disk.raw");
        let inputs = RawInputs {
            out: &out,
            sizes: RawSizes {
                esp: 4 * MIB,
                slot: 4 * MIB,
                persist: MIB,
            },
            guids: guids(),
            esp: &esp,
            slot_a: &slot,
            bios_boot_img: &d.join("boot.img"),
            bios_core: &d.join("core.img"),
        };
        assemble(&inputs).unwrap();
        let f = File::open(&out).unwrap();
        let parts = gpt::read(&f).unwrap();
        assert_eq!(parts.len(), 5);
        let a = &parts[2];
        assert_eq!(a.unique_guid, guids().slot_a);
        let mut back = vec![0u8; 3 * MIB as usize + 17];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut back, a.offset()).unwrap();
        assert!(back.iter().all(|&b| b == 0x5a), "slot A copied");
        let mut esp_back = vec![0u8; 4 * MIB as usize];
        f.read_exact_at(&mut esp_back, parts[1].offset()).unwrap();
        assert_eq!(esp_back, std::fs::read(&esp).unwrap(), "ESP copied");
        // The standard tool agrees with our table (sgdisk: ci/setup-image).
        let v = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(&out)
            .output()
            .expect("sgdisk (gdisk) must be installed: ci/setup-image");
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(text.contains("No problems found"), "{text}");
        let p = std::process::Command::new("sgdisk")
            .arg("-p")
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&p.stdout);
        for l in ["anklume-bios-boot", "anklume-slot-b", "anklume-persist"] {
            assert!(text.contains(l), "{text}");
        }
        assert!(text.contains("EF02"), "BIOS boot type: {text}");

        // A slot larger than its partition is refused before anything is written.
        std::fs::write(&slot, vec![1u8; 5 * MIB as usize]).unwrap();
        std::fs::remove_file(&out).unwrap();
        let err = assemble(&inputs).unwrap_err().to_string();
        assert!(err.contains("raise --slot-size"), "{err}");
        assert!(!out.exists());
    }
}
