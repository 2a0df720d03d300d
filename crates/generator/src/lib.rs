//! `anklume sync`: `infra.yml` → Ansible tree (inventory, group_vars,
//! host_vars), compatible with the reference generator (anklume v1).
//!
//! Pipeline: load → validate (all errors) → enrich → validate again →
//! warnings → render every file in memory → write changed files atomically
//! → report orphans. Nothing is written unless every step before succeeded.

pub mod access;
pub mod addressing;
pub mod context;
pub mod diag;
pub mod enrich;
pub mod fsutil;
pub mod generate;
pub mod input;
pub mod managed;
pub mod model;
pub mod orphans;
pub mod resources;
pub mod validate;
pub mod warnings;
pub mod write;

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use self::context::HostContext;
use self::diag::Diags;
use anklume_yaml::emit::to_yaml_into;
use anklume_yaml::load::Sources;
use anklume_yaml::Value;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// `infra.yml` or an `infra/` directory; `None`: the default.
    pub infra: Option<PathBuf>,
    pub base_dir: PathBuf,
    pub dry_run: bool,
    pub clean_orphans: bool,
    pub context_dir: Option<PathBuf>,
    /// Use this host context instead of reading the host (tests).
    pub host: Option<HostContext>,
}

/// Counts of a finished run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub written: usize,
    pub unchanged: usize,
    pub orphans: usize,
    pub deleted: usize,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Summary),
    /// Invalid input; nothing was written. Messages are already printed.
    Invalid,
}

fn print_diags(err: &mut dyn Write, header: &str, d: &Diags, sources: &Sources) -> Result<()> {
    writeln!(err, "{header}")?;
    for item in &d.items {
        writeln!(err, "{}", item.render("  - ", sources))?;
    }
    Ok(())
}

/// The content of a new file for `data` and the byte range of its managed
/// section, rendered into one buffer: the same bytes as
/// `managed::merge(None, &managed::block(&to_yaml(data)))`, whose block
/// is that range.
fn render(data: &Value) -> (String, Range<usize>) {
    let mut out = String::with_capacity(1024);
    out.push_str("---\n");
    let start = out.len();
    for line in [managed::BEGIN, managed::NOTICE] {
        out.push_str(line);
        out.push('\n');
    }
    let yaml = out.len();
    to_yaml_into(data, &mut out);
    let kept = out[yaml..].trim_end().len();
    out.truncate(yaml + kept);
    out.push('\n');
    out.push_str(managed::END);
    let end = out.len();
    out.push_str("\n\n");
    out.push_str(managed::USER_TRAILER);
    (out, start..end)
}

/// Build, render and compare every file with what exists and, unless
/// `dry_run`, write the changed ones where they stay invisible until
/// [`write::Stage::finish`]; spread over the available cores (all of it
/// is independent per domain), so that the file system's work on one file
/// overlaps the building and rendering of the next. `jobs` units of work:
/// `make(j)` gives the files of unit `j`, in order. On error, nothing
/// written is left.
fn render_and_stage(
    base: &Path,
    dirs: &[&str],
    jobs: usize,
    make: &(dyn Fn(usize) -> Vec<generate::FileContent> + Sync),
    dry_run: bool,
    prefetch: write::Prefetch,
) -> Result<(Vec<write::Planned>, write::Stage, write::Temps)> {
    let stage = write::Stage::open(
        dirs.iter().map(|d| Some(base.join(d))),
        dry_run,
        prefetch.wait(),
    )?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = jobs.div_ceil(workers).max(1);
    let chunks: Vec<Range<usize>> = (0..jobs)
        .step_by(chunk)
        .map(|a| a..(a + chunk).min(jobs))
        .collect();
    // Set by a worker that failed: the others stop early.
    let failed = AtomicBool::new(false);
    type Done = (Vec<write::Planned>, write::Temps, Result<()>);
    let work = |c: Range<usize>| -> Done {
        let mut plans = Vec::new();
        let mut temps = write::Temps::new();
        for f in c.flat_map(make) {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let (fresh, block) = render(&Value::Map(f.data));
            let path = base.join(&f.rel);
            match stage.put(f.rel, path, fresh, block, &mut temps) {
                Ok(p) => plans.push(p),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return (plans, temps, Err(e));
                }
            }
        }
        (plans, temps, Ok(()))
    };
    // The first chunk on this thread, which would otherwise only wait: one
    // thread fewer to start, and its allocator already holds the memory the
    // model's preparation freed (fresh pages are a visible cost: the
    // kernel zeroes them).
    let results: Vec<std::thread::Result<Done>> = std::thread::scope(|s| {
        let work = &work;
        let mut chunks = chunks.into_iter();
        let first = chunks.next();
        let handles: Vec<_> = chunks.map(|c| s.spawn(move || work(c))).collect();
        let here =
            first.map(|c| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(c))));
        here.into_iter()
            .chain(handles.into_iter().map(|h| h.join()))
            .collect()
    });
    let mut plans = Vec::new();
    let mut temps = write::Temps::new();
    let mut error = None;
    let mut panic = None;
    for r in results {
        match r {
            Ok((p, t, res)) => {
                plans.extend(p);
                temps.extend(t);
                if let Err(e) = res {
                    error.get_or_insert(e);
                }
            }
            Err(p) => {
                panic.get_or_insert(p);
            }
        }
    }
    if let Some(p) = panic {
        let _ = stage.abort(&temps, anyhow::anyhow!("a render thread panicked"));
        std::panic::resume_unwind(p);
    }
    match error {
        Some(e) => Err(stage.abort(&temps, e)),
        None => Ok((plans, stage, temps)),
    }
}

