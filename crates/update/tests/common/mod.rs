//! Test fixture: a machine made of plain files (an ESP folder with the boot
//! state and slot A's folder, two slot "devices") and real signed bundles
//! built from real verity trees.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use ring::signature::Ed25519KeyPair;

use anklume_contract::bootfiles::{self, GRUBENV, INITRD, KERNEL, MANIFEST, SLOT_CFG, UKI};
use anklume_contract::bootstate::{encode_envblk, BootState};
use anklume_contract::manifest::{BootFile, SlotManifest};
use anklume_contract::Slot;
use anklume_update::esp::Esp;
use anklume_update::make::{write_bundle, BundleInput};
use anklume_update::slotcfg::{slot_cfg, SlotBoot};
use anklume_update::{keys, FileSource, OpenBundle, System};

pub const BS: usize = 4096;

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 3) as u8
        })
        .collect()
}

/// A sealed slot image of `data` (as the builder's `seal` makes it).
pub struct Sealed {
    pub image: PathBuf,
    pub slot: SlotManifest,
    pub uuid: String,
    pub boot: Vec<PathBuf>,
}

pub fn seal(dir: &Path, name: &str, version: &str, data: &[u8]) -> Sealed {
    let image = dir.join(format!("{name}.img"));
    std::fs::write(&image, data).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let offset = anklume_contract::verity::hash_offset(data.len() as u64);
    f.set_len(offset).unwrap();
    let salt = noise(data.len() as u32 ^ 0x5a17, 32);
    let uuid = anklume_verity::as_uuid_v4(noise(7, 16).try_into().unwrap());
    let params = anklume_verity::Params {
        data_blocks: offset / 4096,
        salt: salt.clone(),
        uuid,
    };
    let formatted = anklume_verity::format(
        &f,
        &f,
        &anklume_verity::FormatOptions {
            params,
            hash_offset: offset,
            data_offset: 0,
            threads: 1,
        },
        &|_| {},
    )
    .unwrap();
    let mut boot = Vec::new();
    let mut entries = Vec::new();
    for (n, what) in [(KERNEL, "kernel"), (INITRD, "initrd")] {
        let p = dir.join(format!("{name}.{n}"));
        let content = format!("{what} of {version}\n").repeat(100);
        std::fs::write(&p, &content).unwrap();
        entries.push(BootFile {
            name: n.into(),
            size: content.len() as u64,
            sha256: anklume_verity::hex(
                ring::digest::digest(&ring::digest::SHA256, content.as_bytes()).as_ref(),
            ),
        });
        boot.push(p);
    }
    Sealed {
        image,
        slot: SlotManifest {
            version: version.into(),
            kernel_version: "6.12.9-amd64".into(),
            data_size: data.len() as u64,
            hash_offset: offset,
            data_blocks: offset / 4096,
            salt: anklume_verity::hex(&salt),
            root_hash: anklume_verity::hex(&formatted.root_hash),
            boot_files: entries,
        },
        uuid: anklume_verity::format_uuid(&uuid),
        boot,
    }
}

/// A stand-in for a signed UKI of `version`, and its manifest entry.
fn fake_uki(dir: &Path, name: &str, version: &str) -> (PathBuf, BootFile) {
    let content = format!("signed UKI of {version}\n").repeat(50);
    uki_file(dir, name, content.as_bytes())
}

fn uki_file(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, BootFile) {
    let p = dir.join(format!("{name}.{UKI}"));
    std::fs::write(&p, content).unwrap();
    let entry = BootFile {
        name: UKI.into(),
        size: content.len() as u64,
        sha256: anklume_verity::hex(ring::digest::digest(&ring::digest::SHA256, content).as_ref()),
    };
    (p, entry)
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub trusted: PathBuf,
    pub key: Ed25519KeyPair,
    pub sys: System,
    /// Slot A's data (version 0.1.0).
    pub v1: Vec<u8>,
}

pub const TARGET_SIZE: u64 = 2 << 20;

impl Fixture {
    /// Slot A runs 0.1.0 (good); slot B is an empty 2 MiB "partition".
    pub fn new() -> Fixture {
        Fixture::with_v1(noise(1, 300 * BS + 100))
    }

