//! A mount made through [`Cmd`], held as a guard: [`Mounted::close`]
//! unmounts and says when it cannot; a guard dropped without `close`
//! unmounts best effort, with a warning on failure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Cmd;

#[derive(Debug)]
pub struct Mounted {
    dir: PathBuf,
    /// What is mounted, for messages ("the ESP", "the seed volume").
    what: String,
    mounted: bool,
}

impl Mounted {
    /// Run `mount` (a `mount … SOURCE DIR` command line) after creating
    /// `dir`; `what` names the mount in messages.
    pub fn run(mount: Cmd, dir: &Path, what: &str) -> Result<Mounted> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        mount
            .run()
            .with_context(|| format!("mounting {what} on {}", dir.display()))?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmount; an error says it is still mounted.
    pub fn close(mut self) -> Result<()> {
        self.mounted = false;
        Cmd::new("umount")
            .arg(&self.dir)
            .run()
            .with_context(|| format!("unmounting {} from {}", self.what, self.dir.display()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = Cmd::new("umount").arg(&self.dir).run() {
                eprintln!(
                    "warning: {} stays mounted on {}: {e:#}",
                    self.what,
                    self.dir.display()
                );
            }
        }
    }
}
