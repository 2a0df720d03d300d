//! GPT reading and in-place editing (names, type and unique GUIDs, disk GUID).
//!
//! xorriso masters the hybrid ISO (El Torito + MBR + GPT), but names its
//! appended partitions `AppendedN` and invents GUIDs; DESIGN.md §3 wants our
//! labels, types and stable PARTUUIDs. We patch the entries of both the
//! primary and the backup GPT and recompute their CRCs, leaving the MBR (with
//! its boot code and bootable entry) untouched — which rewriting the table
//! with a general-purpose crate or `sfdisk` does not guarantee.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// One partition entry as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based partition number.
    pub number: u32,
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

impl Entry {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// Change to apply to one entry.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub type_guid: Option<String>,
    pub unique_guid: Option<String>,
    pub name: Option<String>,
}

/// GUID text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`) → on-disk bytes
/// (first three fields little-endian).
pub fn guid_to_bytes(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    ensure!(hex.len() == 32 && s.len() == 36, "{s:?} is not a GUID");
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{s:?} is not a GUID"))?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Ok(b)
}

pub fn guid_from_bytes(b: &[u8]) -> String {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[..16]);
    x[0..4].reverse();
    x[4..6].reverse();
    x[6..8].reverse();
    crate::verity::format_uuid(&x).to_uppercase()
}

/// A GUID derived from a seed (RFC 4122 version 4 layout, stable across builds).
pub fn derived_guid(seed: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(seed);
    let u = crate::verity::as_uuid_v4(d[..16].try_into().expect("16 bytes"));
    crate::verity::format_uuid(&u).to_uppercase()
}

struct Header {
    raw: Vec<u8>,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
}

fn read_header(f: &File, lba: u64) -> Result<Header> {
    let mut raw = vec![0u8; SECTOR as usize];
    f.read_exact_at(&mut raw, lba * SECTOR)
        .with_context(|| format!("reading the GPT header at LBA {lba}"))?;
    ensure!(&raw[0..8] == SIGNATURE, "no GPT header at LBA {lba}");
    let size = u32::from_le_bytes(raw[12..16].try_into()?) as usize;
    ensure!(
        (92..=512).contains(&size),
        "GPT header at LBA {lba} has size {size}"
    );
    let mut check = raw[..size].to_vec();
    check[16..20].fill(0);
    let crc = u32::from_le_bytes(raw[16..20].try_into()?);
    ensure!(
        crc32fast::hash(&check) == crc,
        "GPT header at LBA {lba} has a bad CRC"
    );
    raw.truncate(size);
    Ok(Header {
        entries_lba: u64::from_le_bytes(raw[72..80].try_into()?),
        count: u32::from_le_bytes(raw[80..84].try_into()?),
        entry_size: u32::from_le_bytes(raw[84..88].try_into()?),
        raw,
    })
}

fn read_entries(f: &File, h: &Header) -> Result<Vec<u8>> {
    let mut e = vec![0u8; h.count as usize * h.entry_size as usize];
    f.read_exact_at(&mut e, h.entries_lba * SECTOR)
        .context("reading the GPT entries")?;
    let crc = u32::from_le_bytes(h.raw[88..92].try_into()?);
    ensure!(crc32fast::hash(&e) == crc, "GPT entries have a bad CRC");
    Ok(e)
}

fn parse(entries: &[u8], entry_size: usize) -> Vec<Entry> {
    entries
        .chunks(entry_size)
        .enumerate()
        .filter(|(_, e)| e[0..16] != [0u8; 16])
        .map(|(i, e)| {
            let name_u16: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            Entry {
                number: i as u32 + 1,
                type_guid: guid_from_bytes(&e[0..16]),
                unique_guid: guid_from_bytes(&e[16..32]),
                first_lba: u64::from_le_bytes(e[32..40].try_into().expect("8")),
                last_lba: u64::from_le_bytes(e[40..48].try_into().expect("8")),
                name: String::from_utf16_lossy(&name_u16),
            }
        })
        .collect()
}

/// The partitions of the disk image `f` (from the primary GPT).
pub fn read(f: &File) -> Result<Vec<Entry>> {
    let h = read_header(f, 1)?;
    let e = read_entries(f, &h)?;
    Ok(parse(&e, h.entry_size as usize))
}

