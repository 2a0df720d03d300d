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
    /// Build the hybrid BIOS/UEFI ISO (`out/anklume-<version>.iso` + SHA256SUMS).
    Iso(IsoArgs),
}

#[derive(Debug, Args)]
pub struct IsoArgs {
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
    /// No progress bars or step lines.
    #[arg(long, short)]
    pub quiet: bool,
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
        Command::Iso(a) => iso_cmd(&a).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anklume-build: error: {e:#}");
            1
        }
    }
}

fn iso_cmd(a: &IsoArgs) -> anyhow::Result<()> {
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
    crate::image::build_iso(&crate::image::IsoOptions {
        rootfs: a.rootfs.clone(),
        mkosi_dir: a.mkosi_dir.clone(),
        bin_dir: a.bin_dir.clone(),
        work_dir: a.work_dir.clone(),
        out_dir: a.out_dir.clone(),
        version: a.version.clone(),
        epoch,
        quiet: a.quiet,
    })?;
    Ok(())
}
