//! The plan, carried out: partition, LUKS2, recovery key, TPM2, filesystem.
//!
//! [`steps`] maps a [`Plan`] to the exact command lines, a pure function
//! (unit-tested, printed by `--dry-run`); [`execute`] runs them. Secrets
//! never appear in a command line: the passphrase and the recovery key go
//! to the command's stdin. Every write goes to the plan's disk (by its
//! by-id path), its partition 1, or the pool's mapping — nothing else, and
//! [`verify_target`] re-reads the machine first to check the disk is still
//! the one planned, still offered, still not in use.
//!
//! Why the `cryptsetup` CLI and not `libcryptsetup-rs`: the binding needs
//! `libcryptsetup-dev`, bindgen and libclang at build time and links the C
//! library into the program, while the CLI (`cryptsetup-bin`, already in
//! the image for `veritysetup`, and what the initrd unlocks with) takes the
//! same explicit parameters, reads secrets on stdin, and through `Cmd`
//! every call is traced and every failure carries cryptsetup's own message.

use anklume_cmd::Cmd;
use anyhow::{bail, Result};

use crate::disks::survey;
use crate::inventory::Inventory;
use crate::plan::{Filesystem, Plan, Secret, POOL_LABEL, POOL_MAPPING, POOL_PARTLABEL};

/// Where the new filesystem is mounted while its subvolumes are made.
pub const SETUP_MOUNT: &str = "/run/anklume/pool-setup";
/// GPT type of the pool partition (sgdisk code 8309: Linux LUKS).
pub const LUKS_PART_TYPE: &str = "8309";

/// What a step reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Nothing,
    /// The passphrase.
    Passphrase,
    /// The passphrase, then the recovery key (`luksAddKey` reads the first
    /// `--keyfile-size` bytes as the unlocking key, the rest as the new one).
    PassphraseThenRecovery,
}

/// One command of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does, for the person watching.
    pub what: String,
    pub argv: Vec<String>,
    pub stdin: Stdin,
}

impl Step {
    pub(crate) fn new(what: impl Into<String>, argv: &[&str], stdin: Stdin) -> Step {
        Step {
            what: what.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin,
        }
    }

    /// The command line as shown (secrets are on stdin, not here).
    pub fn line(&self) -> String {
        let mut s = self.argv.join(" ");
        match self.stdin {
            Stdin::Nothing => {}
            Stdin::Passphrase => s.push_str("  < passphrase"),
            Stdin::PassphraseThenRecovery => s.push_str("  < passphrase + recovery key"),
        }
        s
    }

    /// What the command reads on stdin.
    pub fn input(&self, pass: &Secret, recovery: &RecoveryKey) -> Vec<u8> {
        match self.stdin {
            Stdin::Nothing => Vec::new(),
            Stdin::Passphrase => pass.expose().as_bytes().to_vec(),
            Stdin::PassphraseThenRecovery => {
                let mut input = pass.expose().as_bytes().to_vec();
                input.extend_from_slice(recovery.0.as_bytes());
                input
            }
        }
    }

    /// The command, its stdin filled.
    pub fn cmd(&self, pass: &Secret, recovery: &RecoveryKey) -> Cmd {
        self.cmd_with(self.input(pass, recovery))
    }

    fn cmd_with(&self, input: Vec<u8>) -> Cmd {
        let c = Cmd::new(&self.argv[0]).args(&self.argv[1..]);
        if self.stdin == Stdin::Nothing {
            c
        } else {
            c.input(input)
        }
    }
}

/// A recovery key: 256 random bits as 64 modhex characters in 8 groups
/// (systemd-cryptenroll's format: typable on any keyboard layout). Shown
/// once, stored nowhere, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey(zeroize::Zeroizing<String>);

const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";

impl RecoveryKey {
    pub fn generate() -> Result<RecoveryKey> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| anyhow::anyhow!("no randomness for the recovery key: {e}"))?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; 32]) -> RecoveryKey {
        let chars: Vec<char> = bytes
            .iter()
            .flat_map(|b| {
                [
                    MODHEX[(b >> 4) as usize] as char,
                    MODHEX[(b & 15) as usize] as char,
                ]
            })
            .collect();
        let groups: Vec<String> = chars.chunks(8).map(|c| c.iter().collect()).collect();
        RecoveryKey(zeroize::Zeroizing::new(groups.join("-")))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(<hidden>)")
    }
}

