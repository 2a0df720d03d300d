//! dm-verity parameters of an OS slot (`veritysetup format` compatible).

/// Data and hash block size.
pub const BLOCK_SIZE: u64 = 4096;
/// Hash algorithm name as dm-verity and `veritysetup` spell it.
pub const HASH_ALGORITHM: &str = "sha256";
/// Superblock version written in front of the hash tree.
pub const SUPERBLOCK_VERSION: u32 = 1;
/// dm-verity hash format type (1 = the normal, non-Chrome OS format).
pub const HASH_TYPE: u32 = 1;
/// Salt length in bytes.
pub const SALT_SIZE: usize = 32;

/// Offset of the hash tree in a slot: the data size rounded up to a block.
pub fn hash_offset(data_size: u64) -> u64 {
    data_size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_offset_is_block_aligned_and_covers_data() {
        for size in [0, 1, 4095, 4096, 4097, 10 * 4096 + 3] {
            let off = hash_offset(size);
            assert_eq!(off % BLOCK_SIZE, 0);
            assert!(off >= size && off - size < BLOCK_SIZE);
        }
    }
}
