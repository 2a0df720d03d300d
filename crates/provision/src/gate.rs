//! At boot, on a machine with no pool yet: the wizard offered on every
//! console (the screen and the serial line), taken by the first one where
//! someone presses Enter.
//!
//! `anklume-firstboot-console.service` runs one `anklume-firstboot
//! --console-on NAME` per console (their login prompts wait: there is no
//! password to log in with anyway, see docs/live-os.md). Each shows
//! [`PROMPT`] and waits. The consoles agree through two files in a folder
//! under `/run`:
//!
//! - `owner`, made with `O_EXCL` by the console that starts the wizard
//!   (it holds that console's name). The others say where it runs and wait;
//!   if the person declines or the wizard fails, the owner removes it and
//!   every console offers the wizard again.
//! - `done`, written when the pool is made or someone asked for a login
//!   prompt instead: every console then stops, and the unit gives the
//!   consoles back to their login prompts.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Where the consoles agree, at boot.
pub const GATE_DIR: &str = "/run/anklume/firstboot-console";
/// What each console shows first (the VM tests wait for it).
pub const PROMPT: &str = "anklume: this machine has no data pool yet.";
/// How often a waiting console looks at the other consoles' progress.
const TICK: Duration = Duration::from_millis(500);

/// How a console's wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// This console has the wizard: run it, then [`Gate::finish`] or
    /// [`Gate::release`].
    Wizard,
    /// Done here (a pool was made, or a login prompt was asked for):
    /// what was written to `done`.
    Finished(String),
}

/// One console's view of the shared folder.
#[derive(Debug, Clone)]
pub struct Gate {
    dir: PathBuf,
    /// This console (`ttyS0`), as shown on the others.
    pub name: String,
}

/// What a line typed at the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Wizard,
    Login,
    Unknown,
}

fn answer(line: &str) -> Answer {
    match line.trim().to_ascii_lowercase().as_str() {
        "" => Answer::Wizard,
        "l" | "login" => Answer::Login,
        _ => Answer::Unknown,
    }
}

/// A file's text, trimmed; `None` when it is not there.
fn read_if_there(p: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

impl Gate {
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Gate {
        Gate {
            dir: dir.into(),
            name: name.into(),
        }
    }

    fn owner_path(&self) -> PathBuf {
        self.dir.join("owner")
    }

    fn done_path(&self) -> PathBuf {
        self.dir.join("done")
    }

    /// What `done` says, once written.
    pub fn finished(dir: &Path) -> Result<Option<String>> {
        read_if_there(&dir.join("done"))
    }

    /// The console that has the wizard now, if any.
    fn owner(&self) -> Result<Option<String>> {
        read_if_there(&self.owner_path())
    }

    /// Take the wizard for this console; false when another has it.
    fn claim(&self) -> Result<bool> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.owner_path())
        {
            Ok(mut f) => {
                f.write_all(self.name.as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("writing {}", self.owner_path().display()))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("creating {}", self.owner_path().display())),
        }
    }

    /// The wizard ended without a pool (declined, or it failed): every
    /// console offers it again.
    pub fn release(&self) -> Result<()> {
        match std::fs::remove_file(self.owner_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.owner_path().display())),
        }
    }

    /// Every console is done (`why` is what they say).
    pub fn finish(&self, why: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let tmp = self.dir.join(format!("done.{}", self.name));
        std::fs::write(&tmp, why).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.done_path())
            .with_context(|| format!("renaming {} to done", tmp.display()))
    }

    fn show_prompt(out: &mut dyn Write) -> Result<()> {
        write!(
            out,
            "\r\n{PROMPT}\r\n\
             Press Enter to create it now (the first-boot wizard),\r\n\
             or type l and Enter for a login prompt (run anklume-firstboot later).\r\n"
        )?;
        out.flush().context("writing to the console")
    }

    /// Show the prompt on `out` and wait for this console's answer on
    /// `input` (a terminal in line mode; a pipe in tests), or for another
    /// console to take or end it.
    pub fn wait<I: Read + AsFd>(&self, input: &mut I, out: &mut dyn Write) -> Result<Turn> {
        let mut shown_owner: Option<String> = None;
        let mut input_open = true;
        let mut line = Vec::new();
        Self::show_prompt(out)?;
        loop {
            if let Some(why) = Self::finished(&self.dir)? {
                writeln!(out, "\r\n{why}\r")?;
                out.flush()?;
                return Ok(Turn::Finished(why));
            }
            let owner = self.owner()?;
            match (&owner, &shown_owner) {
                (Some(o), None) if *o != self.name => {
                    write!(
                        out,
                        "\r\nThe first-boot wizard is running on {o}; this console waits for it.\r\n"
                    )?;
                    out.flush()?;
                    shown_owner = Some(o.clone());
                }
                (None, Some(_)) => {
                    // Declined or failed there: offered here again.
                    shown_owner = None;
                    Self::show_prompt(out)?;
                }
                _ => {}
            }
            let readable = input_open && {
                let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(TICK.as_millis() as i32)
                    .expect("the tick fits a poll timeout");
                match poll(&mut fds, timeout) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(e) => return Err(e).context("waiting for the console"),
                }
            };
            if !readable {
                if !input_open {
                    std::thread::sleep(TICK);
                }
                continue;
            }
            let mut buf = [0u8; 256];
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the console"),
            };
            if n == 0 {
                // Hung up (or a pipe closed): nothing more will be typed
                // here; follow the other consoles until they are done.
                input_open = false;
                continue;
            }
            line.extend_from_slice(&buf[..n]);
            while let Some(end) = line.iter().position(|&b| b == b'\n' || b == b'\r') {
                let typed: Vec<u8> = line.drain(..=end).collect();
                let typed = String::from_utf8_lossy(&typed[..typed.len() - 1]).into_owned();
                if shown_owner.is_some() {
                    // Typed while another console has the wizard.
                    continue;
                }
                match answer(&typed) {
                    Answer::Wizard => {
                        if self.claim()? {
                            return Ok(Turn::Wizard);
                        }
                    }
                    Answer::Login => {
                        self.finish(&format!(
                            "Login prompt asked for on {}: no pool made (run anklume-firstboot to make one).",
                            self.name
                        ))?;
                    }
                    Answer::Unknown => {
                        write!(out, "Enter, or l for a login prompt.\r\n")?;
                        out.flush()?;
                    }
                }
                // Whatever follows on this line is stale.
                line.clear();
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
