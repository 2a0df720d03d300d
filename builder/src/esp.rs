//! The ESP: a FAT image written with the `fatfs` crate.
//!
//! Deterministic by construction: `fatfs` is built without `chrono`, so every
//! directory entry carries the DOS epoch (1980-01-01), and the volume ID is
//! given by the caller (derived from the build inputs).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};

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
    let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new())
        .with_context(|| format!("opening the new FAT in {}", out.display()))?;
    {
        let root = fs.root_dir();
        for f in files {
            let (dir, name) = match f.path.rsplit_once('/') {
                Some((d, n)) => (Some(d), n),
                None => (None, f.path),
            };
            let d = match dir {
                Some(d) => {
                    let mut cur = root.clone();
                    for part in d.split('/') {
                        cur = match cur.open_dir(part) {
                            Ok(x) => x,
                            Err(_) => cur
                                .create_dir(part)
                                .with_context(|| format!("creating ESP directory {d}"))?,
                        };
                    }
                    cur
                }
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
    img.sync_all()?;
    Ok(())
}

/// Read a file back from an ESP image (used by tests and `anklume status`).
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
        let err = write_esp(&a, 1 << 20, 1, &files).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
