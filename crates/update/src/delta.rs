//! Delta: find the image's data blocks on this machine before fetching
//! them. For each block of the new image the bundle's index gives a weak
//! rolling checksum and a SHA-256; a local slot is scanned zsync-style
//! (rsync rolling sum at every byte offset, a bitmap to skip most offsets
//! in O(1), SHA-256 only on a weak hit, a jump of one block after a match),
//! so blocks are found even when the new squashfs shifted them by any
//! number of bytes. The target slot itself is only checked in place
//! (block b at byte b × 4096: an interrupted earlier write of the same
//! bundle), since it is about to be overwritten.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use anklume_contract::bundle::{IndexEntry, INDEX_BLOCK};

const BS: usize = INDEX_BLOCK as usize;

/// Where one data block of the new image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Fetched from the bundle.
    Bundle,
    /// Copied from local slot `src` at byte `offset`.
    Local { src: usize, offset: u64 },
    /// Already in the target at its place.
    Present,
}

/// A local slot to reuse blocks from (read only).
#[derive(Debug)]
pub struct Local {
    pub path: PathBuf,
    pub file: File,
    /// Bytes worth scanning (the slot's data, not the whole partition).
    pub len: u64,
}

/// Per data block, where it comes from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: Vec<Origin>,
}

impl Plan {
    /// Everything from the bundle.
    pub fn full(blocks: u64) -> Plan {
        Plan {
            from: vec![Origin::Bundle; blocks as usize],
        }
    }

    /// Runs (first, count) of blocks fetched from the bundle.
    pub fn bundle_ranges(&self) -> Vec<(u64, u64)> {
        let mut r: Vec<(u64, u64)> = Vec::new();
        for (i, f) in self.from.iter().enumerate() {
            if *f == Origin::Bundle {
                match r.last_mut() {
                    Some((a, n)) if *a + *n == i as u64 => *n += 1,
                    _ => r.push((i as u64, 1)),
                }
            }
        }
        r
    }

    /// Blocks (bundle, local, present).
    pub fn counts(&self) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for f in &self.from {
            match f {
                Origin::Bundle => c.0 += 1,
                Origin::Local { .. } => c.1 += 1,
                Origin::Present => c.2 += 1,
            }
        }
        c
    }
}

fn sha(block: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, block)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

const BITMAP_BITS: u32 = 24;

fn bit(weak: u32) -> usize {
    (weak.wrapping_mul(0x9E37_79B1) >> (32 - BITMAP_BITS)) as usize
}

/// Mark blocks of `target` that already hold the right data at their place.
fn check_in_place(
    index: &[IndexEntry],
    target: &File,
    target_len: u64,
    from: &mut [Origin],
) -> Result<()> {
    const CHUNK: usize = 256;
    let mut buf = vec![0u8; CHUNK * BS];
    let blocks = (target_len / INDEX_BLOCK).min(index.len() as u64) as usize;
    let mut b = 0;
    while b < blocks {
        let n = CHUNK.min(blocks - b);
        target
            .read_exact_at(&mut buf[..n * BS], b as u64 * INDEX_BLOCK)
            .with_context(|| format!("reading the target at block {b}"))?;
        for i in 0..n {
            if sha(&buf[i * BS..(i + 1) * BS]) == index[b + i].sha256 {
                from[b + i] = Origin::Present;
            }
        }
        b += n;
    }
    Ok(())
}

/// The needed blocks by weak checksum, with a bitmap in front.
struct Table {
    by_weak: HashMap<u32, Vec<u32>>,
    bitmap: Vec<u64>,
}

impl Table {
    fn candidates(&self, weak: u32) -> Option<&Vec<u32>> {
        let k = bit(weak);
        if self.bitmap[k >> 6] & (1 << (k & 63)) == 0 {
            return None;
        }
        self.by_weak.get(&weak)
    }
}

