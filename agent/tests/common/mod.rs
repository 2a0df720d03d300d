//! Helpers shared by the end-to-end tests: the generator's own test helpers
//! (one file, included here).
#![allow(dead_code)]

#[path = "../../../crates/generator/tests/common/mod.rs"]
mod generator;

pub use generator::*;
