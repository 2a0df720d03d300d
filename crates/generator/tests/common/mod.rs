//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anklume_generator::context::HostContext;
use anklume_generator::{self as sync, Outcome, SyncOptions};

/// Every file under `dir`, relative path → bytes.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Run sync in-process with a neutral host (no nesting, no subnets).
pub fn run_sync(infra: &Path, base: &Path) -> (Outcome, String, String) {
    run_sync_with(infra, base, HostContext::default(), false)
}

pub fn run_sync_with(
    infra: &Path,
    base: &Path,
    host: HostContext,
    clean: bool,
) -> (Outcome, String, String) {
    let opts = SyncOptions {
        infra: Some(PathBuf::from(infra)),
        base_dir: base.to_path_buf(),
        dry_run: false,
        clean_orphans: clean,
        context_dir: None,
        host: Some(host),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = sync::run(&opts, &mut out, &mut err).expect("sync runs");
    (
        outcome,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// The reference generator's vectors, kept in the repository
/// (`crates/generator/tests/vectors/`, copied from the reference with its
/// README). Found from whichever crate includes this file.
pub fn vectors_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("crates/generator/tests/vectors"))
        .find(|p| p.is_dir())
        .expect("crates/generator/tests/vectors in the workspace")
}
