//! The slot manifest: what the ESP records about the OS in each slot
//! (`EFI/anklume/slot-<x>/manifest.json`, [`crate::bootfiles`]).

use serde::{Deserialize, Serialize};

/// Manifest of one slot image (JSON on the ESP and inside update bundles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotManifest {
    /// OS version, e.g. `0.1.0`.
    pub version: String,
    /// Kernel release of the slot's boot files, whose modules the slot's
    /// squashfs holds (`/usr/lib/modules/<kernel_version>`; `uname -r`).
    pub kernel_version: String,
    /// Size of the squashfs in bytes.
    pub data_size: u64,
    /// Byte offset of the verity superblock + tree inside the slot.
    pub hash_offset: u64,
    /// Number of 4 KiB data blocks covered by verity.
    pub data_blocks: u64,
    /// Verity salt, lower-case hex.
    pub salt: String,
    /// Verity root hash, lower-case hex.
    pub root_hash: String,
    /// The boot files of the slot's folder on the ESP
    /// ([`crate::bootfiles::LOADED`], then on a signed build
    /// [`crate::bootfiles::SIGNED`], in that order).
    pub boot_files: Vec<BootFile>,
}

/// One file of a slot's folder on the ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    /// File name inside the slot's folder (`vmlinuz`, `initrd.img`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

impl SlotManifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes") + "\n"
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let m: SlotManifest =
            serde_json::from_str(text).map_err(|e| format!("slot manifest: {e}"))?;
        let names: Vec<&str> = m.boot_files.iter().map(|f| f.name.as_str()).collect();
        if !crate::bootfiles::valid_boot_files(&names) {
            return Err(format!(
                "slot manifest: boot_files lists {names:?}, expected {:?} (+ {:?} when signed)",
                crate::bootfiles::LOADED,
                crate::bootfiles::SIGNED
            ));
        }
        Ok(m)
    }

    /// The entry of boot file `name`, if the manifest lists it.
    pub fn boot_file(&self, name: &str) -> Option<&BootFile> {
        self.boot_files.iter().find(|f| f.name == name)
    }

    /// Total size of the boot files.
    pub fn boot_files_size(&self) -> u64 {
        self.boot_files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfiles::{INITRD, KERNEL};

    fn sample() -> SlotManifest {
        SlotManifest {
            version: "0.1.0".into(),
            kernel_version: "6.12.0-1-amd64".into(),
            data_size: 8192,
            hash_offset: 8192,
            data_blocks: 2,
            salt: "00".repeat(32),
            root_hash: "ab".repeat(32),
            boot_files: vec![
                BootFile {
                    name: KERNEL.into(),
                    size: 10,
                    sha256: "cd".repeat(32),
                },
                BootFile {
                    name: INITRD.into(),
                    size: 20,
                    sha256: "ef".repeat(32),
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let m = sample();
        assert_eq!(SlotManifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.boot_file(INITRD).unwrap().size, 20);
        assert_eq!(m.boot_files_size(), 30);
        let bad = m.to_json().replacen('{', "{\"extra\": 1,", 1);
        assert!(SlotManifest::from_json(&bad).unwrap_err().contains("extra"));
    }

    #[test]
    fn refuses_a_manifest_without_both_boot_files() {
        let mut m = sample();
        m.boot_files.reverse();
        let err = SlotManifest::from_json(&m.to_json()).unwrap_err();
        assert!(err.contains("boot_files"), "{err}");
        m.boot_files.truncate(1);
        assert!(SlotManifest::from_json(&m.to_json()).is_err());
        let old = sample().to_json().replace("\"boot_files\"", "\"x\"");
        assert!(SlotManifest::from_json(&old).is_err());
        // A signed build's manifest adds the UKI last.
        let mut signed = sample();
        signed.boot_files.push(BootFile {
            name: crate::bootfiles::UKI.into(),
            size: 30,
            sha256: "12".repeat(32),
        });
        assert_eq!(SlotManifest::from_json(&signed.to_json()).unwrap(), signed);
        signed.boot_files.swap(1, 2);
        assert!(SlotManifest::from_json(&signed.to_json()).is_err());
    }
}