    pub fn with_v1(v1: Vec<u8>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let trusted = dir.path().join("trusted");
        std::fs::create_dir(&trusted).unwrap();
        keys::generate(&trusted, "release").unwrap();
        let key = keys::load_signing_key(&trusted.join("release.key")).unwrap();
        std::fs::remove_file(trusted.join("release.key")).unwrap();
        let esp = dir.path().join("esp");
        std::fs::create_dir_all(esp.join(bootfiles::slot_dir(Slot::A))).unwrap();
        std::fs::write(
            esp.join(GRUBENV),
            encode_envblk(&BootState::fresh().to_vars()).unwrap(),
        )
        .unwrap();
        // Slot A as the builder leaves it.
        let a = seal(dir.path(), "v1", "0.1.0", &v1);
        let dev_a = dir.path().join("slot-a.dev");
        let mut img = std::fs::read(&a.image).unwrap();
        img.resize(TARGET_SIZE as usize, 0);
        std::fs::write(&dev_a, img).unwrap();
        let esp_ = Esp::new(&esp);
        for (f, p) in a.slot.boot_files.iter().zip(&a.boot) {
            esp_.write_slot_file(Slot::A, &f.name, &std::fs::read(p).unwrap())
                .unwrap();
        }
        esp_.write_slot_file(Slot::A, MANIFEST, a.slot.to_json().as_bytes())
            .unwrap();
        let cfg = slot_cfg(&SlotBoot {
            slot: Slot::A,
            partuuid: "aaaa".into(),
            root_hash: a.slot.root_hash.clone(),
            hash_offset: a.slot.hash_offset,
            version: "0.1.0".into(),
        });
        esp_.write_slot_file(Slot::A, SLOT_CFG, cfg.as_bytes())
            .unwrap();
        let dev_b = dir.path().join("slot-b.dev");
        std::fs::write(&dev_b, vec![0xee; TARGET_SIZE as usize]).unwrap();
        let sys = System {
            esp: esp_,
            running: Slot::A,
            running_version: "0.1.0".into(),
            running_data_schema: Some(1),
            devices: [dev_a, dev_b],
            partuuids: ["aaaa".into(), "bbbb".into()],
            firmware: None,
        };
        Fixture {
            dir,
            trusted,
            key,
            sys,
            v1,
        }
    }

    /// Make slot B an older good slot (the fallback an update overwrites):
    /// its folder a copy of A's, marked good.
    pub fn old_good_b(&self) {
        let esp = &self.sys.esp;
        for n in [KERNEL, INITRD, MANIFEST, SLOT_CFG] {
            let data = std::fs::read(esp.slot_file(Slot::A, n)).unwrap();
            esp.write_slot_file(Slot::B, n, &data).unwrap();
        }
        let (mut st, _) = esp.read_state().unwrap();
        st.good[1] = true;
        esp.write_state(&st).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A bundle of `data` as `version`, signed with `key` (default: the trusted one).
    pub fn bundle_with(
        &self,
        name: &str,
        version: &str,
        min: &str,
        data: &[u8],
        key: Option<&Ed25519KeyPair>,
    ) -> PathBuf {
        let s = seal(self.dir.path(), name, version, data);
        self.write_sealed(name, s, min, key.unwrap_or(&self.key))
    }

    /// `s` written as `<name>.bundle`, signed with `key`.
    fn write_sealed(&self, name: &str, s: Sealed, min: &str, key: &Ed25519KeyPair) -> PathBuf {
        let out = self.path(&format!("{name}.bundle"));
        write_bundle(
            &BundleInput {
                image: s.image,
                slot: s.slot,
                verity_uuid: s.uuid,
                boot_files: s.boot,
                min_version: min.into(),
                data_schema: 1,
            },
            key,
            &out,
        )
        .unwrap();
        out
    }

    /// A bundle of `data` as `version` whose boot files end with a UKI
    /// (a signed build's; its bytes need not be a PE file here).
    pub fn signed_bundle(&self, name: &str, version: &str, data: &[u8]) -> PathBuf {
        let (file, entry) = fake_uki(self.dir.path(), name, version);
        self.bundle_with_uki(name, version, data, file, entry)
    }

    /// A bundle of `data` whose UKI is the PE file `uki`.
    pub fn bundle_with_pe(&self, name: &str, version: &str, data: &[u8], uki: &[u8]) -> PathBuf {
        let (file, entry) = uki_file(self.dir.path(), name, uki);
        self.bundle_with_uki(name, version, data, file, entry)
    }

    fn bundle_with_uki(
        &self,
        name: &str,
        version: &str,
        data: &[u8],
        file: PathBuf,
        entry: BootFile,
    ) -> PathBuf {
        let mut s = seal(self.dir.path(), name, version, data);
        s.boot.push(file);
        s.slot.boot_files.push(entry);
        self.write_sealed(name, s, "0.1.0", &self.key)
    }

    /// Make slot A's folder a signed build's: a UKI, listed by its manifest.
    pub fn sign_slot_a(&self) {
        let esp = &self.sys.esp;
        let (file, entry) = fake_uki(self.dir.path(), "v1", "0.1.0");
        esp.write_slot_file(Slot::A, UKI, &std::fs::read(file).unwrap())
            .unwrap();
        let mut m = esp.slot_manifest(Slot::A).unwrap().unwrap();
        m.boot_files.push(entry);
        esp.write_slot_file(Slot::A, MANIFEST, m.to_json().as_bytes())
            .unwrap();
    }

    pub fn bundle(&self, name: &str, version: &str, data: &[u8]) -> PathBuf {
        self.bundle_with(name, version, "0.1.0", data, None)
    }

    pub fn open(&self, bundle: &Path) -> anyhow::Result<OpenBundle> {
        let trusted = keys::load_trusted(&self.trusted)?;
        OpenBundle::open(Box::new(FileSource::open(bundle)?), &trusted)
    }

    pub fn target_bytes(&self) -> Vec<u8> {
        std::fs::read(self.sys.device(Slot::B)).unwrap()
    }

    /// Every file of the ESP with its content.
    pub fn esp_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.sys.esp.root().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

/// The image part of a bundle file (what the target must hold).
pub fn image_of(bundle: &OpenBundle, file: &Path) -> Vec<u8> {
    let all = std::fs::read(file).unwrap();
    let e = bundle.manifest.image;
    all[e.offset as usize..(e.offset + e.size) as usize].to_vec()
}
