//! Helpers shared by the end-to-end tests: the generator's own test helpers
//! (one file, included here) and the private-daemon lab.
#![allow(dead_code)]

#[path = "../../../crates/generator/tests/common/mod.rs"]
mod generator;
pub mod lab;

#[allow(unused_imports)]
pub use generator::*;
