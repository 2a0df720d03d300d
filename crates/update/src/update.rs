//! One update, in an order that survives a power cut at any instant:
//!
//! 1. every check, with nothing written: signature, versions, the running
//!    slot being good (it is the fallback while the other is written),
//!    space on the target and the ESP, and every image block to be read
//!    from the bundle against the signed index (unless
//!    [`UpdateOptions::precheck`] is off);
//! 2. the target is made unbootable: the boot state stops pointing at it
//!    ([`Step::Disarmed`]), then its folder loses `slot.cfg` first
//!    ([`Step::Cleared`]) — this is also what cleans a stale or
//!    half-written target left by an earlier run;
//! 3. the image is written while hashing, its verity root checked against
//!    the signed one ([`Step::Chunk`], [`Step::Image`]);
//! 4. the slot's kernel, initrd, manifest, then `slot.cfg` (each replaced
//!    atomically);
//! 5. last, the boot state arms the target: primary, 3 tries, not good
//!    ([`Step::Armed`]).
//!
//! Until step 5 GRUB boots the running slot; after it, the new one, with
//! the running one as fallback.

use std::cmp::Ordering;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};

use anklume_contract::bootfiles::{MANIFEST, SLOT_CFG, UKI};
use anklume_contract::bootstate::MAX_TRIES;
use anklume_contract::bundle::compare_versions;
use anklume_contract::Slot;

use crate::delta::{self, Local, Plan};
use crate::open::OpenBundle;
use crate::slotcfg::{slot_cfg, SlotBoot};
use crate::system::System;
use crate::trust::FirmwareTrust;
use crate::write::{write_image, WriteStats};

/// The steps an update goes through; the hook runs after each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// All checks passed; nothing written yet.
    Checked,
    /// The boot state no longer points at the target.
    Disarmed,
    /// The target's folder is empty.
    Cleared,
    /// This many image data blocks are written.
    Chunk(u64),
    /// The image and its verity area are written and match the signature.
    Image,
    /// One file of the target's folder is written.
    File(String),
    /// The boot state arms the target: the update is complete.
    Armed,
}

#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// Accept a version older than or equal to the running one, and an
    /// older data schema.
    pub allow_downgrade: bool,
    /// Reuse blocks found on the local slots (delta).
    pub reuse: bool,
    /// Check every image block read from the bundle against the signed
    /// index before anything is written (default). Without it (streaming)
    /// the image is read once: a corrupt block is caught by the verity
    /// root computed while writing, the target having been made
    /// unbootable first, but the target is no longer byte-identical.
    pub precheck: bool,
    /// Threads for checking the bundle (0 = one per core).
    pub threads: usize,
    /// Data blocks per write chunk.
    pub chunk_blocks: u64,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            allow_downgrade: false,
            reuse: false,
            precheck: true,
            threads: 0,
            chunk_blocks: 1024,
        }
    }
}

/// What an update did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: Slot,
    pub version: String,
    pub root_hash: String,
    pub stats: WriteStats,
    /// Bytes read from the bundle in all (header, manifest, index, boot
    /// files and image blocks).
    pub bundle_bytes_read: u64,
    /// What the user should know (a reuse source that was skipped).
    pub notes: Vec<String>,
}

