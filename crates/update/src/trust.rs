//! What this machine's firmware trusts, and whether a bundle's UKI is
//! signed by it.
//!
//! Under Secure Boot the new slot boots only from a UKI that shim accepts:
//! one signed by a certificate in the firmware's `db` (own keys) or in
//! shim's MOK list (stock keys + a key enrolled with MokManager). A bundle
//! whose UKI is signed by anything else installs fine and then never
//! boots — GRUB's counter brings the machine back on the old slot, but the
//! update is lost and the user is left guessing. So the updater checks it
//! first, before any disk is written.
//!
//! The certificates come from the EFI variables the kernel exposes
//! (`db`, `MokListRT` in efivarfs, or `/sys/firmware/efi/mok-variables/`
//! where shim mirrors a MOK list too large for a variable), parsed as
//! `EFI_SIGNATURE_LIST`s (UEFI 2.10, 32.4.1); only X.509 entries can sign
//! (hash entries allow one binary each, never a new release). Checking the
//! Authenticode signature against them is `sbverify`'s job (sbsigntool,
//! the tool that made it): the PE digest, the PKCS#7 signature and its
//! chain to the given certificate, all in one well-kept program.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;

use anklume_cmd::Cmd;

/// Where the kernel exposes EFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// Where the kernel exposes shim's mirrored MOK lists (config tables).
pub const MOK_VARIABLES: &str = "/sys/firmware/efi/mok-variables";

const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const IMAGE_SECURITY_GUID: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
const SHIM_GUID: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
/// `EFI_CERT_X509_GUID` as stored (little-endian first three fields).
const CERT_X509: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

/// Where to read the firmware's state (the live machine's, or a test's).
#[derive(Debug, Clone)]
pub struct FirmwareDirs {
    pub efivars: PathBuf,
    pub mok_variables: PathBuf,
}

impl FirmwareDirs {
    /// The running machine's, when it booted through UEFI.
    pub fn live() -> Option<FirmwareDirs> {
        Path::new(EFIVARS).is_dir().then(|| FirmwareDirs {
            efivars: EFIVARS.into(),
            mok_variables: MOK_VARIABLES.into(),
        })
    }
}

/// One certificate the firmware or shim trusts to sign what it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCert {
    /// The list it is in: `db` or `MokListRT`.
    pub list: &'static str,
    pub der: Vec<u8>,
}

/// The firmware's Secure Boot state and signing certificates.
#[derive(Debug, Clone)]
pub struct FirmwareTrust {
    pub secure_boot: bool,
    pub certs: Vec<TrustedCert>,
}

