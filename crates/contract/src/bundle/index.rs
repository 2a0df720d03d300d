//! The block index: per data block, a rolling weak checksum and a SHA-256.

use super::INDEX_ENTRY;

/// The rsync weak checksum of a block: `a | b << 16` with `a` the sum of
/// the bytes and `b` the sum of `(len - i) * byte[i]`, both mod 2^16. It
/// rolls: sliding one byte costs O(1).
pub fn weak_checksum(block: &[u8]) -> u32 {
    let (mut a, mut b) = (0u32, 0u32);
    let n = block.len() as u32;
    for (i, &x) in block.iter().enumerate() {
        a = a.wrapping_add(u32::from(x));
        b = b.wrapping_add((n - i as u32).wrapping_mul(u32::from(x)));
    }
    (a & 0xffff) | ((b & 0xffff) << 16)
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub weak: u32,
    pub sha256: [u8; 32],
}

impl IndexEntry {
    /// The entry of a 4096-byte block.
    pub fn of(block: &[u8]) -> IndexEntry {
        let d = ring::digest::digest(&ring::digest::SHA256, block);
        IndexEntry {
            weak: weak_checksum(block),
            sha256: d.as_ref().try_into().expect("32 bytes"),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.weak.to_le_bytes());
        out.extend_from_slice(&self.sha256);
    }

    /// Decode index bytes (a multiple of [`INDEX_ENTRY`]).
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<IndexEntry>, String> {
        if bytes.len() % INDEX_ENTRY != 0 {
            return Err(format!(
                "block index of {} bytes is not whole entries",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(INDEX_ENTRY)
            .map(|e| IndexEntry {
                weak: u32::from_le_bytes(e[0..4].try_into().expect("4 bytes")),
                sha256: e[4..].try_into().expect("32 bytes"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_checksum_rolls() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let n = 4096;
        let mut w = weak_checksum(&data[..n]);
        let (mut a, mut b) = (w & 0xffff, w >> 16);
        for s in 1..100 {
            let (out, inn) = (u32::from(data[s - 1]), u32::from(data[s + n - 1]));
            a = a.wrapping_sub(out).wrapping_add(inn) & 0xffff;
            b = b.wrapping_sub((n as u32).wrapping_mul(out)).wrapping_add(a) & 0xffff;
            w = a | (b << 16);
            assert_eq!(w, weak_checksum(&data[s..s + n]), "offset {s}");
        }
        let e = IndexEntry::of(&data[..4096]);
        let mut bytes = Vec::new();
        e.encode(&mut bytes);
        assert_eq!(IndexEntry::decode_all(&bytes).unwrap(), vec![e]);
        assert!(IndexEntry::decode_all(&bytes[1..]).is_err());
    }
}
