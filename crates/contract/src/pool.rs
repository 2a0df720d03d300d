//! Where the unlocked data pool is mounted, and where `infra.yml` lies on
//! it (until the pool pointer on the persist partition says otherwise).

/// Mount point of the data pool's file system.
pub const POOL_DIR: &str = "/var/lib/anklume/pool";
/// `infra.yml` on the pool, relative to [`POOL_DIR`] (in the `anklume`
/// subvolume or dataset).
pub const INFRA_ON_POOL: &str = "anklume/infra.yml";

/// This boot's unlock of the pool, written by whoever unlocked it
/// (`anklume pool unlock`, or the first boot that made the pool) in the
/// run folder (`/run/anklume`), read by `anklume status`.
pub const UNLOCK_RECORD: &str = "pool-unlock.json";
/// [`UNLOCK_RECORD`] on the running system.
pub const UNLOCK_RECORD_PATH: &str = "/run/anklume/pool-unlock.json";

/// What unlocked the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnlockedBy {
    /// The systemd-tpm2 token in the LUKS2 header (no one typed anything).
    Tpm2,
    /// The passphrase (or the recovery key), typed at the prompt.
    Passphrase,
    /// The first boot made the pool and left it unlocked.
    FirstBoot,
}

impl std::fmt::Display for UnlockedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnlockedBy::Tpm2 => "the TPM",
            UnlockedBy::Passphrase => "passphrase",
            UnlockedBy::FirstBoot => "the first boot (pool just made)",
        })
    }
}

/// The record in [`UNLOCK_RECORD`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockRecord {
    /// The LUKS2 partition (`/dev/nvme0n1p1`).
    pub partition: String,
    pub by: UnlockedBy,
}

impl UnlockRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an unlock record serialises") + "\n"
    }

    /// The record in `run_dir`, `None` when there is none (no unlock this
    /// boot, or an older OS).
    pub fn read(run_dir: &std::path::Path) -> Result<Option<UnlockRecord>, String> {
        let p = run_dir.join(UNLOCK_RECORD);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", p.display())),
        }
    }
}

/// Where the persist partition is mounted (by the initrd), when the boot
/// medium has one: a stick or disk written with the image, not a CD, a
/// Ventoy stick or a boot copied to RAM.
pub const PERSIST_DIR: &str = "/var/lib/anklume/persist";
/// The pool pointer on the persist partition ([`PoolPointer`]).
pub const POINTER_PATH: &str = "/var/lib/anklume/persist/pool.json";

/// Which LUKS2 partition is this machine's pool, remembered on the persist
/// partition by the first unlock that finds it: with it, the pool is found
/// among several plugged-in disks labelled `anklume-pool` (another
/// machine's pool on a USB disk), instead of refusing to guess. Without
/// persist, or with a pointer naming a partition that is not here, the
/// pool is found by its label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolPointer {
    /// The GPT partition's unique GUID (`PARTUUID`), lower case.
    pub partuuid: String,
}

impl PoolPointer {
    pub fn new(partuuid: &str) -> PoolPointer {
        PoolPointer {
            partuuid: partuuid.to_ascii_lowercase(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a pool pointer serialises") + "\n"
    }

    /// Parse a pointer; the error says what is wrong (unknown keys refused).
    pub fn parse(text: &str) -> Result<PoolPointer, String> {
        let p: PoolPointer = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if p.partuuid.is_empty() {
            return Err("partuuid is empty".into());
        }
        Ok(PoolPointer::new(&p.partuuid))
    }

    /// Does this pointer name the partition with `partuuid`?
    pub fn names(&self, partuuid: &str) -> bool {
        self.partuuid.eq_ignore_ascii_case(partuuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unlock_record_round_trips_and_refuses_unknown_keys() {
        let d = std::env::temp_dir().join(format!("anklume-unlock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(UnlockRecord::read(&d).unwrap(), None);
        let r = UnlockRecord {
            partition: "/dev/vdb1".into(),
            by: UnlockedBy::Tpm2,
        };
        assert_eq!(
            r.to_json(),
            "{\"partition\":\"/dev/vdb1\",\"by\":\"tpm2\"}\n"
        );
        std::fs::write(d.join(UNLOCK_RECORD), r.to_json()).unwrap();
        assert_eq!(UnlockRecord::read(&d).unwrap(), Some(r));
        std::fs::write(
            d.join(UNLOCK_RECORD),
            "{\"partition\":\"/dev/vdb1\",\"by\":\"tpm2\",\"x\":1}",
        )
        .unwrap();
        let e = UnlockRecord::read(&d).unwrap_err();
        assert!(
            e.contains("pool-unlock.json") && e.contains("unknown field"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_pool_pointer_round_trips_and_refuses_unknown_keys_and_empty_ids() {
        let p = PoolPointer::new("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(
            p.to_json(),
            "{\"partuuid\":\"0fc63daf-8483-4772-8e79-3d69d8477de4\"}\n"
        );
        assert_eq!(PoolPointer::parse(&p.to_json()).unwrap(), p);
        assert!(p.names("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
        assert!(!p.names("0fc63daf-8483-4772-8e79-3d69d8477de5"));
        let e = PoolPointer::parse("{\"partuuid\":\"x\",\"disk\":\"sdb\"}").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = PoolPointer::parse("{\"partuuid\":\"\"}").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert!(PoolPointer::parse("not json").is_err());
    }
}
