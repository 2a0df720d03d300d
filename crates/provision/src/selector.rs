//! Disk selectors: how a preseed names the disk for the pool.
//!
//! Every given criterion must hold; at least one must be given; and in a
//! preseed the selector must match exactly one offered disk, so a preseed
//! written for one machine cannot silently pick a different disk on another.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::disks::{Candidate, Survey};
use crate::inventory::{BlockDevice, Inventory};
use crate::size::Size;

/// Criteria naming one disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSelector {
    /// A `/dev/disk/by-id` name, with or without that prefix, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
    /// The disk's serial number, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// A glob over the model (`Samsung SSD 9*`), case-sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

impl DiskSelector {
    pub fn is_empty(&self) -> bool {
        *self == DiskSelector::default()
    }

    /// `by_id = "x", min_size = 100.0 GB`.
    pub fn describe(&self) -> String {
        let mut p = Vec::new();
        if let Some(v) = &self.by_id {
            p.push(format!("by_id = {v:?}"));
        }
        if let Some(v) = &self.serial {
            p.push(format!("serial = {v:?}"));
        }
        if let Some(v) = &self.model {
            p.push(format!("model = {v:?}"));
        }
        if let Some(v) = &self.min_size {
            p.push(format!("min_size = {v}"));
        }
        if let Some(v) = &self.max_size {
            p.push(format!("max_size = {v}"));
        }
        if let Some(v) = &self.removable {
            p.push(format!("removable = {v}"));
        }
        if let Some(v) = &self.rotational {
            p.push(format!("rotational = {v}"));
        }
        p.join(", ")
    }

