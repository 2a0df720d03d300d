//! The ESP: a FAT image written with the `fatfs` crate, and its files read,
//! replaced or rewritten in place.
//!
//! Deterministic by construction: every directory entry carries the DOS
//! epoch, 1980-01-01 00:00 ([`DosEpoch`]; `fatfs`'s own default without
//! `chrono` is the invalid date 1980-00-00, which `fsck.vfat` rejects), and
//! the volume ID is given by the caller (derived from the build inputs).
//!
//! Used by the builder (the whole ESP), the VM tests and the updater
//! (a slot's folder), and the agent's boot state ([`rewrite_in_place`]:
//! GRUB's environment block is rewritten where it lies, as GRUB's own
//! `save_env` does, without touching the FAT, a directory or the boot
//! sector).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};

/// Time provider for reproducible images: always 1980-01-01 00:00:00.
#[derive(Debug)]
pub struct DosEpoch;

const DOS_EPOCH_DATE: fatfs::Date = fatfs::Date {
    year: 1980,
    month: 1,
    day: 1,
};

impl fatfs::TimeProvider for DosEpoch {
    fn get_current_date(&self) -> fatfs::Date {
        DOS_EPOCH_DATE
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: DOS_EPOCH_DATE,
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static DOS_EPOCH: DosEpoch = DosEpoch;

/// One file to place on the ESP (`path` uses `/`, relative to the root).
#[derive(Debug)]
pub struct EspFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// Create `out` as a FAT image of `size` bytes holding `files`.
pub fn write_esp(out: &Path, size: u64, volume_id: u32, files: &[EspFile<'_>]) -> Result<()> {
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    ensure!(
        total + 2 * 1024 * 1024 <= size,
        "the ESP ({} MiB) is too small for its {} MiB of files",
        size >> 20,
        total >> 20
    );
    let mut img = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    img.set_len(size)?;
    let mut label = *b"           ";
    label[..11].copy_from_slice(b"ANKLUME-ESP");
    fatfs::format_volume(
        &mut img,
        fatfs::FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(label),
    )
    .with_context(|| format!("formatting {} as FAT", out.display()))?;
    img.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new().time_provider(&DOS_EPOCH))
        .with_context(|| format!("opening the new FAT in {}", out.display()))?;
    {
        let root = fs.root_dir();
        for f in files {
            let (dir, name) = match f.path.rsplit_once('/') {
                Some((d, n)) => (Some(d), n),
                None => (None, f.path),
            };
            let d = match dir {
                Some(d) => dir_all(&root, d)?,
                None => root.clone(),
            };
            let mut file = d
                .create_file(name)
                .with_context(|| format!("creating ESP file {}", f.path))?;
            file.truncate()?;
            file.write_all(f.data)
                .with_context(|| format!("writing ESP file {}", f.path))?;
        }
    }
    fs.unmount().context("closing the ESP file system")?;
    fix_dot_entries(&img, 0).context("repairing the '.'/'..' entries of the ESP")?;
    img.sync_all()?;
    Ok(())
}

type Dir<'a, T> = fatfs::Dir<'a, T>;

/// Open directory `path` under `root`, creating what is missing (`mkdir -p`).
fn dir_all<'a, T: fatfs::ReadWriteSeek>(root: &Dir<'a, T>, path: &str) -> Result<Dir<'a, T>> {
    let mut cur = root.clone();
    for part in path.split('/') {
        cur = match cur.open_dir(part) {
            Ok(x) => x,
            Err(_) => cur
                .create_dir(part)
                .with_context(|| format!("creating ESP directory {path}"))?,
        };
    }
    Ok(cur)
}

