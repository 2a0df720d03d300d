//! The record of the last apply: `<state dir>/last-apply.json`, written
//! (temp + rename) when `anklume apply` or the agent finishes a run, read
//! by the health check.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name in the state folder.
pub const FILE: &str = "last-apply.json";
/// Version of the record; bumped when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub schema: u32,
    /// When the run ended (seconds since the epoch).
    pub finished: u64,
    /// The `infra.yml` (or `infra/`) applied.
    pub infra: PathBuf,
    /// SHA-256 of that file when it is a file (null for a folder or when
    /// it could not be read).
    pub infra_sha256: Option<String>,
    /// The run's exit code (0: everything converged).
    pub exit_code: i32,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Why the run failed as a whole (invalid infra.yml, Incus down, …).
    pub error: Option<String>,
}

impl Record {
    /// A run that ended at `now`, before its counts are known.
    pub fn new(infra: &Path) -> Record {
        Record {
            schema: SCHEMA,
            finished: now(),
            infra: infra.to_path_buf(),
            infra_sha256: sha256_of(infra),
            exit_code: 1,
            created: 0,
            updated: 0,
            deleted: 0,
            failed: 0,
            skipped: 0,
            error: None,
        }
    }

    /// Fill the counts from an apply's summary.
    pub fn with_summary(mut self, code: i32, s: &anklume_reconciler::ApplySummary) -> Record {
        self.exit_code = code;
        self.created = s.created;
        self.updated = s.updated;
        self.deleted = s.deleted;
        self.failed = s.failed;
        self.skipped = s.skipped;
        self.finished = now();
        self
    }

    /// Everything converged.
    pub fn converged(&self) -> bool {
        self.exit_code == 0 && self.failed == 0 && self.skipped == 0 && self.error.is_none()
    }

    /// One line for the journal and the health check.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("failed: {e}");
        }
        format!(
            "exit {}: {} created, {} updated, {} deleted, {} failed, {} skipped",
            self.exit_code, self.created, self.updated, self.deleted, self.failed, self.skipped
        )
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SHA-256 (hex) of a file; `None` for a folder or an unreadable file.
pub fn sha256_of(p: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    if !p.is_file() {
        return None;
    }
    let data = std::fs::read(p).ok()?;
    Some(
        Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Write the record atomically into `state_dir` (created if missing).
pub fn write(state_dir: &Path, r: &Record) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(r).context("encoding the apply record")?;
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Read the record; `Ok(None)` when no apply has recorded one.
pub fn read(state_dir: &Path) -> Result<Option<Record>> {
    let path = state_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let r: Record =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(
        r.schema == SCHEMA,
        "{}: schema {} is not {SCHEMA}",
        path.display(),
        r.schema
    );
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        assert_eq!(read(&state).unwrap(), None);
        let infra = d.path().join("infra.yml");
        std::fs::write(&infra, "x: 1\n").unwrap();
        let s = anklume_reconciler::ApplySummary {
            created: 3,
            ..Default::default()
        };
        let r = Record::new(&infra).with_summary(0, &s);
        assert!(r.converged());
        assert_eq!(r.infra_sha256.as_deref().map(str::len), Some(64));
        write(&state, &r).unwrap();
        assert_eq!(read(&state).unwrap(), Some(r.clone()));
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE]);
        let failed = r.with_summary(
            1,
            &anklume_reconciler::ApplySummary {
                failed: 1,
                ..Default::default()
            },
        );
        assert!(!failed.converged());
        assert!(failed.describe().contains("1 failed"));
        std::fs::write(state.join(FILE), "{\"schema\": 1, \"bogus\": 2}").unwrap();
        let e = format!("{:#}", read(&state).unwrap_err());
        assert!(e.contains("last-apply.json"), "{e}");
    }
}
