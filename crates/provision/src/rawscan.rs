//! What the block devices hold, read from the devices themselves, for the
//! decisions a boot makes before udev has been through every device.
//!
//! The inventory ([`crate::probe`]) reads udev's database, which is
//! complete only once udev has run its rules for each device: at boot,
//! under load, seconds after the devices exist. Most boots have nothing
//! for the first-boot unit to do (no seed volume) and, on a machine
//! without a pool, nothing for the unlock either; a low-level probe of the
//! devices themselves (`wipefs --no-act`, which reads their superblocks
//! and writes nothing) tells so in a fraction of that time. Only when it
//! finds something worth acting on — a LUKS volume, a seed volume, or a
//! device it could not read — is udev waited for ([`settle`]), and every
//! decision is then made from the inventory as before.

use std::fs;
use std::path::{Path, PathBuf};

use anklume_cmd::Cmd;
use anyhow::{Context, Result};
use serde::Deserialize;

/// One signature `wipefs` found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Signature {
    /// The device's name under `/dev` (`sda2`).
    pub device: String,
    /// `crypto_LUKS`, `vfat`, `gpt`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub label: Option<String>,
}

impl Signature {
    pub fn is_luks(&self) -> bool {
        self.kind == "crypto_LUKS"
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WipefsJson {
    signatures: Vec<Signature>,
}

/// `wipefs --json` output.
pub fn parse(json: &str) -> Result<Vec<Signature>> {
    let w: WipefsJson = serde_json::from_str(json).context("reading wipefs's JSON output")?;
    Ok(w.signatures)
}

/// What a scan saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub signatures: Vec<Signature>,
    /// Devices `wipefs` could not read (removed meanwhile, no medium, I/O
    /// errors): what they hold is unknown.
    pub unreadable: Vec<String>,
}

impl Scan {
    /// Whether udev must be waited for before the inventory can be trusted:
    /// a signature `wanted` picks, or a device that could not be read.
    pub fn needs_udev(&self, wanted: impl Fn(&Signature) -> bool) -> bool {
        self.why_udev(wanted).is_some()
    }

    /// [`Scan::needs_udev`], saying what was found.
    pub fn why_udev(&self, wanted: impl Fn(&Signature) -> bool) -> Option<String> {
        let mut what: Vec<String> = Vec::new();
        for s in self.signatures.iter().filter(|s| wanted(s)) {
            let w = match &s.label {
                Some(l) => format!("{} ({} {l})", s.device, s.kind),
                None => format!("{} ({})", s.device, s.kind),
            };
            if !what.contains(&w) {
                what.push(w);
            }
        }
        what.extend(self.unreadable.iter().map(|d| format!("{d} (unreadable)")));
        (!what.is_empty()).then(|| what.join(", "))
    }
}

/// A drive that has no medium (a CD drive with no disc: the kernel gives
/// it a size all the same) holds nothing.
fn no_medium(dev: &Path) -> bool {
    match fs::File::open(dev) {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(nix::errno::Errno::ENOMEDIUM as i32),
    }
}

/// The block devices of the machine rooted at `root` that can hold data:
/// their names, from `/sys/class/block`, without the empty ones (a loop
/// device with no file: size 0; a drive with no medium) and RAM disks.
pub fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("sys/class/block");
    let mut names = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let size = fs::read_to_string(e.path().join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) == 0 || no_medium(&root.join("dev").join(&name))
        {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

fn wipefs(devs: &[PathBuf]) -> Result<Vec<Signature>> {
    let out = Cmd::new("wipefs")
        .args(["--no-act", "--json", "--output", "DEVICE,TYPE,LABEL"])
        .args(devs)
        .output_string()?;
    parse(&out)
}

/// Probe every [`targets`] device. One `wipefs` for all of them; when it
/// fails (it stops at the first device it cannot open), one per device,
/// and those that still fail are [`Scan::unreadable`].
pub fn scan(root: &Path) -> Result<Scan> {
    let names = targets(root)?;
    let path = |n: &String| root.join("dev").join(n);
    let all: Vec<PathBuf> = names.iter().map(path).collect();
    if all.is_empty() {
        return Ok(Scan::default());
    }
    if let Ok(signatures) = wipefs(&all) {
        return Ok(Scan {
            signatures,
            unreadable: Vec::new(),
        });
    }
    let mut s = Scan::default();
    for n in &names {
        match wipefs(&[path(n)]) {
            Ok(found) => s.signatures.extend(found),
            Err(_) => s.unreadable.push(n.clone()),
        }
    }
    Ok(s)
}

/// Wait until udev has run its rules for every block device present (at
/// most a minute), so that the inventory describes each.
pub fn wait_for_udev() -> Result<()> {
    let root = Path::new("/");
    let devs: Vec<PathBuf> = targets(root)?
        .iter()
        .map(|n| root.join("sys/class/block").join(n))
        .collect();
    if devs.is_empty() {
        return Ok(());
    }
    Cmd::new("udevadm")
        .args(["wait", "--timeout=60"])
        .args(&devs)
        .run()
        .context("waiting for udev to record the block devices")
}

/// At boot: wait for udev when a [`scan`] finds what `wanted` picks (or
/// cannot read a device), and say what it found; `None` when nothing was
/// found and nothing was waited for.
pub fn settle(wanted: impl Fn(&Signature) -> bool) -> Result<Option<String>> {
    let s = scan(Path::new("/")).context("probing the block devices")?;
    let Some(why) = s.why_udev(wanted) else {
        return Ok(None);
    };
    wait_for_udev()?;
    Ok(Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"{
   "signatures": [
      {"device": "sdb1", "type": "crypto_LUKS", "label": "anklume-pool"},
      {"device": "sdc", "type": "vfat", "label": null}
   ]
}"#;

    #[test]
    fn wipefs_json_is_read() {
        let s = parse(TWO).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].device, "sdb1");
        assert!(s[0].is_luks());
        assert_eq!(s[0].label.as_deref(), Some("anklume-pool"));
        assert_eq!(s[1].kind, "vfat");
        assert_eq!(s[1].label, None);
        assert!(parse("{\n   \"signatures\": [\n\n   ]\n}\n")
            .unwrap()
            .is_empty());
        let e = format!("{:#}", parse("{\"sigs\": []}").unwrap_err());
        assert!(e.contains("wipefs"), "{e}");
    }