    /// Check the criteria themselves (a glob that does not compile, an
    /// empty range).
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            bail!("give at least one of by_id, serial, model, min_size, max_size, removable, rotational");
        }
        if let Some(m) = &self.model {
            glob::Pattern::new(m).with_context(|| format!("model = {m:?} is not a valid glob"))?;
        }
        if let (Some(a), Some(b)) = (self.min_size, self.max_size) {
            if a > b {
                bail!("min_size ({a}) is larger than max_size ({b})");
            }
        }
        Ok(())
    }

    /// Does this device meet every criterion? (Call [`validate`] first;
    /// an invalid glob matches nothing.)
    ///
    /// [`validate`]: DiskSelector::validate
    pub fn matches(&self, d: &BlockDevice) -> bool {
        let by_id = self.by_id.as_deref().is_none_or(|want| {
            let want = want.strip_prefix("/dev/disk/by-id/").unwrap_or(want);
            d.by_id.iter().any(|n| n == want)
        });
        let serial = self
            .serial
            .as_deref()
            .is_none_or(|s| d.serial.as_deref() == Some(s));
        let model = self.model.as_deref().is_none_or(|g| {
            let m = d.model.as_deref().unwrap_or("");
            glob::Pattern::new(g).is_ok_and(|p| p.matches(m))
        });
        let size = Size(d.size_bytes);
        by_id
            && serial
            && model
            && self.min_size.is_none_or(|m| size >= m)
            && self.max_size.is_none_or(|m| size <= m)
            && self.removable.is_none_or(|r| d.removable == r)
            && self.rotational.is_none_or(|r| d.rotational == r)
    }

    /// The one offered disk this selector names. Errors list what was
    /// offered, or what matched, and say when the only match is a disk that
    /// is not offered (the boot medium, a disk in use).
    pub fn select<'a>(&self, inv: &Inventory, survey: &'a Survey) -> Result<&'a Candidate> {
        self.validate()?;
        let hits: Vec<&Candidate> = survey
            .candidates
            .iter()
            .filter(|c| self.matches(c.disk()))
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => {
                let refused: Vec<String> = survey
                    .excluded
                    .iter()
                    .filter(|e| inv.device(&e.name).is_some_and(|d| self.matches(d)))
                    .map(|e| format!("{} ({})", e.name, e.reason))
                    .collect();
                let offered: Vec<String> = survey
                    .candidates
                    .iter()
                    .map(|c| format!("  {}", c.summary()))
                    .collect();
                let mut msg = format!("no offered disk matches {}", self.describe());
                if !refused.is_empty() {
                    msg.push_str(&format!(
                        "; matching but never offered: {}",
                        refused.join(", ")
                    ));
                }
                if offered.is_empty() {
                    msg.push_str("; no disk is offered on this machine");
                } else {
                    msg.push_str(&format!("; offered disks:\n{}", offered.join("\n")));
                }
                bail!(msg)
            }
            many => bail!(
                "{} disks match {}; a preseed must name exactly one (add by_id or serial):\n{}",
                many.len(),
                self.describe(),
                many.iter()
                    .map(|c| format!("  {}", c.summary()))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::survey;
    use crate::testdata::*;

    fn sel(f: impl FnOnce(&mut DiskSelector)) -> DiskSelector {
        let mut s = DiskSelector::default();
        f(&mut s);
        s
    }

    fn pick(s: &DiskSelector) -> Result<String> {
        let inv = usb_boot();
        let sv = survey(&inv);
        s.select(&inv, &sv).map(|c| c.disk().name.clone())
    }

    #[test]
    fn each_criterion_selects() {
        assert_eq!(
            pick(&sel(|s| s.by_id = Some("ata-ST2000DM008_ZFL0ABCD".into()))).unwrap(),
            "sdb"
        );
        assert_eq!(
            pick(&sel(
                |s| s.by_id = Some("/dev/disk/by-id/nvme-eui.0025385b71b0d0e1".into())
            ))
            .unwrap(),
            "nvme0n1"
        );
        assert_eq!(
            pick(&sel(|s| s.serial = Some("ZFL0ABCD".into()))).unwrap(),
            "sdb"
        );
        assert_eq!(
            pick(&sel(|s| s.model = Some("Samsung SSD 9*".into()))).unwrap(),
            "nvme0n1"
        );
        assert_eq!(
            pick(&sel(|s| s.min_size = Some(Size(1000 * GB)))).unwrap(),
            "sdb"
        );
        assert_eq!(
            pick(&sel(|s| s.max_size = Some(Size(1000 * GB)))).unwrap(),
            "nvme0n1"
        );
        assert_eq!(pick(&sel(|s| s.rotational = Some(true))).unwrap(), "sdb");
        assert_eq!(
            pick(&sel(|s| {
                s.model = Some("*".into());
                s.rotational = Some(false);
            }))
            .unwrap(),
            "nvme0n1"
        );
    }

    #[test]
    fn must_match_exactly_one() {
        let err = pick(&sel(|s| s.removable = Some(false)))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("2 disks match removable = false"), "{err}");
        assert!(
            err.contains("nvme-Samsung") && err.contains("ata-ST2000DM008_ZFL0ABCD"),
            "{err}"
        );
        let err = pick(&sel(|s| s.serial = Some("NOPE".into())))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no offered disk matches serial = \"NOPE\"; offered disks:"),
            "{err}"
        );
    }

    #[test]
    fn the_boot_medium_is_never_selected_and_the_error_says_why() {
        let err = pick(&sel(|s| s.serial = Some("4C530001230519".into())))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("matching but never offered: sda (the boot medium"),
            "{err}"
        );
        let err = pick(&sel(|s| s.removable = Some(true)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("never offered: sda"), "{err}");
    }

    #[test]
    fn broken_selectors_are_refused() {
        assert!(pick(&DiskSelector::default())
            .unwrap_err()
            .to_string()
            .contains("at least one"));
        assert!(pick(&sel(|s| s.model = Some("[".into())))
            .unwrap_err()
            .to_string()
            .contains("not a valid glob"));
        let err = pick(&sel(|s| {
            s.min_size = Some(Size(2 * GB));
            s.max_size = Some(Size(GB));
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("larger than max_size"), "{err}");
    }
}
