//! Making or changing a bridge while instances start.
//!
//! Incus sets a bridge up (its creation, or a change of its config) by
//! walking the host's interfaces, and fails when one of them vanishes
//! meanwhile — which a container's veth does while the container starts
//! (the host end is renamed and moved into the container):
//! `Failed to delete bridge children interfaces: Failed to run: ip -d -j
//! link show vethXXXX: exit status 1 (Device "vethXXXX" does not exist.)`.
//! Instances of the domains whose bridges are made start while the other
//! domains' bridges are set up (a first apply of 20 domains hit this on 5
//! of its 20 bridges), and at boot Incus starts instances of its own while
//! the agent applies: such a failure is tried again, a few times. The
//! first attempt runs beside the starts; a retry runs alone, once the
//! starts in flight are over and with no new one begun (the run's
//! [`Starts`] gate), so that it only fails for a reason of its own or
//! an interface that something else than this run made vanish.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use anklume_incus::client::enc;
use anklume_incus::{Client, Error};

/// Attempts of one bridge set-up, the first included.
pub const TRIES: usize = 4;

/// The pause before trying again (for interfaces that vanish for reasons
/// outside this run: Incus's own starts at boot).
const PAUSE: Duration = Duration::from_millis(100);

/// Instance starts (shared) and bridge retries (alone) of one run.
#[derive(Debug, Default)]
pub struct Starts(RwLock<()>);

impl Starts {
    /// Held while an instance starts.
    pub fn start(&self) -> RwLockReadGuard<'_, ()> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Held while a bridge set-up is tried again: no instance starts.
    fn alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether Incus failed because an interface vanished while it walked
/// them (the race above), not because of the bridge itself.
pub fn vanished_interface(e: &Error) -> bool {
    let m = e.to_string();
    m.contains("bridge children interfaces") && m.contains("does not exist")
}

/// `attempt` (given the attempt's number, from 1) until it succeeds, fails
/// otherwise than by the race, or has failed [`TRIES`] times; `cleanup`
/// runs before each retry (what a failed attempt may have left).
pub fn retry(
    mut attempt: impl FnMut(usize) -> std::result::Result<Value, Error>,
    mut cleanup: impl FnMut() -> Result<()>,
    pause: Duration,
) -> Result<Value> {
    let mut tries = 1;
    loop {
        match attempt(tries) {
            Ok(v) => return Ok(v),
            Err(e) if vanished_interface(&e) && tries < TRIES => {
                tries += 1;
                std::thread::sleep(pause);
                cleanup()?;
            }
            Err(e) if tries > 1 => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{tries} attempts (an interface vanished while Incus set the bridge up)"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `POST /1.0/networks` of a new bridge. A creation that failed by the
/// race may leave the network behind, unusable: it is deleted (when it is
/// the one this run asked for: same name and description) before the next
/// attempt.
pub fn create(c: &Client, starts: &Starts, path: &str, body: &Value) -> Result<Value> {
    let name = body["name"].as_str().unwrap_or_default();
    let left = format!("/1.0/networks/{}", enc(name));
    retry(
        |n| {
            let _alone = (n > 1).then(|| starts.alone());
            c.post(path, body)
        },
        || {
            let got: Option<Value> = c.get_opt(&left)?;
            if got.is_some_and(|n| n["description"] == body["description"]) {
                c.delete(&left)?;
            }
            Ok(())
        },
        PAUSE,
    )
}

/// A change of a bridge's config (`PATCH`/`PUT /1.0/networks/NAME`).
pub fn change(
    c: &Client,
    starts: &Starts,
    send: impl Fn(&Client) -> std::result::Result<Value, Error>,
) -> Result<Value> {
    retry(
        |n| {
            let _alone = (n > 1).then(|| starts.alone());
            send(c)
        },
        || Ok(()),
        PAUSE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn race() -> Error {
        Error::Api {
            method: "POST".into(),
            path: "/1.0/networks".into(),
            code: 500,
            message: "Failed to delete bridge children interfaces: Failed to run: ip -d -j link show veth1e2c3a35: exit status 1 (Device \"veth1e2c3a35\" does not exist.)".into(),
        }
    }

    fn other() -> Error {
        Error::Api {
            method: "POST".into(),
            path: "/1.0/networks".into(),
            code: 400,
            message: "Network \"net-a\" already exists".into(),
        }
    }

    #[test]
    fn the_vanished_veth_race_is_tried_again_with_cleanup_between() {
        let calls = Cell::new(0);
        let cleanups = Cell::new(0);
        let v = retry(
            |n| {
                calls.set(calls.get() + 1);
                assert_eq!(n, calls.get());
                if calls.get() < 3 {
                    Err(race())
                } else {
                    Ok(Value::from("made"))
                }
            },
            || {
                cleanups.set(cleanups.get() + 1);
                Ok(())
            },
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(v, "made");
        assert_eq!((calls.get(), cleanups.get()), (3, 2));
    }

    #[test]
    fn other_failures_are_not_retried_and_the_race_gives_up_after_the_tries() {
        let calls = Cell::new(0);
        let e = retry(
            |_| {
                calls.set(calls.get() + 1);
                Err(other())
            },
            || panic!("no cleanup without a retry"),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(calls.get(), 1);
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
        assert!(!vanished_interface(&other()));

        calls.set(0);
        let e = retry(
            |_| {
                calls.set(calls.get() + 1);
                Err(race())
            },
            || Ok(()),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(calls.get(), TRIES);
        let text = format!("{e:#}");
        assert!(
            text.starts_with("4 attempts (an interface vanished"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A retry waits for the start in flight and no start begins during it.
    #[test]
    fn a_retry_runs_with_no_start_in_flight() {
        let starts = Starts::default();
        let starting = AtomicBool::new(false);
        std::thread::scope(|s| {
            let guard = starts.start();
            starting.store(true, Ordering::SeqCst);
            let retried = s.spawn(|| {
                let _alone = starts.alone();
                assert!(!starting.load(Ordering::SeqCst), "a start was in flight");
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !retried.is_finished(),
                "the retry did not wait for the start"
            );
            starting.store(false, Ordering::SeqCst);
            drop(guard);
            retried.join().unwrap();
        });
    }
}
