//! Our own dm-verity hash tree writer and verifier.
//!
//! The output is byte-identical to `veritysetup format` for the parameters
//! anklume uses (superblock version 1, hash type 1, sha256, 4096-byte data
//! and hash blocks): a 512-byte superblock at the hash offset, padded to one
//! hash block, followed by the tree levels from the top (the single block
//! the root hash covers) down to level 0 (the hashes of the data blocks).
//! Each digest is `sha256(salt || block)`; each hash block holds 128 digests
//! and is zero-padded.
//!
//! Owning this format is the point (DESIGN.md §3): the builder and the
//! updater compute the tree while they write a slot, and level 0 — nearly
//! all of the work — is hashed on every core. [`format()`] and [`verify`]
//! work on files; [`digest_blocks`] + [`hash_area_from_digests`] let a
//! writer that streams the data (the updater) hash level 0 as the blocks go
//! by and build the rest of the tree at the end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use anklume_contract::verity::{BLOCK_SIZE, HASH_ALGORITHM, HASH_TYPE, SUPERBLOCK_VERSION};

const BS: usize = BLOCK_SIZE as usize;
const DIGEST: usize = 32;
/// Digests per hash block (4096 / 32).
const FANOUT: u64 = (BS / DIGEST) as u64;
/// Size of the on-disk superblock (`struct verity_sb`).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Largest salt the superblock can hold.
pub const MAX_SALT: usize = 256;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// Parameters of one hash tree, as stored in the superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Number of 4096-byte data blocks covered.
    pub data_blocks: u64,
    /// Salt hashed in front of every block (0–256 bytes).
    pub salt: Vec<u8>,
    /// UUID recorded in the superblock.
    pub uuid: [u8; 16],
}

/// What `format` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formatted {
    pub params: Params,
    pub root_hash: [u8; DIGEST],
    /// Number of tree blocks written after the superblock.
    pub hash_blocks: u64,
    /// Bytes written at the hash offset (superblock block + tree).
    pub hash_area_size: u64,
}

/// Number of blocks in each tree level, level 0 (hashes of data) first.
/// Empty when the data is a single block: the root hash is then the digest
/// of that block, as in cryptsetup.
pub fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(FANOUT);
        sizes.push(n);
    }
    sizes
}

/// Total tree blocks (without the superblock) for `data_blocks`.
pub fn tree_blocks(data_blocks: u64) -> u64 {
    level_sizes(data_blocks).iter().sum()
}

/// Bytes a hash area takes: superblock block + tree.
pub fn hash_area_size(data_blocks: u64) -> u64 {
    (1 + tree_blocks(data_blocks)) * BLOCK_SIZE
}

/// Serialise the 512-byte superblock.
pub fn superblock(p: &Params) -> Result<[u8; SUPERBLOCK_SIZE]> {
    ensure!(
        p.salt.len() <= MAX_SALT,
        "salt is {} bytes; dm-verity allows at most {MAX_SALT}",
        p.salt.len()
    );
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    sb[0..8].copy_from_slice(SIGNATURE);
    sb[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
    sb[12..16].copy_from_slice(&HASH_TYPE.to_le_bytes());
    sb[16..32].copy_from_slice(&p.uuid);
    sb[32..32 + HASH_ALGORITHM.len()].copy_from_slice(HASH_ALGORITHM.as_bytes());
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&p.data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(p.salt.len() as u16).to_le_bytes());
    sb[88..88 + p.salt.len()].copy_from_slice(&p.salt);
    Ok(sb)
}

/// Parse a superblock written by us or by `veritysetup`; refuse parameters
/// anklume does not use rather than misreading them.
pub fn parse_superblock(sb: &[u8]) -> Result<Params> {
    ensure!(sb.len() >= SUPERBLOCK_SIZE, "superblock is truncated");
    ensure!(
        &sb[0..8] == SIGNATURE,
        "no dm-verity superblock (signature is not \"verity\")"
    );
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    ensure!(
        version == SUPERBLOCK_VERSION,
        "unsupported superblock version {version}"
    );
    let hash_type = u32_at(12);
    ensure!(hash_type == HASH_TYPE, "unsupported hash type {hash_type}");
    let alg_end = sb[32..64].iter().position(|&b| b == 0).unwrap_or(32);
    let alg = String::from_utf8_lossy(&sb[32..32 + alg_end]);
    ensure!(alg == HASH_ALGORITHM, "unsupported hash algorithm {alg:?}");
    let (dbs, hbs) = (u32_at(64), u32_at(68));
    ensure!(
        u64::from(dbs) == BLOCK_SIZE && u64::from(hbs) == BLOCK_SIZE,
        "unsupported block sizes {dbs}/{hbs} (anklume uses {BLOCK_SIZE})"
    );
    let data_blocks = u64::from_le_bytes(sb[72..80].try_into().expect("8 bytes"));
    let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    ensure!(salt_size <= MAX_SALT, "salt size {salt_size} is too large");
    Ok(Params {
        data_blocks,
        salt: sb[88..88 + salt_size].to_vec(),
        uuid: sb[16..32].try_into().expect("16 bytes"),
    })
}

