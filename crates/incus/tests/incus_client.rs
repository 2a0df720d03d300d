//! The Incus client against a real `incusd` started here (private
//! INCUS_DIR; containers are not needed for these calls).

use anklume_incus::{client::enc, Error};
use anklume_incus_testkit::TestDaemon;
use serde_json::{json, Value};

#[test]
fn client_talks_to_a_real_incusd() {
    let tmp = tempfile::Builder::new()
        .prefix("anklume-incus-client-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = TestDaemon::start(&tmp.path().join("incus")).expect("start incusd");
    let c = d.client().unwrap();

    // Server info.
    let info: Value = c.get("/1.0").unwrap();
    assert_eq!(info["api_status"], "stable", "{info}");

    // Create, read, update, delete a project (sync requests).
    let name = "anklume-client-test";
    c.post(
        "/1.0/projects",
        &json!({"name": name, "description": "test", "config": {"features.profiles": "true"}}),
    )
    .unwrap();
    let p: Value = c.get(&format!("/1.0/projects/{}", enc(name))).unwrap();
    assert_eq!(p["config"]["features.profiles"], "true");
    c.put(
        &format!("/1.0/projects/{}", enc(name)),
        &json!({"description": "changed", "config": {"features.profiles": "true", "user.anklume.managed": "true"}}),
    )
    .unwrap();
    let p: Value = c.get(&format!("/1.0/projects/{}", enc(name))).unwrap();
    assert_eq!(p["description"], "changed");
    assert_eq!(p["config"]["user.anklume.managed"], "true");

    // Errors carry Incus's message; 404 is its own kind.
    let dup = c
        .post("/1.0/projects", &json!({"name": name}))
        .unwrap_err()
        .to_string();
    assert!(
        dup.contains("POST /1.0/projects") && dup.contains("Failed creating project"),
        "{dup}"
    );
    match c.get::<Value>("/1.0/projects/nope") {
        Err(Error::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(c.get_opt::<Value>("/1.0/projects/nope").unwrap().is_none());

    // An async operation (storage pool creation is sync; image-less
    // instance creation is async): create an empty container in the project
    // and delete it again, both awaited.
    c.post(
        "/1.0/storage-pools",
        &json!({"name": "default", "driver": "dir"}),
    )
    .unwrap();
    c.put(
        &format!("/1.0/profiles/default?project={}", enc(name)),
        &json!({"devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}}),
    )
    .unwrap();
    c.post(
        &format!("/1.0/instances?project={}", enc(name)),
        &json!({"name": "empty", "type": "container", "source": {"type": "none"}}),
    )
    .unwrap();
    let inst: Value = c
        .get(&format!("/1.0/instances/empty?project={}", enc(name)))
        .unwrap();
    assert_eq!(inst["status"], "Stopped");
    // A failing async operation names the request and carries Incus's reason.
    let err = c
        .post(
            &format!("/1.0/instances?project={}", enc(name)),
            &json!({"name": "x", "type": "container", "source": {"type": "image", "alias": "no-such-image"}}),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("POST /1.0/instances")
            && err.contains("operation failed: Image not provided"),
        "{err}"
    );
    c.delete(&format!("/1.0/instances/empty?project={}", enc(name)))
        .unwrap();
    c.delete(&format!("/1.0/projects/{}", enc(name))).unwrap();
    assert!(c
        .get_opt::<Value>(&format!("/1.0/projects/{}", enc(name)))
        .unwrap()
        .is_none());
    let dir = d.dir().to_path_buf();
    d.close().unwrap();
    assert!(
        !dir.exists(),
        "the daemon's directory (and its mounts) must be gone"
    );
}
