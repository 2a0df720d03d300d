//! Command-line interface of `anklume`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use anklume_generator::{self as sync, SyncOptions};
use anklume_resident::agent::{self, AgentOptions};
use anklume_resident::health::{self, HealthOptions};
use anklume_resident::lastapply::{self, Record};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

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
pub enum PoolAction {
    /// Find the pool (the LUKS2 volume labelled anklume-pool), unlock it
    /// (a TPM2 token, else the passphrase asked on every console, again
    /// after a wrong one), mount it at /var/lib/anklume/pool and its incus
    /// subvolume at /var/lib/incus. What is already done is skipped; no
    /// pool: said, exit 0. Run at boot by anklume-pool.service, before
    /// Incus.
    Unlock,
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
    /// The encrypted data pool made by anklume-firstboot.
    Pool {
        #[command(subcommand)]
        action: PoolAction,
    },
    /// Is this boot healthy? The data pool mounted, Incus answering, the
    /// last apply converged, the isolation ruleset current, and every
    /// executable in the checks folder exiting 0 in time. With
    /// --mark-good, a healthy boot marks the running slot good in the boot
    /// state (a read-only or absent medium: said, nothing written).
    ///
    /// Exit: 0 healthy (and marked, when asked); 1 a check failed (nothing
    /// marked); 2 bad command line; 3 healthy but the boot state could not
    /// be written.
    Health {
        /// Mark the running slot good when every check passes.
        #[arg(long)]
        mark_good: bool,
        /// When a check fails on a trial boot (a slot an update installed,
        /// not yet good) and the other slot is good: check twice more, then
        /// make that slot boot next and reboot into it (while the system is
        /// starting), instead of spending the remaining tries.
        #[arg(long)]
        fall_back: bool,
        /// Seconds between the checks of a trial boot (--fall-back).
        #[arg(long, default_value_t = 15, value_name = "SECS")]
        recheck_interval: u64,
        /// The data pool's mount point.
        #[arg(long, default_value = anklume_contract::pool::POOL_DIR)]
        pool_dir: PathBuf,
        /// infra.yml the ruleset and the last apply are judged against
        /// (default: anklume/infra.yml on the pool).
        #[arg(long)]
        infra: Option<PathBuf>,
        /// Where apply left its record (as apply's --state-dir).
        #[arg(long, default_value = anklume_reconciler::desired::STATE_DIR)]
        state_dir: PathBuf,
        /// Folder of extra checks (executables, each must exit 0).
        #[arg(long, default_value = anklume_resident::health::CHECKS_DIR)]
        checks_dir: PathBuf,
        /// Seconds one extra check may run before it is killed and fails.
        #[arg(long, default_value_t = 30)]
        check_timeout: u64,
        /// Incus socket (default as for apply).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Network namespace of Incus's bridges (as for apply).
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Directory of the nesting context files (as for sync).
        #[arg(long)]
        context_dir: Option<PathBuf>,
    },
    /// The resident agent: converge to infra.yml on the data pool (sync +
    /// apply), then again whenever it changes; log to stderr (the journal).
    /// A failed run is logged and retried at the next change. Without a
    /// data pool mounted: says so and exits 0.
    Agent {
        /// The data pool's mount point (nothing is done unless something is
        /// mounted there).
        #[arg(long, default_value = anklume_contract::pool::POOL_DIR)]
        pool_dir: PathBuf,
        /// Do not require a mounted pool (development, tests).
        #[arg(long)]
        no_pool_check: bool,
        /// Do not make the storage pool and the anklume-base image when
        /// Incus lacks them (the default does, for a new pool's first boot).
        #[arg(long)]
        no_bootstrap: bool,
        /// infra.yml or an infra/ directory (default: anklume/infra.yml on
        /// the pool).
        #[arg(long)]
        infra: Option<PathBuf>,
        /// Where the Ansible tree is written (default: infra.yml's folder).
        #[arg(long)]
        base_dir: Option<PathBuf>,
        /// Milliseconds without further change before a run starts.
        #[arg(long, default_value_t = 1000)]
        debounce_ms: u64,
        /// Bridges without NAT (as for apply).
        #[arg(long)]
        no_nat: bool,
        /// Storage pool for root disks and volumes (apply's --pool).
        #[arg(long, default_value = "default")]
        storage_pool: String,
        /// Network namespace of Incus's bridges (as for apply).
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Where the last ruleset and the last apply's record are kept.
        #[arg(long, default_value = anklume_reconciler::desired::STATE_DIR)]
        state_dir: PathBuf,
        /// Incus socket (default as for apply).
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
    /// Signed A/B OS update into the inactive slot (the same command line
    /// as `anklume-update`): --from FILE|URL, --status, --rollback,
    /// --mark-good, --new-key. See docs/update.md.
    Update(anklume_update::cli::UpdateArgs),
}

/// Run the CLI; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // Reports are for people and scripts: command traces only when asked.
    let env_trace = std::env::var_os("ANKLUME_CMD_LOG").is_some_and(|v| v == "trace");
    anklume_cmd::set_trace(cli.verbose || env_trace);
    match cli.command {
        Command::Update(args) => anklume_update::cli::run(args).map(|()| 0),
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
            let infra = o
                .infra
                .clone()
                .unwrap_or_else(|| PathBuf::from("infra.yml"));
            let done = anklume_reconciler::run(&o, &mut out, &mut err);
            // What the health check reads: every real run, failed or not.
            if !dry_run {
                let rec = Record::new(&infra);
                let rec = match &done {
                    Ok((code, s)) => rec.with_summary(*code, s),
                    Err(e) => Record {
                        error: Some(format!("{e:#}")),
                        ..rec
                    },
                };
                let dir = o.settings.state_dir.as_deref().unwrap_or(Path::new("."));
                if let Err(e) = lastapply::write(dir, &rec) {
                    eprintln!("warning: the apply record could not be written: {e:#}");
                }
            }
            Ok(done?.0)
        }
        Command::Pool {
            action: PoolAction::Unlock,
        } => {
            use anklume_provision::{exec, unlock};
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            unlock::run(&mut unlock::LiveMachine, &mut exec::System, &mut out)?;
            Ok(0)
        }
        Command::Health {
            mark_good,
            fall_back,
            recheck_interval,
            pool_dir,
            infra,
            state_dir,
            checks_dir,
            check_timeout,
            socket,
            netns,
            context_dir,
        } => {
            let o = HealthOptions {
                infra: infra
                    .unwrap_or_else(|| pool_dir.join(anklume_contract::pool::INFRA_ON_POOL)),
                pool: pool_dir,
                socket: socket.unwrap_or_else(anklume_incus::client::default_socket),
                state_dir,
                context_dir,
                netns,
                checks_dir,
                check_timeout: Duration::from_secs(check_timeout),
                ..HealthOptions::default()
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut healthy = health::run(&o, &mut out)?;
            // Before giving up on an update, the checks get two more
            // chances (a slow first start of a new release).
            let mut again = if fall_back { 2 } else { 0 };
            while !healthy && again > 0 && on_trial() {
                writeln!(
                    out,
                    "unhealthy on a trial boot: checking again in {recheck_interval} s"
                )?;
                out.flush()?;
                std::thread::sleep(Duration::from_secs(recheck_interval));
                healthy = health::run(&o, &mut out)?;
                again -= 1;
            }
            if !healthy {
                writeln!(out, "unhealthy: the boot is not marked good")?;
                if fall_back {
                    fall_back_and_reboot(&mut out)?;
                }
                return Ok(1);
            }
            writeln!(out, "healthy")?;
            if mark_good {
                return mark_running_slot_good(&mut out);
            }
            Ok(0)
        }
        Command::Agent {
            pool_dir,
            no_pool_check,
            no_bootstrap,
            infra,
            base_dir,
            debounce_ms,
            no_nat,
            storage_pool,
            netns,
            state_dir,
            socket,
            context_dir,
        } => {
            let infra =
                infra.unwrap_or_else(|| pool_dir.join(anklume_contract::pool::INFRA_ON_POOL));
            let base_dir = base_dir.unwrap_or_else(|| {
                infra
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            });
            let o = AgentOptions {
                infra: infra.clone(),
                pool: (!no_pool_check).then_some(pool_dir),
                mountinfo: PathBuf::from("/proc/self/mountinfo"),
                base_dir,
                context_dir: context_dir.clone(),
                apply: anklume_reconciler::ApplyOptions {
                    infra: Some(infra),
                    context_dir,
                    domains: vec![],
                    dry_run: false,
                    clean_orphans: false,
                    socket: socket.unwrap_or_else(anklume_incus::client::default_socket),
                    settings: anklume_reconciler::desired::ApplySettings {
                        nat: !no_nat,
                        pool: storage_pool,
                        netns,
                        state_dir: Some(state_dir.clone()),
                    },
                    progress: true,
                    json: false,
                },
                state_dir,
                debounce: Duration::from_millis(debounce_ms),
                bootstrap_incus: !no_bootstrap,
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let stderr = std::io::stderr();
            let mut err = stderr.lock();
            agent::run(&o, &stop, &mut err, &mut |_| {})?;
            Ok(0)
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

/// After an unhealthy check: a slot on trial gives way to the good one,
/// and the machine reboots into it.
fn fall_back_and_reboot(out: &mut dyn Write) -> Result<()> {
    use anklume_contract::bootenv::BootEnv;
    use anyhow::Context;
    let (boot_env, root) = boot_paths();
    let Some(env) = BootEnv::read(&boot_env)? else {
        return Ok(());
    };
    let slot = env.slot.context("boot.env names no booted slot")?;
    let done = anklume_bootstate::fall_back(&root, &env)?;
    writeln!(out, "{}", done.describe(slot))?;
    if let anklume_bootstate::FellBack::Written { after, .. } = done {
        // Reboot only while the system is still starting: later (a pool
        // unlocked by hand, an agent restarted) someone may be using it.
        // The state is written: a systemd that cannot say counts as not
        // starting (no reboot), said in the line below.
        let state = anklume_cmd::Cmd::new("systemctl")
            .args(["show", "--property=SystemState", "--value"])
            .output_string()
            .map_or_else(|e| format!("unknown ({e:#})"), |s| s.trim().to_string());
        if matches!(state.as_str(), "initializing" | "starting") {
            writeln!(out, "rebooting into slot {}", after.primary)?;
            out.flush()?;
            anklume_cmd::Cmd::new("systemctl")
                .args(["reboot", "--no-block"])
                .run()
                .context("asking systemd to reboot")?;
        } else {
            writeln!(
                out,
                "the system is {} (not starting): not rebooting; slot {} boots at the next reboot",
                state, after.primary
            )?;
        }
    }
    Ok(())
}

/// Whether this boot is a trial ([`anklume_bootstate::on_trial`]); a
/// boot state that cannot be read counts as not.
fn on_trial() -> bool {
    use anklume_contract::bootenv::BootEnv;
    let (boot_env, root) = boot_paths();
    match BootEnv::read(&boot_env) {
        Ok(Some(env)) => anklume_bootstate::on_trial(&root, &env).unwrap_or(false),
        _ => false,
    }
}

/// `boot.env` and the root the boot medium is found under (tests point
/// them elsewhere: ANKLUME_RUN_DIR, ANKLUME_DEV_ROOT).
fn boot_paths() -> (PathBuf, PathBuf) {
    use anklume_contract::bootenv::BOOT_ENV;
    let boot_env = std::env::var_os("ANKLUME_RUN_DIR").map_or_else(
        || PathBuf::from(BOOT_ENV),
        |d| Path::new(&d).join("boot.env"),
    );
    let root =
        std::env::var_os("ANKLUME_DEV_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    (boot_env, root)
}

/// After a healthy check: mark the booted slot good on the boot medium.
fn mark_running_slot_good(out: &mut dyn Write) -> Result<i32> {
    use anklume_contract::bootenv::BootEnv;
    let (boot_env, root) = boot_paths();
    let env = match BootEnv::read(&boot_env) {
        Ok(Some(env)) => env,
        Ok(None) => {
            writeln!(
                out,
                "not an anklume Live OS boot (no {}): no boot state to mark",
                boot_env.display()
            )?;
            return Ok(0);
        }
        Err(e) => {
            writeln!(out, "ERROR: reading {}: {e}", boot_env.display())?;
            return Ok(3);
        }
    };
    match anklume_bootstate::mark_good(&root, &env) {
        Ok(m) => {
            let slot = env.slot.expect("mark_good checked the slot");
            writeln!(out, "{}", m.describe(slot))?;
            Ok(0)
        }
        Err(e) => {
            writeln!(out, "ERROR: marking the running slot good: {e:#}")?;
            Ok(3)
        }
    }
}
