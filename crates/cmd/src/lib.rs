//! The one way anklume's programs run external programs.
//!
//! Every command line is traced (`+ cmd args` on stderr) before it runs,
//! when tracing is on (see [`set_trace`]); a failure carries the command
//! line, the exit status and the last lines of its stderr; a missing
//! program names the Debian package that provides it.

pub mod mount;

use std::ffi::OsStr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{anyhow, Context, Result};

/// Debian packages providing the programs anklume calls.
pub fn package_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "mkosi" => "mkosi (bookworm-backports)",
        "mksquashfs" | "unsquashfs" => "squashfs-tools",
        "xorriso" => "xorriso",
        "veritysetup" => "cryptsetup-bin",
        "sgdisk" => "gdisk",
        "fsck.vfat" | "mkfs.vfat" => "dosfstools",
        "mcopy" => "mtools",
        "swtpm" => "swtpm",
        "qemu-system-x86_64" => "qemu-system-x86",
        "zstd" => "zstd",
        "cpio" => "cpio",
        "chroot" => "coreutils",
        "nft" => "nftables",
        "openssl" => "openssl",
        "sbsign" | "sbverify" => "sbsigntool",
        "faketime" => "faketime",
        "ukify" => "systemd-ukify (trixie)",
        "virt-fw-vars" => "python3-virt-firmware (bookworm-backports)",
        "ip" | "nsenter" => "iproute2 / util-linux",
        _ => return None,
    })
}

/// 0: not set (the environment decides), 1: off, 2: on.
static TRACE: AtomicU8 = AtomicU8::new(0);

/// Turn the command-line traces on or off for this process. A program
/// whose output is a report (`anklume status`) turns them off unless asked
/// (`--verbose`); a build log keeps them. Without a call, the environment
/// decides: `ANKLUME_CMD_LOG=quiet` off, anything else on.
pub fn set_trace(on: bool) {
    TRACE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Are command lines traced?
pub fn tracing() -> bool {
    match TRACE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => std::env::var_os("ANKLUME_CMD_LOG").is_none_or(|v| v != "quiet"),
    }
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

    /// Start the child in process group `pgid` (0: a new group of its own,
    /// so the caller can end it and everything it started at once).
    pub fn process_group(mut self, pgid: i32) -> Self {
        use std::os::unix::process::CommandExt;
        self.inner.process_group(pgid);
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

    fn trace(&self) {
        if tracing() {
            eprintln!("+ {}", self.line);
        }
    }

    fn not_found(program: &str, e: std::io::Error) -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            match package_of(program) {
                Some(p) => anyhow!(
                    "{program} not found: install the Debian package {p} (or run ci/setup-image)"
                ),
                None => anyhow!("{program} not found in PATH"),
            }
        } else {
            anyhow!(e).context(format!("starting {program}"))
        }
    }

    /// Start a long-running child (a daemon, a VM) with the given stdio
    /// and return it; the caller owns its lifetime. Traced like every
    /// command; a missing program names its package.
    pub fn spawn(self, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        self.spawn_on(Stdio::null(), stdout, stderr)
    }

    /// [`Cmd::spawn`] with its stdin too (a program that talks to a
    /// terminal: all three on the terminal's device).
    pub fn spawn_on(mut self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        self.trace();
        let program = self.inner.get_program().to_string_lossy().into_owned();
        self.inner
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Self::not_found(&program, e))
    }

    fn spawn_output(mut self, stdout: Stdio) -> Result<(String, Output)> {
        self.trace();
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
            .map_err(|e| Self::not_found(&program, e))?;
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
