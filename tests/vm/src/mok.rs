//! MokManager, driven the way a user does it once on a stock PC: "Enroll
//! key from disk" → the ESP → `EFI/anklume/anklume-sb.der` → Continue →
//! Yes → Reboot. Keys go through the QEMU monitor (`sendkey`, the emulated
//! keyboard that OVMF's console reads); every choice is taken on the
//! rendered screen ([`Screen`]): the harness moves the highlight one entry
//! at a time and presses Enter only when the wanted entry is highlighted
//! (Enter on a default entry would be "Continue boot" or "No").

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::qemu::Vm;

/// A small ANSI terminal: enough of what OVMF's terminal driver sends
/// (cursor positioning, clear, background colours) to know, after each
/// key, which menu MokManager shows and which entry is highlighted.
#[derive(Debug)]
pub struct Screen {
    cells: Vec<Vec<char>>,
    bg: Vec<Vec<u8>>,
    row: usize,
    col: usize,
    cur_bg: u8,
}

const ROWS: usize = 60;
const COLS: usize = 200;
/// MokManager draws the highlighted entry on black, the others on blue.
const HIGHLIGHT_BG: u8 = 40;

impl Default for Screen {
    fn default() -> Self {
        Screen {
            cells: vec![vec![' '; COLS]; ROWS],
            bg: vec![vec![HIGHLIGHT_BG; COLS]; ROWS],
            row: 0,
            col: 0,
            cur_bg: HIGHLIGHT_BG,
        }
    }
}

impl Screen {
    /// Feed terminal output (whole escape sequences; the caller feeds the
    /// console from its start each time).
    pub fn feed(&mut self, s: &str) {
        let mut it = s.chars().peekable();
        while let Some(ch) = it.next() {
            if ch != '\x1b' {
                self.put(ch);
                continue;
            }
            if it.peek() != Some(&'[') {
                continue;
            }
            it.next();
            let mut args = String::new();
            let mut cmd = None;
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    cmd = Some(c);
                    break;
                }
                args.push(c);
            }
            if let Some(c) = cmd {
                self.csi(&args, c);
            }
        }
    }

    fn put(&mut self, ch: char) {
        match ch {
            '\r' => self.col = 0,
            '\n' => self.row = (self.row + 1).min(ROWS - 1),
            '\u{8}' => self.col = self.col.saturating_sub(1),
            c if c >= ' ' => {
                if self.col < COLS {
                    self.cells[self.row][self.col] = c;
                    self.bg[self.row][self.col] = self.cur_bg;
                }
                self.col += 1;
            }
            _ => {}
        }
    }

    fn csi(&mut self, args: &str, cmd: char) {
        if args.starts_with(['=', '?']) {
            return;
        }
        let nums: Vec<usize> = args.split(';').map(|x| x.parse().unwrap_or(0)).collect();
        match cmd {
            'H' => {
                self.row = nums.first().copied().unwrap_or(1).max(1) - 1;
                self.col = nums.get(1).copied().unwrap_or(1).max(1) - 1;
                self.row = self.row.min(ROWS - 1);
            }
            'J' => {
                for r in 0..ROWS {
                    self.cells[r] = vec![' '; COLS];
                    self.bg[r] = vec![self.cur_bg; COLS];
                }
            }
            'K' => {
                for c in self.col.min(COLS)..COLS {
                    self.cells[self.row][c] = ' ';
                }
            }
            'm' => {
                for n in nums {
                    if n == 0 {
                        self.cur_bg = HIGHLIGHT_BG;
                    } else if (40..=47).contains(&n) {
                        self.cur_bg = n as u8;
                    }
                }
            }
            _ => {}
        }
    }

    fn line(&self, r: usize) -> String {
        self.cells[r].iter().collect()
    }

    /// The whole screen as text.
    pub fn text(&self) -> String {
        (0..ROWS)
            .map(|r| self.line(r).trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The screen's title (MokManager's second line).
    pub fn title(&self) -> String {
        self.line(1).trim_matches([' ', '│']).to_string()
    }

    /// The entries of the innermost menu box and the highlighted one.
    pub fn menu(&self) -> (Vec<String>, Option<usize>) {
        let Some((r, c)) = (0..ROWS).rev().find_map(|r| {
            let chars = &self.cells[r];
            (1..COLS).find(|&c| chars[c] == '┌').map(|c| (r, c))
        }) else {
            return (Vec::new(), None);
        };
        let mut entries = Vec::new();
        let mut hi = None;
        for rr in r + 1..ROWS {
            if self.cells[rr][c] != '│' {
                break;
            }
            let end = (c + 1..COLS)
                .find(|&x| self.cells[rr][x] == '│')
                .unwrap_or(COLS);
            entries.push(
                self.cells[rr][c + 1..end]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_string(),
            );
            if self.bg[rr][(c + 2).min(COLS - 1)] == HIGHLIGHT_BG {
                hi = Some(entries.len() - 1);
            }
        }
        (entries, hi)
    }
}

