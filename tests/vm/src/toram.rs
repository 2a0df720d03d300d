//! toram: a copy of the image whose boot state asks for the "copied to RAM"
//! entry; after the first report the CD is ejected through the QEMU monitor
//! and the guest must still read all of /usr and start programs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use anklume_contract::bootstate::TORAM_VAR;

use crate::qemu::VmConfig;
use crate::scenario::{
    boot_until_report, copy_image, expect, parse_report, read_env, wait_report, write_env,
    ImageFacts, Outcome,
};

pub fn run(facts: &ImageFacts, mut cfg: VmConfig, image: &Path) -> Result<Outcome> {
    let copy = copy_image(image, &cfg.dir, "toram.iso")?;
    let mut vars = read_env(&copy, facts)?;
    vars.insert(TORAM_VAR.to_string(), "1".to_string());
    write_env(&copy, facts, &vars).context("arming toram in the boot state")?;
    cfg.image = copy.clone();
    cfg.monitor = true;
    cfg.test_actions = "report,wait-eject".into();
    let (mut out, mut vm) = boot_until_report(&cfg, Duration::from_secs(900))?;
    let r = out.report.clone();
    expect(&r, "boot_toram", "1")?;
    expect(&r, "status_toram", "yes")?;
    expect(&r, "verity_status", "verified")?;
    expect(&r, "verity_roothash", &facts.manifest.root_hash)?;
    let answer = vm.monitor("eject -f cd")?;
    eprintln!(
        "  ejected the CD (monitor: {:?})",
        answer.lines().last().unwrap_or("").trim()
    );
    let start = Instant::now();
    wait_report(&mut vm, "ANKLUME end2", start, Duration::from_secs(600))
        .context("the report after the eject")?;
    out.report = parse_report(&vm.report());
    out.stage_times
        .push(("after-eject".into(), start.elapsed().as_secs_f64()));
    vm.close()?;
    std::fs::remove_file(&copy)?;
    expect(&out.report, "ejected", "1")?;
    expect(&out.report, "after_eject_read", "ok")?;
    Ok(out)
}
