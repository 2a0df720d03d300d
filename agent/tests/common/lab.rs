//! A private `incusd` (its own network namespace, NAT off) with a `dir`
//! storage pool and a scratch folder, for the end-to-end apply tests.

use std::path::PathBuf;

use anklume_incus::Client;
use anklume_incus_testkit::{testimage, TestDaemon};
use anklume_reconciler::desired::ApplySettings;
use anklume_reconciler::{run, ApplyOptions, ApplySummary};
use serde_json::Value;

/// Fields drop in order: the daemon goes before its directory.
pub struct Lab {
    pub c: Client,
    d: Option<TestDaemon>,
    /// Scratch folder: `infra.yml`, `ctx/`, `image/`, `state/`, `incus/`.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Lab {
    /// A daemon with a `default` dir pool; `infra` written when given.
    pub fn new(prefix: &str, infra: Option<&str>) -> Lab {
        Self::start(prefix, infra, true)
    }

    /// A daemon as a new Incus is: no storage pool, no image.
    pub fn bare(prefix: &str, infra: Option<&str>) -> Lab {
        Self::start(prefix, infra, false)
    }

    fn start(prefix: &str, infra: Option<&str>, with_pool: bool) -> Lab {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir(dir.join("ctx")).unwrap();
        std::fs::create_dir(dir.join("image")).unwrap();
        if let Some(infra) = infra {
            std::fs::write(dir.join("infra.yml"), infra).unwrap();
        }
        let d = TestDaemon::start(&dir.join("incus")).expect("start incusd");
        let c = d.client().unwrap();
        if with_pool {
            testimage::create_dir_pool(&c, "default").unwrap();
        }
        Lab {
            c,
            d: Some(d),
            dir,
            _tmp: tmp,
        }
    }

    /// Import the busybox test image into `default` as `alias`, unified or
    /// split (metadata + rootfs); returns its fingerprint.
    pub fn import_image(&self, alias: &str, split: bool) -> String {
        let at = self.dir.join("image");
        if split {
            testimage::import_split(&self.c, &at, alias).unwrap()
        } else {
            testimage::import(&self.c, &at, alias).unwrap()
        }
    }

    pub fn daemon(&self) -> &TestDaemon {
        self.d.as_ref().unwrap()
    }

    pub fn options(&self, dry_run: bool, clean_orphans: bool) -> ApplyOptions {
        ApplyOptions {
            infra: Some(self.dir.join("infra.yml")),
            context_dir: Some(self.dir.join("ctx")),
            domains: vec![],
            dry_run,
            clean_orphans,
            socket: self.daemon().socket(),
            settings: ApplySettings {
                nat: false,
                pool: "default".into(),
                netns: Some(self.daemon().netns_path()),
                state_dir: Some(self.dir.join("state")),
            },
            progress: true,
            json: false,
        }
    }

    /// Run apply in-process; returns the exit code, the summary and what
    /// it printed (stdout then stderr).
    pub fn apply_with(&self, o: &ApplyOptions) -> (i32, ApplySummary, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (code, s) = run(o, &mut out, &mut err).expect("apply runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
        (code, s, text)
    }

    pub fn instance(&self, project: &str, name: &str) -> Value {
        self.c
            .get(&format!("/1.0/instances/{name}?project={project}"))
            .unwrap()
    }

    /// Stop the daemon; its directory and network namespace must be gone.
    pub fn close(mut self) {
        let d = self.d.take().unwrap();
        let dir = d.dir().to_path_buf();
        let netns = d.netns_path();
        d.close().unwrap();
        assert!(!dir.exists(), "the daemon's directory must be gone");
        assert!(
            !netns.exists(),
            "the daemon's network namespace must be gone"
        );
    }
}