/// `fatfs` 0.3.6 (the latest release) writes a long-name entry in front of
/// the `.` and `..` entries of every new directory (rafalh/rust-fatfs#117),
/// which `fsck.vfat` and strict firmware reject: `.` and `..` must be the
/// first two slots. Rewrite each such directory head as `.`, `..` followed
/// by two deleted slots. `base`: where the FAT starts in `img`. Returns how
/// many directories were repaired.
fn fix_dot_entries(img: &File, base: u64) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut bs = [0u8; 512];
    img.read_exact_at(&mut bs, base)?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let bytes_per_sector = u16_at(11);
    let cluster = bytes_per_sector * u64::from(bs[13]);
    let reserved = u16_at(14);
    let fats = u64::from(bs[16]);
    let root_entries = u16_at(17);
    let fat_size = match u16_at(22) {
        0 => u64::from(u32::from_le_bytes(bs[36..40].try_into()?)),
        n => n,
    };
    let total = match u16_at(19) {
        0 => u64::from(u32::from_le_bytes(bs[32..36].try_into()?)),
        n => n,
    };
    ensure!(
        bytes_per_sector >= 512 && cluster > 0,
        "not a FAT boot sector"
    );
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let data_start = base + (reserved + fats * fat_size + root_sectors) * bytes_per_sector;
    let end = base + total * bytes_per_sector;
    const DIR_ATTR: u8 = 0x10;
    const LFN_ATTR: u8 = 0x0f;
    let is_lfn = |e: &[u8]| e[11] == LFN_ATTR;
    let is_dot = |e: &[u8], name: &[u8; 11]| &e[0..11] == name && e[11] & DIR_ATTR != 0;
    let mut fixed = 0;
    let mut head = [0u8; 128];
    let mut pos = data_start;
    while pos + 128 <= end {
        img.read_exact_at(&mut head, pos)?;
        let (e0, e1, e2, e3) = (&head[0..32], &head[32..64], &head[64..96], &head[96..128]);
        if is_lfn(e0) && is_dot(e1, b".          ") && is_lfn(e2) && is_dot(e3, b"..         ") {
            let mut new = [0u8; 128];
            new[0..32].copy_from_slice(e1);
            new[32..64].copy_from_slice(e3);
            new[64] = 0xe5;
            new[64 + 11] = 0;
            new[96] = 0xe5;
            new[96 + 11] = 0;
            img.write_all_at(&new, pos)?;
            fixed += 1;
        }
        pos += cluster;
    }
    Ok(fixed)
}

/// Read a file back from an ESP inside an image (the VM tests read the
/// slot manifest this way).
pub fn read_file(image: &Path, offset: u64, path: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let part = fscommon_slice(f, offset)?;
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).with_context(|| {
        format!(
            "no FAT file system at offset {offset} of {}",
            image.display()
        )
    })?;
    let mut file = fs
        .root_dir()
        .open_file(path)
        .with_context(|| format!("{path} is not on the ESP"))?;
    let mut v = Vec::new();
    file.read_to_end(&mut v)?;
    Ok(v)
}

/// Create or replace one file on the ESP at `offset` of `image` (its
/// directory must exist). The VM tests arm boot states this way; the
/// updater writes a slot's config and manifest the same way.
pub fn write_file(image: &Path, offset: u64, path: &str, data: &[u8]) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let part = fscommon_slice(f, offset)?;
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new().time_provider(&DOS_EPOCH))
        .with_context(|| {
            format!(
                "no FAT file system at offset {offset} of {}",
                image.display()
            )
        })?;
    {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (
                fs.root_dir()
                    .open_dir(d)
                    .with_context(|| format!("directory {d} is not on the ESP"))?,
                n,
            ),
            None => (fs.root_dir(), path),
        };
        let mut file = dir
            .create_file(name)
            .with_context(|| format!("creating ESP file {path}"))?;
        file.truncate()?;
        file.write_all(data)
            .with_context(|| format!("writing ESP file {path}"))?;
        file.flush()?;
    }
    fs.unmount().context("closing the ESP file system")?;
    Ok(())
}

/// Create directory `path` (and its parents) on the ESP at `offset` of
/// `image`, as the updater does for the inactive slot's folder; an existing
/// directory is kept as it is.
pub fn create_dir(image: &Path, offset: u64, path: &str) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let part = fscommon_slice(f.try_clone()?, offset)?;
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new().time_provider(&DOS_EPOCH))
        .with_context(|| {
            format!(
                "no FAT file system at offset {offset} of {}",
                image.display()
            )
        })?;
    dir_all(&fs.root_dir(), path)?;
    fs.unmount().context("closing the ESP file system")?;
    fix_dot_entries(&f, offset).context("repairing the '.'/'..' entries of the ESP")?;
    f.sync_all()?;
    Ok(())
}

/// One run of a file's bytes in the image: `len` bytes at byte `at` of the
/// image (the ESP's offset included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub at: u64,
    pub len: u64,
}

/// Where `path`'s bytes lie in `image` (the ESP at `offset`), in file
/// order, with the file's content.
///
/// `fatfs` 0.3 does not expose a file's clusters, so the image is read
/// through a recorder: `fatfs`'s `File::read` ends every call with one read
/// of the data itself, at its place on the disk (reading the FAT to follow
/// the chain comes before it), and that last read of each call is the
/// extent. Each one is checked to have returned exactly what the call did.
pub fn extents(image: &Path, offset: u64, path: &str) -> Result<(Vec<Extent>, Vec<u8>)> {
    use std::io::Read;
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let rec = Recorder {
        inner: fscommon_slice(f, offset)?,
        pos: 0,
        log: log.clone(),
    };
    let fs = fatfs::FileSystem::new(rec, fatfs::FsOptions::new()).with_context(|| {
        format!(
            "no FAT file system at offset {offset} of {}",
            image.display()
        )
    })?;
    let mut file = fs
        .root_dir()
        .open_file(path)
        .with_context(|| format!("{path} is not on the ESP"))?;
    let mut runs: Vec<Extent> = Vec::new();
    let mut content = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        log.borrow_mut().clear();
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {path} on the ESP"))?;
        if n == 0 {
            break;
        }
        let (at, len) = *log
            .borrow()
            .last()
            .with_context(|| format!("reading {path}: no read reached the disk"))?;
        ensure!(
            len == n as u64,
            "reading {path}: the last disk read ({len} bytes) is not the data read ({n} bytes)"
        );
        content.extend_from_slice(&buf[..n]);
        let at = at + offset;
        match runs.last_mut() {
            Some(r) if r.at + r.len == at => r.len += len,
            _ => runs.push(Extent { at, len }),
        }
    }
    Ok((runs, content))
}

