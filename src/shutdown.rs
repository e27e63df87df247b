//! Ctrl-C and termination signals, turned into a flag the loops check.
//!
//! The loops never block for longer than [`crate::clock::TICK`], so a
//! signal ends the program through its normal exit path: sockets closed,
//! terminal restored, a final line saying why. The interactive prompt runs
//! on a thread of its own and the loop waiting for its line still ticks.
//! (Ctrl-C at the prompt is a key press, handled by rustyline.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Set once SIGINT, SIGTERM or SIGHUP has arrived.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs handlers for SIGINT, SIGTERM and SIGHUP that set the flag.
    pub fn install() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::default();
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register(signal, Arc::clone(&shutdown.flag))?;
        }
        Ok(shutdown)
    }

    /// Whether the program has been asked to stop.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Asks the program to stop (used by tests and by in-process callers).
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
}
