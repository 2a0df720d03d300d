//! First-boot provisioning: from the machine's disks to a typed pool plan.
//!
//! Data flows one way: [`probe`] reads the machine into an
//! [`inventory::Inventory`]; [`disks::survey`] sorts its disks into
//! candidates and exclusions (the boot medium, CD-ROMs, loop, zram, disks in
//! use); a [`preseed`] file or the interactive [`wizard`] picks a candidate
//! and fills in a [`plan::Plan`]; the plan is shown in full; only then
//! [`exec`] turns it into commands. At every boot after that, [`unlock`]
//! finds the pool, unlocks and mounts it.

pub mod consoles;
pub mod disks;
pub mod exec;
pub mod gate;
pub mod inventory;
pub mod plan;
pub mod preseed;
pub mod probe;
pub mod rawscan;
pub mod seed;
pub mod selector;
pub mod size;
pub mod unlock;
pub mod wizard;

/// Fake machines (USB, CD, Ventoy, toram boots) for tests here and in the
/// programs' tests (feature `testdata`).
#[cfg(any(test, feature = "testdata"))]
pub mod testdata;

/// The first `infra.yml`, written on a new btrfs pool (`anklume/infra.yml`):
/// the canonical example committed at the top of the repository, whose
/// image the agent makes on the machine (no network needed).
pub const BOOTSTRAP_INFRA: &str = include_str!("../../../infra.yml");

/// The terminal type the wizard runs on.
pub use dialoguer::console::Term;
