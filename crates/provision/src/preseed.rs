//! The preseed: an unattended first boot, as a TOML file.
//!
//! Found as `anklume-seed.toml` at the root of a volume labelled
//! `ANKLUME-SEED` (see [`crate::seed`]) or given on the command line.
//! Unknown keys are refused; every error names the file, the line and the
//! key. The schema, with an example, is in `docs/firstboot.md`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::disks::survey;
use crate::inventory::Inventory;
use crate::plan::{
    check_volume_name, default_datasets, default_volumes, Argon2id, Filesystem, Luks, Plan, Secret,
    ZFS_POOL,
};
use crate::selector::DiskSelector;
use crate::size::Size;

/// The preseed's file name on a seed volume.
pub const SEED_FILE: &str = "anklume-seed.toml";

/// `[disk]`: which disk, and the consent to wipe it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    pub by_id: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub min_size: Option<Size>,
    pub max_size: Option<Size>,
    pub removable: Option<bool>,
    pub rotational: Option<bool>,
    /// The disk's by-id name or serial: required to wipe a disk that is not
    /// blank.
    pub wipe: Option<String>,
}

impl DiskSection {
    pub fn selector(&self) -> DiskSelector {
        DiskSelector {
            by_id: self.by_id.clone(),
            serial: self.serial.clone(),
            model: self.model.clone(),
            min_size: self.min_size,
            max_size: self.max_size,
            removable: self.removable,
            rotational: self.rotational,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    #[default]
    Btrfs,
    Zfs,
}

/// A subvolume or dataset name, checked while parsing (so the error
/// points at its line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolName(pub String);

impl<'de> Deserialize<'de> for VolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_volume_name(&s).map_err(serde::de::Error::custom)?;
        Ok(VolName(s))
    }
}

/// `[pool]`: the filesystem on the unlocked pool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    #[serde(default)]
    pub filesystem: FsKind,
    /// BTRFS subvolumes (default: incus, anklume, snapshots).
    pub subvolumes: Option<Vec<VolName>>,
    /// ZFS pool name (default: anklume).
    pub zfs_pool: Option<VolName>,
    /// ZFS datasets (default: incus, anklume).
    pub datasets: Option<Vec<VolName>>,
}

/// `[encryption]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// The passphrase itself (lab machines, tests).
    pub passphrase: Option<String>,
    /// A file holding the passphrase (first line), relative to the
    /// preseed's folder.
    pub passphrase_file: Option<String>,
    #[serde(default)]
    pub tpm2: bool,
    /// Explicit argon2id costs (default: 1 GiB capped at a quarter of RAM,
    /// 4 iterations, 4 lanes).
    pub argon2id: Option<Argon2id>,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreseedFile {
    pub disk: Spanned<DiskSection>,
    pub pool: Option<Spanned<PoolSection>>,
    pub encryption: Spanned<EncryptionSection>,
}

/// A preseed read from disk, its passphrase loaded (so a seed volume can be
/// unmounted right after).
#[derive(Debug, Clone)]
pub struct Preseed {
    /// Where it came from, for messages.
    pub origin: String,
    /// Byte offsets where the file's lines start (for error positions; the
    /// text itself, passphrase included, is not kept).
    line_starts: Vec<usize>,
    pub file: PreseedFile,
    passphrase: Secret,
}