fn pbkdf_args(plan: &Plan) -> Vec<String> {
    let a = plan.luks.argon2id;
    vec![
        "--pbkdf".into(),
        "argon2id".into(),
        format!("--pbkdf-memory={}", a.memory_kib),
        format!("--pbkdf-force-iterations={}", a.iterations),
        format!("--pbkdf-parallel={}", a.parallel),
    ]
}

/// Wipe and partition the disk: one GPT partition over all of it.
pub fn partition_steps(plan: &Plan) -> Vec<Step> {
    partition_steps_on(plan, &plan.disk().path())
}

/// [`partition_steps`] on `disk` (the plan's disk; an image file in tests).
pub fn partition_steps_on(plan: &Plan, disk: &str) -> Vec<Step> {
    let disk = disk.to_string();
    let mut v = Vec::new();
    if plan.wipe().is_some() {
        v.push(Step::new(
            "erase the signatures on the disk",
            &["wipefs", "--all", "--force", &disk],
            Stdin::Nothing,
        ));
    }
    v.push(Step::new(
        "erase any partition table",
        &["sgdisk", "--zap-all", &disk],
        Stdin::Nothing,
    ));
    v.push(Step::new(
        "create the pool partition",
        &[
            "sgdisk",
            // The end too on a 1 MiB boundary: the last usable sector of a
            // disk seldom is, and LUKS2 with 4096-byte sectors refuses a
            // device whose size is not a multiple of them ("Device size is
            // not aligned to requested sector size", found in the VM).
            "--align-end",
            "--new=1:0:0",
            &format!("--typecode=1:{LUKS_PART_TYPE}"),
            &format!("--change-name=1:{POOL_PARTLABEL}"),
            &disk,
        ],
        Stdin::Nothing,
    ));
    v.push(Step::new(
        "wait for the new partition",
        &["udevadm", "settle", "--timeout=30"],
        Stdin::Nothing,
    ));
    v
}

