//! Command-line interface of `anklume`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use anklume_generator::{self as sync, SyncOptions};

/// anklume: compartmentalize a workstation into Incus domains described in infra.yml.
#[derive(Debug, Parser)]
#[command(name = "anklume", version, about)]
pub struct Cli {
    /// Trace every external command line (`+ nft ...`) on stderr.
    /// Also: ANKLUME_CMD_LOG=trace.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the Ansible tree (inventory/, group_vars/, host_vars/) from infra.yml.
    ///
    /// Every error is listed before anything is written. Only the
    /// `=== MANAGED BY infra.yml ===` section of each file is replaced;
    /// content outside it is kept byte for byte.
    Sync {
        /// infra.yml, or an infra/ directory (base.yml + domains/*.yml + policies.yml).
        /// Default: infra/ when it holds base.yml, else infra.yml.
        infra: Option<PathBuf>,
        /// Directory the Ansible tree is written to.
        #[arg(long, default_value = ".")]
        base_dir: PathBuf,
        /// Show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete orphan files that are not protected (ephemeral: false).
        #[arg(long)]
        clean_orphans: bool,
        /// Directory of the nesting context files (absolute_level, vm_nested, yolo).
        /// Default: $ANKLUME_CONTEXT_DIR, else /etc/anklume.
        #[arg(long)]
        context_dir: Option<PathBuf>,
    },
    /// Make Incus match infra.yml: each enabled domain's bridge, project,
    /// profiles, volumes and instances (created, drift corrected, started),
    /// and the nftables isolation ruleset (table inet anklume, one
    /// transaction). Anklume-made objects no longer in infra.yml are
    /// reported as orphans, deleted only with --clean-orphans.
    Apply {
        /// Only these domains (default: every enabled domain).
        domains: Vec<String>,
        /// infra.yml or an infra/ directory (default as for sync).
        #[arg(long)]
        infra: Option<PathBuf>,
        /// Print the plan and the ruleset diff (checked with nft -c); change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete anklume-made instances, profiles, projects and networks no
        /// longer in infra.yml (never a protected instance).
        #[arg(long)]
        clean_orphans: bool,
        /// Bridges without NAT (nothing leaves the host; tests use this).
        #[arg(long)]
        no_nat: bool,
        /// Storage pool for root disks and volumes.
        #[arg(long, default_value = "default")]
        pool: String,
        /// Network namespace (a path such as /run/netns/NAME) that Incus's
        /// bridges live in, when it is not this one: the ruleset is loaded
        /// there.
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Where the last loaded ruleset is kept (for --dry-run's diff).
        #[arg(long, default_value = anklume_reconciler::desired::STATE_DIR)]
        state_dir: PathBuf,
        /// No progress lines on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// With --dry-run: print the plan as JSON (schema in
        /// docs/reconciler.md) instead of the table.
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Incus socket (default: $INCUS_SOCKET, $INCUS_DIR/unix.socket,
        /// /var/lib/incus/unix.socket).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Directory of the nesting context files (as for sync).
        #[arg(long)]
        context_dir: Option<PathBuf>,
    },
    /// Show what this boot runs on (slot, version, root hash, verity state,
    /// root file system, toram, persist) and what runs on it: Incus, each
    /// anklume domain's instances (state, addresses), whether the nftables
    /// isolation table is present and current, RAM encryption.
    Status {
        /// infra.yml or an infra/ directory to judge the ruleset against
        /// (default as for sync).
        #[arg(long)]
        infra: Option<PathBuf>,
        /// Incus socket (default as for apply).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Network namespace of Incus's bridges (as for apply).
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Directory of the nesting context files (as for sync).
        #[arg(long)]
        context_dir: Option<PathBuf>,
        /// Print the report as JSON (schema in docs/reconciler.md).
        #[arg(long)]
        json: bool,
    },
}

/// Run the CLI; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // Reports are for people and scripts: command traces only when asked.
    let env_trace = std::env::var_os("ANKLUME_CMD_LOG").is_some_and(|v| v == "trace");
    anklume_cmd::set_trace(cli.verbose || env_trace);
    match cli.command {
        Command::Status {
            infra,
            socket,
            netns,
            context_dir,
            json,
        } => {
            let d = anklume_reconciler::status::StatusOptions::default();
            let o = anklume_reconciler::status::StatusOptions {
                socket: socket.unwrap_or(d.socket.clone()),
                infra,
                netns,
                context_dir,
                ..d
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            anklume_reconciler::status::run(&o, json, &mut out)
        }
        Command::Apply {
            domains,
            infra,
            dry_run,
            clean_orphans,
            no_nat,
            pool,
            netns,
            state_dir,
            quiet,
            json,
            socket,
            context_dir,
        } => {
            let o = anklume_reconciler::ApplyOptions {
                infra,
                context_dir,
                domains,
                dry_run,
                clean_orphans,
                socket: socket.unwrap_or_else(anklume_incus::client::default_socket),
                settings: anklume_reconciler::desired::ApplySettings {
                    nat: !no_nat,
                    pool,
                    netns,
                    state_dir: Some(state_dir),
                },
                progress: !quiet && !json,
                json,
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let mut out = stdout.lock();
            let mut err = stderr.lock();
            Ok(anklume_reconciler::run(&o, &mut out, &mut err)?.0)
        }
        Command::Sync {
            infra,
            base_dir,
            dry_run,
            clean_orphans,
            context_dir,
        } => {
            let opts = SyncOptions {
                infra,
                base_dir,
                dry_run,
                clean_orphans,
                context_dir,
                host: None,
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut err = std::io::BufWriter::new(stderr.lock());
            let outcome = sync::run(&opts, &mut out, &mut err);
            // Findings first, then the report, even when the run failed.
            std::io::Write::flush(&mut err)?;
            std::io::Write::flush(&mut out)?;
            let outcome = outcome?;
            Ok(match outcome {
                sync::Outcome::Done(_) => 0,
                sync::Outcome::Invalid => 1,
            })
        }
    }
}
