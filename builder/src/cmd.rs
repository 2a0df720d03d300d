//! The one way this crate runs external programs.
//!
//! Every command line is logged (to stderr, when `ANKLUME_BUILD_LOG` is not
//! `quiet`) before it runs; a failure carries the command line, the exit
//! status and the last lines of its stderr; a missing program names the
//! Debian package that provides it.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, Context, Result};

/// Debian packages providing the programs the builder calls.
pub fn package_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "mkosi" => "mkosi (bookworm-backports)",
        "mksquashfs" | "unsquashfs" => "squashfs-tools",
        "xorriso" => "xorriso",
        "veritysetup" => "cryptsetup-bin",
        "sgdisk" => "gdisk",
        "fsck.vfat" => "dosfstools",
        "qemu-system-x86_64" => "qemu-system-x86",
        "zstd" => "zstd",
        "cpio" => "cpio",
        "chroot" => "coreutils",
        _ => return None,
    })
}

/// How many stderr lines a failure message keeps.
const STDERR_TAIL: usize = 15;

/// A command about to run.
#[derive(Debug)]
pub struct Cmd {
    inner: Command,
    line: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let line = program.as_ref().to_string_lossy().into_owned();
        Cmd {
            inner: Command::new(program),
            line,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.line.push(' ');
        self.line
            .push_str(&shell_quote(&a.as_ref().to_string_lossy()));
        self.inner.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.inner.env(k, v);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.inner.current_dir(dir);
        self
    }

    /// The command line as logged.
    pub fn line(&self) -> &str {
        &self.line
    }

    fn spawn_output(mut self, stdout: Stdio) -> Result<(String, Output)> {
        if std::env::var_os("ANKLUME_BUILD_LOG").is_none_or(|v| v != "quiet") {
            eprintln!("+ {}", self.line);
        }
        let program = self.inner.get_program().to_string_lossy().into_owned();
        let out = self
            .inner
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    match package_of(&program) {
                        Some(p) => anyhow!("{program} not found: install the Debian package {p} (or run ci/setup-image)"),
                        None => anyhow!("{program} not found in PATH"),
                    }
                } else {
                    anyhow!(e).context(format!("starting {program}"))
                }
            })?;
        Ok((self.line, out))
    }

    fn check(line: &str, out: &Output) -> Result<()> {
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n");
        Err(anyhow!(
            "`{line}` failed ({}){}",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n{tail}")
            }
        ))
    }

    /// Run for its effect; stdout is captured and dropped (use [`Cmd::output`]
    /// for data), stderr feeds the error message.
    pub fn run(self) -> Result<()> {
        let (line, out) = self.spawn_output(Stdio::piped())?;
        Self::check(&line, &out)
    }

    /// Run and return stdout.
    pub fn output(self) -> Result<Vec<u8>> {
        let (line, out) = self.spawn_output(Stdio::piped())?;
        Self::check(&line, &out)?;
        Ok(out.stdout)
    }

    /// Run and return stdout as UTF-8 text.
    pub fn output_string(self) -> Result<String> {
        let line = self.line.clone();
        String::from_utf8(self.output()?)
            .with_context(|| format!("output of `{line}` is not UTF-8"))
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_command_and_stderr_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
            .run()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sh -c 'echo first >&2; echo '\\''the reason'\\'' >&2; exit 3'`"),
            "{err}"
        );
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.ends_with("first\nthe reason"), "{err}");
    }

    #[test]
    fn missing_program_names_its_package() {
        let err = Cmd::new("mksquashfs-does-not-exist")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
        let err = format!("{:#}", anyhow!(package_of("xorriso").unwrap()));
        assert_eq!(err, "xorriso");
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(
            Cmd::new("printf").arg("a b").output_string().unwrap(),
            "a b"
        );
    }
}
