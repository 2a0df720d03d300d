//! Every console the kernel writes to (`console=tty0 console=ttyS0`: the
//! screen and the serial line), as one writer. At boot the recovery key is
//! written here and only here: the service's own output goes to the
//! journal as well, and the key must not (it is stored nowhere).
//! `/dev/console` would not do: it is the last `console=` only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the kernel lists its active consoles.
const ACTIVE: &str = "sys/class/tty/console/active";

/// The consoles, each opened for writing.
#[derive(Debug)]
pub struct Consoles {
    pub names: Vec<String>,
    files: Vec<File>,
}

/// The consoles the kernel lists under `root` (`tty0 ttyS0`).
pub fn active(root: &Path) -> Result<Vec<String>> {
    let active = root.join(ACTIVE);
    let list = std::fs::read_to_string(&active)
        .with_context(|| format!("reading {}", active.display()))?;
    Ok(list.split_whitespace().map(str::to_string).collect())
}

/// The terminal someone types on for console `name`: `tty0` is "the
/// virtual terminal in front", at boot the first one.
pub fn terminal(name: &str) -> &str {
    if name == "tty0" {
        "tty1"
    } else {
        name
    }
}

/// The terminal type of console `name`: a serial line (`ttyS0`,
/// `ttyUSB0`, `ttyAMA0`) is assumed to be a VT220-compatible terminal,
/// as systemd's serial-getty does; a virtual terminal is `linux`.
pub fn term_type(name: &str) -> &'static str {
    let vt = name
        .strip_prefix("tty")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if vt {
        "linux"
    } else {
        "vt220"
    }
}

impl Consoles {
    /// The active consoles under `root` (`/`; a fake tree in tests). None
    /// listed, or none that opens: an error saying so (the caller then has
    /// nowhere private to show a secret).
    pub fn open(root: &Path) -> Result<Consoles> {
        let active = root.join(ACTIVE);
        let list = std::fs::read_to_string(&active)
            .with_context(|| format!("reading {}", active.display()))?;
        let mut c = Consoles {
            names: Vec::new(),
            files: Vec::new(),
        };
        let mut failed = Vec::new();
        for name in list.split_whitespace() {
            let dev: PathBuf = root.join("dev").join(name);
            match OpenOptions::new().write(true).open(&dev) {
                Ok(f) => {
                    c.names.push(name.to_string());
                    c.files.push(f);
                }
                Err(e) => failed.push(format!("{}: {e}", dev.display())),
            }
        }
        anyhow::ensure!(
            !c.files.is_empty(),
            "no console to write to ({} lists {:?}{}{})",
            active.display(),
            list.trim(),
            if failed.is_empty() { "" } else { "; " },
            failed.join("; ")
        );
        Ok(c)
    }
}

impl Write for Consoles {
    /// Each console gets everything; one that fails (unplugged serial)
    /// does not stop the others, only all failing is an error.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut last = None;
        let mut ok = false;
        for f in &mut self.files {
            match f.write_all(buf) {
                Ok(()) => ok = true,
                Err(e) => last = Some(e),
            }
        }
        match (ok, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_every_active_console_and_only_those() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/tty/console")).unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join(ACTIVE), "tty0 ttyS0\n").unwrap();
        for n in ["tty0", "ttyS0", "tty1"] {
            std::fs::write(d.path().join("dev").join(n), "").unwrap();
        }
        let mut c = Consoles::open(d.path()).unwrap();
        assert_eq!(c.names, ["tty0", "ttyS0"]);
        writeln!(c, "secret").unwrap();
        c.flush().unwrap();
        let read = |n: &str| std::fs::read_to_string(d.path().join("dev").join(n)).unwrap();
        assert_eq!(read("tty0"), "secret\n");
        assert_eq!(read("ttyS0"), "secret\n");
        assert_eq!(read("tty1"), "");
    }

    #[test]
    fn consoles_are_named_and_typed_for_the_person_at_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/tty/console")).unwrap();
        std::fs::write(d.path().join(ACTIVE), "tty0 ttyS0\n").unwrap();
        let names = active(d.path()).unwrap();
        assert_eq!(names, ["tty0", "ttyS0"]);
        let t: Vec<(&str, &str)> = names
            .iter()
            .map(|n| (terminal(n), term_type(terminal(n))))
            .collect();
        assert_eq!(t, [("tty1", "linux"), ("ttyS0", "vt220")]);
        assert_eq!(term_type("ttyUSB0"), "vt220");
        assert_eq!(term_type("ttyAMA0"), "vt220");
        assert_eq!(term_type("tty12"), "linux");
    }

    #[test]
    fn no_console_that_opens_is_an_error_naming_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/tty/console")).unwrap();
        std::fs::write(d.path().join(ACTIVE), "ttyS9\n").unwrap();
        let e = format!("{:#}", Consoles::open(d.path()).unwrap_err());
        assert!(
            e.contains("no console to write to") && e.contains("ttyS9"),
            "{e}"
        );
        let e = format!("{:#}", Consoles::open(&d.path().join("none")).unwrap_err());
        assert!(e.contains("console/active"), "{e}");
    }
}