/// LUKS2 on `target` (the pool partition; a file in tests) with the plan's
/// explicit parameters, then the recovery key in a second keyslot.
pub fn luks_steps(plan: &Plan, target: &str) -> Vec<Step> {
    let l = &plan.luks;
    let mut format: Vec<String> = [
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        l.cipher,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    format.push(format!("--key-size={}", l.key_bits));
    format.push(format!("--sector-size={}", l.sector_size));
    format.extend(pbkdf_args(plan));
    format.push(format!("--label={}", l.label));
    format.push("--key-file=-".into());
    format.push(target.into());
    let mut add: Vec<String> = vec![
        "cryptsetup".into(),
        "luksAddKey".into(),
        "--batch-mode".into(),
    ];
    add.extend(pbkdf_args(plan));
    add.push("--key-file=-".into());
    add.push(format!(
        "--keyfile-size={}",
        plan.passphrase().expose().len()
    ));
    add.push("--new-keyfile=/dev/stdin".into());
    add.push(target.into());
    vec![
        Step {
            what: "format LUKS2".into(),
            argv: format,
            stdin: Stdin::Passphrase,
        },
        Step {
            what: "add the recovery key".into(),
            argv: add,
            stdin: Stdin::PassphraseThenRecovery,
        },
    ]
}

/// Open the pool as `/dev/mapper/anklume-pool`.
pub fn open_step(part: &str) -> Step {
    Step::new(
        "unlock the pool",
        &[
            "cryptsetup",
            "open",
            "--type",
            "luks2",
            "--key-file=-",
            part,
            POOL_MAPPING,
        ],
        Stdin::Passphrase,
    )
}

pub fn close_step() -> Step {
    Step::new(
        "lock the pool",
        &["cryptsetup", "close", POOL_MAPPING],
        Stdin::Nothing,
    )
}

/// TPM2 enrolment bound to PCR 7 (the Secure Boot state).
pub fn tpm2_step(part: &str) -> Step {
    Step::new(
        "enrol the TPM2 (PCR 7)",
        &[
            "systemd-cryptenroll",
            "--tpm2-device=auto",
            "--tpm2-pcrs=7",
            "--unlock-key-file=/dev/stdin",
            part,
        ],
        Stdin::Passphrase,
    )
}

/// The filesystem on the open mapping, with its volumes.
pub fn filesystem_steps(plan: &Plan) -> Vec<Step> {
    let dev = format!("/dev/mapper/{POOL_MAPPING}");
    match &plan.filesystem {
        Filesystem::Btrfs { subvolumes } => {
            let mut v = vec![
                Step::new(
                    "make the btrfs filesystem",
                    &[
                        "mkfs.btrfs",
                        "--quiet",
                        &format!("--label={POOL_LABEL}"),
                        &dev,
                    ],
                    Stdin::Nothing,
                ),
                Step::new(
                    "mount it",
                    &["mount", "-t", "btrfs", &dev, SETUP_MOUNT],
                    Stdin::Nothing,
                ),
            ];
            for s in subvolumes {
                v.push(Step::new(
                    format!("subvolume {s}"),
                    &[
                        "btrfs",
                        "subvolume",
                        "create",
                        &format!("{SETUP_MOUNT}/{s}"),
                    ],
                    Stdin::Nothing,
                ));
            }
            v.push(Step::new(
                "unmount it",
                &["umount", SETUP_MOUNT],
                Stdin::Nothing,
            ));
            v
        }
        Filesystem::Zfs { pool, datasets } => {
            let mut v = vec![Step::new(
                "create the zfs pool",
                &[
                    "zpool",
                    "create",
                    "-o",
                    "ashift=12",
                    "-O",
                    "compression=lz4",
                    "-O",
                    "acltype=posixacl",
                    "-O",
                    "xattr=sa",
                    // Mounted by `mount -t zfs` at boot (unlock), in
                    // the places the btrfs layout has, not by zfs-mount.
                    "-O",
                    "mountpoint=legacy",
                    pool,
                    &dev,
                ],
                Stdin::Nothing,
            )];
            for d in datasets {
                v.push(Step::new(
                    format!("dataset {d}"),
                    &["zfs", "create", &format!("{pool}/{d}")],
                    Stdin::Nothing,
                ));
            }
            // The first infra.yml goes into the `anklume` dataset
            // (execute writes it before the unmount).
            {
                let dir = crate::unlock::zfs_anklume_dataset();
                if datasets.iter().any(|d| d == dir) {
                    v.push(Step::new(
                        format!("mount the {dir} dataset"),
                        &["mount", "-t", "zfs", &format!("{pool}/{dir}"), SETUP_MOUNT],
                        Stdin::Nothing,
                    ));
                    v.push(Step::new(
                        "unmount it",
                        &["umount", SETUP_MOUNT],
                        Stdin::Nothing,
                    ));
                }
            }
            v.push(Step::new(
                "export the pool",
                &["zpool", "export", pool],
                Stdin::Nothing,
            ));
            v
        }
    }
}

/// Every command, in order, as `--dry-run` shows them.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let part = plan.partition_path();
    let mut v = partition_steps(plan);
    v.extend(luks_steps(plan, &part));
    v.push(open_step(&part));
    if plan.tpm2 {
        v.push(tpm2_step(&part));
    }
    v.extend(filesystem_steps(plan));
    v.push(close_step());
    v
}

/// Re-read the machine just before writing: the planned disk must still be
/// there under the same device number, by-id name, serial and size, and
/// still be offered (not the boot medium, not in use); a disk that was
/// blank when planned must still be blank.
pub fn verify_target(plan: &Plan, now: &Inventory) -> Result<()> {
    let planned = plan.disk();
    let sv = survey(now);
    let Some(c) = sv
        .candidates
        .iter()
        .find(|c| c.disk().dev == planned.disk().dev)
    else {
        let why = sv
            .excluded_reason(&planned.disk().name)
            .map_or("it is gone".to_string(), |r| r.to_string());
        bail!(
            "{} is no longer offered ({why}): nothing was written",
            planned.label()
        );
    };
    let (a, b) = (planned.disk(), c.disk());
    if a.by_id != b.by_id || a.serial != b.serial || a.size_bytes != b.size_bytes {
        bail!(
            "the disk behind {} changed since the plan (by-id, serial or size differ): nothing was written",
            planned.label()
        );
    }
    if plan.wipe().is_none() && !c.is_blank() {
        bail!(
            "{} is no longer blank ({}): nothing was written",
            planned.label(),
            c.contents()
        );
    }
    Ok(())
}

mod run;
pub use run::{bootstrap_infra_path, check_blank, execute, leave_open, signatures, Runner, System};

#[cfg(test)]
mod tests;
