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
//! the agent applies: a bridge change that fails so is tried again, a few
//! times. The first attempt runs beside the starts; a retry runs alone,
//! once the starts in flight are over and with no new one begun (the run's
//! [`Starts`] gate), so that it only fails for a reason of its own or an
//! interface that something else than this run made vanish. A failed
//! creation leaves no network behind (Incus undoes it: seen on every
//! retried creation of the bench), so the retry is the same request.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Result;

/// Attempts of one bridge change, the first included.
pub const TRIES: usize = 4;

/// The pause before trying again (for interfaces that vanish for reasons
/// outside this run: Incus's own starts at boot).
pub const PAUSE: Duration = Duration::from_millis(100);

/// Instance state changes (shared) and bridge retries (alone) of one run.
#[derive(Debug, Default)]
pub struct Starts(RwLock<()>);

impl Starts {
    /// Held while an instance starts (or stops, restarts: its veth comes
    /// or goes).
    pub fn start(&self) -> RwLockReadGuard<'_, ()> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Held while a bridge change is tried again: no instance starts.
    fn alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether Incus failed because an interface vanished while it walked
/// them (the race above), not because of the bridge itself.
pub fn vanished_interface(e: &anyhow::Error) -> bool {
    let m = format!("{e:#}");
    m.contains("bridge children interfaces") && m.contains("does not exist")
}

/// Run a bridge change (`steps`) until it succeeds, fails otherwise than
/// by the race, or has failed [`TRIES`] times; every attempt after the
/// first holds `starts` alone.
pub fn retry(
    starts: &Starts,
    mut steps: impl FnMut() -> Result<()>,
    pause: Duration,
) -> Result<()> {
    let mut tries = 1;
    loop {
        let r = if tries == 1 {
            steps()
        } else {
            let _alone = starts.alone();
            steps()
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if vanished_interface(&e) && tries < TRIES => {
                tries += 1;
                std::thread::sleep(pause);
            }
            Err(e) if tries > 1 => {
                return Err(e.context(format!(
                    "{tries} attempts (an interface vanished while Incus set the bridge up)"
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn race() -> anyhow::Error {
        anklume_incus::Error::Api {
            method: "POST".into(),
            path: "/1.0/networks".into(),
            code: 500,
            message: "Failed to delete bridge children interfaces: Failed to run: ip -d -j link show veth1e2c3a35: exit status 1 (Device \"veth1e2c3a35\" does not exist.)".into(),
        }
        .into()
    }

    fn other() -> anyhow::Error {
        anklume_incus::Error::Api {
            method: "POST".into(),
            path: "/1.0/networks".into(),
            code: 400,
            message: "Network \"net-a\" already exists".into(),
        }
        .into()
    }

    #[test]
    fn the_vanished_veth_race_is_tried_again() {
        let calls = Cell::new(0);
        retry(
            &Starts::default(),
            || {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err(race())
                } else {
                    Ok(())
                }
            },
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn other_failures_are_not_retried_and_the_race_gives_up_after_the_tries() {
        let calls = Cell::new(0);
        let e = retry(
            &Starts::default(),
            || {
                calls.set(calls.get() + 1);
                Err(other())
            },
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(calls.get(), 1);
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
        assert!(!vanished_interface(&other()));

        calls.set(0);
        let e = retry(
            &Starts::default(),
            || {
                calls.set(calls.get() + 1);
                Err(race())
            },
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

    /// The first attempt runs beside a start; a retry waits for the start
    /// in flight, and no start begins during it.
    #[test]
    fn a_retry_runs_with_no_start_in_flight() {
        let starts = Starts::default();
        let starting = AtomicBool::new(false);
        let calls = AtomicBool::new(false);
        std::thread::scope(|s| {
            let guard = starts.start();
            starting.store(true, Ordering::SeqCst);
            let retried = s.spawn(|| {
                retry(
                    &starts,
                    || {
                        if !calls.swap(true, Ordering::SeqCst) {
                            // The first attempt: beside the start.
                            assert!(starting.load(Ordering::SeqCst));
                            return Err(race());
                        }
                        assert!(!starting.load(Ordering::SeqCst), "a start was in flight");
                        Ok(())
                    },
                    Duration::ZERO,
                )
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !retried.is_finished(),
                "the retry did not wait for the start"
            );
            starting.store(false, Ordering::SeqCst);
            drop(guard);
            retried.join().unwrap().unwrap();
        });
    }
}
