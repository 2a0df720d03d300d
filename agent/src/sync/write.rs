//! Writing the generated tree: everything is computed and checked first,
//! then changed files are written to temporary siblings and renamed into
//! place, so a reader never sees a half-written file and a failure while
//! writing leaves the previous tree untouched.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A file of the plan.
#[derive(Debug)]
pub struct Planned {
    pub rel: String,
    pub path: PathBuf,
    pub content: String,
    /// False when the file already has exactly this content.
    pub changed: bool,
}

/// Read what exists and compute each file's new content.
pub fn plan(base: &Path, files: Vec<(String, String)>) -> Result<Vec<Planned>> {
    files
        .into_iter()
        .map(|(rel, block)| {
            let path = base.join(&rel);
            let existing = match fs::read(&path) {
                Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: existing file is not UTF-8 (byte {}); fix or move it, nothing was written",
                        path.display(),
                        e.utf8_error().valid_up_to()
                    )
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let content = super::managed::merge(existing.as_deref(), &block);
            let changed = existing.as_deref() != Some(content.as_str());
            Ok(Planned {
                rel,
                path,
                content,
                changed,
            })
        })
        .collect()
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-anklume-{}", std::process::id()))
}

/// Write every changed file: all temporaries first, then all renames.
pub fn commit(plans: &[Planned]) -> Result<()> {
    let changed: Vec<&Planned> = plans.iter().filter(|p| p.changed).collect();
    let mut temps: Vec<(PathBuf, &Path)> = Vec::with_capacity(changed.len());
    let mut dirs_made: Vec<&Path> = Vec::new();
    let result = (|| -> Result<()> {
        for p in &changed {
            let dir = p.path.parent().context("generated path has a parent")?;
            if !dirs_made.contains(&dir) {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                dirs_made.push(dir);
            }
            let tmp = temp_name(&p.path);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            temps.push((tmp.clone(), &p.path));
            f.write_all(p.content.as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in &temps {
            let _ = fs::remove_file(tmp);
        }
        return Err(e.context("nothing was changed in the output directory"));
    }
    for (tmp, dest) in &temps {
        fs::rename(tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    }
    Ok(())
}
