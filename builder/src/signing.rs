//! Secure Boot signing: the user's key signs shim (next to Microsoft's
//! signatures) and each slot's unified kernel image (UKI).
//!
//! The UKI is assembled by `ukify` (systemd-ukify) from the rootfs's own
//! kernel, initrd and systemd stub, so what is signed is what the OS
//! ships; `sbsign` (sbsigntool) signs. Both are the tools distributions
//! use for this; we only choose the inputs. The private key is read by
//! `sbsign` from the user's file and never copied: not into the work
//! directory, not into the image.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::cmd::Cmd;

/// Environment variables naming the key and certificate when the command
/// line does not.
pub const KEY_ENV: &str = "ANKLUME_SIGNING_KEY";
pub const CERT_ENV: &str = "ANKLUME_SIGNING_CERT";

/// Where the rootfs keeps the systemd EFI stub (package systemd-boot-efi).
pub const STUB: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// A checked key pair: the key is PEM, the certificate X.509 (PEM), and
/// they belong together.
#[derive(Debug, Clone)]
pub struct SigningKey {
    key: PathBuf,
    cert: PathBuf,
    /// The certificate in DER, as MokManager and `virt-fw-vars` take it.
    pub cert_der: Vec<u8>,
    /// The certificate's subject, for messages.
    pub subject: String,
}

impl SigningKey {
    /// Check the pair before any build step runs.
    pub fn load(key: &Path, cert: &Path) -> Result<SigningKey> {
        for (what, p) in [("signing key", key), ("signing certificate", cert)] {
            ensure!(
                p.is_file(),
                "the {what} {} does not exist or is not a file",
                p.display()
            );
        }
        let subject = Cmd::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "oneline", "-in"])
            .arg(cert)
            .output_string()
            .with_context(|| format!("{} is not a PEM X.509 certificate", cert.display()))?
            .trim()
            .trim_start_matches("subject=")
            .trim()
            .to_string();
        let cert_pub = Cmd::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(cert)
            .output()
            .with_context(|| format!("reading the public key of {}", cert.display()))?;
        let key_pub = Cmd::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(key)
            .output()
            .with_context(|| format!("{} is not a readable PEM private key", key.display()))?;
        ensure!(
            cert_pub == key_pub,
            "the signing key {} does not belong to the certificate {} ({subject})",
            key.display(),
            cert.display()
        );
        let cert_der = Cmd::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert)
            .output()
            .with_context(|| format!("converting {} to DER", cert.display()))?;
        Ok(SigningKey {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            cert_der,
            subject,
        })
    }

    /// The pair named on the command line, else by [`KEY_ENV`] /
    /// [`CERT_ENV`]; `None` when neither names one. One without the other
    /// is an error.
    pub fn from_args(key: Option<&Path>, cert: Option<&Path>) -> Result<Option<SigningKey>> {
        let env = |v: &str| {
            std::env::var_os(v)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let key = key.map(Path::to_path_buf).or_else(|| env(KEY_ENV));
        let cert = cert.map(Path::to_path_buf).or_else(|| env(CERT_ENV));
        match (key, cert) {
            (None, None) => Ok(None),
            (Some(k), Some(c)) => SigningKey::load(&k, &c).map(Some),
            (Some(_), None) => {
                anyhow::bail!(
                    "a signing key without a certificate: pass --signing-cert (or {CERT_ENV})"
                )
            }
            (None, Some(_)) => {
                anyhow::bail!(
                    "a signing certificate without a key: pass --signing-key (or {KEY_ENV})"
                )
            }
        }
    }

    /// Sign the PE file `input` into `output`; a signature already there
    /// (shim's, by Microsoft) is kept and ours is added. sbsign writes the
    /// clock into the signature (its signing time) and has no option for
    /// it: it runs under `faketime` frozen at `epoch`, so that the same
    /// inputs give the same bytes (reproducible images).
    pub fn sign(&self, input: &Path, output: &Path, epoch: u64) -> Result<()> {
        Cmd::new("faketime")
            .env("FAKETIME_FMT", "%s")
            .env("TZ", "UTC")
            .arg("-f")
            .arg(epoch.to_string())
            .arg("sbsign")
            .arg("--key")
            .arg(&self.key)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--output")
            .arg(output)
            .arg(input)
            .run()
            .with_context(|| format!("signing {}", input.display()))?;
        Ok(())
    }
}

/// What goes into a slot's UKI.
#[derive(Debug)]
pub struct UkiInputs<'a> {
    pub rootfs: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub kernel_version: &'a str,
    pub cmdline: &'a str,
    pub epoch: u64,
}

/// Assemble the UKI of `i` with `ukify` and sign it into `out`.
pub fn build_uki(i: &UkiInputs<'_>, key: &SigningKey, work: &Path, out: &Path) -> Result<()> {
    let stub = i.rootfs.join(STUB);
    ensure!(
        stub.is_file(),
        "{} is missing: the rootfs needs systemd-boot-efi (mkosi.conf)",
        stub.display()
    );
    let os_release = i.rootfs.join("usr/lib/os-release");
    ensure!(os_release.is_file(), "{} is missing", os_release.display());
    let unsigned = work.join("uki.unsigned.efi");
    Cmd::new("ukify")
        .arg("build")
        .arg("--linux")
        .arg(i.kernel)
        .arg("--initrd")
        .arg(i.initrd)
        .arg("--cmdline")
        .arg(i.cmdline)
        .arg(format!("--os-release=@{}", os_release.display()))
        .arg("--uname")
        .arg(i.kernel_version)
        .arg("--stub")
        .arg(&stub)
        .arg("--output")
        .arg(&unsigned)
        .env("SOURCE_DATE_EPOCH", i.epoch.to_string())
        .run()
        .context("assembling the UKI with ukify")?;
    key.sign(&unsigned, out, i.epoch)?;
    std::fs::remove_file(&unsigned).with_context(|| format!("removing {}", unsigned.display()))?;
    Ok(())
}