fn threads(t: usize) -> usize {
    if t > 0 {
        t
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The version rules, checked before anything is written.
pub fn check_rules(sys: &System, bundle: &OpenBundle, allow_downgrade: bool) -> Result<()> {
    let m = &bundle.manifest;
    let new = &m.slot.version;
    let run = &sys.running_version;
    let order = compare_versions(new, run).map_err(|e| anyhow!("versions {new} / {run}: {e}"))?;
    if order != Ordering::Greater && !allow_downgrade {
        bail!(
            "the bundle's version {new} is {} the running {run}; refused (--allow-downgrade to force)",
            if order == Ordering::Equal { "the same as" } else { "older than" }
        );
    }
    if compare_versions(run, &m.min_version).map_err(|e| anyhow!(e))? == Ordering::Less {
        bail!(
            "the bundle updates versions {} and later; this machine runs {run}: install an intermediate version first",
            m.min_version
        );
    }
    if let Some(schema) = sys.running_data_schema {
        if m.data_schema < schema && !allow_downgrade {
            bail!(
                "the bundle's data schema {} is older than the running {schema}: it could not read this machine's data",
                m.data_schema
            );
        }
    }
    Ok(())
}

/// A machine whose running slot boots from a signed UKI (a Secure Boot
/// build) needs one for the new slot: under Secure Boot GRUB starts
/// nothing else, and a slot without one would never boot. With Secure
/// Boot on, that UKI must also be signed by a certificate the firmware
/// (db) or shim (MOK list) trusts, else the new slot would not boot
/// either ([`crate::trust`]). A bundle with a UKI is fine on any machine
/// (GRUB without Secure Boot loads the kernel and initrd).
fn check_signed(sys: &System, bundle: &OpenBundle) -> Result<()> {
    let has_uki =
        |m: &anklume_contract::manifest::SlotManifest| m.boot_files.iter().any(|f| f.name == UKI);
    let running = sys.running;
    let Some(run) = sys.esp.slot_manifest(running)? else {
        return Ok(());
    };
    if !has_uki(&run) {
        return Ok(());
    }
    let target = running.other();
    let Some(uki) = bundle
        .manifest
        .slot
        .boot_files
        .iter()
        .zip(&bundle.boot_files)
        .find_map(|(f, data)| (f.name == UKI).then_some(data))
    else {
        bail!(
            "this machine boots signed UKIs (Secure Boot build: slot {running}'s folder has {UKI}); \
             the bundle has none, so slot {target} could not boot with Secure Boot on: make the bundle from a \
             signed build (anklume-build image --signing-key/--signing-cert, then anklume-build bundle)"
        );
    };
    let Some(dirs) = &sys.firmware else {
        return Ok(());
    };
    let trust = FirmwareTrust::read(dirs).context("reading the firmware's Secure Boot keys")?;
    if trust.secure_boot {
        trust.check_signed(uki, &format!("the bundle's {UKI} (slot {target}'s)"))?;
    }
    Ok(())
}

fn device_size(f: &mut File) -> Result<u64> {
    f.seek(SeekFrom::End(0)).context("measuring the target")
}

/// Whether two paths are the same device or file (block devices by their
/// device number, files by device and inode).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> Result<bool> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let ma = std::fs::metadata(a).with_context(|| format!("reading {}", a.display()))?;
    let mb = match std::fs::metadata(b) {
        Ok(m) => m,
        // A device that is not there is not the one we write.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", b.display())),
    };
    Ok(
        if ma.file_type().is_block_device() && mb.file_type().is_block_device() {
            ma.rdev() == mb.rdev()
        } else {
            (ma.dev(), ma.ino()) == (mb.dev(), mb.ino())
        },
    )
}

/// Open the local slots worth reusing blocks from: the running slot's data
/// (as its manifest on the ESP sizes it, within the device). A running
/// slot that cannot be read (copied to RAM and its medium removed) is no
/// error, only no source: the reason is returned for the report.
fn locals(sys: &System) -> Result<(Vec<Local>, Option<String>)> {
    let s = sys.running;
    let path = sys.device(s).to_path_buf();
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            let why = format!(
                "not reusing the running slot's blocks: {}: {e}",
                path.display()
            );
            return Ok((Vec::new(), Some(why)));
        }
    };
    let size = device_size(&mut file)?;
    let len = match sys.esp.slot_manifest(s)? {
        Some(m) => m.hash_offset.min(size),
        None => size,
    };
    Ok((vec![Local { path, file, len }], None))
}

/// The checks that need the machine but not the target slot's device:
/// the version rules, the running slot being good (the fallback while the
/// other is written), room on the ESP. Returns the boot state read.
pub fn check_machine(
    sys: &System,
    bundle: &OpenBundle,
    allow_downgrade: bool,
) -> Result<anklume_contract::bootstate::BootState> {
    let m = &bundle.manifest;
    let running = sys.running;
    let target = running.other();
    check_rules(sys, bundle, allow_downgrade)?;
    check_signed(sys, bundle)?;
    let (state, _) = sys.esp.read_state()?;
    if !state.is_good(running) {
        bail!(
            "the running slot {running} is not marked good yet (it is on trial): its health check must pass \
             (anklume update --mark-good) before the other slot, its fallback, is overwritten"
        );
    }
    let files: u64 = m.slot.boot_files_size() + 64 * 1024; // + manifest, slot.cfg, FAT slack
    let esp_room = sys.esp.free_bytes()? + sys.esp.slot_bytes(target);
    if esp_room < files {
        bail!(
            "the ESP ({}) has {esp_room} bytes for slot {target}'s boot files; they need {files}",
            sys.esp.root().display()
        );
    }
    Ok(state)
}

