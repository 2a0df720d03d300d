//! Local images and the domains' own image stores, against a real `incusd`
//! started here (its own network namespace, see `incus::testd`), with
//! busybox images built locally:
//! - a split image (metadata tarball + rootfs squashfs, what every image
//!   pulled from a server is) and a unified one, each only in `default`:
//!   `anklume apply` makes it available in the domain's project with the
//!   same fingerprint, the instances run, a second run changes nothing and
//!   copies nothing, and a machine added later reuses the project's copy;
//! - the copy itself: reported once with its size, an alias deleted by
//!   hand is named again without a copy, and emptying a project's image
//!   store leaves the `default` image (files shared by fingerprint) intact;
//!   an alias in no project is a clear error.

mod common;

use anklume_reconciler::images::{self, Ensured};
use anklume_reconciler::ApplySummary;
use serde_json::{json, Value};

const SPLIT: &str = "anklume-split";
const UNIFIED: &str = "anklume-unified";

fn infra(image: &str, machines: &[&str]) -> String {
    let mut s = format!(
        "project_name: images-test
global:
  addressing:
    base_octet: 10
    zone_base: 200
  default_os_image: {image}
domains:
  aki:
    trust_level: trusted
    description: image test domain
    machines:
"
    );
    for m in machines {
        s.push_str(&format!("      {m}:\n        type: lxc\n"));
    }
    s
}

/// The shared lab with one image imported into `default`.
struct Lab {
    lab: common::lab::Lab,
    /// The fingerprint of the image imported into `default`.
    fp: String,
}

impl std::ops::Deref for Lab {
    type Target = common::lab::Lab;
    fn deref(&self) -> &common::lab::Lab {
        &self.lab
    }
}

impl Lab {
    fn new(alias: &str, split: bool) -> Lab {
        let lab = common::lab::Lab::new("anklume-images-", None);
        let fp = lab.import_image(alias, split);
        Lab { lab, fp }
    }

    /// Whether Incus stores the image as two files (`FP` + `FP.rootfs`).
    fn stored_split(&self) -> bool {
        let images = self.daemon().dir().join("images");
        assert!(
            images.join(&self.fp).is_file(),
            "image {} is not stored",
            self.fp
        );
        images.join(format!("{}.rootfs", self.fp)).is_file()
    }

    fn apply(&self, infra: &str) -> (i32, ApplySummary, String) {
        std::fs::write(self.dir.join("infra.yml"), infra).unwrap();
        self.apply_with(&self.options(false, false))
    }

    /// The images of `project`, with their details.
    fn images(&self, project: &str) -> Vec<Value> {
        self.c
            .get(&format!("/1.0/images?project={project}&recursion=1"))
            .unwrap()
    }

    /// The one image of the domain's project: the imported one, named
    /// `alias`; its upload date (a new copy would change it).
    fn project_copy(&self, alias: &str) -> String {
        let imgs = self.images("aki");
        assert_eq!(imgs.len(), 1, "{imgs:#?}");
        assert_eq!(imgs[0]["fingerprint"], self.fp.as_str());
        assert_eq!(
            images::alias_target(&self.c, alias, "aki").unwrap(),
            Some(self.fp.clone())
        );
        imgs[0]["uploaded_at"].as_str().unwrap().to_string()
    }

    fn running(&self, name: &str) {
        let i = self.instance("aki", name);
        assert_eq!(i["status"], "Running", "{i:#}");
        assert_eq!(i["config"]["volatile.base_image"], self.fp.as_str());
    }

    fn close(self) {
        self.lab.close()
    }
}

/// Apply from scratch, again, then with one more machine: the image is
/// copied once and reused.
fn converges_with(lab: &Lab, alias: &str) {
    // Only in `default` before.
    assert!(images::alias_target(&lab.c, alias, "aki")
        .unwrap()
        .is_none());
    let (code, s, text) = lab.apply(&infra(alias, &["aki-a"]));
    // network, project, default profile, instance, ruleset
    assert_eq!((code, s.created, s.failed), (0, 5, 0), "{text}");
    lab.running("aki-a");
    let uploaded = lab.project_copy(alias);
    // `default` keeps its own.
    assert_eq!(
        images::alias_target(&lab.c, alias, "default").unwrap(),
        Some(lab.fp.clone())
    );

    // A second run changes nothing and copies nothing.
    let (code, s, text) = lab.apply(&infra(alias, &["aki-a"]));
    assert_eq!((code, s.changes(), s.failed), (0, 0, 0), "{text}");
    assert_eq!(lab.project_copy(alias), uploaded);

    // A machine added later uses the project's copy.
    let (code, s, text) = lab.apply(&infra(alias, &["aki-a", "aki-b"]));
    assert_eq!((code, s.changes(), s.failed), (0, 1, 0), "{text}");
    lab.running("aki-b");
    assert_eq!(lab.project_copy(alias), uploaded);
}

