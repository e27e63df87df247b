//! Where the loops get the time from, so tests can make time pass without
//! waiting for it (a give-up after 30 s, a session idle for an hour).

use std::time::{Duration, Instant};

/// How often every blocking wait wakes up: to notice Ctrl-C, follow the
/// connection, or read what was typed.
pub const TICK: Duration = Duration::from_millis(100);

/// A source of the current time.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// The real time, for the binaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}
