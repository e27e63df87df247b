//! Ctrl-C and termination signals, turned into a flag the loops check.
//!
//! The loops never block for longer than [`crate::transport::TICK`], so a
//! signal ends the program through its normal exit path: sockets closed,
//! terminal restored, a final line saying why. The one place that blocks
//! without a tick is the interactive prompt (rustyline reads the terminal
//! directly); there, SIGTERM and SIGHUP take their default action at once.
//! (Ctrl-C at the prompt is a key press, handled by rustyline.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Set once SIGINT, SIGTERM or SIGHUP has arrived.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    at_prompt: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs handlers for SIGINT, SIGTERM and SIGHUP that set the flag.
    pub fn install() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::default();
        for signal in [SIGTERM, SIGHUP] {
            signal_hook::flag::register_conditional_default(
                signal,
                Arc::clone(&shutdown.at_prompt),
            )?;
        }
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

    /// Marks the program as blocked at the interactive prompt until the
    /// returned guard is dropped, so termination signals act at once.
    pub fn at_prompt(&self) -> PromptGuard {
        self.at_prompt.store(true, Ordering::SeqCst);
        PromptGuard {
            at_prompt: Arc::clone(&self.at_prompt),
        }
    }
}

/// Clears the "at the prompt" mark when dropped.
pub struct PromptGuard {
    at_prompt: Arc<AtomicBool>,
}

impl Drop for PromptGuard {
    fn drop(&mut self) {
        self.at_prompt.store(false, Ordering::SeqCst);
    }
}
