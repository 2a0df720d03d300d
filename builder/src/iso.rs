//! The hybrid ISO: ISO 9660 + El Torito (BIOS and EFI) + MBR + GPT, mastered
//! by xorriso, then the GPT entries renamed/retyped to the contract.
//!
//! GPT layout xorriso produces with `-appended_part_as_gpt` (checked by the
//! tests): 1 = the ISO 9660 area, 2 = ESP, 3 = slot A.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{ensure, Context, Result};

use anklume_contract::partition::{slot_label, ESP_LABEL, ESP_TYPE, SLOT_TYPE_X86_64};
use anklume_contract::Slot;

use crate::cmd::Cmd;
use crate::gpt::{self, Edit};

/// GPT partition numbers in the hybrid ISO.
pub const ISO_FS_PART: u32 = 1;
pub const ISO_ESP_PART: u32 = 2;
pub const ISO_SLOT_A_PART: u32 = 3;

#[derive(Debug)]
pub struct IsoInputs<'a> {
    pub out: &'a Path,
    pub volume_label: &'a str,
    pub bios_eltorito: &'a Path,
    pub bios_hybrid_mbr: &'a Path,
    pub esp: &'a Path,
    pub slot_a: &'a Path,
    /// Directory with the ISO 9660 content (README, manifests).
    pub iso_root: &'a Path,
    pub epoch: u64,
    pub disk_guid: &'a str,
    /// PARTUUID of partition 1 (the ISO 9660 area; xorriso picks a random one).
    pub iso_part_guid: &'a str,
    pub esp_guid: &'a str,
    pub slot_a_guid: &'a str,
}

pub fn master(i: &IsoInputs<'_>) -> Result<()> {
    // The El Torito BIOS image must be inside the ISO 9660 tree.
    let boot_dir = i.iso_root.join("boot/grub");
    std::fs::create_dir_all(&boot_dir)?;
    std::fs::copy(i.bios_eltorito, boot_dir.join("bios.img"))
        .context("copying the BIOS El Torito image into the ISO tree")?;
    let date = iso_date(i.epoch);
    if i.out.exists() {
        std::fs::remove_file(i.out)
            .with_context(|| format!("removing the old {}", i.out.display()))?;
    }
    Cmd::new("xorriso")
        .args(["-as", "mkisofs", "-o"])
        .arg(i.out)
        .args(["-R", "-V", i.volume_label])
        .args(["--modification-date=".to_string() + &date])
        .args(["--set_all_file_dates", &date])
        .arg("--grub2-mbr")
        .arg(i.bios_hybrid_mbr)
        .args(["-partition_offset", "16", "--mbr-force-bootable"])
        .arg("-append_partition")
        .arg(ISO_ESP_PART.to_string())
        .arg(ESP_TYPE)
        .arg(i.esp)
        .arg("-append_partition")
        .arg(ISO_SLOT_A_PART.to_string())
        .arg(SLOT_TYPE_X86_64)
        .arg(i.slot_a)
        .args(["-appended_part_as_gpt", "-no-pad"])
        .args([
            "-b",
            "boot/grub/bios.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ])
        .args(["-boot-info-table", "--grub2-boot-info"])
        .args(["-eltorito-alt-boot", "-e"])
        .arg(format!(
            "--interval:appended_partition_{ISO_ESP_PART}:all::"
        ))
        .args(["-no-emul-boot"])
        .arg(i.iso_root)
        .run()
        .context("mastering the hybrid ISO with xorriso")?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(i.out)
        .with_context(|| format!("opening {}", i.out.display()))?;
    let parts = gpt::read(&f).context("reading the ISO's GPT")?;
    let find = |n: u32| parts.iter().find(|p| p.number == n);
    let esp = find(ISO_ESP_PART).context("xorriso wrote no ESP partition")?;
    let slot = find(ISO_SLOT_A_PART).context("xorriso wrote no slot partition")?;
    ensure!(esp.type_guid == ESP_TYPE, "ESP type is {}", esp.type_guid);
    ensure!(
        slot.type_guid == SLOT_TYPE_X86_64,
        "slot type is {}",
        slot.type_guid
    );
    gpt::edit(
        &f,
        Some(i.disk_guid),
        &[
            (
                ISO_FS_PART,
                Edit {
                    unique_guid: Some(i.iso_part_guid.to_string()),
                    ..Edit::default()
                },
            ),
            (
                ISO_ESP_PART,
                Edit {
                    name: Some(ESP_LABEL.to_string()),
                    unique_guid: Some(i.esp_guid.to_string()),
                    type_guid: None,
                },
            ),
            (
                ISO_SLOT_A_PART,
                Edit {
                    name: Some(slot_label(Slot::A).to_string()),
                    unique_guid: Some(i.slot_a_guid.to_string()),
                    type_guid: None,
                },
            ),
        ],
    )
    .context("renaming the ISO's GPT partitions")?;
    f.sync_all()?;
    Ok(())
}

/// `YYYYMMDDhhmmss00` (UTC) for xorriso's date options.
pub fn iso_date(epoch: u64) -> String {
    let days = epoch / 86_400;
    let rem = epoch % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970010100000000");
        assert_eq!(iso_date(1_700_000_000), "2023111422132000");
        assert_eq!(iso_date(951_782_400), "2000022900000000");
    }
}
