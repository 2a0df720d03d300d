//! `generate::dirs` (the output directories `sync` stages before any file
//! is built) names exactly the directories of the files `generate::files`
//! gives, on every valid vector and on two edge cases of our own (a
//! domain without machines; every domain disabled).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use anklume_generator::context::HostContext;
use anklume_generator::{generate, prepare};

/// The directories of `generate::files`, and `generate::dirs`; `None` for
/// an invalid input.
fn both(infra: &Path) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let mut err = Vec::new();
    let p = prepare(Some(infra), None, Some(&HostContext::default()), &mut err).unwrap()?;
    let want: BTreeSet<String> = generate::files(&p.infra, &p.model, &p.enriched)
        .iter()
        .map(|f| f.rel.rsplit_once('/').unwrap().0.to_string())
        .collect();
    let got: BTreeSet<String> = generate::dirs(&p.model)
        .into_iter()
        .map(str::to_string)
        .collect();
    Some((got, want))
}

#[test]
fn the_staged_directories_are_those_of_the_files() {
    let mut checked = 0;
    for case in std::fs::read_dir(common::vectors_dir()).unwrap().flatten() {
        let input = case.path().join("input");
        let infra = if input.join("infra").is_dir() {
            input.join("infra")
        } else {
            input.join("infra.yml")
        };
        // An invalid input writes nothing.
        if let Some((got, want)) = infra.exists().then(|| both(&infra)).flatten() {
            assert_eq!(got, want, "{}", case.path().display());
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} valid vectors");

    let d = tempfile::tempdir().unwrap();
    for (name, text, dirs) in [
        (
            "no-machines.yml",
            "project_name: p\nglobal:\n  base_subnet: \"10.100\"\ndomains:\n  a:\n    subnet_id: 1\n",
            &["group_vars", "inventory"][..],
        ),
        (
            "all-disabled.yml",
            "project_name: p\nglobal:\n  base_subnet: \"10.100\"\ndomains:\n  a:\n    subnet_id: 1\n    enabled: false\n    machines:\n      m1:\n        type: lxc\n",
            &["group_vars"][..],
        ),
    ] {
        let infra = d.path().join(name);
        std::fs::write(&infra, text).unwrap();
        let (got, want) = both(&infra).unwrap_or_else(|| panic!("{name} is invalid"));
        assert_eq!(got, want, "{name}");
        assert_eq!(got, dirs.iter().map(|s| s.to_string()).collect(), "{name}");
    }
}