/// Drives MokManager in a running VM whose monitor is open.
#[derive(Debug)]
pub struct MokDriver<'a> {
    vm: &'a Vm,
    /// Console bytes seen when the last key was sent: a screen counts only
    /// when drawn after it (old screens stay in the log).
    mark: usize,
}

fn console_raw(vm: &Vm) -> String {
    String::from_utf8_lossy(&std::fs::read(&vm.console_log).unwrap_or_default()).into_owned()
}

impl<'a> MokDriver<'a> {
    pub fn new(vm: &'a Vm) -> Self {
        MokDriver { vm, mark: 0 }
    }

    fn key(&mut self, k: &str) -> Result<()> {
        self.mark = console_raw(self.vm).len();
        self.vm
            .monitor(&format!("sendkey {k}"))
            .with_context(|| format!("sending key {k}"))?;
        Ok(())
    }

    /// Wait until `pred` holds on a screen drawn after the last key, and
    /// the console has been quiet for 300 ms (the redraw is complete).
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Screen) -> bool,
    ) -> Result<Screen> {
        let start = Instant::now();
        let mut last_len = 0;
        let mut quiet_since = Instant::now();
        loop {
            let raw = console_raw(self.vm);
            if raw.len() != last_len {
                last_len = raw.len();
                quiet_since = Instant::now();
            }
            if raw.len() > self.mark && quiet_since.elapsed() >= Duration::from_millis(300) {
                let mut s = Screen::default();
                s.feed(&raw);
                if pred(&s) {
                    return Ok(s);
                }
            }
            if start.elapsed() > timeout {
                let mut s = Screen::default();
                s.feed(&raw);
                bail!(
                    "MokManager: no {what} within {} s; screen:\n{}",
                    timeout.as_secs(),
                    s.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Move the highlight onto the entry `want` accepts, then Enter.
    fn choose(&mut self, what: &str, want: impl Fn(&str) -> bool) -> Result<()> {
        for _ in 0..40 {
            let s = self.wait(what, Duration::from_secs(60), |s| !s.menu().0.is_empty())?;
            let (entries, hi) = s.menu();
            let idx = entries
                .iter()
                .position(|e| want(e))
                .with_context(|| format!("MokManager: no {what} in the menu {entries:?}"))?;
            let hi =
                hi.with_context(|| format!("MokManager: nothing highlighted in {entries:?}"))?;
            if hi == idx {
                return self.key("ret");
            }
            self.key(if idx > hi { "down" } else { "up" })?;
        }
        bail!("MokManager: could not reach {what}")
    }

    /// From MokManager's countdown to the reboot that ends enrolment of
    /// `path` (e.g. `EFI/anklume/anklume-sb.der`) from the volume whose
    /// entry contains `volume`.
    pub fn enroll_from_disk(
        &mut self,
        volume: &str,
        path: &str,
        countdown_deadline: Duration,
    ) -> Result<()> {
        self.wait("countdown", countdown_deadline, |s| {
            s.text().contains("Press any key to perform MOK management")
        })?;
        // Not Enter: that would pick the default entry, "Continue boot".
        self.key("spc")?;
        self.wait("main menu", Duration::from_secs(60), |s| {
            s.menu().0.iter().any(|e| e == "Enroll key from disk")
        })?;
        self.choose("Enroll key from disk", |e| e == "Enroll key from disk")?;
        self.wait("volume list", Duration::from_secs(60), |s| {
            s.title() == "Select Key" && s.menu().0.first().is_some_and(|e| !e.ends_with('/'))
        })?;
        self.choose(&format!("volume {volume}"), |e| e.contains(volume))?;
        let parts: Vec<&str> = path.split('/').collect();
        for (i, p) in parts.iter().enumerate() {
            let name = if i + 1 < parts.len() {
                format!("{p}/")
            } else {
                (*p).to_string()
            };
            self.wait(&name, Duration::from_secs(60), |s| {
                s.title() == "Select Key"
                    && s.menu().0.iter().any(|e| e.eq_ignore_ascii_case(&name))
            })?;
            self.choose(&name, |e| e.eq_ignore_ascii_case(&name))?;
        }
        self.wait("[Enroll MOK]", Duration::from_secs(60), |s| {
            s.text().contains("[Enroll MOK]") && s.menu().0.iter().any(|e| e == "Continue")
        })?;
        self.choose("Continue", |e| e == "Continue")?;
        self.wait("Enroll the key(s)?", Duration::from_secs(60), |s| {
            s.text().contains("Enroll the key(s)?") && s.menu().0.iter().any(|e| e == "Yes")
        })?;
        self.choose("Yes", |e| e == "Yes")?;
        self.wait("Reboot", Duration::from_secs(60), |s| {
            s.menu().0.iter().any(|e| e == "Reboot")
        })?;
        self.choose("Reboot", |e| e == "Reboot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MokManager's main menu as OVMF sends it: a full-screen box, a menu
    /// box, the highlighted entry on black (40), the others on blue (44).
    fn main_menu(highlight: usize) -> String {
        let entries = [
            "Continue boot",
            "Enroll key from disk",
            "Enroll hash from disk",
        ];
        let mut s = String::from("\x1b[2J\x1b[1;1H┌──────┐\x1b[2;1H│ Perform MOK management │");
        s.push_str("\x1b[10;20H┌────────────────────┐");
        for (i, e) in entries.iter().enumerate() {
            let bg = if i == highlight {
                "\x1b[0m\x1b[37m\x1b[40m"
            } else {
                "\x1b[44m"
            };
            s.push_str(&format!("\x1b[{};20H│{bg} {e:<19}\x1b[44m│", 11 + i));
        }
        s.push_str("\x1b[14;20H└────────────────────┘");
        s
    }

    #[test]
    fn reads_the_menu_and_its_highlight_from_the_terminal_stream() {
        let mut s = Screen::default();
        s.feed(&main_menu(0));
        assert_eq!(s.title(), "Perform MOK management");
        let (entries, hi) = s.menu();
        assert_eq!(
            entries,
            [
                "Continue boot",
                "Enroll key from disk",
                "Enroll hash from disk"
            ]
        );
        assert_eq!(hi, Some(0));
        // A redraw after "down" moves the highlight.
        s.feed(&main_menu(1));
        assert_eq!(s.menu().1, Some(1));
        assert!(s.text().contains("Enroll hash from disk"));
    }

    #[test]
    fn no_box_no_menu() {
        let mut s = Screen::default();
        s.feed("Press any key to perform MOK management\r\nBooting in 9 seconds");
        assert_eq!(s.menu(), (Vec::new(), None));
        assert!(s.text().contains("Press any key"));
    }
}
