//! `anklume-build verity format|verify`: the veritysetup-compatible CLI.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{ensure, Context, Result};

use anklume_contract::verity::{BLOCK_SIZE, HASH_ALGORITHM, HASH_TYPE, SALT_SIZE};

use crate::cli::{VerityFormatArgs, VerityVerifyArgs};
use crate::verity::{self, FormatOptions, Params, VerifyError};

fn same_file(a: &File, b: &File) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (a.metadata()?, b.metadata()?);
    Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
}

pub fn format(a: &VerityFormatArgs) -> Result<()> {
    let salt = match &a.salt {
        Some(s) => verity::unhex(s).context("--salt")?,
        None => verity::random_bytes::<SALT_SIZE>()?.to_vec(),
    };
    let uuid = match &a.uuid {
        Some(u) => verity::parse_uuid(u).context("--uuid")?,
        None => verity::random_uuid()?,
    };
    ensure!(
        a.hash_offset % BLOCK_SIZE == 0,
        "--hash-offset {} is not a multiple of {BLOCK_SIZE}",
        a.hash_offset
    );
    let data = File::open(&a.data).with_context(|| format!("opening {}", a.data.display()))?;
    let hash = OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&a.hashfile)
        .with_context(|| format!("opening {}", a.hashfile.display()))?;
    let available = verity::file_blocks(&a.data)?;
    let data_blocks = a.data_blocks.unwrap_or(available);
    ensure!(
        data_blocks > 0,
        "{} holds no whole 4096-byte block",
        a.data.display()
    );
    ensure!(
        data_blocks <= available,
        "--data-blocks {data_blocks} exceeds the {available} blocks of {}",
        a.data.display()
    );
    if same_file(&data, &hash)? {
        ensure!(
            a.hash_offset >= data_blocks * BLOCK_SIZE,
            "Data area overlaps with hash area."
        );
    }
    let opts = FormatOptions {
        params: Params {
            data_blocks,
            salt,
            uuid,
        },
        hash_offset: a.hash_offset,
        data_offset: 0,
        threads: a.threads,
    };
    let f = verity::format(&data, &hash, &opts, &|_| {})
        .with_context(|| format!("formatting {}", a.hashfile.display()))?;
    hash.sync_all()
        .with_context(|| format!("syncing {}", a.hashfile.display()))?;
    let salt_hex = if f.params.salt.is_empty() {
        "-".to_string()
    } else {
        verity::hex(&f.params.salt)
    };
    println!("VERITY header information for {}", a.hashfile.display());
    println!("UUID:            \t{}", verity::format_uuid(&f.params.uuid));
    println!("Hash type:       \t{HASH_TYPE}");
    println!("Data blocks:     \t{}", f.params.data_blocks);
    println!("Data block size: \t{BLOCK_SIZE}");
    println!("Hash blocks:     \t{}", f.hash_blocks);
    println!("Hash block size: \t{BLOCK_SIZE}");
    println!("Hash algorithm:  \t{HASH_ALGORITHM}");
    println!("Salt:            \t{salt_hex}");
    println!("Root hash:      \t{}", verity::hex(&f.root_hash));
    if a.hash_offset == 0 {
        println!("Hash device size: \t{} [bytes]", f.hash_area_size);
    }
    Ok(())
}

/// Exit codes as veritysetup: 0 ok, 1 root hash / parameters, 2 corrupted data.
pub fn verify(a: &VerityVerifyArgs) -> Result<i32> {
    let root = verity::unhex(&a.roothash)
        .ok()
        .filter(|r| r.len() == 32)
        .ok_or_else(|| anyhow::anyhow!("Invalid root hash string specified."))?;
    let data = File::open(&a.data).with_context(|| format!("opening {}", a.data.display()))?;
    let hash =
        File::open(&a.hashfile).with_context(|| format!("opening {}", a.hashfile.display()))?;
    match verity::verify(&data, &hash, &root, a.hash_offset, a.threads, &|_| {}) {
        Ok(_) => Ok(0),
        Err(e) => match e.downcast_ref::<VerifyError>() {
            Some(VerifyError::Data { .. } | VerifyError::Tree { .. }) => {
                eprintln!("{e}\nVerification of data area failed.");
                Ok(2)
            }
            Some(VerifyError::Root { .. }) => {
                eprintln!("{e}\nVerification of root hash failed.");
                Ok(1)
            }
            None => Err(e),
        },
    }
}
