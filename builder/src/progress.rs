//! Progress reporting (indicatif) for long steps; silent when stderr is not
//! a terminal, where one line per finished step is printed instead.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Default)]
pub struct Progress {
    quiet: bool,
}

#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    name: String,
    start: Instant,
    total: u64,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet }
    }

    /// A step measured in bytes.
    pub fn bytes(&self, name: &str, total: u64) -> Bar {
        let bar = if self.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b
        };
        Bar {
            bar,
            name: name.to_string(),
            start: Instant::now(),
            total,
            quiet: self.quiet,
        }
    }

    /// How long a finished step took.
    pub fn took(&self, what: &str, start: Instant) {
        if !self.quiet {
            eprintln!("    {what}: {:.1} s", start.elapsed().as_secs_f64());
        }
    }

    /// A step with no measurable amount: prints when it starts.
    pub fn step(&self, what: &str) {
        if !self.quiet {
            eprintln!("==> {what}");
        }
    }
}

impl Bar {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
        if self.quiet {
            return;
        }
        let s = self.start.elapsed().as_secs_f64();
        eprintln!("    {}: {} MiB in {:.2} s", self.name, self.total >> 20, s);
    }
}
