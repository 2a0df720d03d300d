//! Writing the generated tree: everything is computed and checked first,
//! then written so that a reader never sees a half-written file and a
//! failure while writing leaves the previous tree untouched:
//!
//! - a directory that does not exist yet (the first run) is filled under a
//!   hidden staging name and renamed into place once complete: one rename
//!   for the whole directory instead of one per file;
//! - in a directory that exists, each changed file is written to a
//!   temporary sibling, and all of them are renamed over the old files once
//!   every temporary is written.

use std::collections::{BTreeMap, HashMap};
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
    // A file in a directory that does not exist does not exist either: ask
    // the file system once per directory, not once per file.
    let mut dir_exists: HashMap<PathBuf, bool> = HashMap::new();
    files
        .into_iter()
        .map(|(rel, block)| {
            let path = base.join(&rel);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let present = *dir_exists.entry(dir).or_insert_with_key(|d| d.is_dir());
            let existing = if !present {
                None
            } else {
                match fs::read(&path) {
                    Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: existing file is not UTF-8 (byte {}); fix or move it, nothing was written",
                            path.display(),
                            e.utf8_error().valid_up_to()
                        )
                    })?),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
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

fn hidden_sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-anklume-{}", std::process::id()))
}

fn write_new(path: &Path, content: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Create `files` (by file name) in the new directory `dir`. (Spreading
/// this over threads was measured: the directory's lock serialises the
/// creations, and the contention cost more than it saved.)
fn write_all_new(dir: &Path, files: &[&Planned]) -> Result<()> {
    for p in files {
        write_new(
            &dir.join(p.path.file_name().context("file name")?),
            &p.content,
        )?;
    }
    Ok(())
}

/// What was written so far, to undo on failure.
#[derive(Debug, Default)]
struct Undo {
    /// Temporaries next to existing files.
    temps: Vec<PathBuf>,
    /// Staging directories of new directories.
    stages: Vec<PathBuf>,
}

impl Undo {
    fn run(&self) {
        for t in &self.temps {
            let _ = fs::remove_file(t);
        }
        for s in &self.stages {
            let _ = fs::remove_dir_all(s);
        }
    }
}

/// Write every changed file (see the module documentation).
pub fn commit(plans: &[Planned]) -> Result<()> {
    let mut by_dir: BTreeMap<&Path, Vec<&Planned>> = BTreeMap::new();
    for p in plans.iter().filter(|p| p.changed) {
        let dir = p.path.parent().context("generated path has a parent")?;
        by_dir.entry(dir).or_default().push(p);
    }
    let mut undo = Undo::default();
    // (temporary, destination) renames, done once everything is written.
    let mut renames: Vec<(PathBuf, &Path)> = Vec::new();
    let result = (|| -> Result<()> {
        for (dir, files) in &by_dir {
            if dir.is_dir() {
                for p in files {
                    let tmp = hidden_sibling(&p.path, "tmp");
                    undo.temps.push(tmp.clone());
                    write_new(&tmp, &p.content)?;
                    renames.push((tmp, &p.path));
                }
            } else if fs::symlink_metadata(dir).is_ok() {
                anyhow::bail!("{} exists but is not a directory", dir.display());
            } else {
                let parent = dir.parent().context("generated directory has a parent")?;
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                let stage = hidden_sibling(dir, "new");
                undo.stages.push(stage.clone());
                fs::create_dir(&stage).with_context(|| format!("creating {}", stage.display()))?;
                write_all_new(&stage, files)?;
                renames.push((stage, dir));
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        undo.run();
        return Err(e.context("nothing was changed in the output directory"));
    }
    for (i, (tmp, dest)) in renames.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, dest) {
            // Not reachable short of a concurrent writer: say what is done.
            for (t, _) in &renames[i..] {
                let _ = fs::remove_file(t).or_else(|_| fs::remove_dir_all(t));
            }
            return Err(e).with_context(|| {
                format!(
                    "renaming {} to {} ({i} of {} files or directories were already in place)",
                    tmp.display(),
                    dest.display(),
                    renames.len()
                )
            });
        }
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
    fn new_directories_appear_complete_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let block = crate::managed::block("a: 1\n");
        let files: Vec<(String, String)> = (0..50)
            .map(|i| (format!("host_vars/m{i}.yml"), block.clone()))
            .chain([("group_vars/all.yml".to_string(), block.clone())])
            .collect();
        let plans = plan(d.path(), files.clone()).unwrap();
        assert!(plans.iter().all(|p| p.changed));
        commit(&plans).unwrap();
        assert_eq!(
            std::fs::read_dir(d.path().join("host_vars"))
                .unwrap()
                .count(),
            50
        );
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "staging left: {names:?}"
        );
        assert!(plan(d.path(), files).unwrap().iter().all(|p| !p.changed));

        // A failure in a later directory removes the staged one.
        let e = tempfile::tempdir().unwrap();
        std::fs::write(e.path().join("zz"), "a file where a directory must go").unwrap();
        let plans = plan(
            e.path(),
            vec![
                ("host_vars/a.yml".into(), block.clone()),
                ("zz/sub/b.yml".into(), block),
            ],
        )
        .unwrap();
        let err = commit(&plans).unwrap_err();
        assert!(
            format!("{err:#}").contains("nothing was changed"),
            "{err:#}"
        );
        let left: Vec<String> = std::fs::read_dir(e.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["zz"], "nothing but the blocker may remain");
    }

    #[test]
    fn unchanged_files_are_not_touched_and_changed_ones_replaced() {
        let d = tempfile::tempdir().unwrap();
        let block = crate::managed::block("a: 1\n");
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
