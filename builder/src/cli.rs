//! Command line of `anklume-build`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::verity_cli;

/// Build the anklume Live OS image (hybrid BIOS/UEFI ISO or raw GPT disk)
/// with A/B dm-verity slots.
#[derive(Debug, Parser)]
#[command(name = "anklume-build", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// dm-verity hash trees, compatible with `veritysetup format/verify`.
    #[command(subcommand)]
    Verity(VerityCommand),
    /// Build the images: `out/anklume-<version>.iso` (hybrid BIOS/UEFI ISO)
    /// and/or `.raw` (GPT disk with slots A and B and persist) + SHA256SUMS.
    #[command(visible_alias = "iso")]
    Image(ImageArgs),
    /// The signed update bundle of the last image build (slot A of
    /// --work-dir with its kernel and initrd), for `anklume update`.
    Bundle(BundleArgs),
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The work directory of the image build.
    #[arg(long, value_name = "DIR", default_value = "build")]
    pub work_dir: PathBuf,
    /// The rootfs tree of that build (default: WORK_DIR/mkosi-out/rootfs).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// ed25519 private key (PKCS#8) that signs the bundle
    /// (`anklume-update --new-key` makes one); never copied anywhere.
    #[arg(long, value_name = "FILE")]
    pub update_key: PathBuf,
    /// Oldest installed version this bundle may update.
    #[arg(long, default_value = "0.0.0")]
    pub min_version: String,
    /// Data-schema version of this OS (what it expects on the pool).
    #[arg(long, default_value_t = 1)]
    pub data_schema: u32,
    /// Output file (default: out/anklume-<version>.bundle).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Use this prepared rootfs tree instead of running mkosi.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// mkosi definition of the rootfs.
    #[arg(long, value_name = "DIR", default_value = "mkosi/debian")]
    pub mkosi_dir: PathBuf,
    /// Directory with the release binaries to install (anklume, anklume-build, ...).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Scratch directory (rootfs, slot and ESP images); kept for inspection.
    #[arg(long, value_name = "DIR", default_value = "build")]
    pub work_dir: PathBuf,
    /// Where the ISO and SHA256SUMS go.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out_dir: PathBuf,
    /// OS version recorded in the manifest and the file name.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub version: String,
    /// Timestamp for every date in the image (default: $SOURCE_DATE_EPOCH, else 0).
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// Images to write, comma-separated: iso (hybrid ISO for CD and USB
    /// stick), raw (GPT disk image for SD cards and internal disks).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "iso")]
    pub format: Vec<crate::image::Format>,
    /// Raw image: size of each OS slot partition (K, M, G suffixes; rounded
    /// up to MiB). Leave room for OS updates, which may grow.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub slot_size: u64,
    /// Raw image: size of the persist partition (machine identity, SSH host
    /// keys, network config); formatted ext4 on first boot.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub persist_size: u64,
    /// Secure Boot: PEM private key that signs shim and each slot's UKI
    /// (default: $ANKLUME_SIGNING_KEY). Read where it is, never copied into
    /// the image. Without a key the image boots with Secure Boot off only.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Secure Boot: the key's X.509 certificate, PEM (default:
    /// $ANKLUME_SIGNING_CERT); placed on the ESP for MOK enrolment.
    #[arg(long, value_name = "FILE")]
    pub signing_cert: Option<PathBuf>,
    /// Updates: a public key (NAME.pub, from `anklume-update --new-key`)
    /// the OS will trust to sign update bundles; repeat for several.
    /// Default: $ANKLUME_UPDATE_PUBKEY. Without one, the image installs no
    /// update (docs/update.md).
    #[arg(long, value_name = "FILE")]
    pub update_key: Vec<PathBuf>,
    /// No progress bars or step lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `1G`, `256M`, `4096K`, or bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1G, 256M, 1048576)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("{s:?} is smaller than 1 MiB"));
    }
    Ok(bytes)
}