/// Sector size for in-place writes: what a disk writes in one piece.
pub const SECTOR: u64 = 512;

/// Rewrite `path` on the ESP at `offset` of `image` with `data` of the
/// same size, where its bytes already lie: only the 512-byte sectors that
/// change are written (no cluster is allocated, no FAT, directory entry or
/// boot sector is written), then synced and read back. This is how GRUB's
/// `save_env` writes its environment block, so GRUB and we agree on where
/// the block is. Returns how many sectors were written.
pub fn rewrite_in_place(image: &Path, offset: u64, path: &str, data: &[u8]) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let (runs, old) = extents(image, offset, path)?;
    ensure!(
        old.len() == data.len(),
        "{path} on the ESP is {} bytes; an in-place rewrite keeps the size ({} given)",
        old.len(),
        data.len()
    );
    let f = OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} for writing", image.display()))?;
    let mut written = 0;
    let mut pos = 0usize;
    for r in &runs {
        let mut done = 0u64;
        while done < r.len {
            let n = (r.len - done).min(SECTOR - (r.at + done) % SECTOR) as usize;
            let (new, was) = (&data[pos..pos + n], &old[pos..pos + n]);
            if new != was {
                f.write_all_at(new, r.at + done).with_context(|| {
                    format!(
                        "writing {path} in place at byte {} of {}",
                        r.at + done,
                        image.display()
                    )
                })?;
                written += 1;
            }
            pos += n;
            done += n as u64;
        }
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", image.display()))?;
    drop(f);
    let (_, back) = extents(image, offset, path)?;
    ensure!(
        back == data,
        "{path} on the ESP does not read back as written"
    );
    Ok(written)
}

/// Records where each read landed (see [`extents`]); never writes.
#[derive(Debug)]
struct Recorder {
    inner: Slice,
    pos: u64,
    log: std::rc::Rc<std::cell::RefCell<Vec<(u64, u64)>>>,
}

impl std::io::Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.log.borrow_mut().push((self.pos, n as u64));
        self.pos += n as u64;
        Ok(n)
    }
}
impl std::io::Write for Recorder {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the ESP is opened read-only here",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl std::io::Seek for Recorder {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

/// A file seen from `offset` on (the ESP inside a disk image).
#[derive(Debug)]
struct Slice {
    f: File,
    offset: u64,
}

impl std::io::Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.f.read(buf)
    }
}
impl std::io::Write for Slice {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.f.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}
impl std::io::Seek for Slice {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let p = match pos {
            SeekFrom::Start(p) => self.f.seek(SeekFrom::Start(p + self.offset))?,
            other => self.f.seek(other)?,
        };
        Ok(p - self.offset)
    }
}

