//! The update bundle: one file carrying a new OS version for the inactive
//! slot, signed with ed25519 (`ring`). Layout (all integers little endian,
//! every part 4096-aligned so that a reader can fetch any part with one
//! range request and a writer can copy blocks as they are):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | [`MAGIC`] `ANKLUMEB` |
//! | 8 | 4 | container version ([`CONTAINER_VERSION`]) |
//! | 12 | 4 | manifest length in bytes (at most [`MAX_MANIFEST`]) |
//! | 16 | 8 | key id: first 8 bytes of SHA-256 of the signing public key |
//! | 24 | 64 | ed25519 signature of [`SIGNING_CONTEXT`] followed by the manifest bytes |
//! | 88 | 4008 | zeros |
//! | 4096 | manifest length | [`BundleManifest`] as JSON, zero-padded to 4096 |
//! | … | … | the parts the manifest places: slot image, block index, boot files |
//!
//! The signature covers the manifest; the manifest covers every other byte:
//! the block index by its SHA-256, each 4 KiB block of the slot image by its
//! index entry, each boot file by its SHA-256 in [`SlotManifest`]. The
//! parts follow the manifest in the order image, index, boot files, without
//! gaps other than zero padding to 4096, and the file ends with the last
//! one (padded): anything else is refused, so a truncated or extended file
//! never passes.
//!
//! The block index has one [`INDEX_ENTRY`]-byte entry per 4096-byte *data*
//! block of the slot image (the verity area after them is recomputed by the
//! updater from the data, never fetched): the [`weak_checksum`] (4 bytes, the rsync rolling sum, to
//! find blocks at any offset of a local slot) then the block's SHA-256 (32
//! bytes, unsalted, so that blocks of an older slot match whatever salt
//! the new verity tree uses). An updater reuses every block it already has
//! and fetches only the others.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::manifest::SlotManifest;

mod index;
mod sign;
pub use index::{weak_checksum, IndexEntry};
pub use sign::{key_id, sign, verify, PublicKey};

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"ANKLUMEB";
/// Version of the container layout above.
pub const CONTAINER_VERSION: u32 = 1;
/// Version of [`BundleManifest`]'s schema (its `format` field).
pub const MANIFEST_FORMAT: u32 = 1;
/// Size of the header block; also the alignment of every part.
pub const ALIGN: u64 = 4096;
/// Largest manifest accepted (it holds no per-block data).
pub const MAX_MANIFEST: u32 = 1 << 20;
/// Domain separation: what is signed is this, then the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"anklume update bundle v1\0";
/// Block size of the index (the dm-verity block size).
pub const INDEX_BLOCK: u64 = 4096;
/// Bytes per index entry: weak checksum (4) + SHA-256 (32).
pub const INDEX_ENTRY: usize = 36;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a key id.
pub const KEY_ID_LEN: usize = 8;

/// Where a part of the bundle lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extent {
    /// Byte offset in the bundle (multiple of [`ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The block index part: where it lies and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPart {
    pub offset: u64,
    pub size: u64,
    /// SHA-256 of the index bytes, lower-case hex.
    pub sha256: String,
}

/// What a bundle says about itself (JSON, signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Oldest running version this bundle may update (dotted numbers).
    pub min_version: String,
    /// Version of the data on the persist partition and pool this OS
    /// version reads and writes; an updater refuses a bundle whose schema
    /// is older than the running one's (the data would be unreadable).
    pub data_schema: u32,
    /// The slot's manifest, as written to the ESP (version, kernel
    /// release, sizes, verity salt and root hash, boot files with SHA-256).
    pub slot: SlotManifest,
    /// UUID recorded in the verity superblock (8-4-4-4-12).
    pub verity_uuid: String,
    /// The slot image: data (squashfs, zero-padded to 4096) then the
    /// verity superblock block and tree at `slot.hash_offset`.
    pub image: Extent,
    /// One [`INDEX_ENTRY`] per data block of the image (`slot.data_blocks`).
    pub index: IndexPart,
    /// Where each of `slot.boot_files` lies, in the same order.
    pub boot_files: Vec<Extent>,
}

