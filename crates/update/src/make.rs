//! Making a bundle from a sealed slot image (squashfs + verity tree, as
//! `anklume-build` writes it) and the slot's boot files.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use ring::signature::Ed25519KeyPair;

use anklume_contract::bundle::{
    self, align_up, manifest_end, BundleManifest, Extent, IndexEntry, IndexPart, INDEX_BLOCK,
    MANIFEST_FORMAT,
};
use anklume_contract::manifest::SlotManifest;

/// What goes into a bundle.
#[derive(Debug, Clone)]
pub struct BundleInput {
    /// The sealed slot image: data then the verity area at
    /// `slot.hash_offset`, nothing after it.
    pub image: PathBuf,
    /// Its manifest (as written to the ESP).
    pub slot: SlotManifest,
    /// The verity superblock's UUID.
    pub verity_uuid: String,
    /// The slot's boot files, in `slot.boot_files` order.
    pub boot_files: Vec<PathBuf>,
    pub min_version: String,
    pub data_schema: u32,
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if r == 0 {
            break;
        }
        ctx.update(&buf[..r]);
        n += r as u64;
    }
    Ok((n, bundle::hex(ctx.finish().as_ref())))
}

/// Seal `data` (a squashfs, or any bytes in tests and benches) into a slot
/// image `image` — a copy zero-padded to 4096 with the verity area after
/// it, random salt and UUID — and describe it with `boot_files` (kernel
/// then initrd) for [`write_bundle`].
pub fn seal(
    data: &Path,
    image: &Path,
    version: &str,
    kernel_version: &str,
    boot_files: Vec<PathBuf>,
    min_version: &str,
    data_schema: u32,
) -> Result<BundleInput> {
    use anklume_contract::bootfiles::LOADED;
    use anklume_contract::manifest::BootFile;
    ensure!(
        boot_files.len() == LOADED.len(),
        "give the kernel and the initrd"
    );
    let data_size = std::fs::copy(data, image)
        .with_context(|| format!("copying {} to {}", data.display(), image.display()))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let offset = anklume_contract::verity::hash_offset(data_size);
    f.set_len(offset)
        .with_context(|| format!("padding {}", image.display()))?;
    let params = anklume_verity::Params {
        data_blocks: offset / INDEX_BLOCK,
        salt: anklume_verity::random_bytes::<32>()?.to_vec(),
        uuid: anklume_verity::random_uuid()?,
    };
    let opts = anklume_verity::FormatOptions {
        params,
        hash_offset: offset,
        data_offset: 0,
        threads: 0,
    };
    let formatted = anklume_verity::format(&f, &f, &opts, &|_| {})
        .with_context(|| format!("computing the verity tree of {}", image.display()))?;
    f.sync_all()?;
    let mut entries = Vec::new();
    for (p, name) in boot_files.iter().zip(LOADED) {
        let (size, sha256) = sha256_file(p)?;
        entries.push(BootFile {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    Ok(BundleInput {
        image: image.to_path_buf(),
        slot: SlotManifest {
            version: version.to_string(),
            kernel_version: kernel_version.to_string(),
            data_size,
            hash_offset: offset,
            data_blocks: offset / INDEX_BLOCK,
            salt: anklume_verity::hex(&formatted.params.salt),
            root_hash: anklume_verity::hex(&formatted.root_hash),
            boot_files: entries,
        },
        verity_uuid: anklume_verity::format_uuid(&formatted.params.uuid),
        boot_files,
        min_version: min_version.to_string(),
        data_schema,
    })
}

/// Describe a slot image the builder sealed (`slot::seal`): its manifest is
/// known; the verity UUID is read back from the superblock at the hash
/// offset. What `anklume-build bundle` needs besides the signing key.
pub fn from_sealed(
    image: &Path,
    slot: SlotManifest,
    boot_files: Vec<PathBuf>,
    min_version: &str,
    data_schema: u32,
) -> Result<BundleInput> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut sb = [0u8; anklume_verity::SUPERBLOCK_SIZE];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut sb, slot.hash_offset)
        .with_context(|| format!("reading the verity superblock of {}", image.display()))?;
    let params = anklume_verity::parse_superblock(&sb)
        .with_context(|| format!("{} at byte {}", image.display(), slot.hash_offset))?;
    ensure!(
        params.data_blocks == slot.data_blocks && anklume_verity::hex(&params.salt) == slot.salt,
        "{}: the verity superblock does not match the slot manifest",
        image.display()
    );
    Ok(BundleInput {
        image: image.to_path_buf(),
        verity_uuid: anklume_verity::format_uuid(&params.uuid),
        slot,
        boot_files,
        min_version: min_version.to_string(),
        data_schema,
    })
}

/// Write the bundle to `out` (through a temporary file renamed at the
/// end); returns its manifest.
pub fn write_bundle(
    input: &BundleInput,
    key: &Ed25519KeyPair,
    out: &Path,
) -> Result<BundleManifest> {
    let s = &input.slot;
    let image_size = std::fs::metadata(&input.image)
        .with_context(|| format!("reading the size of {}", input.image.display()))?
        .len();
    let want = s.hash_offset + anklume_verity::hash_area_size(s.data_blocks);
    ensure!(
        image_size == want,
        "{} is {image_size} bytes; a slot of {} data blocks with its verity area is {want}",
        input.image.display(),
        s.data_blocks
    );
    ensure!(
        input.boot_files.len() == s.boot_files.len(),
        "{} boot files given, the slot manifest lists {}",
        input.boot_files.len(),
        s.boot_files.len()
    );
    for (p, f) in input.boot_files.iter().zip(&s.boot_files) {
        let (size, sha) = sha256_file(p)?;
        ensure!(
            size == f.size && sha == f.sha256,
            "{} does not match the slot manifest's {} ({size} bytes, sha256 {sha})",
            p.display(),
            f.name
        );
    }
    // The block index of the data blocks.
    let mut img =
        File::open(&input.image).with_context(|| format!("opening {}", input.image.display()))?;
    let mut index = Vec::with_capacity(s.data_blocks as usize * bundle::INDEX_ENTRY);
    let mut block = vec![0u8; INDEX_BLOCK as usize];
    for b in 0..s.data_blocks {
        img.read_exact(&mut block)
            .with_context(|| format!("reading block {b} of {}", input.image.display()))?;
        IndexEntry::of(&block).encode(&mut index);
    }
    let index_sha = bundle::hex(ring::digest::digest(&ring::digest::SHA256, &index).as_ref());
    // The manifest's size decides where the parts start, and the parts'
    // offsets are in the manifest: lay out with offsets of the final
    // width until the start stops moving.
    let mut start = manifest_end(1);
    let manifest = loop {
        let image = Extent {
            offset: start,
            size: image_size,
        };
        let index_part = IndexPart {
            offset: image.offset + align_up(image.size),
            size: index.len() as u64,
            sha256: index_sha.clone(),
        };
        let mut at = index_part.offset + align_up(index_part.size);
        let mut boot_files = Vec::new();
        for f in &s.boot_files {
            boot_files.push(Extent {
                offset: at,
                size: f.size,
            });
            at += align_up(f.size);
        }
        let m = BundleManifest {
            format: MANIFEST_FORMAT,
            min_version: input.min_version.clone(),
            data_schema: input.data_schema,
            slot: s.clone(),
            verity_uuid: input.verity_uuid.clone(),
            image,
            index: index_part,
            boot_files,
        };
        let end = manifest_end(m.to_json().len() as u64);
        if end == start {
            break m;
        }
        start = end;
    };
    let json = manifest.to_json();
    let header = bundle::sign(&json, key).map_err(|e| anyhow!(e))?;
    let tmp = out.with_extension("partial");
    let mut w = BufWriter::with_capacity(
        4 << 20,
        File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let pad = |w: &mut BufWriter<File>, n: u64| -> Result<()> {
        w.write_all(&vec![0u8; (align_up(n) - n) as usize])?;
        Ok(())
    };
    w.write_all(&header.encode())?;
    w.write_all(&json)?;
    pad(&mut w, json.len() as u64)?;
    img.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut img, &mut w).context("copying the slot image")?;
    pad(&mut w, image_size)?;
    w.write_all(&index)?;
    pad(&mut w, index.len() as u64)?;
    for (p, f) in input.boot_files.iter().zip(&s.boot_files) {
        let mut bf = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        std::io::copy(&mut bf, &mut w).with_context(|| format!("copying {}", p.display()))?;
        pad(&mut w, f.size)?;
    }
    let f = w
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_image_describes_itself_the_same_way() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        std::fs::write(p("data"), vec![5u8; 3 * 4096 + 17]).unwrap();
        std::fs::write(p("k"), b"kernel").unwrap();
        std::fs::write(p("i"), b"initrd").unwrap();
        let boot = vec![p("k"), p("i")];
        let a = seal(&p("data"), &p("img"), "1.0", "6.12", boot.clone(), "0.9", 2).unwrap();
        let b = from_sealed(&p("img"), a.slot.clone(), boot.clone(), "0.9", 2).unwrap();
        assert_eq!(
            (&b.verity_uuid, &b.slot, b.data_schema),
            (&a.verity_uuid, &a.slot, 2)
        );
        let mut wrong = a.slot.clone();
        wrong.salt = "00".repeat(32);
        let e = format!(
            "{:#}",
            from_sealed(&p("img"), wrong, boot, "0.9", 2).unwrap_err()
        );
        assert!(e.contains("does not match"), "{e}");
    }
}
