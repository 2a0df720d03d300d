//! The one way anklume's programs run external programs.
//!
//! Every command line is logged (to stderr, when `ANKLUME_CMD_LOG` is not
//! `quiet`) before it runs; a failure carries the command line, the exit
//! status and the last lines of its stderr; a missing program names the
//! Debian package that provides it.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, Context, Result};

/// Debian packages providing the programs anklume calls.
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
        "nft" => "nftables",
        "ip" | "nsenter" => "iproute2 / util-linux",
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
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let line = program.as_ref().to_string_lossy().into_owned();
        Cmd {
            inner: Command::new(program),
            line,
            stdin: None,
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

    /// Feed these bytes on stdin (otherwise stdin is /dev/null).
    pub fn input(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The command line as logged.
    pub fn line(&self) -> &str {
        &self.line
    }

    fn spawn_output(mut self, stdout: Stdio) -> Result<(String, Output)> {
        if std::env::var_os("ANKLUME_CMD_LOG").is_none_or(|v| v != "quiet") {
            eprintln!("+ {}", self.line);
        }
        let program = self.inner.get_program().to_string_lossy().into_owned();
        let input = self.stdin.take();
        self.inner
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(Stdio::piped());
        let out = spawn_and_feed(&mut self.inner, input.as_deref())
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

/// Start `cmd`, write `input` to its stdin from a helper thread (so a
/// program that answers before reading everything cannot deadlock us), and
/// collect its output.
fn spawn_and_feed(cmd: &mut Command, input: Option<&[u8]>) -> std::io::Result<Output> {
    let mut child = cmd.spawn()?;
    let writer = match (input, child.stdin.take()) {
        (Some(data), Some(mut stdin)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                use std::io::Write;
                // A program that exits without reading gives EPIPE: its exit
                // status and stderr say why, not this write.
                let _ = stdin.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = child.wait_with_output()?;
    if let Some(w) = writer {
        w.join()
            .map_err(|_| std::io::Error::other("stdin writer thread panicked"))?;
    }
    Ok(out)
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
    fn input_reaches_stdin() {
        assert_eq!(
            Cmd::new("tr")
                .args(["a-z", "A-Z"])
                .input("ruleset")
                .output_string()
                .unwrap(),
            "RULESET"
        );
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(
            Cmd::new("printf").arg("a b").output_string().unwrap(),
            "a b"
        );
    }
}
