//! `anklume-build`: builds the anklume Live OS image (hybrid ISO or raw disk image).
//!
//! Not implemented yet: this binary only states its planned interface and
//! exits with status 2, so that nothing mistakes it for a working tool.

const PLAN: &str = "  iso           build the hybrid BIOS/UEFI ISO with A/B verity slots\n  raw           build a raw GPT disk image (ESP, slot A, slot B, persist)\n  verity        format / verify a dm-verity hash tree (veritysetup-compatible)";

fn main() {
    eprintln!("anklume-build: not implemented yet.\n\nPlanned subcommands:\n{PLAN}");
    std::process::exit(2);
}
