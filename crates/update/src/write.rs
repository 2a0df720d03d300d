//! Writing the image into the target slot while hashing it: each chunk's
//! blocks come from the bundle, a local slot or the target itself (the
//! [`Plan`]); the chunk is written while another thread hashes it into
//! level 0 of the verity tree; the rest of the tree is built at the end and
//! its root must be the signed one before the hash area is written. What
//! reaches the target is therefore exactly what the signature covers, or
//! the slot is never made bootable.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{anyhow, bail, Context, Result};

use anklume_contract::bundle::INDEX_BLOCK;
use anklume_verity::Params;

use crate::delta::{Local, Origin, Plan};
use crate::open::OpenBundle;

const BS: usize = INDEX_BLOCK as usize;

/// What the write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Image bytes read from the bundle.
    pub from_bundle: u64,
    /// Image bytes copied from a local slot.
    pub reused: u64,
    /// Image bytes already in place in the target.
    pub present: u64,
}

/// Fill `buf` with data blocks `first..first + n` per the plan.
fn gather(
    bundle: &OpenBundle,
    plan: &Plan,
    locals: &[Local],
    target: &File,
    first: u64,
    buf: &mut [u8],
) -> Result<()> {
    let n = buf.len() / BS;
    let mut i = 0;
    while i < n {
        let b = first as usize + i;
        let o = plan.from[b];
        // Extend the run while the next block continues it.
        let mut j = i + 1;
        while j < n {
            let same = match (o, plan.from[first as usize + j]) {
                (Origin::Bundle, Origin::Bundle) | (Origin::Present, Origin::Present) => true,
                (
                    Origin::Local { src, offset },
                    Origin::Local {
                        src: s2,
                        offset: o2,
                    },
                ) => s2 == src && o2 == offset + ((j - i) * BS) as u64,
                _ => false,
            };
            if !same {
                break;
            }
            j += 1;
        }
        let dst = &mut buf[i * BS..j * BS];
        match o {
            Origin::Bundle => bundle.read_blocks(b as u64, dst)?,
            Origin::Local { src, offset } => {
                let l = &locals[src];
                l.file
                    .read_exact_at(dst, offset)
                    .with_context(|| format!("reading {} at byte {offset}", l.path.display()))?
            }
            Origin::Present => target
                .read_exact_at(dst, b as u64 * INDEX_BLOCK)
                .with_context(|| format!("reading the target at block {b}"))?,
        }
        i = j;
    }
    Ok(())
}

/// Write the blocks of `buf` (data blocks from `first`) that are not
/// already in place.
fn put(plan: &Plan, target: &File, first: u64, buf: &[u8]) -> Result<()> {
    let n = buf.len() / BS;
    let mut i = 0;
    while i < n {
        let present = plan.from[first as usize + i] == Origin::Present;
        let mut j = i + 1;
        while j < n && (plan.from[first as usize + j] == Origin::Present) == present {
            j += 1;
        }
        if !present {
            let at = (first + i as u64) * INDEX_BLOCK;
            target
                .write_all_at(&buf[i * BS..j * BS], at)
                .with_context(|| format!("writing the target at byte {at}"))?;
        }
        i = j;
    }
    Ok(())
}

/// The writing thread also hashes 1/MAIN_SHARE of each chunk (measured:
/// reading and writing a chunk takes about a third of hashing it).
const MAIN_SHARE: usize = 4;

/// Chunks between two background flushes.
const FLUSH_CHUNKS: u64 = 16;

/// Write the image; `after_chunk(blocks_done)` runs after each chunk (the
/// crash-test hook and the progress bar).
pub fn write_image(
    bundle: &OpenBundle,
    plan: &Plan,
    locals: &[Local],
    target: &File,
    chunk_blocks: u64,
    after_chunk: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<WriteStats> {
    let m = &bundle.manifest;
    let blocks = m.slot.data_blocks;
    let salt = anklume_verity::unhex(&m.slot.salt).context("bundle manifest: salt")?;
    let uuid =
        anklume_verity::parse_uuid(&m.verity_uuid).context("bundle manifest: verity_uuid")?;
    let chunk = chunk_blocks.max(1);
    let mut level0 = vec![0u8; blocks as usize * 32];
    let mut cur = vec![0u8; (chunk.min(blocks) as usize) * BS];
    let mut next = cur.clone();
    let len_of = |first: u64| (chunk.min(blocks - first) as usize) * BS;
    gather(bundle, plan, locals, target, 0, &mut cur[..len_of(0)])?;
    // A flusher thread writes the target back while the image is still
    // being written (fdatasync every FLUSH_CHUNKS chunks), so the final
    // flush has little left to wait for.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|outer| -> Result<()> {
        let flusher = outer.spawn(move || -> std::io::Result<()> {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                target.sync_data()?;
            }
            Ok(())
        });
        let mut written = || -> Result<()> {
            let mut first = 0u64;
            let mut chunks = 0u64;
            while first < blocks {
                let len = len_of(first);
                let after = first + chunk.min(blocks - first);
                let digests = &mut level0[first as usize * 32..after as usize * 32];
                // Hash most of this chunk on another thread while this one
                // writes it, gathers the next chunk and then hashes the
                // rest: two cores busy, each byte read once.
                std::thread::scope(|s| -> Result<()> {
                    let data = &cur[..len];
                    let salt = &salt;
                    let n = len / BS;
                    let split = (n - n / MAIN_SHARE).max(1).min(n);
                    let (d1, d2) = data.split_at(split * BS);
                    let (o1, o2) = digests.split_at_mut(split * 32);
                    let h = s.spawn(move || anklume_verity::digest_blocks(salt, d1, o1, 1));
                    put(plan, target, first, data)?;
                    if after < blocks {
                        let nlen = len_of(after);
                        gather(bundle, plan, locals, target, after, &mut next[..nlen])?;
                    }
                    anklume_verity::digest_blocks(salt, d2, o2, 1);
                    h.join().map_err(|_| anyhow!("the hashing thread panicked"))
                })?;
                std::mem::swap(&mut cur, &mut next);
                first = after;
                chunks += 1;
                if chunks % FLUSH_CHUNKS == 0 {
                    // The flusher only stops early on an error, reported below.
                    let _ = tx.send(());
                }
                after_chunk(first)?;
            }
            Ok(())
        };
        let res = written();
        drop(tx);
        let flushed = flusher
            .join()
            .map_err(|_| anyhow!("the flushing thread panicked"))?;
        res?;
        flushed.context("flushing the target")
    })?;
    target.sync_data().context("flushing the target")?;
    let params = Params {
        data_blocks: blocks,
        salt,
        uuid,
    };
    let (root, area) = anklume_verity::hash_area_from_digests(&params, level0)?;
    let root = anklume_verity::hex(&root);
    if root != m.slot.root_hash {
        bail!(
            "the written slot's verity root hash is {root}, the bundle signed {}: the slot stays unbootable",
            m.slot.root_hash
        );
    }
    target
        .write_all_at(&area, m.slot.hash_offset)
        .context("writing the verity hash area")?;
    target.sync_data().context("flushing the target")?;
    let (b, l, p) = plan.counts();
    Ok(WriteStats {
        from_bundle: b * INDEX_BLOCK,
        reused: l * INDEX_BLOCK,
        present: p * INDEX_BLOCK,
    })
}