/// The validated, enriched model of one `infra.yml` and the content of
/// every file `anklume sync` writes from it (the reconciler reads its
/// desired state from the same data).
#[derive(Debug)]
pub struct Prepared {
    pub infra: anklume_yaml::Mapping,
    /// The typed model the files are rendered from; what the reconciler
    /// consumes.
    pub model: model::Model,
    /// What enrichment added that the files carry.
    pub enriched: enrich::Enriched,
    /// Enabled domains.
    pub enabled: usize,
}

/// Load, validate (printing every finding to `err`), enrich and build the
/// model; `None` when the input is invalid (findings already printed). The
/// files are built from it by [`generate::files`] (`run` builds each
/// [`generate::unit`] on the thread that writes it).
pub fn prepare(
    infra: Option<&std::path::Path>,
    context_dir: Option<&std::path::Path>,
    host: Option<&HostContext>,
    err: &mut dyn Write,
) -> Result<Option<Prepared>> {
    let infra_path = match infra {
        Some(p) => p.to_path_buf(),
        None => {
            input::default_path(&std::env::current_dir().context("reading the current directory")?)
        }
    };
    let loaded = match input::load(&infra_path) {
        Ok(l) => l,
        Err(e) => {
            for d in &e.errors {
                writeln!(err, "{}", d.render("ERROR: ", &e.sources))?;
            }
            return Ok(None);
        }
    };
    for w in &loaded.warnings {
        writeln!(err, "{}", w.render("WARNING: ", &loaded.sources))?;
    }
    let sources = loaded.sources;
    let Value::Map(mut infra) = loaded.root.value else {
        unreachable!("input::load returns a mapping")
    };
    let ctx = match host {
        Some(h) => h.clone(),
        None => HostContext::detect(context_dir)?,
    };
    for w in &ctx.warnings {
        writeln!(err, "WARNING: {w}")?;
    }

    let errors = validate::validate(&infra, &ctx, true);
    if !errors.is_empty() {
        print_diags(err, "Validation errors:", &errors, &sources)?;
        return Ok(None);
    }
    let enriched = match enrich::enrich(&mut infra, &ctx) {
        Ok(e) => e,
        Err(msg) => {
            writeln!(err, "ERROR: {msg}")?;
            return Ok(None);
        }
    };
    for i in &enriched.infos {
        writeln!(err, "INFO: {i}")?;
    }
    for w in &enriched.warnings {
        writeln!(err, "WARNING: {w}")?;
    }
    // The second validation and the warnings read the enriched document
    // only: they run beside the model's building, whose result is dropped
    // when they find an error.
    let prefix = generate::nesting_prefix(&infra, ctx.absolute_level);
    let ((post, warned), model) = std::thread::scope(|s| {
        let checks = s.spawn(|| {
            (
                validate::validate(&infra, &ctx, false),
                warnings::warnings(&infra, &ctx),
            )
        });
        let model = model::build(&infra, &enriched, &prefix);
        let checks = checks
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (checks, model)
    });
    if !post.is_empty() {
        print_diags(err, "Post-enrichment validation errors:", &post, &sources)?;
        return Ok(None);
    }
    for w in warned {
        writeln!(err, "WARNING: {w}")?;
    }
    let enabled = access::domains(&infra)
        .values()
        .filter(|d| {
            !access::val(access::map_or_empty(Some(d)), "enabled")
                .is_some_and(|v| matches!(v, Value::Bool(false)))
        })
        .count();
    Ok(Some(Prepared {
        infra,
        model,
        enriched,
        enabled,
    }))
}