fn fscommon_slice(mut f: File, offset: u64) -> Result<Slice> {
    f.seek(SeekFrom::Start(offset))?;
    Ok(Slice { f, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fsck.vfat -n` accepts the FAT image (dosfstools is installed by
    /// ci/setup-image; the test fails, not skips, without it).
    fn fsck_clean(image: &std::path::Path) {
        let out = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(image)
            .output()
            .expect("fsck.vfat (dosfstools) must be installed: ci/setup-image");
        assert!(
            out.status.success(),
            "fsck.vfat -n {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn esp_round_trips_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: b"efi",
            },
            EspFile {
                path: "EFI/anklume/grub.cfg",
                data: b"set a=b\n",
            },
        ];
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        write_esp(&a, 8 << 20, 0x1234_5678, &files).unwrap();
        write_esp(&b, 8 << 20, 0x1234_5678, &files).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            read_file(&a, 0, "EFI/anklume/grub.cfg").unwrap(),
            b"set a=b\n"
        );
        // dosfstools accepts it.
        fsck_clean(&a);
        // Replace a file in place and add one: read back, still clean.
        write_file(&a, 0, "EFI/anklume/grub.cfg", b"set a=c\n").unwrap();
        write_file(&a, 0, "EFI/anklume/slot-b.cfg", b"x\n").unwrap();
        assert_eq!(
            read_file(&a, 0, "EFI/anklume/grub.cfg").unwrap(),
            b"set a=c\n"
        );
        assert_eq!(read_file(&a, 0, "EFI/anklume/slot-b.cfg").unwrap(), b"x\n");
        assert!(write_file(&a, 0, "NOPE/x", b"").is_err());
        create_dir(&a, 0, "EFI/anklume/slot-b").unwrap();
        create_dir(&a, 0, "EFI/anklume/slot-b").unwrap();
        write_file(&a, 0, "EFI/anklume/slot-b/slot.cfg", b"y\n").unwrap();
        assert_eq!(
            read_file(&a, 0, "EFI/anklume/slot-b/slot.cfg").unwrap(),
            b"y\n"
        );
        fsck_clean(&a);
        // The same inside a disk image, at the ESP's offset (as the VM
        // tests and the updater write it).
        let disk = dir.path().join("disk.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes.extend(std::fs::read(&b).unwrap());
        std::fs::write(&disk, &bytes).unwrap();
        create_dir(&disk, 1 << 20, "EFI/anklume/slot-b").unwrap();
        write_file(&disk, 1 << 20, "EFI/anklume/slot-b/x", b"z").unwrap();
        let esp_back = dir.path().join("back.img");
        std::fs::write(&esp_back, &std::fs::read(&disk).unwrap()[1 << 20..]).unwrap();
        assert_eq!(
            read_file(&esp_back, 0, "EFI/anklume/slot-b/x").unwrap(),
            b"z"
        );
        fsck_clean(&esp_back);
        let err = write_esp(&a, 1 << 20, 1, &files).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
    }

    #[test]
    fn a_file_is_rewritten_in_place_sector_by_sector() {
        let dir = tempfile::tempdir().unwrap();
        let mut block = vec![b'#'; 1024];
        block[..6].copy_from_slice(b"first\n");
        let files = [
            EspFile {
                path: "EFI/anklume/grub.cfg",
                data: b"x",
            },
            EspFile {
                path: "EFI/anklume/grubenv",
                data: &block,
            },
        ];
        let esp = dir.path().join("esp.img");
        write_esp(&esp, 8 << 20, 1, &files).unwrap();
        // Inside a disk image, 1 MiB in, as on a medium.
        let disk = dir.path().join("disk.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes.extend(std::fs::read(&esp).unwrap());
        std::fs::write(&disk, &bytes).unwrap();
        let off = 1 << 20;

        let (runs, content) = extents(&disk, off, "EFI/anklume/grubenv").unwrap();
        assert_eq!(content, block);
        assert_eq!(runs.iter().map(|r| r.len).sum::<u64>(), 1024);
        for r in &runs {
            assert_eq!(r.at % SECTOR, 0, "{runs:?}");
            let at = r.at as usize;
            assert_eq!(&bytes[at..at + r.len as usize], &block[..r.len as usize]);
        }

        // Change the first sector only: one sector written, nothing else.
        let mut new = block.clone();
        new[..6].copy_from_slice(b"other\n");
        assert_eq!(
            rewrite_in_place(&disk, off, "EFI/anklume/grubenv", &new).unwrap(),
            1
        );
        let after = std::fs::read(&disk).unwrap();
        let at = runs[0].at as usize;
        let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != bytes[i]).collect();
        assert_eq!(changed, (at..at + 5).collect::<Vec<_>>());
        assert_eq!(read_file(&disk, off, "EFI/anklume/grubenv").unwrap(), new);
        // Both sectors, then nothing when nothing changes.
        let both = vec![b'x'; 1024];
        assert_eq!(
            rewrite_in_place(&disk, off, "EFI/anklume/grubenv", &both).unwrap(),
            2
        );
        assert_eq!(
            rewrite_in_place(&disk, off, "EFI/anklume/grubenv", &both).unwrap(),
            0
        );
        std::fs::write(&esp, &std::fs::read(&disk).unwrap()[off as usize..]).unwrap();
        fsck_clean(&esp);
        assert_eq!(read_file(&esp, 0, "EFI/anklume/grub.cfg").unwrap(), b"x");

        // Another size, a missing file, no FAT: refused, nothing written.
        let before = std::fs::read(&disk).unwrap();
        let e = rewrite_in_place(&disk, off, "EFI/anklume/grubenv", b"short")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keeps the size"), "{e}");
        let e = format!(
            "{:#}",
            rewrite_in_place(&disk, off, "EFI/anklume/nope", &both).unwrap_err()
        );
        assert!(e.contains("EFI/anklume/nope is not on the ESP"), "{e}");
        let e = format!(
            "{:#}",
            extents(&disk, 0, "EFI/anklume/grubenv").unwrap_err()
        );
        assert!(e.contains("no FAT file system at offset 0"), "{e}");
        assert_eq!(std::fs::read(&disk).unwrap(), before);
    }
}
