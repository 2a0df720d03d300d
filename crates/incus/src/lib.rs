//! Talking to Incus: the REST client over the daemon's unix socket, and
//! the container image made on this machine ([`localimage`]).
//!
//! The private daemon and test image that tests and benchmarks start live
//! in `anklume-incus-testkit`, a dev-dependency only.

pub mod client;
pub mod localimage;

pub use client::{Client, Error};
