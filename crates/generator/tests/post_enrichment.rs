//! The second validation (of the enriched document) runs beside the
//! building of the model and the files: when it finds an error, that error
//! is reported as before and nothing is written.

mod common;

use anklume_generator::Outcome;

#[test]
fn an_error_only_enrichment_reveals_is_reported_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let infra = d.path().join("infra.yml");
    // firewall_mode vm adds anklume-firewall at .253 of the anklume domain,
    // where a machine already is.
    std::fs::write(
        &infra,
        "project_name: p\nglobal:\n  base_subnet: \"10.100\"\n  firewall_mode: vm\ndomains:\n  anklume:\n    subnet_id: 0\n    machines:\n      admin-box:\n        type: lxc\n        ip: 10.100.0.253\n  work:\n    subnet_id: 1\n    machines:\n      dev:\n        type: lxc\n        ip: 10.100.1.10\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let (outcome, _, err) = common::run_sync(&infra, &out);
    assert!(matches!(outcome, Outcome::Invalid), "{err}");
    assert!(err.contains("Post-enrichment validation errors:"), "{err}");
    assert!(err.contains("10.100.0.253"), "{err}");
    assert!(!err.contains("Validation errors:\n"), "{err}");
    assert!(
        !out.exists(),
        "something was written: {:?}",
        common::tree(&out)
    );
}
