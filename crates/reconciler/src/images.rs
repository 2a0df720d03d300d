//! Local images in the domains' projects.
//!
//! Domain projects have their own image store (`features.images=true`, as
//! the reference sets it), so an alias imported into the `default` project
//! is not visible from them. A missing alias is copied by Incus itself:
//! `POST /1.0/images?project=P` with `{"source": {"type": "image",
//! "protocol": "incus", "fingerprint": FP}}` and no `server`. Incus then finds the fingerprint
//! in another project of the same daemon and only adds a record for it in
//! `P` (its files, under `images/FP` and `images/FP.rootfs`, are shared by
//! fingerprint): no bytes go through us, the fingerprint is the source's by
//! construction, and split images (metadata tarball + rootfs squashfs,
//! what every image pulled from a server is) are handled like unified ones.
//! Deleting the image from `P` later only drops that record while another
//! project still references the fingerprint.

use std::io::Write;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use anklume_incus::client::enc;
use anklume_incus::Client;

#[derive(Debug, Deserialize)]
struct Alias {
    target: String,
}

#[derive(Debug, Deserialize)]
struct Image {
    #[serde(default)]
    size: u64,
}

/// What [`ensure_in_project_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The alias was already in the project: nothing done.
    Present,
    /// The image was already in the project under no such alias: only the
    /// alias was created.
    Named { fingerprint: String },
    /// The image was copied from `default` and named.
    Copied { fingerprint: String, size: u64 },
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

/// Make `alias` usable for instances of `project`: reuse it when the
/// project has it, else copy it from the `default` project (one line on
/// `progress` per image copied or named).
pub fn ensure_in_project_with(
    c: &Client,
    alias: &str,
    project: &str,
    progress: &mut dyn Write,
) -> Result<Ensured> {
    if alias_target(c, alias, project)?.is_some() {
        return Ok(Ensured::Present);
    }
    let Some(fp) = alias_target(c, alias, "default")? else {
        bail!(
            "image {alias:?} is neither in project {project} nor in the default project: import it first (`incus image import FILE --alias {alias}`)"
        );
    };
    let src: Image = c
        .get(&format!("/1.0/images/{}?project=default", enc(&fp)))
        .with_context(|| format!("reading image {alias} ({fp}) of the default project"))?;
    let there: Option<Image> = c.get_opt(&format!(
        "/1.0/images/{}?project={}",
        enc(&fp),
        enc(project)
    ))?;
    let short = &fp[..fp.len().min(12)];
    if there.is_some() {
        name(c, alias, &fp, project)?;
        writeln!(
            progress,
            "image {alias} ({short}): already in project {project}, named"
        )?;
        return Ok(Ensured::Named { fingerprint: fp });
    }
    let meta = c
        .post(
            &format!("/1.0/images?project={}", enc(project)),
            &json!({
                "source": {
                    "type": "image",
                    "mode": "pull",
                    // Recorded as the copy's source: Incus refuses an
                    // empty protocol there (6.0.4: "Invalid protocol").
                    "protocol": "incus",
                    "fingerprint": fp,
                    "project": "default",
                },
                "aliases": [{"name": alias, "description": "copied by anklume"}],
            }),
        )
        .with_context(|| {
            format!("copying image {alias} ({fp}) from the default project into project {project}")
        })?;
    let got = meta
        .get("fingerprint")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if got != fp {
        bail!("image {alias} copied into {project} has fingerprint {got:?}, expected {fp}");
    }
    // The alias is created by the same operation; check rather than trust.
    match alias_target(c, alias, project)? {
        Some(t) if t == fp => {}
        other => bail!(
            "after copying image {fp} into project {project}, its alias {alias} points to {other:?}, expected {fp}"
        ),
    }
    writeln!(
        progress,
        "image {alias} ({short}, {}): copied from the default project into project {project}",
        human_size(src.size)
    )?;
    Ok(Ensured::Copied {
        fingerprint: fp,
        size: src.size,
    })
}

/// Create `alias` → `fp` in `project`.
fn name(c: &Client, alias: &str, fp: &str, project: &str) -> Result<()> {
    c.post(
        &format!("/1.0/images/aliases?project={}", enc(project)),
        &json!({"name": alias, "target": fp, "description": "copied by anklume"}),
    )
    .with_context(|| format!("naming image {fp} {alias} in project {project}"))?;
    Ok(())
}

/// `1.5 MiB`-style sizes for progress lines.
fn human_size(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
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

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_like_incus() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