impl BundleManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Parse and check the manifest's own consistency: the schema, the
    /// versions, and a layout of parts that ends exactly at `file_len`.
    pub fn from_json(bytes: &[u8], file_len: u64) -> Result<Self, String> {
        let m: BundleManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("bundle manifest: {e}"))?;
        // Reuse the slot manifest's own checks (boot file names and order).
        SlotManifest::from_json(&m.slot.to_json())?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!(
                "bundle manifest: format {} (this updater reads {MANIFEST_FORMAT})",
                m.format
            ));
        }
        parse_version(&m.slot.version).map_err(|e| format!("bundle manifest: version: {e}"))?;
        parse_version(&m.min_version).map_err(|e| format!("bundle manifest: min_version: {e}"))?;
        m.check_layout(manifest_end(bytes.len() as u64), file_len)?;
        Ok(m)
    }

    fn check_layout(&self, start: u64, file_len: u64) -> Result<(), String> {
        let s = &self.slot;
        if self.image.size % INDEX_BLOCK != 0 || self.image.size <= s.hash_offset {
            return Err(format!(
                "bundle manifest: image size {} is not a multiple of {INDEX_BLOCK} past the hash offset {}",
                self.image.size, s.hash_offset
            ));
        }
        if s.data_blocks.checked_mul(INDEX_BLOCK) != Some(s.hash_offset)
            || s.data_size > s.hash_offset
        {
            return Err(format!(
                "bundle manifest: hash offset {} does not follow {} data blocks of {} bytes of data",
                s.hash_offset, s.data_blocks, s.data_size
            ));
        }
        // data_blocks * 4096 fits (checked above), so * 36 does not overflow.
        let want_index = s.data_blocks * INDEX_ENTRY as u64;
        if self.index.size != want_index {
            return Err(format!(
                "bundle manifest: index is {} bytes, {} data blocks need {want_index}",
                self.index.size, s.data_blocks
            ));
        }
        if self.boot_files.len() != s.boot_files.len() {
            return Err("bundle manifest: boot_files does not place every slot boot file".into());
        }
        let mut parts = vec![
            ("image", self.image),
            (
                "index",
                Extent {
                    offset: self.index.offset,
                    size: self.index.size,
                },
            ),
        ];
        for (e, f) in self.boot_files.iter().zip(&s.boot_files) {
            if e.size != f.size {
                return Err(format!(
                    "bundle manifest: {} is placed with {} bytes, the slot manifest says {}",
                    f.name, e.size, f.size
                ));
            }
            parts.push((f.name.as_str(), *e));
        }
        let mut at = start;
        for (name, e) in parts {
            if e.offset != at {
                return Err(format!(
                    "bundle manifest: part {name} at offset {}, expected {at}",
                    e.offset
                ));
            }
            at = e
                .offset
                .checked_add(e.size)
                .and_then(|end| end.checked_next_multiple_of(ALIGN))
                .ok_or_else(|| format!("bundle manifest: part {name} overflows"))?;
        }
        match at.cmp(&file_len) {
            Ordering::Equal => Ok(()),
            Ordering::Greater => Err(format!(
                "bundle is truncated: its parts end at byte {at}, the file has {file_len}"
            )),
            Ordering::Less => Err(format!(
                "bundle has {} bytes after its last part (ends at {at}, file is {file_len})",
                file_len - at
            )),
        }
    }
}

/// Round up to [`ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where the first part starts after a manifest of `len` bytes.
pub fn manifest_end(len: u64) -> u64 {
    ALIGN + align_up(len)
}

/// The fixed header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub manifest_len: u32,
    pub key_id: [u8; KEY_ID_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; ALIGN as usize];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&CONTAINER_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.key_id);
        h[24..88].copy_from_slice(&self.signature);
        h
    }

    /// Parse the first 4096 bytes of a bundle.
    pub fn parse(h: &[u8]) -> Result<Header, String> {
        if h.len() < ALIGN as usize {
            return Err(format!(
                "bundle is truncated: {} bytes, the header alone is {ALIGN}",
                h.len()
            ));
        }
        if h[0..8] != MAGIC {
            return Err("not an anklume bundle (no ANKLUMEB magic at byte 0)".into());
        }
        let v = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if v != CONTAINER_VERSION {
            return Err(format!(
                "bundle container version {v} (this updater reads {CONTAINER_VERSION})"
            ));
        }
        let manifest_len = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
        if manifest_len == 0 || manifest_len > MAX_MANIFEST {
            return Err(format!(
                "bundle header: manifest length {manifest_len} (1 to {MAX_MANIFEST})"
            ));
        }
        if let Some(i) = h[88..ALIGN as usize].iter().position(|&b| b != 0) {
            return Err(format!("bundle header: byte {} is not zero", 88 + i));
        }
        Ok(Header {
            manifest_len,
            key_id: h[16..24].try_into().expect("8 bytes"),
            signature: h[24..88].try_into().expect("64 bytes"),
        })
    }
}

/// Parse a version of dotted numbers (`0.1.0`, `2026.12.1`).
pub fn parse_version(v: &str) -> Result<Vec<u64>, String> {
    if v.is_empty() {
        return Err("empty version".into());
    }
    v.split('.')
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("{v:?} is not dotted numbers"))
        })
        .collect()
}

