//! The slot manifest: what the ESP records about the OS in each slot.

use serde::{Deserialize, Serialize};

/// Manifest of one slot image (JSON on the ESP and inside update bundles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotManifest {
    /// OS version, e.g. `0.1.0`.
    pub version: String,
    /// Kernel release inside the slot's squashfs (`uname -r`).
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
}

impl SlotManifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes") + "\n"
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("slot manifest: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let m = SlotManifest {
            version: "0.1.0".into(),
            kernel_version: "6.12.0-1-amd64".into(),
            data_size: 8192,
            hash_offset: 8192,
            data_blocks: 2,
            salt: "00".repeat(32),
            root_hash: "ab".repeat(32),
        };
        assert_eq!(SlotManifest::from_json(&m.to_json()).unwrap(), m);
        let bad = m.to_json().replacen('{', "{\"extra\": 1,", 1);
        assert!(SlotManifest::from_json(&bad).unwrap_err().contains("extra"));
    }
}
