//! Where bundle bytes come from. A bundle is read by ranges (header,
//! manifest, index, boot files, then only the image blocks no local slot
//! has), so a source is "read `len` bytes at `offset`". Every source counts
//! the bytes it delivered, which is what a delta update saves.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Random access to a bundle.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Total length in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; short data is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Bytes delivered so far.
    fn bytes_read(&self) -> u64;
    /// For messages: the path or URL.
    fn name(&self) -> String;
}

/// A bundle in a local file.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
    read: AtomicU64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource> {
        let file =
            File::open(path).with_context(|| format!("opening the bundle {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(FileSource {
            file,
            len,
            path: path.to_path_buf(),
            read: AtomicU64::new(0),
        })
    }
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).with_context(|| {
            format!(
                "reading {} bytes at {offset} of {}",
                buf.len(),
                self.path.display()
            )
        })?;
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}