#[test]
fn a_split_image_only_in_default_is_copied_once() {
    let lab = Lab::new(SPLIT, true);
    assert!(lab.stored_split(), "the test image must be a split image");
    converges_with(&lab, SPLIT);

    // The copy itself, into a project of its own: one line with the size,
    // then nothing.
    let c = &lab.c;
    c.post(
        "/1.0/projects",
        &json!({"name": "scratch", "config": {"features.images": "true"}}),
    )
    .unwrap();
    let mut progress = Vec::new();
    let done = images::ensure_in_project_with(c, SPLIT, "scratch", &mut progress).unwrap();
    let size = lab.images("default")[0]["size"].as_u64().unwrap();
    assert!(size > 100_000, "busybox alone is bigger: {size}");
    assert_eq!(
        done,
        Ensured::Copied {
            fingerprint: lab.fp.clone(),
            size
        }
    );
    let line = String::from_utf8(progress).unwrap();
    let short = &lab.fp[..12];
    assert!(
        line.starts_with(&format!("image {SPLIT} ({short}, "))
            && line.ends_with("iB): copied from the default project into project scratch\n")
            && line.lines().count() == 1,
        "{line}"
    );
    let mut progress = Vec::new();
    let done = images::ensure_in_project_with(c, SPLIT, "scratch", &mut progress).unwrap();
    assert_eq!((done, progress.len()), (Ensured::Present, 0));

    // An alias deleted by hand: named again, not copied.
    c.delete(&format!("/1.0/images/aliases/{SPLIT}?project=scratch"))
        .unwrap();
    let mut progress = Vec::new();
    let done = images::ensure_in_project_with(c, SPLIT, "scratch", &mut progress).unwrap();
    assert_eq!(
        done,
        Ensured::Named {
            fingerprint: lab.fp.clone()
        }
    );
    assert_eq!(
        String::from_utf8(progress).unwrap(),
        format!("image {SPLIT} ({short}): already in project scratch, named\n")
    );
    assert_eq!(
        images::alias_target(c, SPLIT, "scratch").unwrap(),
        Some(lab.fp.clone())
    );

    // Emptying the project's store (a project being deleted) leaves the
    // default project's image and its files alone.
    images::delete_all_in_project(c, "scratch").unwrap();
    assert!(lab.images("scratch").is_empty());
    c.delete("/1.0/projects/scratch").unwrap();
    assert_eq!(lab.images("default").len(), 1);
    assert!(lab.stored_split());
    lab.close();
}

#[test]
fn a_unified_image_only_in_default_is_copied_once() {
    let lab = Lab::new(UNIFIED, false);
    assert!(
        !lab.stored_split(),
        "the test image must be a unified image"
    );
    converges_with(&lab, UNIFIED);

    // An alias in no project: said so, nothing copied.
    let c = &lab.c;
    c.post(
        "/1.0/projects",
        &json!({"name": "scratch", "config": {"features.images": "true"}}),
    )
    .unwrap();
    let mut progress = Vec::new();
    let e = images::ensure_in_project_with(c, "nowhere", "scratch", &mut progress).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "image \"nowhere\" is neither in project scratch nor in the default project: import it first (`incus image import FILE --alias nowhere`)"
    );
    assert!(progress.is_empty());
    assert!(lab.images("scratch").is_empty());
    lab.close();
}

/// `anklume apply` through the binary, whose stderr is locked for the
/// whole run: the copy is said once, from the main thread (a worker that
/// wrote to stderr itself waited forever for that lock); with `--quiet`
/// nothing is said.
#[test]
fn the_binary_says_the_copy_once_and_nothing_when_quiet() {
    let lab = Lab::new(SPLIT, true);
    std::fs::write(lab.dir.join("infra.yml"), infra(SPLIT, &["aki-a"])).unwrap();
    std::fs::create_dir_all(lab.dir.join("ctx")).unwrap();
    let apply = |quiet: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_anklume"));
        c.arg("apply").arg("--no-nat");
        if quiet {
            c.arg("--quiet");
        }
        c.arg("--infra")
            .arg(lab.dir.join("infra.yml"))
            .arg("--context-dir")
            .arg(lab.dir.join("ctx"))
            .arg("--socket")
            .arg(lab.daemon().socket())
            .arg("--netns")
            .arg(lab.daemon().netns_path())
            .arg("--state-dir")
            .arg(lab.dir.join("state"))
            .env("ANKLUME_SKIP_HOST_SUBNET_CHECK", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(180) {
                child.kill().unwrap();
                panic!("anklume apply (quiet: {quiet}) still runs after 180 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err
    };
    let err = apply(false);
    assert_eq!(
        err.matches("copied from the default project into project aki")
            .count(),
        1,
        "{err}"
    );
    lab.running("aki-a");
    lab.project_copy(SPLIT);
    // The project's alias deleted by hand, and a new machine: the alias is
    // named again, silently.
    lab.c
        .delete(&format!("/1.0/images/aliases/{SPLIT}?project=aki"))
        .unwrap();
    std::fs::write(lab.dir.join("infra.yml"), infra(SPLIT, &["aki-a", "aki-b"])).unwrap();
    let err = apply(true);
    lab.running("aki-b");
    assert!(!err.contains(SPLIT), "{err}");
    lab.project_copy(SPLIT);
    lab.close();
}
