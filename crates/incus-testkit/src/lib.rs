//! Test support for everything that talks to Incus: a private `incusd`
//! ([`testd`]) in its own network namespace, and a small image built on the
//! spot ([`testimage`]) so no test ever reaches an image server.
//!
//! Only ever a dev-dependency: no program links it.

pub mod testd;
pub mod testimage;

pub use testd::TestDaemon;
