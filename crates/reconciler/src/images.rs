//! Local images in the domains' projects.
//!
//! Domain projects have their own image store (`features.images=true`, as
//! the reference sets it), so an alias imported into the `default` project
//! is not visible from them. Incus has no same-server copy without a
//! remote endpoint, so a missing alias is exported from `default` and
//! uploaded into the project (unified image tarballs; split images must be
//! imported into the project by hand, and the error says so).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use anklume_incus::client::enc;
use anklume_incus::Client;

#[derive(Debug, Deserialize)]
struct Alias {
    target: String,
}

/// The fingerprint an alias points to in `project`, if it exists.
pub fn alias_target(c: &Client, alias: &str, project: &str) -> Result<Option<String>> {
    let a: Option<Alias> = c.get_opt(&format!(
        "/1.0/images/aliases/{}?project={}",
        enc(alias),
        enc(project)
    ))?;
    Ok(a.map(|a| a.target))
}

/// Make `alias` usable for instances of `project`.
pub fn ensure_in_project(c: &Client, alias: &str, project: &str) -> Result<()> {
    if alias_target(c, alias, project)?.is_some() {
        return Ok(());
    }
    let Some(fp) = alias_target(c, alias, "default")? else {
        bail!(
            "image {alias:?} is neither in project {project} nor in the default project: import it first (`incus image import FILE --alias {alias}`)"
        );
    };
    let data = c
        .get_bytes(&format!("/1.0/images/{}/export?project=default", enc(&fp)))
        .with_context(|| format!("exporting image {alias} from the default project"))?;
    if data.starts_with(b"--") {
        bail!(
            "image {alias:?} is a split image (metadata + rootfs): import it into project {project} yourself (`incus image import META ROOTFS --alias {alias} --project {project}`)"
        );
    }
    let meta = c
        .post_bytes(&format!("/1.0/images?project={}", enc(project)), data)
        .with_context(|| format!("uploading image {alias} into project {project}"))?;
    let got = meta
        .get("fingerprint")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if got != fp {
        bail!("image {alias} uploaded into {project} has fingerprint {got:?}, expected {fp}");
    }
    c.post(
        &format!("/1.0/images/aliases?project={}", enc(project)),
        &json!({"name": alias, "target": fp, "description": "copied by anklume"}),
    )
    .with_context(|| format!("naming image {fp} {alias} in project {project}"))?;
    Ok(())
}

/// Delete every image of `project` (its cache: a project being deleted).
pub fn delete_all_in_project(c: &Client, project: &str) -> Result<()> {
    let urls: Vec<String> = c.get(&format!("/1.0/images?project={}", enc(project)))?;
    for u in urls {
        let fp = u.rsplit('/').next().unwrap_or_default();
        c.delete(&format!("/1.0/images/{}?project={}", enc(fp), enc(project)))?;
    }
    Ok(())
}
