//! Signing keys and the bundle signature (ed25519, `ring`).

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::{hex, unhex, Header, KEY_ID_LEN, MAX_MANIFEST, SIGNING_CONTEXT};

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Where it came from (file name), for messages.
    pub name: String,
    pub bytes: [u8; 32],
}

impl PublicKey {
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        key_id(&self.bytes)
    }

    /// Parse a public key file: 64 hex digits (one line, `#` comments).
    pub fn parse(name: &str, text: &str) -> Result<PublicKey, String> {
        let hex: String = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .collect();
        let bytes = unhex(&hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("public key {name}: expected 64 hex digits"))?;
        Ok(PublicKey {
            name: name.to_string(),
            bytes,
        })
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!(
            "# anklume update signing key {}\n{}\n",
            hex(&self.id()),
            hex(&self.bytes)
        )
    }
}

/// Key id of a public key.
pub fn key_id(public: &[u8]) -> [u8; KEY_ID_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, public);
    d.as_ref()[..KEY_ID_LEN].try_into().expect("8 bytes")
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest].concat()
}

/// Sign manifest bytes: the header to put in front of them.
pub fn sign(manifest: &[u8], key: &Ed25519KeyPair) -> Result<Header, String> {
    let manifest_len = u32::try_from(manifest.len())
        .ok()
        .filter(|&l| l > 0 && l <= MAX_MANIFEST)
        .ok_or_else(|| format!("manifest of {} bytes is too large", manifest.len()))?;
    let sig = key.sign(&signed_message(manifest));
    Ok(Header {
        manifest_len,
        key_id: key_id(key.public_key().as_ref()),
        signature: sig.as_ref().try_into().expect("64 bytes"),
    })
}

/// Check the header's signature of `manifest` with the trusted key it
/// names; the key that verified it.
pub fn verify<'k>(
    header: &Header,
    manifest: &[u8],
    trusted: &'k [PublicKey],
) -> Result<&'k PublicKey, String> {
    let key = trusted
        .iter()
        .find(|k| k.id() == header.key_id)
        .ok_or_else(|| {
            format!(
                "bundle is signed by key {}, which is not among the {} trusted key(s)",
                hex(&header.key_id),
                trusted.len()
            )
        })?;
    UnparsedPublicKey::new(&ED25519, key.bytes)
        .verify(&signed_message(manifest), &header.signature)
        .map_err(|_| {
            format!(
                "bad signature: the manifest was not signed by trusted key {} ({}), or was changed since",
                key.name,
                hex(&header.key_id)
            )
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn keypair() -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    }

    fn public(k: &Ed25519KeyPair, name: &str) -> PublicKey {
        PublicKey {
            name: name.into(),
            bytes: k.public_key().as_ref().try_into().unwrap(),
        }
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_bytes() {
        let (k1, k2) = (keypair(), keypair());
        let m = br#"{"format": 1, "any": "manifest bytes"}"#.to_vec();
        let h = sign(&m, &k1).unwrap();
        let trusted = [public(&k2, "other.pub"), public(&k1, "release.pub")];
        assert_eq!(verify(&h, &m, &trusted).unwrap().name, "release.pub");
        let e = verify(&h, &m, &trusted[..1]).unwrap_err();
        assert!(e.contains("not among the 1 trusted key"), "{e}");
        let mut flipped = m.clone();
        flipped[10] ^= 1;
        assert!(verify(&h, &flipped, &trusted)
            .unwrap_err()
            .contains("bad signature"));
        // A forged key id naming a trusted key does not help.
        let forged = Header {
            key_id: trusted[0].id(),
            ..h
        };
        assert!(verify(&forged, &m, &trusted)
            .unwrap_err()
            .contains("bad signature"));
    }

    #[test]
    fn public_key_files_round_trip() {
        let k = public(&keypair(), "a.pub");
        assert_eq!(PublicKey::parse("a.pub", &k.to_text()).unwrap(), k);
        assert!(PublicKey::parse("b.pub", "abcd\n")
            .unwrap_err()
            .contains("b.pub"));
    }
}
