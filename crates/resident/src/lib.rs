//! What runs resident on a booted anklume machine.
//!
//! - [`agent`]: `anklume agent`, the converge loop: `infra.yml` on the data
//!   pool → sync (generator) + apply (reconciler), logged to stderr (the
//!   journal), re-run when `infra.yml` changes ([`watch`]).
//! - [`lastapply`]: the record every apply leaves in the state folder, which
//!   the health check reads.
//! - [`health`]: `anklume health`: the data pool mounted, Incus answering,
//!   the last apply converged, the isolation ruleset current, and a folder
//!   of extra checks; its success is what marks a boot good
//!   (`anklume-bootstate`).
//! - [`notify`]: systemd's readiness protocol for the agent service.
//! - [`pool`]: where the data pool is mounted, and whether it is.

pub mod agent;
pub mod health;
pub mod lastapply;
pub mod notify;
pub mod pool;
pub mod watch;
