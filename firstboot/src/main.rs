//! `anklume-firstboot`: first-boot wizard: encrypted data pool and Incus bootstrap.
//!
//! Not implemented yet: this binary only states its planned interface and
//! exits with status 2, so that nothing mistakes it for a working tool.

const PLAN: &str = "  (wizard)      interactive TUI: pick a disk, LUKS2, BTRFS or ZFS, Incus on the pool\n  --preseed F   unattended mode driven by a preseed file";

fn main() {
    eprintln!("anklume-firstboot: not implemented yet.\n\nPlanned subcommands:\n{PLAN}");
    std::process::exit(2);
}
