//! GRUB i386-pc on a GPT disk, installed the way `grub-bios-setup` does it
//! for an embedded core image, but onto an image file we are assembling:
//!
//! - `boot.img` (446 bytes of code) goes into the MBR, told where the core
//!   image starts (`KERNEL_SECTOR`, offset 0x5c) and to trust the drive
//!   number the BIOS passes (the 2-byte jump at 0x66 becomes two `nop`s, as
//!   grub-bios-setup does for hard disks);
//! - `core.img` (diskboot.img + the compressed kernel and modules) goes into
//!   the BIOS boot partition; its first sector ends with the blocklist that
//!   tells diskboot where the remaining sectors are: one contiguous run
//!   (start, length, load segment 0x820) followed by a zero terminator.
//!
//! Offsets from GRUB's `include/grub/i386/pc/boot.h` and `util/setup.c`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{ensure, Context, Result};

const SECTOR: u64 = 512;
/// boot.img: where the LBA of core.img's first sector goes.
const KERNEL_SECTOR: usize = 0x5c;
/// boot.img: the BIOS drive number to use (0xff: the one the BIOS passed).
const BOOT_DRIVE: usize = 0x64;
/// boot.img: the jump that distrusts the BIOS's drive number.
const DRIVE_CHECK: usize = 0x66;
/// boot.img bytes past this belong to the partition table (and NT magic).
const WINDOWS_NT_MAGIC: usize = 0x1b8;
/// diskboot.img: one blocklist entry (start u64, sectors u16, segment u16).
const BLOCKLIST_ENTRY: usize = 12;
/// Segment the first blocklist loads to (GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20).
const FIRST_SEGMENT: u16 = 0x820;

/// Write `boot_img` into the MBR of `disk` and `core_img` at `core_lba`,
/// where the caller reserved `room` bytes (the BIOS boot partition).
pub fn install(
    disk: &File,
    boot_img: &[u8],
    core_img: &[u8],
    core_lba: u64,
    room: u64,
) -> Result<()> {
    ensure!(
        boot_img.len() == SECTOR as usize && boot_img[510..512] == [0x55, 0xaa],
        "boot.img is {} bytes without the 55AA signature; is it GRUB's i386-pc boot.img?",
        boot_img.len()
    );
    ensure!(
        core_img.len() > SECTOR as usize && core_img.len() as u64 <= room,
        "core.img is {} bytes; the BIOS boot partition holds {room}",
        core_img.len()
    );
    let sectors = (core_img.len() as u64).div_ceil(SECTOR);
    let rest = u16::try_from(sectors - 1).context("core.img is too large for one blocklist")?;
    let mut core = core_img.to_vec();
    core.resize((sectors * SECTOR) as usize, 0);
    let first = SECTOR as usize - BLOCKLIST_ENTRY;
    let terminator = first - BLOCKLIST_ENTRY;
    core[first..first + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[first + 8..first + 10].copy_from_slice(&rest.to_le_bytes());
    core[first + 10..first + 12].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
    core[terminator..first].fill(0);
    disk.write_all_at(&core, core_lba * SECTOR)
        .context("writing GRUB's core.img into the BIOS boot partition")?;

    let mut mbr = [0u8; SECTOR as usize];
    disk.read_exact_at(&mut mbr, 0).context("reading the MBR")?;
    mbr[..WINDOWS_NT_MAGIC].copy_from_slice(&boot_img[..WINDOWS_NT_MAGIC]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    mbr[BOOT_DRIVE] = 0xff;
    mbr[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write_all_at(&mbr, 0)
        .context("writing GRUB's boot.img into the MBR")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_the_pointers_and_keeps_the_partition_table() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("disk"))
            .unwrap();
        f.set_len(4 << 20).unwrap();
        let mut table = [0u8; 512];
        table[446] = 0x80;
        table[450] = 0xee;
        f.write_all_at(&table, 0).unwrap();
        let mut boot = vec![0xabu8; 512];
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let core: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        install(&f, &boot, &core, 2048, 1 << 20).unwrap();

        let mut mbr = [0u8; 512];
        f.read_exact_at(&mut mbr, 0).unwrap();
        assert_eq!(
            u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(mbr[0x64], 0xff);
        assert_eq!(mbr[0x66..0x68], [0x90, 0x90]);
        assert_eq!(mbr[0], 0xab);
        assert_eq!((mbr[446], mbr[450]), (0x80, 0xee), "partition table kept");
        assert_eq!(mbr[510..512], [0x55, 0xaa]);

        let mut first = [0u8; 512];
        f.read_exact_at(&mut first, 2048 * 512).unwrap();
        let e = &first[500..512];
        assert_eq!(u64::from_le_bytes(e[0..8].try_into().unwrap()), 2049);
        assert_eq!(
            u16::from_le_bytes([e[8], e[9]]),
            2,
            "1500 bytes = 3 sectors"
        );
        assert_eq!(u16::from_le_bytes([e[10], e[11]]), 0x820);
        assert_eq!(first[488..500], [0u8; 12], "terminator");
        let mut rest = vec![0u8; 988];
        f.read_exact_at(&mut rest, 2049 * 512).unwrap();
        assert_eq!(rest, core[512..]);

        assert!(install(&f, &boot, &core, 2048, 1000).is_err(), "room");
        assert!(install(&f, &boot[..400], &core, 2048, 1 << 20).is_err());
    }
}
