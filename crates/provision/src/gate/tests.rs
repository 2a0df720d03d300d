use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// What a console showed, shared with the test.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str) {
        let start = Instant::now();
        while !self.text().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "never shown: {what:?}; screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A console: its keyboard (the test's end) and its wait, in a thread.
struct Console {
    keys: UnixStream,
    screen: Screen,
    wait: JoinHandle<Result<Turn>>,
}

fn console(dir: &Path, name: &str) -> Console {
    let (keys, mut input) = UnixStream::pair().unwrap();
    let screen = Screen::default();
    let gate = Gate::new(dir, name);
    let mut out = screen.clone();
    let wait = std::thread::spawn(move || gate.wait(&mut input, &mut out));
    screen.wait_for(PROMPT);
    Console { keys, screen, wait }
}

/// Another console finishes: `c`'s wait ends with what it said.
fn finished_elsewhere(dir: &Path, c: Console) -> Console {
    Gate::new(dir, "ttyS0")
        .finish("The pool is ready.")
        .unwrap();
    let Console { keys, screen, wait } = c;
    assert_eq!(
        wait.join().unwrap().unwrap(),
        Turn::Finished("The pool is ready.".into())
    );
    let wait = std::thread::spawn(|| Ok(Turn::Finished(String::new())));
    Console { keys, screen, wait }
}

fn type_line(c: &mut Console, s: &str) {
    c.keys.write_all(s.as_bytes()).unwrap();
}

#[test]
fn the_first_console_to_press_enter_gets_the_wizard_and_the_other_waits_for_it() {
    let d = tempfile::tempdir().unwrap();
    let mut serial = console(d.path(), "ttyS0");
    let screen = console(d.path(), "tty1");
    type_line(&mut serial, "\r");
    assert_eq!(serial.wait.join().unwrap().unwrap(), Turn::Wizard);
    assert_eq!(
        std::fs::read_to_string(d.path().join("owner")).unwrap(),
        "ttyS0"
    );
    screen
        .screen
        .wait_for("The first-boot wizard is running on ttyS0");
    // Enter there now does not start a second wizard.
    let mut screen = screen;
    type_line(&mut screen, "\n");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!screen.wait.is_finished());
    let screen = finished_elsewhere(d.path(), screen);
    assert!(screen.screen.text().ends_with("The pool is ready.\r\n"));
}

#[test]
fn a_declined_wizard_is_offered_again_on_every_console() {
    let d = tempfile::tempdir().unwrap();
    let mut serial = console(d.path(), "ttyS0");
    let mut screen = console(d.path(), "tty1");
    type_line(&mut screen, "\n");
    assert_eq!(screen.wait.join().unwrap().unwrap(), Turn::Wizard);
    serial
        .screen
        .wait_for("The first-boot wizard is running on tty1");
    let before = serial.screen.text().matches(PROMPT).count();
    Gate::new(d.path(), "tty1").release().unwrap();
    let start = Instant::now();
    while serial.screen.text().matches(PROMPT).count() == before {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not offered again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    type_line(&mut serial, "\n");
    assert_eq!(serial.wait.join().unwrap().unwrap(), Turn::Wizard);
}

#[test]
fn a_login_prompt_asked_for_on_one_console_ends_the_wait_on_all() {
    let d = tempfile::tempdir().unwrap();
    let mut serial = console(d.path(), "ttyS0");
    let screen = console(d.path(), "tty1");
    type_line(&mut serial, "what\n");
    serial.screen.wait_for("Enter, or l for a login prompt.");
    assert!(!serial.wait.is_finished());
    type_line(&mut serial, " L \n");
    for c in [serial, screen] {
        match c.wait.join().unwrap().unwrap() {
            Turn::Finished(why) => {
                assert!(why.starts_with("Login prompt asked for on ttyS0"), "{why}")
            }
            t => panic!("{t:?}"),
        }
    }
    assert!(!d.path().join("owner").exists());
}

#[test]
fn a_console_that_cannot_be_read_follows_the_others() {
    let d = tempfile::tempdir().unwrap();
    let Console { keys, screen, wait } = console(d.path(), "tty1");
    drop(keys);
    std::thread::sleep(Duration::from_millis(700));
    assert!(!wait.is_finished());
    let (keys, _) = UnixStream::pair().unwrap();
    finished_elsewhere(d.path(), Console { keys, screen, wait });
}
