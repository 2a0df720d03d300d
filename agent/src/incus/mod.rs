//! Talking to Incus: the REST client ([`client`]) and, for tests and the
//! benchmark, a private daemon ([`testd`]).

pub mod client;
pub mod testd;
pub mod testimage;

pub use client::{Client, Error};
