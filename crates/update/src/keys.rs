//! Signing keys: an ed25519 key pair is a PKCS#8 file (`<name>.key`, mode
//! 0600, the user's, never in an image or the repo) and a public key file
//! (`<name>.pub`, 64 hex digits) that goes into the OS's trusted-keys
//! directory ([`TRUSTED_KEYS_DIR`]), which the verity-protected slot holds.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use anklume_contract::bundle::PublicKey;

/// Where a running OS keeps the public keys it trusts.
pub const TRUSTED_KEYS_DIR: &str = "/usr/share/anklume/update-keys";

/// Make a new key pair: `<dir>/<name>.key` (private, 0600) and
/// `<dir>/<name>.pub`. Refuses to overwrite either.
pub fn generate(dir: &Path, name: &str) -> Result<PublicKey> {
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        bail!("key name {name:?}: use letters, digits, '-' or '_'");
    }
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow!("generating an ed25519 key failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|_| anyhow!("ring refused the key it generated"))?;
    let public = PublicKey {
        name: format!("{name}.pub"),
        bytes: pair.public_key().as_ref().try_into().expect("32 bytes"),
    };
    let create = |path: &Path, mode: u32, data: &[u8]| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    create(&dir.join(format!("{name}.key")), 0o600, doc.as_ref())?;
    create(&dir.join(&public.name), 0o644, public.to_text().as_bytes())?;
    Ok(public)
}

/// Load a private key file written by [`generate`].
pub fn load_signing_key(path: &Path) -> Result<Ed25519KeyPair> {
    let der = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow!("{}: not an ed25519 PKCS#8 key ({e})", path.display()))
}

/// Every `*.pub` file of `dir`; an empty or missing directory is an error
/// (no key would verify anything).
pub fn load_trusted(dir: &Path) -> Result<Vec<PublicKey>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the trusted keys directory {}", dir.display()))?;
    let mut keys = Vec::new();
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "pub") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path.file_name().expect("a file").to_string_lossy();
            keys.push(PublicKey::parse(&name, &text).map_err(|e| anyhow!(e))?);
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    if keys.is_empty() {
        bail!("no trusted update keys (*.pub) in {}", dir.display());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_keys_load_and_are_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = generate(d.path(), "release").unwrap();
        let mode = std::fs::metadata(d.path().join("release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k = load_signing_key(&d.path().join("release.key")).unwrap();
        assert_eq!(k.public_key().as_ref(), p.bytes);
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(load_trusted(d.path()).unwrap(), vec![p]);
        let e = generate(d.path(), "release").unwrap_err();
        assert!(format!("{e:#}").contains("must not exist"), "{e:#}");
        let empty = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", load_trusted(empty.path()).unwrap_err()).contains("no trusted"));
    }
}
