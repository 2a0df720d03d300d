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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("ok")).unwrap();
        std::fs::write(d.path().join("ok/old.yml"), "old\n").unwrap();
        // A file where a directory must be created makes the second write fail.
        std::fs::write(d.path().join("blocker"), "not a directory").unwrap();
        let plans = vec![
            Planned {
                rel: "ok/old.yml".into(),
                path: d.path().join("ok/old.yml"),
                content: "new\n".into(),
                changed: true,
            },
            Planned {
                rel: "blocker/b.yml".into(),
                path: d.path().join("blocker/b.yml"),
                content: "b\n".into(),
                changed: true,
            },
        ];
        let err = commit(&plans).unwrap_err();
        assert!(
            format!("{err:#}").contains("nothing was changed"),
            "{err:#}"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("ok/old.yml")).unwrap(),
            "old\n"
        );
        let left: Vec<_> = std::fs::read_dir(d.path().join("ok"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("old.yml")],
            "temporaries left behind"
        );
    }

    #[test]
    fn unchanged_files_are_not_touched_and_changed_ones_replaced() {
        let d = tempfile::tempdir().unwrap();
        let block = super::super::managed::block("a: 1\n");
        let plans = plan(d.path(), vec![("x/a.yml".into(), block.clone())]).unwrap();
        assert!(plans[0].changed);
        commit(&plans).unwrap();
        let again = plan(d.path(), vec![("x/a.yml".into(), block)]).unwrap();
        assert!(!again[0].changed);
        assert_eq!(
            std::fs::read_to_string(d.path().join("x/a.yml")).unwrap(),
            plans[0].content
        );
    }
}