/// `line L, column C` of byte offset `at`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Preseed {
    /// Parse `text`; `origin` names it in errors; `base` is the folder a
    /// `passphrase_file` is relative to.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Preseed> {
        let de = toml::Deserializer::new(text);
        let mut file: PreseedFile = serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned sections show up as a private field in the path.
            let path = e
                .path()
                .to_string()
                .replace("$__serde_spanned_private_value.", "")
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            let at = match inner.span() {
                Some(s) => {
                    let (l, c) = position(text, s.start);
                    format!("line {l}, column {c}: ")
                }
                None => String::new(),
            };
            let key = if path == "." || path.is_empty() {
                String::new()
            } else {
                format!("at `{path}`: ")
            };
            anyhow!("{origin}: {at}{key}{}", inner.message().trim_end())
        })?;
        let me = |section: &str, span: std::ops::Range<usize>, msg: String| {
            let (l, _) = position(text, span.start);
            anyhow!("{origin}: line {l}: [{section}]: {msg}")
        };
        let enc = &file.encryption;
        let passphrase = match (&enc.get_ref().passphrase, &enc.get_ref().passphrase_file) {
            (Some(_), Some(_)) => {
                return Err(me(
                    "encryption",
                    enc.span(),
                    "give passphrase or passphrase_file, not both".into(),
                ))
            }
            (None, None) => {
                return Err(me(
                    "encryption",
                    enc.span(),
                    "give passphrase or passphrase_file".into(),
                ))
            }
            (Some(p), None) => Secret::new(p.clone())
                .map_err(|e| me("encryption", enc.span(), format!("passphrase: {e}")))?,
            (None, Some(f)) => {
                let path: PathBuf = base.join(f);
                let content = std::fs::read_to_string(&path).map_err(|e| {
                    me(
                        "encryption",
                        enc.span(),
                        format!("passphrase_file {}: {e}", path.display()),
                    )
                })?;
                let first = content.lines().next().unwrap_or("");
                Secret::new(first).map_err(|e| {
                    me(
                        "encryption",
                        enc.span(),
                        format!("passphrase_file {}: {e}", path.display()),
                    )
                })?
            }
        };
        // The passphrase lives on only as a `Secret` (hidden from Debug,
        // zeroed when dropped).
        file.encryption.get_mut().passphrase = None;
        let disk = &file.disk;
        disk.get_ref()
            .selector()
            .validate()
            .map_err(|e| me("disk", disk.span(), e.to_string()))?;
        if let Some(pool) = &file.pool {
            let p = pool.get_ref();
            let wrong_fs = match p.filesystem {
                FsKind::Btrfs if p.datasets.is_some() || p.zfs_pool.is_some() => {
                    Some("datasets and zfs_pool are for filesystem = \"zfs\"")
                }
                FsKind::Zfs if p.subvolumes.is_some() => {
                    Some("subvolumes are for filesystem = \"btrfs\"")
                }
                _ => None,
            };
            if let Some(msg) = wrong_fs {
                return Err(me("pool", pool.span(), msg.into()));
            }
        }
        Ok(Preseed {
            origin: origin.to_string(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            file,
            passphrase,
        })
    }

    /// Read and parse a preseed file.
    pub fn load(path: &Path) -> Result<Preseed> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the preseed {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Preseed::parse(&text, &path.display().to_string(), base)
    }

    fn err_at(
        &self,
        section: &str,
        span: std::ops::Range<usize>,
        msg: impl std::fmt::Display,
    ) -> anyhow::Error {
        let l = self.line_starts.partition_point(|&s| s <= span.start);
        anyhow!("{}: line {l}: [{section}]: {msg}", self.origin)
    }

    /// The plan this preseed asks for on this machine: the selector must
    /// match exactly one offered disk, and a disk that is not blank is
    /// wiped only when `wipe` names it.
    pub fn plan(&self, inv: &Inventory) -> Result<Plan> {
        let sv = survey(inv);
        let disk = &self.file.disk;
        let d = disk.get_ref();
        let cand = d
            .selector()
            .select(inv, &sv)
            .map_err(|e| self.err_at("disk", disk.span(), e))?
            .clone();
        let wipe = match &d.wipe {
            Some(w) => Some(
                cand.consent(w)
                    .map_err(|e| self.err_at("disk", disk.span(), format!("wipe = {w:?}: {e}")))?,
            ),
            None if cand.is_blank() => None,
            None => {
                return Err(self.err_at(
                    "disk",
                    disk.span(),
                    format!(
                    "{} is not blank ({}); to wipe it, add wipe = {:?} (its by-id name or serial)",
                    cand.label(),
                    cand.contents(),
                    cand.by_id()
                        .or(cand.disk().serial.as_deref())
                        .unwrap_or_default()
                ),
                ))
            }
        };
        let default_pool = PoolSection::default();
        let pool = self
            .file
            .pool
            .as_ref()
            .map_or(&default_pool, |p| p.get_ref());
        let names = |v: &Option<Vec<VolName>>| {
            v.as_ref()
                .map(|v| v.iter().map(|n| n.0.clone()).collect::<Vec<_>>())
        };
        let filesystem = match pool.filesystem {
            FsKind::Btrfs => Filesystem::Btrfs {
                subvolumes: names(&pool.subvolumes).unwrap_or_else(default_volumes),
            },
            FsKind::Zfs => Filesystem::Zfs {
                pool: pool
                    .zfs_pool
                    .as_ref()
                    .map_or_else(|| ZFS_POOL.to_string(), |n| n.0.clone()),
                datasets: names(&pool.datasets).unwrap_or_else(default_datasets),
            },
        };
        let enc = self.file.encryption.get_ref();
        if enc.tpm2 && !inv.tpm2 {
            bail!(self.err_at(
                "encryption",
                self.file.encryption.span(),
                "tpm2 = true, but this machine has no TPM 2.0"
            ));
        }
        let argon = enc
            .argon2id
            .unwrap_or_else(|| Argon2id::for_machine(inv.mem_total_kib));
        Plan::new(
            cand,
            wipe,
            filesystem,
            Luks::new(argon),
            enc.tpm2,
            self.passphrase.clone(),
        )
        .map_err(|e| anyhow!("{}: {e}", self.origin))
    }
}

#[cfg(test)]
mod tests;
