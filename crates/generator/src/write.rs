//! Writing the generated tree: a reader never sees a half-written file,
//! and a failure leaves the previous tree untouched:
//!
//! - a directory that does not exist yet (the first run) is filled under a
//!   hidden staging name and renamed into place once complete: one rename
//!   for the whole directory instead of one per file;
//! - in a directory that exists, each changed file is written to a hidden
//!   temporary sibling, and all of them are renamed over the old files once
//!   every file of the run is written.
//!
//! Files are written as soon as they are rendered, by the threads that
//! render them ([`Stage::put`]), so that the file system's work overlaps
//! the rendering; they stay invisible (staging directories, temporaries)
//! until [`Stage::finish`], which runs once every thread has succeeded and
//! only renames. A failure anywhere before that (an unreadable existing
//! file, a full disk) removes every temporary and staging directory: the
//! visible tree is exactly the previous one. A process killed before the
//! renames leaves at most hidden `*-anklume-<pid>` entries, never a partly
//! written visible file — the same guarantee as writing everything after
//! planning, which is what this did before.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// The text of an existing file.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: existing file is not UTF-8 (byte {}); fix or move it, nothing was written",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The content of an existing file, `None` when there is none.
fn read_existing(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => decode(path, bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The `*.yml` files of some output directories, read on another thread
/// while the model is prepared: a warm run reads every file it generates,
/// and the main thread leaves a core idle until rendering starts. Only a
/// cache: a file it did not read (or could not) is read when planned,
/// and what it read is what planning would have read a moment later.
#[derive(Debug)]
pub struct Prefetch(Option<std::thread::JoinHandle<HashMap<PathBuf, Vec<u8>>>>);

impl Prefetch {
    /// Start reading `base/<dir>/*.yml` for each of `dirs`.
    pub fn start(base: &Path, dirs: &[&str]) -> Prefetch {
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| base.join(d)).collect();
        let reader = move || {
            let mut files = HashMap::new();
            for dir in dirs {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "yml") {
                        if let Ok(bytes) = fs::read(&path) {
                            files.insert(path, bytes);
                        }
                    }
                }
            }
            files
        };
        // No thread (resources exhausted): everything is read when planned.
        Prefetch(std::thread::Builder::new().spawn(reader).ok())
    }

    /// What was read (empty if the reader failed).
    pub fn wait(self) -> HashMap<PathBuf, Vec<u8>> {
        self.0.and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

/// Read what exists and compute each file's new content.
pub fn plan(base: &Path, files: Vec<(String, String)>) -> Result<Vec<Planned>> {
    // A file in a directory that does not exist does not exist either: ask
    // the file system once per directory, not once per file.
    let stage = Stage::open(
        files
            .iter()
            .map(|(rel, _)| base.join(rel).parent().map(Path::to_path_buf)),
        true,
        HashMap::new(),
    )?;
    files
        .into_iter()
        .map(|(rel, block)| {
            let path = base.join(&rel);
            let existing = stage.existing(&path)?;
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

/// How the files of one output directory are written.
#[derive(Debug)]
enum Dest {
    /// The directory exists: changed files go to temporary siblings.
    Existing,
    /// It does not: files go into this staging directory (`None`: dry run).
    New(Option<PathBuf>),
}

/// Temporaries written by [`Stage::put`]: (temporary, destination).
pub type Temps = Vec<(PathBuf, PathBuf)>;

/// The output directories of one run, from the first file written to the
/// renames that make the run's files visible (see the module
/// documentation). Shared by the threads that write.
#[derive(Debug)]
pub struct Stage {
    dirs: BTreeMap<PathBuf, Dest>,
    write: bool,
    /// Existing files already read ([`Prefetch`]), taken as planned.
    known: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

impl Stage {
    /// Check each directory files will go into (`None`: a path without a
    /// parent, an error when writing) and, unless `dry_run`, create the
    /// staging directory of each one that does not exist yet. `known`:
    /// existing files already read.
    pub fn open(
        dirs: impl IntoIterator<Item = Option<PathBuf>>,
        dry_run: bool,
        known: HashMap<PathBuf, Vec<u8>>,
    ) -> Result<Stage> {
        let mut stage = Stage {
            dirs: BTreeMap::new(),
            write: !dry_run,
            known: Mutex::new(known),
        };
        for dir in dirs {
            let dir = match dir {
                Some(d) => d,
                None if dry_run => continue,
                None => anyhow::bail!("generated path has no parent"),
            };
            stage.dirs.entry(dir).or_insert(Dest::New(None));
        }
        let result = (|| -> Result<()> {
            for (dir, dest) in &mut stage.dirs {
                if dir.is_dir() {
                    *dest = Dest::Existing;
                } else if !stage.write {
                    // A dry run writes nothing: the directory stays `New(None)`.
                } else if fs::symlink_metadata(dir).is_ok() {
                    anyhow::bail!("{} exists but is not a directory", dir.display());
                } else {
                    let parent = dir.parent().context("generated directory has a parent")?;
                    fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                    let tmp = hidden_sibling(dir, "new");
                    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                    *dest = Dest::New(Some(tmp));
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(stage),
            Err(e) => Err(stage.abort(&[], e)),
        }
    }

    fn dest(&self, path: &Path) -> Result<&Dest> {
        path.parent()
            .and_then(|d| self.dirs.get(d))
            .with_context(|| format!("{}: directory not prepared", path.display()))
    }

    /// The current content of `path` (`None` in a directory that does not
    /// exist yet, without asking the file system).
    fn existing(&self, path: &Path) -> Result<Option<String>> {
        match self.dest(path)? {
            Dest::New(_) => Ok(None),
            Dest::Existing => {
                let known = self
                    .known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(path);
                match known {
                    Some(bytes) => decode(path, bytes).map(Some),
                    None => read_existing(path),
                }
            }
        }
    }

    /// Plan one file and, unless this is a dry run, write it if it
    /// changed. `fresh` is the content of a new file, `block` the range of
    /// its managed section (what replaces the managed section of an
    /// existing file). Temporaries written are added to `temps`.
    pub fn put(
        &self,
        rel: String,
        path: PathBuf,
        fresh: String,
        block: Range<usize>,
        temps: &mut Temps,
    ) -> Result<Planned> {
        let (content, changed) = match self.existing(&path)? {
            None => (fresh, true),
            Some(text) => match super::managed::find(&text) {
                // `merge` would give `text` itself: keep it, build nothing.
                Some((s, e)) if text[s..e] == fresh[block.clone()] => (text, false),
                _ => {
                    let content = super::managed::merge(Some(&text), &fresh[block]);
                    let changed = content != text;
                    (content, changed)
                }
            },
        };
        let planned = Planned {
            rel,
            path,
            content,
            changed,
        };
        if planned.changed {
            self.write(&planned, temps)?;
        }
        Ok(planned)
    }

    /// Write a changed file where it stays invisible until [`Stage::finish`].
    fn write(&self, p: &Planned, temps: &mut Temps) -> Result<()> {
        if !self.write {
            return Ok(());
        }
        match self.dest(&p.path)? {
            Dest::New(Some(stage)) => write_new(
                &stage.join(p.path.file_name().context("file name")?),
                &p.content,
            ),
            Dest::New(None) => unreachable!("staging directories exist when writing"),
            Dest::Existing => {
                let tmp = hidden_sibling(&p.path, "tmp");
                temps.push((tmp.clone(), p.path.clone()));
                write_new(&tmp, &p.content)
            }
        }
    }

    /// Remove every temporary and staging directory; `e`, said so.
    pub fn abort(&self, temps: &[(PathBuf, PathBuf)], e: anyhow::Error) -> anyhow::Error {
        for (t, _) in temps {
            let _ = fs::remove_file(t);
        }
        for dest in self.dirs.values() {
            if let Dest::New(Some(s)) = dest {
                let _ = fs::remove_dir_all(s);
            }
        }
        if self.write {
            e.context("nothing was changed in the output directory")
        } else {
            e
        }
    }

    /// Make everything written visible: rename the temporaries over their
    /// files, then the staging directories into place.
    pub fn finish(self, temps: Temps) -> Result<()> {
        let mut renames = temps;
        for (dir, dest) in self.dirs {
            if let Dest::New(Some(stage)) = dest {
                renames.push((stage, dir));
            }
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
}

/// Write every changed file (see the module documentation).
pub fn commit(plans: &[Planned]) -> Result<()> {
    let changed = || plans.iter().filter(|p| p.changed);
    let stage = Stage::open(
        changed().map(|p| p.path.parent().map(Path::to_path_buf)),
        false,
        HashMap::new(),
    )?;
    let mut temps = Temps::new();
    match changed().try_for_each(|p| stage.write(p, &mut temps)) {
        Ok(()) => stage.finish(temps),
        Err(e) => Err(stage.abort(&temps, e)),
    }
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