/// Run an update of the inactive slot from an opened bundle. `hook` runs
/// after every [`Step`]; an error from it stops the update there (the
/// crash tests' power cut).
pub fn update(
    sys: &System,
    bundle: &OpenBundle,
    opts: &UpdateOptions,
    hook: &mut dyn FnMut(&Step) -> Result<()>,
) -> Result<Report> {
    let m = &bundle.manifest;
    let running = sys.running;
    let target = running.other();
    // 1. Checks; nothing is written.
    let state = check_machine(sys, bundle, opts.allow_downgrade)?;
    let dev = sys.device(target);
    if same_file(dev, sys.device(running))? {
        bail!(
            "slot {target} ({}) is the running slot {running}'s device ({}): refusing to write the running system",
            dev.display(),
            sys.device(running).display()
        );
    }
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening the target slot {} ({})", target, dev.display()))?;
    let room = device_size(&mut out)?;
    if room < m.image.size {
        bail!(
            "slot {target} ({}) has {room} bytes; the new image needs {}",
            dev.display(),
            m.image.size
        );
    }
    let mut notes = Vec::new();
    let (plan, locals) = if opts.reuse {
        let (locals, note) = locals(sys)?;
        notes.extend(note);
        let p = delta::plan(
            &bundle.index,
            Some((&out, room)),
            &locals,
            threads(opts.threads),
        )?;
        (p, locals)
    } else {
        (Plan::full(m.slot.data_blocks), Vec::new())
    };
    if opts.precheck {
        bundle.verify_blocks(&plan.bundle_ranges(), threads(opts.threads))?;
    }
    hook(&Step::Checked)?;

    // 2. Make the target unbootable.
    let mut st = state.clone();
    st.primary = running;
    st.tries[crate::system::idx(target)] = None;
    st.good[crate::system::idx(target)] = false;
    if st != state {
        sys.esp.write_state(&st)?;
    }
    hook(&Step::Disarmed)?;
    sys.esp.clear_slot(target)?;
    hook(&Step::Cleared)?;

    // 3. The image, hashed while written.
    let stats = write_image(
        bundle,
        &plan,
        &locals,
        &out,
        opts.chunk_blocks,
        &mut |done| hook(&Step::Chunk(done)),
    )?;
    drop(out);
    hook(&Step::Image)?;

    // 4. The slot's folder, slot.cfg last.
    for (f, data) in m.slot.boot_files.iter().zip(&bundle.boot_files) {
        sys.esp.write_slot_file(target, &f.name, data)?;
        hook(&Step::File(f.name.clone()))?;
    }
    sys.esp
        .write_slot_file(target, MANIFEST, m.slot.to_json().as_bytes())?;
    hook(&Step::File(MANIFEST.into()))?;
    let cfg = slot_cfg(&SlotBoot {
        slot: target,
        partuuid: sys.partuuid(target).to_string(),
        root_hash: m.slot.root_hash.clone(),
        hash_offset: m.slot.hash_offset,
        version: m.slot.version.clone(),
    });
    sys.esp.write_slot_file(target, SLOT_CFG, cfg.as_bytes())?;
    hook(&Step::File(SLOT_CFG.into()))?;

    // 5. The very last write: arm the target.
    st.arm(target, MAX_TRIES);
    sys.esp.write_state(&st)?;
    hook(&Step::Armed)?;
    Ok(Report {
        target,
        version: m.slot.version.clone(),
        root_hash: m.slot.root_hash.clone(),
        stats,
        bundle_bytes_read: bundle.source.bytes_read(),
        notes,
    })
}