#[derive(Debug, Subcommand)]
pub enum VerityCommand {
    /// Compute the hash tree of DATA and write it (with its superblock) to
    /// HASHFILE; prints the same header lines as `veritysetup format`.
    Format(VerityFormatArgs),
    /// Recompute the tree of DATA and check it against HASHFILE and
    /// ROOTHASH; exit 0 when everything matches.
    Verify(VerityVerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerityFormatArgs {
    /// Data file or device to protect.
    pub data: PathBuf,
    /// File receiving the superblock and hash tree (created if missing; may
    /// be DATA itself with --hash-offset past the data).
    pub hashfile: PathBuf,
    /// Salt as hex (`-` for none); random 32 bytes when omitted.
    #[arg(long, value_name = "HEX")]
    pub salt: Option<String>,
    /// UUID for the superblock; random when omitted.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Byte offset of the superblock in HASHFILE (multiple of 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub hash_offset: u64,
    /// Number of 4096-byte data blocks to protect; default: all of DATA.
    #[arg(long, value_name = "N")]
    pub data_blocks: Option<u64>,
    /// Hashing threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct VerityVerifyArgs {
    /// Data file or device.
    pub data: PathBuf,
    /// File holding the superblock and hash tree.
    pub hashfile: PathBuf,
    /// Expected root hash (hex).
    pub roothash: String,
    /// Byte offset of the superblock in HASHFILE.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub hash_offset: u64,
    /// Hashing threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// Parse arguments, run, print the error chain once; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verity(VerityCommand::Format(a)) => verity_cli::format(&a).map(|()| 0),
        Command::Verity(VerityCommand::Verify(a)) => verity_cli::verify(&a),
        Command::Image(a) => image_cmd(&a).map(|()| 0),
        Command::Bundle(a) => bundle_cmd(&a).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anklume-build: error: {e:#}");
            1
        }
    }
}

fn bundle_cmd(a: &BundleArgs) -> anyhow::Result<()> {
    let (out, slot) = crate::bundle::write(&crate::bundle::BundleOptions {
        work_dir: a.work_dir.clone(),
        rootfs: a
            .rootfs
            .clone()
            .unwrap_or_else(|| a.work_dir.join("mkosi-out/rootfs")),
        key: a.update_key.clone(),
        min_version: a.min_version.clone(),
        data_schema: a.data_schema,
        out: a.out.clone(),
    })?;
    eprintln!(
        "==> {} (version {}, root hash {})",
        out.display(),
        slot.version,
        slot.root_hash
    );
    Ok(())
}

fn image_cmd(a: &ImageArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let epoch = match a.source_date_epoch {
        Some(e) => e,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
            Err(_) => 0,
        },
    };
    let signing =
        crate::signing::SigningKey::from_args(a.signing_key.as_deref(), a.signing_cert.as_deref())?;
    crate::image::build(&crate::image::BuildOptions {
        rootfs: a.rootfs.clone(),
        mkosi_dir: a.mkosi_dir.clone(),
        bin_dir: a.bin_dir.clone(),
        work_dir: a.work_dir.clone(),
        out_dir: a.out_dir.clone(),
        version: a.version.clone(),
        epoch,
        quiet: a.quiet,
        formats: a.format.clone(),
        slot_size: a.slot_size,
        persist_size: a.persist_size,
        signing,
        // The variable is for mkosi builds; a prepared tree has its keys.
        update_keys: if a.update_key.is_empty() && a.rootfs.is_none() {
            std::env::var_os("ANKLUME_UPDATE_PUBKEY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .into_iter()
                .collect()
        } else {
            a.update_key.clone()
        },
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2048k"), Ok(2 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12").unwrap_err().contains("smaller than 1 MiB"));
        assert!(parse_size("1.5G").unwrap_err().contains("not a size"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_are_comma_separated() {
        let c = Cli::try_parse_from(["anklume-build", "iso", "--format", "iso,raw"]).unwrap();
        match c.command {
            Command::Image(a) => assert_eq!(
                a.format,
                [crate::image::Format::Iso, crate::image::Format::Raw]
            ),
            _ => panic!("not the image command"),
        }
        assert!(Cli::try_parse_from(["anklume-build", "image", "--format", "vhd"]).is_err());
    }
}
