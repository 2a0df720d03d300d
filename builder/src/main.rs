//! `anklume-build` binary: see the library for everything it does.

fn main() {
    std::process::exit(anklume_build::cli::main());
}