/// Compare two versions numerically (missing parts count as 0: `1.2` = `1.2.0`).
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, String> {
    let (mut a, mut b) = (parse_version(a)?, parse_version(b)?);
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    Ok(a.cmp(&b))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse lower- or upper-case hex.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return Err(format!("{s:?} is not hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfiles::{INITRD, KERNEL};
    use crate::manifest::BootFile;

    fn sample() -> BundleManifest {
        let blocks = 3u64;
        let image = Extent {
            offset: 8192,
            size: (blocks + 2) * 4096,
        };
        let index_size = blocks * INDEX_ENTRY as u64;
        let index = IndexPart {
            offset: image.offset + image.size,
            size: index_size,
            sha256: "00".repeat(32),
        };
        let k = Extent {
            offset: index.offset + align_up(index_size),
            size: 10,
        };
        let i = Extent {
            offset: k.offset + 4096,
            size: 20,
        };
        BundleManifest {
            format: MANIFEST_FORMAT,
            min_version: "0.1.0".into(),
            data_schema: 1,
            slot: SlotManifest {
                version: "0.2.0".into(),
                kernel_version: "6.12.9-amd64".into(),
                data_size: 3 * 4096 - 5,
                hash_offset: 3 * 4096,
                data_blocks: 3,
                salt: "11".repeat(32),
                root_hash: "22".repeat(32),
                boot_files: vec![
                    BootFile {
                        name: KERNEL.into(),
                        size: 10,
                        sha256: "33".repeat(32),
                    },
                    BootFile {
                        name: INITRD.into(),
                        size: 20,
                        sha256: "44".repeat(32),
                    },
                ],
            },
            verity_uuid: "12345678-1234-4234-8234-123456789abc".into(),
            image,
            index,
            boot_files: vec![k, i],
        }
    }

    #[test]
    fn manifest_round_trips_and_its_layout_must_fill_the_file() {
        let m = sample();
        let json = m.to_json();
        // The layout in sample() starts parts at 8192: a manifest of at most 4096 bytes.
        assert!(json.len() <= 4096);
        let end = m.boot_files[1].offset + 4096;
        assert_eq!(BundleManifest::from_json(&json, end).unwrap(), m);
        let e = BundleManifest::from_json(&json, end - 1).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = BundleManifest::from_json(&json, end + 4096).unwrap_err();
        assert!(e.contains("after its last part"), "{e}");
        let mut gap = m.clone();
        gap.boot_files[1].offset += 4096;
        let e = BundleManifest::from_json(&gap.to_json(), end + 4096).unwrap_err();
        assert!(e.contains("part initrd.img at offset"), "{e}");
        let unknown = String::from_utf8(json)
            .unwrap()
            .replacen('{', "{\"extra\": 1,", 1);
        let e = BundleManifest::from_json(unknown.as_bytes(), end).unwrap_err();
        assert!(e.contains("extra"), "{e}");
        let mut bad = m.clone();
        bad.min_version = "1.x".into();
        assert!(BundleManifest::from_json(&bad.to_json(), end)
            .unwrap_err()
            .contains("min_version"));
        // Huge numbers are errors, not overflows.
        let mut bad = m.clone();
        bad.slot.data_blocks = u64::MAX / 1000;
        assert!(BundleManifest::from_json(&bad.to_json(), end).is_err());
        let mut bad = m.clone();
        bad.image.size = u64::MAX - 4095;
        bad.slot.hash_offset = 0;
        bad.slot.data_blocks = 0;
        bad.slot.data_size = 0;
        bad.index.size = 0;
        let e = BundleManifest::from_json(&bad.to_json(), end).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let mut bad = m;
        bad.index.size -= 1;
        assert!(BundleManifest::from_json(&bad.to_json(), end)
            .unwrap_err()
            .contains("index"));
    }

    #[test]
    fn header_round_trips_and_refuses_garbage() {
        let h = Header {
            manifest_len: 77,
            key_id: [1; 8],
            signature: [2; 64],
        };
        let b = h.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert!(Header::parse(&b[..100]).unwrap_err().contains("truncated"));
        let mut x = b.clone();
        x[0] = b'X';
        assert!(Header::parse(&x).unwrap_err().contains("magic"));
        let mut x = b.clone();
        x[4000] = 1;
        assert!(Header::parse(&x).unwrap_err().contains("byte 4000"));
        let mut x = b;
        x[8] = 9;
        assert!(Header::parse(&x)
            .unwrap_err()
            .contains("container version 9"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("0.10.0", "0.9.9"), Ok(Ordering::Greater));
        assert_eq!(compare_versions("1.2", "1.2.0"), Ok(Ordering::Equal));
        assert_eq!(compare_versions("0.1.0", "0.2.0"), Ok(Ordering::Less));
        assert!(compare_versions("1.-2", "1").is_err());
        assert!(parse_version("").is_err());
        assert!(parse_version("1..2").is_err());
    }
}
