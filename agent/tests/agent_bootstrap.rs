//! The first boot's converge on a new Incus (a real `incusd` started here,
//! no storage pool, no image): the agent makes the `default` dir pool and
//! the `anklume-base` image from this machine's busybox, then applies the
//! canonical `infra.yml` committed at the top of the repository (the file
//! the first boot puts on the data pool) and its container runs. A second
//! converge makes nothing again.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anklume_incus::localimage::BASE_ALIAS;
use anklume_resident::agent::{self, AgentOptions};

/// The bootstrap `infra.yml`, as shipped.
const CANONICAL: &str = include_str!("../../infra.yml");

#[test]
fn the_agent_bootstraps_a_new_incus_and_the_canonical_infra_yml_runs() {
    let lab = common::lab::Lab::bare("anklume-bootstrap-", Some(CANONICAL));
    assert!(lab
        .c
        .get_opt::<serde_json::Value>("/1.0/storage-pools/default")
        .unwrap()
        .is_none());
    let dir = lab.dir.clone();
    let o = AgentOptions {
        infra: dir.join("infra.yml"),
        pool: None,
        mountinfo: PathBuf::from("/proc/self/mountinfo"),
        base_dir: dir.join("tree"),
        context_dir: Some(dir.join("ctx")),
        apply: lab.options(false, false),
        state_dir: dir.join("state"),
        debounce: Duration::from_millis(300),
        bootstrap_incus: true,
    };
    let mut log = Vec::new();
    let rec = agent::converge(&o, &mut log);
    let text = String::from_utf8_lossy(&log).into_owned();
    assert!(rec.converged(), "{}\n{text}", rec.describe());
    assert!(
        text.contains("made the storage pool default (dir)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("imported the bootstrap image {BASE_ALIAS}")),
        "{text}"
    );
    let inst = lab.instance("home", "home-box");
    assert_eq!(inst["status"], "Running", "{inst:#}");

    let mut log = Vec::new();
    let rec = agent::converge(&o, &mut log);
    let text = String::from_utf8_lossy(&log).into_owned();
    assert!(rec.converged(), "{}\n{text}", rec.describe());
    assert!(!text.contains("made the storage pool"), "{text}");
    assert!(!text.contains("imported the bootstrap image"), "{text}");
    lab.close();
}
