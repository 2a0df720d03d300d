//! `anklume-update`: A/B OS updater with boot counting and rollback.
//!
//! Not implemented yet: this binary only states its planned interface and
//! exits with status 2, so that nothing mistakes it for a working tool.

const PLAN: &str = "  apply FILE    verify a signed bundle and write the inactive slot\n  mark-good     mark the running slot good after the health check\n  rollback      switch back to the other slot\n  status        show slots, versions and boot tries";

fn main() {
    eprintln!("anklume-update: not implemented yet.\n\nPlanned subcommands:\n{PLAN}");
    std::process::exit(2);
}
