//! Make a bundle from any data file (the bench and manual tests; a real
//! build's bundle will come from `anklume-build bundle`):
//! `make_bundle DATA VERSION MIN_VERSION KERNEL INITRD SIGNING_KEY OUT`.

use std::path::PathBuf;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [data, version, min, kernel, initrd, key, out] = a.as_slice() else {
        bail!("usage: make_bundle DATA VERSION MIN_VERSION KERNEL INITRD SIGNING_KEY OUT");
    };
    let out = PathBuf::from(out);
    let image = out.with_extension("slot.img");
    let input = anklume_update::make::seal(
        data.as_ref(),
        &image,
        version,
        "6.12.9-amd64",
        vec![kernel.into(), initrd.into()],
        min,
        1,
    )?;
    let key = anklume_update::keys::load_signing_key(key.as_ref())?;
    let m = anklume_update::make::write_bundle(&input, &key, &out)?;
    std::fs::remove_file(&image)?;
    println!(
        "{} {} {}",
        out.display(),
        m.slot.root_hash,
        m.slot.hash_offset
    );
    Ok(())
}