/// Scan window starts `start..stop` of `local`: the (block, offset) pairs
/// found, each block at most once.
fn scan_part(
    index: &[IndexEntry],
    t: &Table,
    local: &Local,
    start: u64,
    stop: u64,
) -> Result<Vec<(u32, u64)>> {
    const READ: usize = 8 << 20;
    // This part reads up to the last byte its last window rolls in.
    let limit = (stop + INDEX_BLOCK).min(local.len);
    let mut taken = vec![false; index.len()];
    let mut found = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(READ + BS);
    let mut base = start; // file offset of buf[0]
    let mut pos = start; // window start
    let (mut a, mut b) = (0u32, 0u32);
    let mut fresh = true;
    let n = INDEX_BLOCK as u32;
    // Make buf hold [pos, pos + BS + 1) when the part has it.
    let fill = |buf: &mut Vec<u8>, base: &mut u64, pos: u64| -> Result<()> {
        buf.drain(..(pos - *base) as usize);
        *base = pos;
        let end = (*base + buf.len() as u64 + READ as u64).min(limit);
        let old = buf.len();
        buf.resize((end - *base) as usize, 0);
        let at = *base + old as u64;
        local
            .file
            .read_exact_at(&mut buf[old..], at)
            .with_context(|| format!("reading {} at byte {at}", local.path.display()))
    };
    while pos < stop && pos + INDEX_BLOCK <= limit {
        // Refill only when the window (and the byte after it) runs out.
        if pos + INDEX_BLOCK + 1 > base + buf.len() as u64 && base + (buf.len() as u64) < limit {
            fill(&mut buf, &mut base, pos)?;
        }
        let at = (pos - base) as usize;
        let w = &buf[at..at + BS];
        if fresh {
            let weak = anklume_contract::bundle::weak_checksum(w);
            (a, b) = (weak & 0xffff, weak >> 16);
            fresh = false;
        }
        if let Some(cands) = t.candidates(a | (b << 16)) {
            let h = sha(w);
            let mut hit = false;
            for &c in cands {
                if !taken[c as usize] && index[c as usize].sha256 == h {
                    taken[c as usize] = true;
                    found.push((c, pos));
                    hit = true;
                }
            }
            if hit {
                pos += INDEX_BLOCK;
                fresh = true;
                continue;
            }
        }
        if pos + 1 >= stop || pos + INDEX_BLOCK >= limit {
            break;
        }
        let (out, inn) = (u32::from(buf[at]), u32::from(buf[at + BS]));
        a = a.wrapping_sub(out).wrapping_add(inn) & 0xffff;
        b = b.wrapping_sub(n.wrapping_mul(out)).wrapping_add(a) & 0xffff;
        pos += 1;
    }
    Ok(found)
}