/// Where a section of a PE file lies (file offset and size), for tests
/// that change one byte of a UKI's `.initrd` or `.cmdline`.
pub fn pe_section(data: &[u8], name: &str) -> Result<(usize, usize)> {
    let u16_at = |o: usize| -> Result<usize> {
        let b = data.get(o..o + 2).context("truncated PE file")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| -> Result<usize> {
        let b = data.get(o..o + 4).context("truncated PE file")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    ensure!(data.starts_with(b"MZ"), "not a PE file (no MZ header)");
    let pe = u32_at(0x3c)?;
    ensure!(
        data.get(pe..pe + 4) == Some(b"PE\0\0"),
        "not a PE file (no PE signature)"
    );
    let sections = u16_at(pe + 6)?;
    let optional = u16_at(pe + 20)?;
    let table = pe + 24 + optional;
    for i in 0..sections {
        let s = table + i * 40;
        let raw = data.get(s..s + 8).context("truncated PE section table")?;
        let n = raw.split(|&b| b == 0).next().unwrap_or(raw);
        if n == name.as_bytes() {
            let virtual_size = u32_at(s + 8)?;
            let raw_size = u32_at(s + 16)?;
            let offset = u32_at(s + 20)?;
            return Ok((offset, virtual_size.min(raw_size)));
        }
    }
    anyhow::bail!("the PE file has no {name} section")
}

#[cfg(test)]
mod tests {
    use super::*;

    use anklume_update::trust::testing::{cert_pair as pair, minimal_pe};

    #[test]
    fn a_pair_is_checked_before_use() {
        let d = tempfile::tempdir().unwrap();
        let (k1, c1) = pair(d.path(), "one");
        let (k2, _) = pair(d.path(), "two");
        let ok = SigningKey::load(&k1, &c1).unwrap();
        assert!(ok.subject.contains("one"), "{}", ok.subject);
        assert_eq!(ok.cert_der[0], 0x30, "DER starts with a SEQUENCE");
        let err = format!("{:#}", SigningKey::load(&k2, &c1).unwrap_err());
        assert!(err.contains("does not belong to the certificate"), "{err}");
        let err = format!("{:#}", SigningKey::load(&k1, &k2).unwrap_err());
        assert!(err.contains("is not a PEM X.509 certificate"), "{err}");
        let missing = d.path().join("nope.key");
        let err = format!("{:#}", SigningKey::load(&missing, &c1).unwrap_err());
        assert!(err.contains("nope.key does not exist"), "{err}");
        let err = format!("{:#}", SigningKey::from_args(Some(&k1), None).unwrap_err());
        assert!(err.contains("--signing-cert"), "{err}");
    }

    #[test]
    fn signing_is_reproducible_and_keeps_earlier_signatures() {
        let d = tempfile::tempdir().unwrap();
        let (k, c) = pair(d.path(), "repro");
        let key = SigningKey::load(&k, &c).unwrap();
        // The smallest PE sbsign takes: a PE32+ header with no sections.
        let pe = minimal_pe();
        let input = d.path().join("in.efi");
        std::fs::write(&input, &pe).unwrap();
        let (a, b, twice) = (d.path().join("a"), d.path().join("b"), d.path().join("2"));
        key.sign(&input, &a, 1_700_000_000).unwrap();
        // A second later by the clock: the signature must not change.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        key.sign(&input, &b, 1_700_000_000).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        key.sign(&a, &twice, 1_700_000_000).unwrap();
        let list = Cmd::new("sbverify")
            .arg("--list")
            .arg(&twice)
            .output_string()
            .unwrap();
        assert!(list.contains("signature 2"), "{list}");
    }

    #[test]
    fn finds_sections_and_refuses_what_is_not_pe() {
        // A minimal PE: MZ, e_lfanew = 0x40, PE header with 1 section and
        // no optional header, one section ".cmdline" at 0x100, 5 bytes.
        let mut pe = vec![0u8; 0x105];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x46] = 1;
        let s = 0x40 + 24;
        pe[s..s + 8].copy_from_slice(b".cmdline");
        pe[s + 8] = 5; // virtual size
        pe[s + 16] = 0x10; // raw size (padded)
        pe[s + 21] = 0x01; // raw offset 0x100
        pe[0x100..0x105].copy_from_slice(b"ro q\0");
        assert_eq!(pe_section(&pe, ".cmdline").unwrap(), (0x100, 5));
        assert!(format!("{:#}", pe_section(&pe, ".initrd").unwrap_err()).contains("no .initrd"));
        assert!(pe_section(b"ELF...", ".cmdline").is_err());
        assert!(pe_section(&pe[..0x45], ".cmdline").is_err());
    }
}