fn salted(salt: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(salt);
    h
}

/// Hash consecutive blocks of `src` (whose length is a multiple of 4096)
/// into `out` (32 bytes per block).
fn hash_blocks(base: &Sha256, src: &[u8], out: &mut [u8]) {
    for (block, digest) in src.chunks_exact(BS).zip(out.chunks_exact_mut(DIGEST)) {
        let mut h = base.clone();
        h.update(block);
        digest.copy_from_slice(&h.finalize());
    }
}

/// Digests of `count` data blocks read from `data` at `offset`, computed on
/// `threads` threads, each reading its own contiguous range.
fn hash_data(
    data: &File,
    offset: u64,
    count: u64,
    salt: &[u8],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<u8>> {
    let mut digests = vec![0u8; usize::try_from(count)? * DIGEST];
    let base = salted(salt);
    let per_thread = count.div_ceil(threads.max(1) as u64).max(1);
    const CHUNK_BLOCKS: u64 = 256; // 1 MiB reads
    std::thread::scope(|s| -> Result<()> {
        let mut workers = Vec::new();
        for (i, out) in digests
            .chunks_mut(usize::try_from(per_thread)? * DIGEST)
            .enumerate()
        {
            let first = i as u64 * per_thread;
            let base = base.clone();
            workers.push(s.spawn(move || -> Result<()> {
                let mut buf = vec![0u8; CHUNK_BLOCKS as usize * BS];
                let n = (out.len() / DIGEST) as u64;
                let mut done = 0u64;
                while done < n {
                    let blocks = (n - done).min(CHUNK_BLOCKS);
                    let len = blocks as usize * BS;
                    let pos = offset + (first + done) * BLOCK_SIZE;
                    data.read_exact_at(&mut buf[..len], pos).with_context(|| {
                        format!(
                            "reading data blocks {}..{}",
                            first + done,
                            first + done + blocks
                        )
                    })?;
                    let o = done as usize * DIGEST;
                    hash_blocks(
                        &base,
                        &buf[..len],
                        &mut out[o..o + blocks as usize * DIGEST],
                    );
                    done += blocks;
                    progress(blocks * BLOCK_SIZE);
                }
                Ok(())
            }));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(digests)
}

/// Pack digests into zero-padded hash blocks.
fn pack(digests: &[u8]) -> Vec<u8> {
    let blocks = (digests.len() / DIGEST).div_ceil(FANOUT as usize);
    let mut level = vec![0u8; blocks * BS];
    for (i, chunk) in digests.chunks(BS).enumerate() {
        level[i * BS..i * BS + chunk.len()].copy_from_slice(chunk);
    }
    level
}

/// The whole tree in memory: levels (level 0 first) and the root hash.
struct Tree {
    levels: Vec<Vec<u8>>,
    root: [u8; DIGEST],
}

fn build_tree(level0_digests: Vec<u8>, salt: &[u8]) -> Tree {
    let base = salted(salt);
    let mut levels = Vec::new();
    let mut digests = level0_digests;
    // A single data block: the root hash is its digest, there is no tree.
    while digests.len() > DIGEST {
        let level = pack(&digests);
        let mut next = vec![0u8; level.len() / BS * DIGEST];
        hash_blocks(&base, &level, &mut next);
        levels.push(level);
        digests = next;
    }
    let root = digests[..DIGEST].try_into().expect("one digest");
    Tree { levels, root }
}

/// Serialise superblock + tree (top level first) as written at the hash offset.
fn hash_area(params: &Params, tree: &Tree) -> Result<Vec<u8>> {
    let mut area = Vec::with_capacity(tree.levels.iter().map(Vec::len).sum::<usize>() + BS);
    area.extend_from_slice(&superblock(params)?);
    area.resize(BS, 0);
    for level in tree.levels.iter().rev() {
        area.extend_from_slice(level);
    }
    Ok(area)
}

/// Salted level-0 digests of consecutive 4096-byte blocks of `src` (its
/// length a multiple of 4096) into `out` (32 bytes per block), split over
/// `threads` threads (0 = one per core).
pub fn digest_blocks(salt: &[u8], src: &[u8], out: &mut [u8], threads: usize) {
    assert_eq!(src.len() % BS, 0, "digest_blocks: partial block");
    assert_eq!(
        src.len() / BS * DIGEST,
        out.len(),
        "digest_blocks: out size"
    );
    let base = salted(salt);
    let blocks = src.len() / BS;
    let threads = threads_or_default(threads).min(blocks.max(1));
    if threads <= 1 {
        hash_blocks(&base, src, out);
        return;
    }
    let per = blocks.div_ceil(threads);
    std::thread::scope(|s| {
        for (src, out) in src.chunks(per * BS).zip(out.chunks_mut(per * DIGEST)) {
            let base = base.clone();
            s.spawn(move || hash_blocks(&base, src, out));
        }
    });
}

/// The root hash and the hash area (superblock block + tree, as written at
/// the hash offset) of data whose level-0 digests are `level0` (32 bytes
/// per data block, `params.data_blocks` of them).
pub fn hash_area_from_digests(params: &Params, level0: Vec<u8>) -> Result<([u8; DIGEST], Vec<u8>)> {
    ensure!(params.data_blocks > 0, "no data blocks to protect");
    ensure!(
        level0.len() as u64 == params.data_blocks * DIGEST as u64,
        "{} level-0 digests for {} data blocks",
        level0.len() / DIGEST,
        params.data_blocks
    );
    let tree = build_tree(level0, &params.salt);
    let area = hash_area(params, &tree)?;
    Ok((tree.root, area))
}

/// Options for [`format()`].
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub params: Params,
    /// Byte offset of the superblock in the hash file (multiple of 4096).
    pub hash_offset: u64,
    /// Byte offset of the data in the data file (0 for a whole file/slot).
    pub data_offset: u64,
    /// Hashing threads; 0 = one per available core.
    pub threads: usize,
}

fn threads_or_default(t: usize) -> usize {
    if t > 0 {
        t
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Compute the tree of `data` and write superblock + tree into `hash` at
/// `hash_offset`. `data` and `hash` may be the same file (the slot layout)
/// as long as the hash area starts after the data.
pub fn format(
    data: &File,
    hash: &File,
    opts: &FormatOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Formatted> {
    let p = &opts.params;
    ensure!(p.data_blocks > 0, "no data blocks to protect");
    ensure!(
        opts.hash_offset % BLOCK_SIZE == 0,
        "hash offset {} is not a multiple of {BLOCK_SIZE}",
        opts.hash_offset
    );
    ensure!(
        p.salt.len() <= MAX_SALT,
        "salt is longer than {MAX_SALT} bytes"
    );
    let digests = hash_data(
        data,
        opts.data_offset,
        p.data_blocks,
        &p.salt,
        threads_or_default(opts.threads),
        progress,
    )?;
    let tree = build_tree(digests, &p.salt);
    let area = hash_area(p, &tree)?;
    hash.write_all_at(&area, opts.hash_offset)
        .context("writing the hash tree")?;
    Ok(Formatted {
        params: p.clone(),
        root_hash: tree.root,
        hash_blocks: tree_blocks(p.data_blocks),
        hash_area_size: area.len() as u64,
    })
}

/// Why a verification failed (callers report these differently).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verification failed at data block {block} (byte {})", block * BLOCK_SIZE)]
    Data { block: u64 },
    #[error("hash tree block {block} of level {level} does not match the data")]
    Tree { level: usize, block: u64 },
    #[error("root hash mismatch: expected {expected}, computed {computed}")]
    Root { expected: String, computed: String },
}

/// Recompute the tree of `data` and compare every stored hash block and the
/// root hash. Reads the parameters from the superblock at `hash_offset`.
pub fn verify(
    data: &File,
    hash: &File,
    root_hash: &[u8],
    hash_offset: u64,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Params> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    hash.read_exact_at(&mut sb, hash_offset)
        .with_context(|| format!("reading the verity superblock at offset {hash_offset}"))?;
    let p = parse_superblock(&sb)?;
    let digests = hash_data(
        data,
        0,
        p.data_blocks,
        &p.salt,
        threads_or_default(threads),
        progress,
    )?;
    let tree = build_tree(digests, &p.salt);
    // Stored top level first; compare from level 0 up so that a corrupted
    // data block is named, not the tree block above it.
    let mut positions = vec![0u64; tree.levels.len()];
    let mut pos = hash_offset + BLOCK_SIZE;
    for (level_no, level) in tree.levels.iter().enumerate().rev() {
        positions[level_no] = pos;
        pos += level.len() as u64;
    }
    for (level_no, level) in tree.levels.iter().enumerate() {
        let mut stored = vec![0u8; level.len()];
        hash.read_exact_at(&mut stored, positions[level_no])
            .with_context(|| format!("reading hash tree level {level_no}"))?;
        if let Some(i) =
            (0..level.len() / BS).find(|&i| stored[i * BS..][..BS] != level[i * BS..][..BS])
        {
            if level_no == 0 {
                // Name the first data block whose digest differs.
                let first = (i * BS..(i + 1) * BS)
                    .step_by(DIGEST)
                    .position(|o| stored[o..o + DIGEST] != level[o..o + DIGEST])
                    .unwrap_or(0);
                bail!(VerifyError::Data {
                    block: (i * FANOUT as usize + first) as u64
                });
            }
            bail!(VerifyError::Tree {
                level: level_no,
                block: i as u64
            });
        }
    }
    if tree.root != root_hash {
        bail!(VerifyError::Root {
            expected: hex(root_hash),
            computed: hex(&tree.root)
        });
    }
    Ok(p)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parse hex (even length, `-` or empty = no bytes, as veritysetup's `--salt -`).
pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if s == "-" {
        return Ok(Vec::new());
    }
    ensure!(s.len() % 2 == 0, "{s:?} is not hex: odd number of digits");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("{s:?} is not hex")))
        .collect()
}

/// Parse a UUID in the usual 8-4-4-4-12 form.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    ensure!(
        lens == [8, 4, 4, 4, 12],
        "{s:?} is not a UUID (expected 8-4-4-4-12 hex digits)"
    );
    let bytes = unhex(&groups.concat())?;
    Ok(bytes.try_into().expect("16 bytes"))
}

/// Format a UUID as 8-4-4-4-12.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .context("reading /dev/urandom")?;
    Ok(b)
}

/// Mark 16 random (or hash-derived) bytes as an RFC 4122 version 4 UUID.
pub fn as_uuid_v4(mut u: [u8; 16]) -> [u8; 16] {
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// A random (version 4) UUID, as veritysetup generates when none is given.
pub fn random_uuid() -> Result<[u8; 16]> {
    Ok(as_uuid_v4(random_bytes::<16>()?))
}

/// Number of whole blocks in a file.
pub fn file_blocks(path: &Path) -> Result<u64> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    Ok(len / BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_sizes_match_cryptsetup_arithmetic() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(16384), vec![128, 1]);
        assert_eq!(level_sizes(16385), vec![129, 2, 1]);
    }

    #[test]
    fn superblock_round_trips() {
        let p = Params {
            data_blocks: 123_456_789,
            salt: vec![1, 2, 3],
            uuid: *b"0123456789abcdef",
        };
        let sb = superblock(&p).unwrap();
        assert_eq!(parse_superblock(&sb).unwrap(), p);
        let mut bad = sb;
        bad[0] = b'X';
        assert!(parse_superblock(&bad).is_err());
    }

    #[test]
    fn streamed_digests_give_the_tree_format_writes() {
        let d = std::env::temp_dir().join(format!("anklume-verity-stream-{}", std::process::id()));
        let blocks = 300u64; // three levels' worth of arithmetic: 300 -> 3 -> 1
        let data: Vec<u8> = (0..blocks * BLOCK_SIZE)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&d, &data).unwrap();
        let params = Params {
            data_blocks: blocks,
            salt: vec![9; 32],
            uuid: [1; 16],
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&d)
            .unwrap();
        let off = blocks * BLOCK_SIZE;
        let formatted = format(
            &f,
            &f,
            &FormatOptions {
                params: params.clone(),
                hash_offset: off,
                data_offset: 0,
                threads: 2,
            },
            &|_| {},
        )
        .unwrap();
        let written = std::fs::read(&d).unwrap()[off as usize..].to_vec();
        std::fs::remove_file(&d).unwrap();
        for threads in [1, 2, 5] {
            let mut l0 = vec![0u8; blocks as usize * DIGEST];
            // In two uneven pieces, as a streaming writer feeds them.
            let cut = 77 * BS;
            digest_blocks(&params.salt, &data[..cut], &mut l0[..77 * DIGEST], threads);
            digest_blocks(&params.salt, &data[cut..], &mut l0[77 * DIGEST..], threads);
            let (root, area) = hash_area_from_digests(&params, l0).unwrap();
            assert_eq!(root, formatted.root_hash);
            assert_eq!(area, written);
        }
        assert!(hash_area_from_digests(&params, vec![0; 32]).is_err());
    }

    #[test]
    fn hex_and_uuid_parse() {
        assert_eq!(unhex("00ff").unwrap(), vec![0, 255]);
        assert!(unhex("0").is_err());
        assert!(unhex("zz").is_err());
        assert_eq!(unhex("-").unwrap(), Vec::<u8>::new());
        let u = parse_uuid("12345678-1234-1234-1234-123456789abc").unwrap();
        assert_eq!(format_uuid(&u), "12345678-1234-1234-1234-123456789abc");
        assert!(parse_uuid("12345678123412341234123456789abc").is_err());
    }
}