/// Scan one local slot for the blocks still marked [`Origin::Bundle`], on
/// `threads` threads each taking a contiguous part (a block found by two
/// parts goes to the first).
fn scan(
    index: &[IndexEntry],
    src: usize,
    local: &Local,
    from: &mut [Origin],
    threads: usize,
) -> Result<()> {
    let mut t = Table {
        by_weak: HashMap::new(),
        bitmap: vec![0u64; 1 << (BITMAP_BITS - 6)],
    };
    for (i, e) in index.iter().enumerate() {
        if from[i] == Origin::Bundle {
            t.by_weak.entry(e.weak).or_default().push(i as u32);
            let k = bit(e.weak);
            t.bitmap[k >> 6] |= 1 << (k & 63);
        }
    }
    if t.by_weak.is_empty() || local.len < INDEX_BLOCK {
        return Ok(());
    }
    let starts = local.len - INDEX_BLOCK + 1; // window starts 0..starts
    let parts = (threads.max(1) as u64).min(starts.div_ceil(1 << 20)).max(1);
    let bounds: Vec<(u64, u64)> = (0..parts)
        .map(|p| (starts * p / parts, starts * (p + 1) / parts))
        .collect();
    let results = std::thread::scope(|s| {
        let t = &t;
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(a, z)| s.spawn(move || scan_part(index, t, local, a, z)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a scanning thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    for r in results {
        for (c, offset) in r? {
            if from[c as usize] == Origin::Bundle {
                from[c as usize] = Origin::Local { src, offset };
            }
        }
    }
    Ok(())
}

/// Decide where each block comes from: in place in the target, then from
/// each local slot in turn, else the bundle.
pub fn plan(
    index: &[IndexEntry],
    target: Option<(&File, u64)>,
    locals: &[Local],
    threads: usize,
) -> Result<Plan> {
    let mut from = vec![Origin::Bundle; index.len()];
    if let Some((t, len)) = target {
        check_in_place(index, t, len, &mut from)?;
    }
    for (i, l) in locals.iter().enumerate() {
        scan(index, i, l, &mut from, threads)?;
    }
    Ok(Plan { from })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n * BS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn local(dir: &std::path::Path, name: &str, data: &[u8]) -> Local {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        Local {
            file: File::open(&path).unwrap(),
            path,
            len: data.len() as u64,
        }
    }

    #[test]
    fn parts_scanned_in_parallel_find_what_one_pass_finds() {
        let d = tempfile::tempdir().unwrap();
        let new = blocks(3, 1000); // ~4 MiB: four parts of 1 MiB
        let index: Vec<IndexEntry> = new.chunks(BS).map(IndexEntry::of).collect();
        // Shifted by 517 bytes, with changes here and there, some of them
        // around the parts' boundaries.
        let mut old = blocks(8, 1)[..517].to_vec();
        old.extend(&new);
        for at in [5 * BS + 9, 256 * BS + 100, 512 * BS + 4000, 900 * BS] {
            old[at] ^= 0x55;
        }
        let l = local(d.path(), "old", &old);
        let one = plan(&index, None, std::slice::from_ref(&l), 1).unwrap();
        let four = plan(&index, None, &[l], 4).unwrap();
        assert_eq!(one.counts(), (4, 996, 0));
        assert_eq!(four.from, one.from);
    }

    #[test]
    fn finds_blocks_shifted_by_any_offset_and_in_place() {
        let d = tempfile::tempdir().unwrap();
        let new = blocks(1, 40);
        let index: Vec<IndexEntry> = new.chunks(BS).map(IndexEntry::of).collect();
        // The old slot: blocks 0..10 in place, then 123 new bytes, then
        // blocks 10..30 shifted by 123; blocks 30..40 are new.
        let mut old = new[..10 * BS].to_vec();
        old.extend(blocks(9, 1)[..123].iter());
        old.extend(&new[10 * BS..30 * BS]);
        old.extend(blocks(7, 3));
        let l = local(d.path(), "old", &old);
        // An interrupted write: the target holds blocks 35..38 in place.
        let mut t = vec![0u8; 40 * BS];
        t[35 * BS..38 * BS].copy_from_slice(&new[35 * BS..38 * BS]);
        let tl = local(d.path(), "target", &t);
        let p = plan(
            &index,
            Some((&tl.file, tl.len)),
            std::slice::from_ref(&l),
            1,
        )
        .unwrap();
        // Split in parts (1 MiB minimum each, so here: one), same answer.
        assert_eq!(
            plan(&index, Some((&tl.file, tl.len)), &[l], 4)
                .unwrap()
                .from,
            p.from
        );
        assert_eq!(p.counts(), (7, 30, 3));
        assert_eq!(
            p.from[3],
            Origin::Local {
                src: 0,
                offset: 3 * BS as u64
            }
        );
        assert_eq!(
            p.from[12],
            Origin::Local {
                src: 0,
                offset: 12 * BS as u64 + 123
            }
        );
        assert_eq!(p.from[36], Origin::Present);
        assert_eq!(p.bundle_ranges(), vec![(30, 5), (38, 2)]);
    }
}
