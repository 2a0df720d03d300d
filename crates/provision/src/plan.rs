//! The typed pool plan: what will be written, shown in full before anything
//! is. The wizard and the preseed both end here.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::disks::{Candidate, WipeConsent};

/// The LUKS2 label every boot scans for to find the pool.
pub const POOL_LABEL: &str = "anklume-pool";
/// The GPT partition name of the pool's single partition.
pub const POOL_PARTLABEL: &str = "anklume-pool";
/// The device-mapper name of the unlocked pool (`/dev/mapper/anklume-pool`).
pub const POOL_MAPPING: &str = "anklume-pool";
/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 8;

/// Filesystem on the unlocked pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Filesystem {
    /// BTRFS with one subvolume per concern.
    Btrfs { subvolumes: Vec<String> },
    /// A ZFS pool on the LUKS mapping, one dataset per concern.
    Zfs { pool: String, datasets: Vec<String> },
}

impl Filesystem {
    /// Default BTRFS layout: Incus's state and storage, anklume's own data
    /// (`infra.yml`, the Ansible tree), snapshots.
    pub fn btrfs_default() -> Filesystem {
        Filesystem::Btrfs {
            subvolumes: default_volumes(),
        }
    }

    pub fn zfs_default() -> Filesystem {
        Filesystem::Zfs {
            pool: ZFS_POOL.into(),
            datasets: default_datasets(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Filesystem::Btrfs { .. } => "btrfs",
            Filesystem::Zfs { .. } => "zfs",
        }
    }
}

/// The ZFS pool's default name.
pub const ZFS_POOL: &str = "anklume";

/// Default ZFS datasets (snapshots are native to ZFS).
pub fn default_datasets() -> Vec<String> {
    vec!["incus".into(), "anklume".into()]
}

/// Default BTRFS subvolumes.
pub fn default_volumes() -> Vec<String> {
    vec!["incus".into(), "anklume".into(), "snapshots".into()]
}

/// Check a subvolume or dataset name: one path component, portable
/// characters only.
pub fn check_volume_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && !n.starts_with(['.', '-'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok {
        bail!("{n:?} is not a valid volume name (letters, digits, - _ . @; not starting with . or -; at most 64)");
    }
    Ok(())
}

/// Argon2id cost parameters, given explicitly (cryptsetup does not
/// benchmark them on the machine, so every machine gets the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2id {
    /// Memory cost in KiB (cryptsetup's `--pbkdf-memory`).
    pub memory_kib: u32,
    /// Time cost (`--pbkdf-force-iterations`).
    pub iterations: u32,
    /// Lanes (`--pbkdf-parallel`).
    pub parallel: u32,
}

impl Argon2id {
    /// 1 GiB, 4 passes, 4 lanes; memory capped at a quarter of RAM so the
    /// initrd can unlock on a small machine.
    pub fn for_machine(mem_total_kib: Option<u64>) -> Argon2id {
        let cap = mem_total_kib.map_or(1 << 20, |m| (m / 4).clamp(64 << 10, 1 << 20));
        Argon2id {
            memory_kib: cap as u32,
            iterations: 4,
            parallel: 4,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(32 << 10..=4 << 20).contains(&self.memory_kib) {
            bail!(
                "argon2id.memory_kib = {}: must be between 32768 (32 MiB) and 4194304 (4 GiB)",
                self.memory_kib
            );
        }
        if !(1..=100).contains(&self.iterations) {
            bail!(
                "argon2id.iterations = {}: must be between 1 and 100",
                self.iterations
            );
        }
        if !(1..=16).contains(&self.parallel) {
            bail!(
                "argon2id.parallel = {}: must be between 1 and 16",
                self.parallel
            );
        }
        Ok(())
    }
}

/// LUKS2 parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Luks {
    pub cipher: &'static str,
    pub key_bits: u32,
    pub sector_size: u32,
    pub label: &'static str,
    pub argon2id: Argon2id,
}

impl Luks {
    pub fn new(argon2id: Argon2id) -> Luks {
        Luks {
            cipher: "aes-xts-plain64",
            key_bits: 512,
            sector_size: 4096,
            label: POOL_LABEL,
            argon2id,
        }
    }
}

/// A passphrase: never printed, never serialized, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Result<Secret> {
        let s = s.into();
        if s.chars().count() < MIN_PASSPHRASE {
            bail!("the passphrase must have at least {MIN_PASSPHRASE} characters");
        }
        if s.contains(['\n', '\r']) {
            bail!("the passphrase must be one line");
        }
        Ok(Secret(zeroize::Zeroizing::new(s)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Everything the executor will do, decided before it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    disk: Candidate,
    wipe: Option<WipeConsent>,
    pub filesystem: Filesystem,
    pub luks: Luks,
    pub tpm2: bool,
    passphrase: Secret,
}

impl Plan {
    /// A plan for `disk`. A disk that is not blank needs a consent given
    /// for that very disk; the parameters are checked here, before
    /// anything could be written.
    pub fn new(
        disk: Candidate,
        wipe: Option<WipeConsent>,
        filesystem: Filesystem,
        luks: Luks,
        tpm2: bool,
        passphrase: Secret,
    ) -> Result<Plan> {
        match &wipe {
            Some(w) if !w.covers(&disk) => {
                bail!(
                    "the wipe confirmation was given for another disk than {}",
                    disk.label()
                )
            }
            None if !disk.is_blank() => bail!(
                "{} is not blank ({}): wiping it needs a confirmation naming it",
                disk.label(),
                disk.contents()
            ),
            _ => {}
        }
        luks.argon2id.validate()?;
        let names = match &filesystem {
            Filesystem::Btrfs { subvolumes } => subvolumes,
            Filesystem::Zfs { pool, datasets } => {
                check_volume_name(pool)?;
                datasets
            }
        };
        if names.is_empty() {
            bail!("the {} layout needs at least one volume", filesystem.name());
        }
        for (i, n) in names.iter().enumerate() {
            check_volume_name(n)?;
            if names[..i].contains(n) {
                bail!("volume {n:?} is listed twice");
            }
        }
        Ok(Plan {
            disk,
            wipe,
            filesystem,
            luks,
            tpm2,
            passphrase,
        })
    }

    pub fn disk(&self) -> &Candidate {
        &self.disk
    }

    pub fn wipe(&self) -> Option<&WipeConsent> {
        self.wipe.as_ref()
    }

    pub fn passphrase(&self) -> &Secret {
        &self.passphrase
    }

    /// The pool partition: partition 1 of the disk, through its by-id name.
    pub fn partition_path(&self) -> String {
        let p = self.disk.path();
        if p.starts_with("/dev/disk/by-id/") {
            format!("{p}-part1")
        } else if p.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{p}p1")
        } else {
            format!("{p}1")
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.disk.disk();
        writeln!(f, "Pool plan")?;
        writeln!(f, "  disk:        {}", self.disk.path())?;
        writeln!(
            f,
            "               kernel name {}, {}",
            d.name,
            self.disk.size()
        )?;
        if let Some(m) = &d.model {
            writeln!(f, "               model {m}")?;
        }
        if let Some(s) = &d.serial {
            writeln!(f, "               serial {s}")?;
        }
        writeln!(f, "  now on it:   {}", self.disk.contents())?;
        match &self.wipe {
            Some(w) => writeln!(
                f,
                "  wipe:        YES, everything on it is destroyed (confirmed as {:?})",
                w.named_as()
            )?,
            None => writeln!(f, "  wipe:        nothing to destroy (blank disk)")?,
        }
        writeln!(
            f,
            "  partition:   GPT, one partition {:?} over the whole disk ({})",
            POOL_PARTLABEL,
            self.partition_path()
        )?;
        let l = &self.luks;
        writeln!(
            f,
            "  encryption:  LUKS2 label {:?}, {} {}-bit, {} B sectors",
            l.label, l.cipher, l.key_bits, l.sector_size
        )?;
        writeln!(
            f,
            "               argon2id memory {} KiB ({} MiB), iterations {}, parallel {}",
            l.argon2id.memory_kib,
            l.argon2id.memory_kib / 1024,
            l.argon2id.iterations,
            l.argon2id.parallel
        )?;
        writeln!(
            f,
            "  keys:        passphrase (set, {} characters); a recovery key, shown once",
            self.passphrase.0.chars().count()
        )?;
        writeln!(
            f,
            "  TPM2:        {}",
            if self.tpm2 {
                "enrol (unlock without a prompt while PCR 7, Secure Boot state, is unchanged)"
            } else {
                "no (passphrase at every boot)"
            }
        )?;
        match &self.filesystem {
            Filesystem::Btrfs { subvolumes } => {
                writeln!(f, "  filesystem:  btrfs on /dev/mapper/{POOL_MAPPING}")?;
                writeln!(f, "  subvolumes:  {}", subvolumes.join(", "))?;
            }
            Filesystem::Zfs { pool, datasets } => {
                writeln!(
                    f,
                    "  filesystem:  zfs pool {pool:?} on /dev/mapper/{POOL_MAPPING}"
                )?;
                writeln!(f, "  datasets:    {}", datasets.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::survey;
    use crate::testdata::*;

    fn pass() -> Secret {
        Secret::new("correct horse").unwrap()
    }

    fn luks() -> Luks {
        Luks::new(Argon2id::for_machine(Some(16 << 20)))
    }

    #[test]
    fn a_blank_disk_needs_no_consent_and_the_plan_shows_everything() {
        let s = survey(&usb_boot());
        let nvme = s.candidates[0].clone();
        let p = Plan::new(
            nvme,
            None,
            Filesystem::btrfs_default(),
            luks(),
            false,
            pass(),
        )
        .unwrap();
        let text = p.to_string();
        for want in [
            "disk:        /dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456",
            "kernel name nvme0n1, 500.0 GB",
            "serial S466NX0M123456",
            "wipe:        nothing to destroy",
            "(/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_500GB_S466NX0M123456-part1)",
            "LUKS2 label \"anklume-pool\", aes-xts-plain64 512-bit",
            "argon2id memory 1048576 KiB (1024 MiB), iterations 4, parallel 4",
            "passphrase (set, 13 characters)",
            "TPM2:        no",
            "subvolumes:  incus, anklume, snapshots",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("correct horse"));
        assert!(!format!("{p:?}").contains("correct horse"));
    }

    #[test]
    fn a_disk_with_data_needs_its_own_consent() {
        let mut inv = usb_boot();
        for d in &mut inv.devices {
            if d.name == "sdb" || d.name == "nvme0n1" {
                d.part_table = Some("gpt".into());
            }
        }
        let s = survey(&inv);
        let (nvme, sdb) = (s.candidates[0].clone(), s.candidates[1].clone());
        let err = Plan::new(
            sdb.clone(),
            None,
            Filesystem::btrfs_default(),
            luks(),
            false,
            pass(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not blank (gpt partition table)"), "{err}");
        let other = nvme.consent("S466NX0M123456").unwrap();
        let err = Plan::new(
            sdb.clone(),
            Some(other),
            Filesystem::btrfs_default(),
            luks(),
            false,
            pass(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("another disk"), "{err}");
        let ok = sdb.consent("ata-ST2000DM008_ZFL0ABCD").unwrap();
        let p = Plan::new(
            sdb,
            Some(ok),
            Filesystem::zfs_default(),
            luks(),
            true,
            pass(),
        )
        .unwrap();
        let text = p.to_string();
        assert!(text.contains("wipe:        YES"), "{text}");
        assert!(
            text.contains("confirmed as \"ata-ST2000DM008_ZFL0ABCD\""),
            "{text}"
        );
        assert!(text.contains("zfs pool \"anklume\""), "{text}");
        assert!(text.contains("TPM2:        enrol"), "{text}");
    }

    #[test]
    fn parameters_are_checked() {
        let s = survey(&usb_boot());
        let c = || s.candidates[0].clone();
        let bad_luks = Luks::new(Argon2id {
            memory_kib: 1024,
            iterations: 4,
            parallel: 4,
        });
        assert!(Plan::new(
            c(),
            None,
            Filesystem::btrfs_default(),
            bad_luks,
            false,
            pass()
        )
        .is_err());
        for subvolumes in [
            vec![],
            vec!["a/b".to_string()],
            vec!["..".into()],
            vec!["x".into(), "x".into()],
        ] {
            let fs = Filesystem::Btrfs {
                subvolumes: subvolumes.clone(),
            };
            assert!(
                Plan::new(c(), None, fs, luks(), false, pass()).is_err(),
                "{subvolumes:?}"
            );
        }
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("two\nlines here").is_err());
    }

    #[test]
    fn argon2_memory_follows_the_machine() {
        assert_eq!(Argon2id::for_machine(None).memory_kib, 1 << 20);
        assert_eq!(Argon2id::for_machine(Some(2 << 20)).memory_kib, 512 << 10);
        assert_eq!(Argon2id::for_machine(Some(128 << 10)).memory_kib, 64 << 10);
    }
}