/// Run `anklume sync`, printing progress to `out` and findings to `err`.
pub fn run(opts: &SyncOptions, out: &mut dyn Write, err: &mut dyn Write) -> Result<Outcome> {
    // What a warm run compares with, read while the model is prepared: the
    // directories `generate::files` writes into (and `orphans` lists).
    let prefetch =
        write::Prefetch::start(&opts.base_dir, &["inventory", "group_vars", "host_vars"]);
    let Some(Prepared {
        infra,
        model,
        enriched,
        enabled,
    }) = prepare(
        opts.infra.as_deref(),
        opts.context_dir.as_deref(),
        opts.host.as_ref(),
        err,
    )?
    else {
        return Ok(Outcome::Invalid);
    };
    if access::domains(&infra).is_empty() {
        writeln!(out, "No domains defined. Nothing to generate.")?;
        return Ok(Outcome::Done(Summary::default()));
    }
    // Before anything is written: the listing does not see staged files
    // (hidden names outside, or temporaries not ending in `.yml` inside).
    let orphans = orphans::detect(&infra, &opts.base_dir)?;
    let writing = || format!("writing into {}", opts.base_dir.display());
    let make = |j: usize| generate::unit(&infra, &model, &enriched, j);
    let (plans, stage, temps) = render_and_stage(
        &opts.base_dir,
        &generate::dirs(&model),
        generate::units(&infra),
        &make,
        opts.dry_run,
        prefetch,
    )
    .map_err(|e| {
        if opts.dry_run {
            e
        } else {
            e.context(writing())
        }
    })?;

    let dry = if opts.dry_run { "[DRY-RUN] " } else { "" };
    if let Err(e) = writeln!(out, "{dry}Generating files for {enabled} domain(s)...") {
        return Err(stage.abort(&temps, e.into()));
    }
    if !opts.dry_run {
        stage.finish(temps).with_context(writing)?;
    }
    let mut summary = Summary::default();
    for p in &plans {
        let verb = match (opts.dry_run, p.changed) {
            (true, true) => "Would write",
            (true, false) => "Unchanged",
            (false, true) => "Written",
            (false, false) => "Unchanged",
        };
        if p.changed {
            summary.written += 1;
        } else {
            summary.unchanged += 1;
        }
        writeln!(out, "  {dry}{verb}: {}", p.rel)?;
    }
    summary.orphans = orphans.len();
    if !orphans.is_empty() {
        writeln!(out, "\nOrphan files ({}):", orphans.len())?;
        for o in &orphans {
            if o.protected {
                writeln!(
                    out,
                    "  PROTECTED (ephemeral=false): {} — manual removal required",
                    o.rel
                )?;
            } else {
                writeln!(out, "  ORPHAN: {}", o.rel)?;
            }
        }
        if opts.clean_orphans && !opts.dry_run {
            for o in &orphans {
                if o.protected {
                    writeln!(out, "  Skipped (protected): {}", o.rel)?;
                } else {
                    let p = opts.base_dir.join(&o.rel);
                    std::fs::remove_file(&p)
                        .with_context(|| format!("deleting orphan {}", p.display()))?;
                    summary.deleted += 1;
                    writeln!(out, "  Deleted: {}", o.rel)?;
                }
            }
        }
    }
    if !opts.dry_run {
        writeln!(
            out,
            "\nDone: {} written, {} unchanged, {} orphan(s).",
            summary.written, summary.unchanged, summary.orphans
        )?;
    }
    // Freeing the document, the model and every file's text takes a few
    // milliseconds that the caller does not wait for: another thread frees
    // them (in a CLI that exits now, nobody does: the kernel takes the
    // memory back whole). Without a thread, `spawn` drops the closure, and
    // the data with it, here.
    let garbage = (infra, model, enriched, plans);
    std::thread::Builder::new()
        .spawn(move || drop(garbage))
        .ok();
    Ok(Outcome::Done(summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anklume_yaml::emit::to_yaml;
    use anklume_yaml::load::load_bytes;

    #[test]
    fn render_is_the_managed_block_of_the_dump() {
        for src in ["a: 1\nb: [x, {c: 'y z'}]\n", "{}\n", "k: \"é\\n\"\n"] {
            let v = load_bytes(src.as_bytes(), 0).unwrap().root.value;
            let (text, block) = render(&v);
            let want = managed::block(&to_yaml(&v));
            assert_eq!(text[block].to_string(), want);
            assert_eq!(text, managed::merge(None, &want));
        }
    }
}