    #[test]
    fn udev_is_waited_for_only_for_what_is_wanted_or_unreadable() {
        let luks = |s: &Signature| s.is_luks();
        let found = Scan {
            signatures: parse(TWO).unwrap(),
            unreadable: vec![],
        };
        assert!(found.needs_udev(luks));
        assert_eq!(
            found.why_udev(luks).as_deref(),
            Some("sdb1 (crypto_LUKS anklume-pool)")
        );
        let plain = Scan {
            signatures: vec![found.signatures[1].clone()],
            unreadable: vec![],
        };
        assert!(!plain.needs_udev(luks));
        let unknown = Scan {
            signatures: vec![],
            unreadable: vec!["sdd".into()],
        };
        assert!(unknown.needs_udev(luks));
        assert_eq!(unknown.why_udev(luks).as_deref(), Some("sdd (unreadable)"));
        assert!(!Scan::default().needs_udev(luks));
    }

    /// The start of a LUKS2 header, as far as a signature probe reads it:
    /// magic, version 2, header size, label, header offset 0.
    fn luks2_header(label: &str) -> Vec<u8> {
        let mut h = vec![0u8; 1 << 20];
        h[..6].copy_from_slice(b"LUKS\xba\xbe");
        h[6..8].copy_from_slice(&2u16.to_be_bytes());
        h[8..16].copy_from_slice(&16384u64.to_be_bytes());
        h[24..24 + label.len()].copy_from_slice(label.as_bytes());
        h[72..78].copy_from_slice(b"sha256");
        h
    }

    fn dev(root: &Path, name: &str, size: &str) {
        let d = root.join("sys/class/block").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("size"), size).unwrap();
    }

    #[test]
    fn empty_devices_and_ram_disks_are_not_probed() {
        let t = tempfile::tempdir().unwrap();
        dev(t.path(), "sda", "1049880\n");
        dev(t.path(), "sda1", "2048\n");
        dev(t.path(), "loop0", "0\n");
        dev(t.path(), "sr0", "0\n");
        dev(t.path(), "zram0", "8192\n");
        dev(t.path(), "ram0", "8192\n");
        dev(t.path(), "dm-0", "588096\n");
        fs::create_dir_all(t.path().join("sys/class/block/odd")).unwrap();
        assert_eq!(targets(t.path()).unwrap(), ["dm-0", "sda", "sda1"]);
    }

    /// Real files through the real `wipefs`: a LUKS2 header is found with
    /// its label, a blank file holds nothing, and a file that cannot be
    /// opened among them is unreadable without hiding the others.
    #[test]
    fn real_wipefs_reads_signatures_and_names_what_it_cannot_read() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        dev(root, "luks", "65536\n");
        dev(root, "blank", "2048\n");
        dev(root, "gone", "2048\n");
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join("dev/luks"), luks2_header("anklume-pool")).unwrap();
        fs::write(root.join("dev/blank"), vec![0u8; 1 << 20]).unwrap();
        let s = scan(root).unwrap();
        assert_eq!(s.unreadable, ["gone"]);
        assert!(!s.signatures.is_empty());
        assert!(s.signatures.iter().all(|x| x.device == "luks"
            && x.is_luks()
            && x.label.as_deref() == Some("anklume-pool")));
        fs::write(root.join("dev/gone"), vec![0u8; 1 << 20]).unwrap();
        let s = scan(root).unwrap();
        assert!(s.unreadable.is_empty());
        // The primary and the secondary header: named once.
        assert_eq!(
            s.why_udev(|x| x.is_luks()).as_deref(),
            Some("luks (crypto_LUKS anklume-pool)")
        );
    }
}
