//! `anklume-update`: A/B OS updater with boot counting and rollback; a thin
//! CLI over `anklume-update-lib` (`anklume update` is the same command line
//! over the same library). See docs/update.md.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "anklume-update",
    version,
    about = "Signed A/B updates of anklume Live OS"
)]
struct Cli {
    #[command(flatten)]
    args: anklume_update::cli::UpdateArgs,
}

fn main() {
    if let Err(e) = anklume_update::cli::run(Cli::parse().args) {
        eprintln!("anklume-update: {e:#}");
        std::process::exit(1);
    }
}
