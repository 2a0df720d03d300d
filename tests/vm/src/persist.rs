//! persist (raw image, SeaBIOS, GRUB from the BIOS boot partition): the
//! first boot formats the empty persist partition and writes a token into
//! it; a second boot of the same disk finds the token.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use anklume_contract::Slot;

use crate::qemu::VmConfig;
use crate::scenario::{
    boot_and_report, check_verified_boot, copy_image, expect, ImageFacts, Outcome,
};

pub fn run(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    let copy = copy_image(image, &cfg.dir, "persist.raw")?;
    cfg.image = copy.clone();
    let token = format!(
        "token-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );

    cfg.test_actions = format!("report,persist-write={token}");
    let first = boot_and_report(&cfg, Duration::from_secs(900)).context("first boot")?;
    check_verified_boot(&first.report, facts, Slot::A).context("first boot")?;
    expect(&first.report, "persist_mounted", "1").context("first boot")?;
    expect(&first.report, "persist_written", &token).context("first boot")?;
    std::fs::rename(
        cfg.dir.join("console.log"),
        cfg.dir.join("console-boot1.log"),
    )?;
    std::fs::rename(cfg.dir.join("report.log"), cfg.dir.join("report-boot1.log"))?;

    cfg.test_actions = "report".into();
    let mut second = boot_and_report(&cfg, Duration::from_secs(900)).context("second boot")?;
    check_verified_boot(&second.report, facts, Slot::A).context("second boot")?;
    expect(&second.report, "persist_mounted", "1").context("second boot")?;
    expect(&second.report, "persist_token", &token)
        .context("second boot: the token written by the first boot is gone")?;
    std::fs::remove_file(&copy)?;
    let mut stages: Vec<(String, f64)> = first
        .stage_times
        .into_iter()
        .map(|(n, t)| (format!("1:{n}"), t))
        .collect();
    stages.extend(
        second
            .stage_times
            .into_iter()
            .map(|(n, t)| (format!("2:{n}"), t)),
    );
    second.stage_times = stages;
    Ok(second)
}
