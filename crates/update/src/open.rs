//! Opening a bundle: everything that can be checked without writing, in
//! the order that trusts nothing unverified — header, signature (before
//! the manifest JSON is even parsed), manifest layout against the real
//! length, block index and boot files against their signed SHA-256.

use anyhow::{anyhow, bail, ensure, Context, Result};

use anklume_contract::bundle::{
    self, BundleManifest, Header, IndexEntry, PublicKey, ALIGN, INDEX_BLOCK,
};

use crate::source::Source;

/// A bundle whose signature, layout, index and boot files are verified.
/// The image blocks are checked when they are read ([`OpenBundle::verify_blocks`]
/// before any write, then the verity root while writing).
#[derive(Debug)]
pub struct OpenBundle {
    pub source: Box<dyn Source>,
    pub manifest: BundleManifest,
    /// The trusted key that verified it (file name).
    pub key: String,
    /// One entry per data block of the image.
    pub index: Vec<IndexEntry>,
    /// The boot files' contents, in `manifest.slot.boot_files` order.
    pub boot_files: Vec<Vec<u8>>,
}

fn read(src: &dyn Source, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| anyhow!("{what}: offset overflows"))?;
    ensure!(
        end <= src.size(),
        "bundle is truncated: {what} ends at byte {end}, {} has {}",
        src.name(),
        src.size()
    );
    let mut buf = vec![0u8; usize::try_from(len)?];
    src.read_at(&mut buf, offset)
        .with_context(|| format!("reading the {what}"))?;
    Ok(buf)
}

fn sha256_hex(data: &[u8]) -> String {
    bundle::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

impl OpenBundle {
    pub fn open(source: Box<dyn Source>, trusted: &[PublicKey]) -> Result<OpenBundle> {
        Self::open_reusing(source, trusted, &|_: &str| Vec::new())
    }

    /// As [`OpenBundle::open`], but a boot file is first looked for among
    /// `local(name)`'s candidates (e.g. the slots' copies on the ESP) and
    /// read from the bundle only when none has the signed size and
    /// SHA-256: an update that keeps the kernel does not fetch it again.
    pub fn open_reusing(
        source: Box<dyn Source>,
        trusted: &[PublicKey],
        local: &dyn Fn(&str) -> Vec<Vec<u8>>,
    ) -> Result<OpenBundle> {
        let src = source.as_ref();
        let header = Header::parse(&read(src, 0, ALIGN, "header")?).map_err(|e| anyhow!(e))?;
        let json = read(src, ALIGN, u64::from(header.manifest_len), "manifest")?;
        let key = bundle::verify(&header, &json, trusted)
            .map_err(|e| anyhow!(e))?
            .name
            .clone();
        let manifest = BundleManifest::from_json(&json, src.size()).map_err(|e| anyhow!(e))?;
        let s = &manifest.slot;
        let want = s.hash_offset + anklume_verity::hash_area_size(s.data_blocks);
        ensure!(
            manifest.image.size == want,
            "bundle manifest: image is {} bytes, {} data blocks with their verity area make {want}",
            manifest.image.size,
            s.data_blocks
        );
        let idx = &manifest.index;
        let index_bytes = read(src, idx.offset, idx.size, "block index")?;
        if sha256_hex(&index_bytes) != idx.sha256 {
            bail!("bundle block index does not match its signed SHA-256 (corrupt bundle)");
        }
        let index = IndexEntry::decode_all(&index_bytes).map_err(|e| anyhow!(e))?;
        let mut boot_files = Vec::new();
        for (e, f) in manifest.boot_files.iter().zip(&s.boot_files) {
            let here = local(&f.name)
                .into_iter()
                .find(|d| d.len() as u64 == e.size && sha256_hex(d) == f.sha256);
            let data = match here {
                Some(d) => d,
                None => read(src, e.offset, e.size, &f.name)?,
            };
            if sha256_hex(&data) != f.sha256 {
                bail!(
                    "bundle boot file {} does not match its signed SHA-256 (corrupt bundle)",
                    f.name
                );
            }
            boot_files.push(data);
        }
        Ok(OpenBundle {
            source,
            manifest,
            key,
            index,
            boot_files,
        })
    }

    /// Byte offset in the bundle of data block `b` of the image.
    pub fn block_offset(&self, b: u64) -> u64 {
        self.manifest.image.offset + b * INDEX_BLOCK
    }

    /// Read the data blocks `first..first+count` from the bundle into `buf`.
    pub fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        self.source
            .read_at(buf, self.block_offset(first))
            .with_context(|| format!("reading image blocks from {first}"))
    }

    /// Check every listed block range (first, count) of the image in the
    /// bundle against the signed index, on `threads` threads: a bundle
    /// whose payload was changed is refused before anything is written.
    pub fn verify_blocks(&self, ranges: &[(u64, u64)], threads: usize) -> Result<()> {
        const CHUNK: u64 = 256; // 1 MiB reads
        let mut chunks: Vec<(u64, u64)> = Vec::new();
        for &(first, count) in ranges {
            let mut b = first;
            while b < first + count {
                let n = CHUNK.min(first + count - b);
                chunks.push((b, n));
                b += n;
            }
        }
        let threads = threads.max(1).min(chunks.len().max(1));
        let per = chunks.len().div_ceil(threads).max(1);
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = chunks
                .chunks(per)
                .map(|mine| {
                    s.spawn(move || -> Result<()> {
                        let mut buf = vec![0u8; (CHUNK * INDEX_BLOCK) as usize];
                        for &(first, n) in mine {
                            let buf = &mut buf[..(n * INDEX_BLOCK) as usize];
                            self.read_blocks(first, buf)?;
                            for (i, block) in buf.chunks_exact(INDEX_BLOCK as usize).enumerate() {
                                let b = first + i as u64;
                                let d = ring::digest::digest(&ring::digest::SHA256, block);
                                if d.as_ref() != self.index[b as usize].sha256 {
                                    bail!(
                                        "bundle image block {b} (byte {} of {}) does not match the signed block index (corrupt bundle)",
                                        self.block_offset(b),
                                        self.source.name()
                                    );
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow!("a verifying thread panicked"))??;
            }
            Ok(())
        })
    }
}