/// Apply `edits` (by 1-based partition number) and a new disk GUID to both
/// GPTs of `f`, recomputing the CRCs.
pub fn edit(f: &File, disk_guid: Option<&str>, edits: &[(u32, Edit)]) -> Result<()> {
    let primary = read_header(f, 1)?;
    let backup_lba = u64::from_le_bytes(primary.raw[32..40].try_into()?);
    let mut entries = read_entries(f, &primary)?;
    let es = primary.entry_size as usize;
    for (n, ed) in edits {
        ensure!(*n >= 1 && *n <= primary.count, "no GPT entry {n}");
        let e = &mut entries[(*n as usize - 1) * es..*n as usize * es];
        if e[0..16] == [0u8; 16] {
            bail!("GPT entry {n} is unused");
        }
        if let Some(t) = &ed.type_guid {
            e[0..16].copy_from_slice(&guid_to_bytes(t)?);
        }
        if let Some(u) = &ed.unique_guid {
            e[16..32].copy_from_slice(&guid_to_bytes(u)?);
        }
        if let Some(name) = &ed.name {
            let units: Vec<u16> = name.encode_utf16().collect();
            ensure!(
                units.len() <= 36,
                "GPT name {name:?} is longer than 36 characters"
            );
            e[56..128].fill(0);
            for (i, u) in units.iter().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let backup = read_header(f, backup_lba)?;
    for (mut h, lba) in [(primary, 1u64), (backup, backup_lba)] {
        if let Some(g) = disk_guid {
            h.raw[56..72].copy_from_slice(&guid_to_bytes(g)?);
        }
        h.raw[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        h.raw[16..20].fill(0);
        let crc = crc32fast::hash(&h.raw);
        h.raw[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&entries, h.entries_lba * SECTOR)
            .context("writing GPT entries")?;
        f.write_all_at(&h.raw, lba * SECTOR)
            .context("writing a GPT header")?;
    }
    Ok(())
}

/// A partition of a new table.
#[derive(Debug, Clone)]
pub struct NewPart {
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
    /// Attribute bits (bit 0: required by the platform).
    pub attributes: u64,
}

/// Entries of a table we write: 128 of 128 bytes (32 sectors), as every
/// partitioning tool does.
const NEW_COUNT: u32 = 128;
const NEW_ENTRY_SIZE: u32 = 128;
/// Sectors taken by one copy of the entries.
pub const ENTRY_SECTORS: u64 = (NEW_COUNT as u64 * NEW_ENTRY_SIZE as u64) / SECTOR;
/// First LBA a partition may use (after MBR, header and entries).
pub const FIRST_USABLE: u64 = 2 + ENTRY_SECTORS;

/// Write a new protective MBR partition entry plus primary and backup GPT
/// for a disk of `total_sectors`. The MBR's boot code (bytes 0..440) is left
/// as it is; its partition table becomes the single protective entry.
pub fn write_new(f: &File, total_sectors: u64, disk_guid: &str, parts: &[NewPart]) -> Result<()> {
    ensure!(
        parts.len() <= NEW_COUNT as usize,
        "{} partitions do not fit in a GPT",
        parts.len()
    );
    let last_usable = total_sectors - 2 - ENTRY_SECTORS;
    let mut entries = vec![0u8; (NEW_COUNT * NEW_ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        ensure!(
            p.first_lba >= FIRST_USABLE && p.first_lba <= p.last_lba && p.last_lba <= last_usable,
            "partition {} ({}) at LBA {}..={} is outside the usable area {FIRST_USABLE}..={last_usable}",
            i + 1,
            p.name,
            p.first_lba,
            p.last_lba
        );
        for q in &parts[..i] {
            ensure!(
                p.last_lba < q.first_lba || p.first_lba > q.last_lba,
                "partitions {} and {} overlap",
                q.name,
                p.name
            );
        }
        let e = &mut entries[i * NEW_ENTRY_SIZE as usize..(i + 1) * NEW_ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&guid_to_bytes(&p.type_guid)?);
        e[16..32].copy_from_slice(&guid_to_bytes(&p.unique_guid)?);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        let units: Vec<u16> = p.name.encode_utf16().collect();
        ensure!(
            units.len() <= 36,
            "GPT name {:?} is longer than 36 characters",
            p.name
        );
        for (j, u) in units.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |my: u64, alt: u64, entries_lba: u64| -> Result<Vec<u8>> {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid_to_bytes(disk_guid)?);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&NEW_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&NEW_ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h.resize(SECTOR as usize, 0);
        Ok(h)
    };
    let last = total_sectors - 1;
    let backup_entries = last - ENTRY_SECTORS;
    let mut mbr = [0u8; SECTOR as usize];
    f.read_exact_at(&mut mbr, 0).context("reading the MBR")?;
    mbr[446..510].fill(0);
    // The protective entry: type 0xEE over the whole disk (capped at 2 TiB).
    let pe = &mut mbr[446..462];
    pe[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    pe[4] = 0xee;
    pe[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    pe[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    pe[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    f.write_all_at(&mbr, 0)
        .context("writing the protective MBR")?;
    f.write_all_at(&header(1, last, 2)?, SECTOR)
        .context("writing the primary GPT header")?;
    f.write_all_at(&entries, 2 * SECTOR)
        .context("writing the primary GPT entries")?;
    f.write_all_at(&entries, backup_entries * SECTOR)
        .context("writing the backup GPT entries")?;
    f.write_all_at(&header(last, 1, backup_entries)?, last * SECTOR)
        .context("writing the backup GPT header")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_uses_mixed_endian() {
        let g = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let b = guid_to_bytes(g).unwrap();
        assert_eq!(b[0..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(guid_from_bytes(&b), g);
        assert!(guid_to_bytes("nope").is_err());
        assert_eq!(derived_guid(b"x"), derived_guid(b"x"));
        assert_ne!(derived_guid(b"x"), derived_guid(b"y"));
    }
}
