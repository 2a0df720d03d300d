//! `anklume-vmtest`: run VM boot scenarios against a built image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use anklume_vmtest::scenario::{self, Images, Scenario};

/// Boot the built anklume image in QEMU and check it from inside the guest.
#[derive(Debug, Parser)]
#[command(name = "anklume-vmtest", version, about)]
struct Cli {
    /// The hybrid ISO (scenarios bios-disk, bios-cd, uefi-disk, uefi-cd,
    /// tampered, toram).
    #[arg(long, alias = "image", value_name = "ISO")]
    iso: Option<PathBuf>,
    /// The raw GPT image (scenarios persist, rollback, pool-btrfs, pool-tpm).
    #[arg(long, value_name = "RAW")]
    raw: Option<PathBuf>,
    /// The ZFS variant's raw image (`make iso-zfs`; scenario pool-zfs).
    #[arg(long, value_name = "RAW")]
    raw_zfs: Option<PathBuf>,
    /// Ventoy's release files, for the ventoy-* scenarios (a stick image is
    /// made from them on a loop device).
    #[arg(long, value_name = "DIR", default_value = anklume_vmtest::ventoy::DEFAULT_RELEASE)]
    ventoy_release: PathBuf,
    /// The update scenario's bundle: a newer version of the image, signed
    /// with a key it trusts (`make test-bundles`).
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The update-rejected scenario's bundle: signed with a key the image
    /// does not trust.
    #[arg(long, value_name = "FILE")]
    foreign_bundle: Option<PathBuf>,
    /// The update-broken scenario's bundle: a newer version whose health
    /// check always fails (`make test-bundle-broken`).
    #[arg(long, value_name = "FILE")]
    broken_bundle: Option<PathBuf>,
    /// Where console logs and guest reports are kept.
    #[arg(long, default_value = "build/vmtest")]
    work_dir: PathBuf,
    /// Scenarios: all, ci, bios-disk, bios-cd, uefi-disk, uefi-cd, tampered,
    /// toram, persist, rollback, uefi-sb-own, uefi-sb-ms, sb-tampered,
    /// ventoy-bios, ventoy-uefi, ventoy-grub2-bios, ventoy-grub2-uefi,
    /// pool-btrfs, pool-tpm, update, update-broken, update-powercut,
    /// update-rejected, stick-grow, update-sb.
    #[arg(default_value = "all")]
    scenarios: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut list = Vec::new();
    for s in &cli.scenarios {
        match Scenario::parse(s) {
            Ok(v) => list.extend(v),
            Err(e) => {
                eprintln!("anklume-vmtest: error: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    let images = Images {
        iso: cli.iso.clone(),
        raw: cli.raw.clone(),
        raw_zfs: cli.raw_zfs.clone(),
        ventoy_release: Some(cli.ventoy_release.clone()),
        bundle: cli.bundle.clone(),
        foreign_bundle: cli.foreign_bundle.clone(),
        broken_bundle: cli.broken_bundle.clone(),
    };
    let mut failed = 0;
    for s in &list {
        let image = images
            .get(s.image_kind())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| e.to_string());
        eprintln!("== {} ({image})", s.name());
        let t = std::time::Instant::now();
        match scenario::run(*s, &images, &cli.work_dir) {
            Ok(o) => {
                let stages: Vec<String> = o
                    .stage_times
                    .iter()
                    .map(|(n, t)| format!("{n} {t:.0}s"))
                    .collect();
                eprintln!(
                    "PASS {} in {:.0} s [{}]",
                    s.name(),
                    t.elapsed().as_secs_f64(),
                    stages.join(", ")
                );
                for k in [
                    "boot_time",
                    "boot_chain",
                    "boot_chain_console",
                    "boot_blame",
                    "boot_firstboot",
                    "boot_udev_block",
                    "boot_cpu",
                ] {
                    if let Some(v) = o.report.get(k) {
                        eprintln!("  {k}: {v}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "FAIL {} after {:.0} s: {e:#}\n  logs: {}",
                    s.name(),
                    t.elapsed().as_secs_f64(),
                    cli.work_dir.join(s.name()).display()
                );
            }
        }
    }
    eprintln!("vm tests: {} passed, {failed} failed", list.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
