//! anklume agent and CLI.
//!
//! - [`sync`]: the generator (`infra.yml` → Ansible tree);
//! - [`yaml`]: YAML 1.1 loading and PyYAML-compatible emitting;
//! - [`apply`]: the reconciler (`infra.yml` → Incus);
//! - [`incus`]: the Incus REST client (and a private daemon for tests);
//! - [`cli`]: the command line.

pub mod apply;
pub mod cli;
pub mod fsutil;
pub mod incus;
pub mod ramcrypt;
pub mod status;
pub mod sync;
pub mod yaml;