/// An efivarfs file: 4 bytes of attributes, then the value; `None` when
/// the variable does not exist.
fn efivar(dirs: &FirmwareDirs, name: &str, guid: &str) -> Result<Option<Vec<u8>>> {
    let p = dirs.efivars.join(format!("{name}-{guid}"));
    match std::fs::read(&p) {
        Ok(mut v) => {
            ensure!(
                v.len() >= 4,
                "{}: {} bytes, shorter than the attributes",
                p.display(),
                v.len()
            );
            v.drain(..4);
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

impl FirmwareTrust {
    pub fn read(dirs: &FirmwareDirs) -> Result<FirmwareTrust> {
        let secure_boot =
            efivar(dirs, "SecureBoot", GLOBAL_GUID)?.is_some_and(|v| v.first() == Some(&1));
        let mut certs = Vec::new();
        if let Some(db) = efivar(dirs, "db", IMAGE_SECURITY_GUID)? {
            let found = x509_entries(&db).context("the firmware's db variable")?;
            certs.extend(found.into_iter().map(|der| TrustedCert { list: "db", der }));
        }
        // shim mirrors MokList into MokListRT, or into the mok-variables
        // table when it is too large for a variable; the same list either way.
        let mirrored = dirs.mok_variables.join("MokListRT");
        let mok = match std::fs::read(&mirrored) {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                efivar(dirs, "MokListRT", SHIM_GUID)?
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", mirrored.display())),
        };
        if let Some(mok) = mok {
            let found = x509_entries(&mok).context("shim's MokListRT")?;
            for der in found {
                let c = TrustedCert {
                    list: "MokListRT",
                    der,
                };
                if !certs.iter().any(|o| o.der == c.der) {
                    certs.push(c);
                }
            }
        }
        Ok(FirmwareTrust { secure_boot, certs })
    }

    /// `Ok` when the PE file `uki` (`what` names it in errors) is signed by
    /// one of the trusted certificates.
    pub fn check_signed(&self, uki: &[u8], what: &str) -> Result<()> {
        ensure!(
            !self.certs.is_empty(),
            "Secure Boot is on but no signing certificate was found in the firmware's db or shim's MOK list: cannot tell whether {what} would boot"
        );
        let dir = tempfile::Builder::new()
            .prefix("anklume-trust-")
            .tempdir()
            .context("making a folder for the signature check")?;
        let file = dir.path().join("uki.efi");
        std::fs::write(&file, uki).with_context(|| format!("writing {}", file.display()))?;
        let mut last = None;
        for (i, c) in self.certs.iter().enumerate() {
            let pem = dir.path().join(format!("{}-{i}.pem", c.list));
            std::fs::write(&pem, pem_of(&c.der))
                .with_context(|| format!("writing {}", pem.display()))?;
            match Cmd::new("sbverify")
                .arg("--cert")
                .arg(&pem)
                .arg(&file)
                .output()
            {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        let counts = |l: &str| self.certs.iter().filter(|c| c.list == l).count();
        let e = last.expect("at least one certificate was tried");
        Err(e).context(format!(
            "{what} is not signed by any certificate this machine's firmware trusts ({} in db, {} in shim's MOK list): with Secure Boot on, the new slot would not boot; sign the release with an enrolled key (docs/update.md, \"Keys\")",
            counts("db"),
            counts("MokListRT")
        ))
    }
}

/// The X.509 certificates of a run of `EFI_SIGNATURE_LIST`s.
pub fn x509_entries(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        ensure!(
            rest.len() >= 28,
            "signature list at byte {at}: {} bytes left, a list header has 28",
            rest.len()
        );
        let (list_size, header_size, sig_size) =
            (u32_at(rest, 16), u32_at(rest, 20), u32_at(rest, 24));
        if list_size < 28 + header_size || list_size > rest.len() || sig_size < 16 {
            bail!(
                "signature list at byte {at}: size {list_size}, header {header_size}, entry size {sig_size} do not fit in {} bytes",
                rest.len()
            );
        }
        let entries = &rest[28 + header_size..list_size];
        ensure!(
            entries.len() % sig_size == 0,
            "signature list at byte {at}: {} bytes of entries is not a multiple of {sig_size}",
            entries.len()
        );
        if rest[..16] == CERT_X509 {
            // Each entry: the owner's GUID, then the certificate.
            out.extend(entries.chunks(sig_size).map(|e| e[16..].to_vec()));
        }
        at += list_size;
    }
    Ok(out)
}

/// DER → PEM, what `sbverify --cert` reads.
fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// Helpers for tests of code that checks signatures: a signing pair, the
/// smallest PE file sbsign takes, the firmware variables holding a
/// certificate.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::path::{Path, PathBuf};

    use anklume_cmd::Cmd;

    use super::{CERT_X509, GLOBAL_GUID, IMAGE_SECURITY_GUID, SHIM_GUID};

    /// A self-signed RSA key and certificate (PEM) named `cn` in `dir`.
    pub fn cert_pair(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let key = dir.join(format!("{cn}.key"));
        let cert = dir.join(format!("{cn}.crt"));
        Cmd::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .arg("-subj")
            .arg(format!("/CN={cn}/"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .run()
            .unwrap();
        (key, cert)
    }

    /// The DER form of a PEM certificate file.
    pub fn der_of(cert: &Path) -> Vec<u8> {
        Cmd::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(cert)
            .output()
            .unwrap()
    }

    /// `input` signed with the pair into `output` (sbsign).
    pub fn sign(key: &Path, cert: &Path, input: &Path, output: &Path) {
        Cmd::new("sbsign")
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--output")
            .arg(output)
            .arg(input)
            .run()
            .unwrap();
    }

    /// MZ + PE32+ headers (x86-64, EFI application) with one empty
    /// section, 0x400 bytes: enough for sbsign and sbverify.
    pub fn minimal_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 0x400];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes()); // machine
        pe[0x46..0x48].copy_from_slice(&1u16.to_le_bytes()); // sections
        pe[0x54..0x56].copy_from_slice(&0xf0u16.to_le_bytes()); // optional header size
        pe[0x56..0x58].copy_from_slice(&0x0206u16.to_le_bytes()); // characteristics
        let o = 0x58;
        pe[o..o + 2].copy_from_slice(&0x20bu16.to_le_bytes()); // PE32+
        pe[o + 32..o + 36].copy_from_slice(&0x200u32.to_le_bytes()); // section alignment
        pe[o + 36..o + 40].copy_from_slice(&0x200u32.to_le_bytes()); // file alignment
        pe[o + 56..o + 60].copy_from_slice(&0x400u32.to_le_bytes()); // size of image
        pe[o + 60..o + 64].copy_from_slice(&0x200u32.to_le_bytes()); // size of headers
        pe[o + 68..o + 70].copy_from_slice(&10u16.to_le_bytes()); // subsystem: EFI application
        pe[o + 108..o + 112].copy_from_slice(&16u32.to_le_bytes()); // data directories
        let s = o + 0xf0;
        pe[s..s + 5].copy_from_slice(b".text");
        pe[s + 8..s + 12].copy_from_slice(&0x200u32.to_le_bytes());
        pe[s + 12..s + 16].copy_from_slice(&0x200u32.to_le_bytes());
        pe[s + 16..s + 20].copy_from_slice(&0x200u32.to_le_bytes());
        pe[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes());
        pe
    }

    /// One `EFI_SIGNATURE_LIST` of X.509 certificates (all one size, as
    /// a list requires; several certificates of different sizes take
    /// several lists).
    pub fn x509_list(certs: &[&[u8]]) -> Vec<u8> {
        let size = certs[0].len();
        assert!(certs.iter().all(|c| c.len() == size));
        let entry = 16 + size;
        let mut l = CERT_X509.to_vec();
        l.extend(((28 + entry * certs.len()) as u32).to_le_bytes());
        l.extend(0u32.to_le_bytes());
        l.extend((entry as u32).to_le_bytes());
        for c in certs {
            l.extend([0x77; 16]);
            l.extend(*c);
        }
        l
    }

    /// An efivarfs folder: Secure Boot `on`, `db` and `MokListRT` holding
    /// the given signature lists (absent when `None`).
    pub fn efivars(dir: &Path, on: bool, db: Option<&[u8]>, mok: Option<&[u8]>) -> PathBuf {
        let d = dir.join("efivars");
        std::fs::create_dir_all(&d).unwrap();
        let var = |name: &str, guid: &str, value: &[u8]| {
            let mut v = 6u32.to_le_bytes().to_vec();
            v.extend(value);
            std::fs::write(d.join(format!("{name}-{guid}")), v).unwrap();
        };
        var("SecureBoot", GLOBAL_GUID, &[u8::from(on)]);
        if let Some(db) = db {
            var("db", IMAGE_SECURITY_GUID, db);
        }
        if let Some(mok) = mok {
            var("MokListRT", SHIM_GUID, mok);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn dirs(efivars: PathBuf) -> FirmwareDirs {
        FirmwareDirs {
            mok_variables: efivars.join("no-mok-variables"),
            efivars,
        }
    }

    #[test]
    fn signature_lists_give_their_x509_entries_and_skip_hashes() {
        let a = vec![0x30, 0x82, 1, 2, 3];
        let b = vec![0x30, 0x82, 9, 9, 9];
        let c = vec![0x30, 0x81, 7];
        // A SHA-256 list (EFI_CERT_SHA256_GUID) between two X.509 lists.
        let mut sha = vec![
            0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93,
            0x43, 0x28,
        ];
        sha.extend(((28 + 48) as u32).to_le_bytes());
        sha.extend(0u32.to_le_bytes());
        sha.extend(48u32.to_le_bytes());
        sha.extend([0x11; 48]);
        let mut data = x509_list(&[&a, &b]);
        data.extend(&sha);
        data.extend(x509_list(&[&c]));
        assert_eq!(x509_entries(&data).unwrap(), vec![a, b, c]);
        assert!(x509_entries(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_broken_signature_list_is_an_error_saying_where() {
        let mut data = x509_list(&[&[0x30, 1, 2]]);
        data.extend([0u8; 10]);
        let e = format!("{:#}", x509_entries(&data).unwrap_err());
        assert!(
            e.contains("at byte 47") && e.contains("a list header has 28"),
            "{e}"
        );
        let mut long = x509_list(&[&[0x30, 1, 2]]);
        long[16] = 200;
        let e = format!("{:#}", x509_entries(&long).unwrap_err());
        assert!(e.contains("size 200"), "{e}");
    }

    #[test]
    fn firmware_state_comes_from_efivars_and_the_mok_mirror() {
        let d = tempfile::tempdir().unwrap();
        let none = FirmwareTrust::read(&dirs(d.path().join("empty"))).unwrap();
        assert!(!none.secure_boot && none.certs.is_empty());

        let db = x509_list(&[&[0x30, 1]]);
        let mok = x509_list(&[&[0x30, 2], &[0x30, 1]]);
        let ev = efivars(d.path(), true, Some(&db), Some(&mok));
        let t = FirmwareTrust::read(&dirs(ev.clone())).unwrap();
        assert!(t.secure_boot);
        let lists: Vec<(&str, &[u8])> = t.certs.iter().map(|c| (c.list, &c.der[..])).collect();
        // The certificate in both lists is kept once, as db's.
        assert_eq!(
            lists,
            vec![("db", &[0x30, 1][..]), ("MokListRT", &[0x30, 2])]
        );

        // The mirror of a large MOK list wins over the variable.
        let mirror = d.path().join("mok-variables");
        std::fs::create_dir_all(&mirror).unwrap();
        std::fs::write(mirror.join("MokListRT"), x509_list(&[&[0x30, 3]])).unwrap();
        let t = FirmwareTrust::read(&FirmwareDirs {
            efivars: ev,
            mok_variables: mirror,
        })
        .unwrap();
        assert_eq!(t.certs[1].der, [0x30, 3]);
    }

    #[test]
    fn only_a_pe_signed_by_a_trusted_certificate_passes() {
        let d = tempfile::tempdir().unwrap();
        let (k, c) = cert_pair(d.path(), "enrolled");
        let (k2, c2) = cert_pair(d.path(), "stranger");
        let pe = d.path().join("uki.efi");
        std::fs::write(&pe, minimal_pe()).unwrap();
        let (good, bad) = (d.path().join("good.efi"), d.path().join("bad.efi"));
        sign(&k, &c, &pe, &good);
        sign(&k2, &c2, &pe, &bad);
        let other = der_of(&c2);
        let mine = der_of(&c);
        for (db, mok) in [
            (vec![&mine[..]], vec![]),
            (vec![&other[..]], vec![&mine[..]]),
        ] {
            let t = FirmwareTrust {
                secure_boot: true,
                certs: db
                    .iter()
                    .map(|d| ("db", d))
                    .chain(mok.iter().map(|d| ("MokListRT", d)))
                    .map(|(list, d)| TrustedCert {
                        list,
                        der: d.to_vec(),
                    })
                    .collect(),
            };
            t.check_signed(&std::fs::read(&good).unwrap(), "the UKI")
                .unwrap();
        }
        let t = FirmwareTrust {
            secure_boot: true,
            certs: vec![TrustedCert {
                list: "db",
                der: mine,
            }],
        };
        for f in [&bad, &pe] {
            let e = format!(
                "{:#}",
                t.check_signed(&std::fs::read(f).unwrap(), "the bundle's UKI")
                    .unwrap_err()
            );
            assert!(
                e.contains("the bundle's UKI is not signed by any certificate")
                    && e.contains("1 in db, 0 in shim's MOK list"),
                "{e}"
            );
        }
        let empty = FirmwareTrust {
            secure_boot: true,
            certs: Vec::new(),
        };
        let e = format!(
            "{:#}",
            empty
                .check_signed(&std::fs::read(&good).unwrap(), "x")
                .unwrap_err()
        );
        assert!(e.contains("no signing certificate was found"), "{e}");
    }
}
