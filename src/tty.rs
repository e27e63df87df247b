//! The few terminal operations rustyline does not offer: what a person has
//! typed ahead (before a prompt was shown), putting the terminal back as it
//! was when a prompt is left in the middle of a line, and stopping for
//! Ctrl-Z so that `fg` finds the terminal as it was left.
//!
//! All of them act on stdin and do nothing when stdin is not a terminal.

use std::io;

use rustix::termios::{
    LocalModes, OptionalActions, QueueSelector, SpecialCodeIndex, Termios, tcflush, tcgetattr,
    tcsetattr,
};

/// The terminal's settings, to be put back later.
#[derive(Clone)]
pub struct Saved(Termios);

/// The terminal's current settings, if stdin is a terminal.
pub fn save() -> Option<Saved> {
    tcgetattr(io::stdin()).ok().map(Saved)
}

/// Puts the terminal back to `saved` (a prompt left mid-line keeps the raw
/// mode rustyline set).
pub fn restore(saved: Saved) -> io::Result<()> {
    set(&saved.0)
}

/// Applies `settings` to the terminal at once.
fn set(settings: &Termios) -> io::Result<()> {
    Ok(tcsetattr(io::stdin(), OptionalActions::Now, settings)?)
}

/// Whether the terminal is in its usual line mode with echo: then what is
/// typed outside a prompt shows on the screen, unfinished line included.
pub fn echoes_lines() -> bool {
    save().is_some_and(|saved| {
        saved
            .0
            .local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO)
    })
}

/// Keys as they are typed, unechoed, and without waiting for any (no line
/// mode, no echo, reads return at once): as a password prompt takes them.
/// Returns the settings to restore; `None` if stdin is not a terminal.
/// Ctrl-C still sends its signal; Ctrl-Z arrives as the byte
/// [`SUSPEND_KEY`], for the reader to [`suspend`] (the terminal's own
/// stop would leave the shell's settings in place after `fg`).
pub fn quiet_keys() -> Option<Saved> {
    let saved = save()?;
    let mut quiet = saved.0.clone();
    quiet
        .local_modes
        .remove(LocalModes::ICANON | LocalModes::ECHO);
    quiet.special_codes[SpecialCodeIndex::VMIN] = 0;
    quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
    // 0 disables a special character (_POSIX_VDISABLE on Linux).
    quiet.special_codes[SpecialCodeIndex::VSUSP] = 0;
    set(&quiet).ok().map(|()| saved)
}

/// Ctrl-Z, as [`quiet_keys`] delivers it.
pub const SUSPEND_KEY: u8 = 0x1a;

/// Stops the program as Ctrl-Z does, with the terminal as `outside` (the
/// settings from before the program changed them), and returns once the
/// shell continues it (`fg`), with the terminal back as it was at the call.
///
/// The stop signal goes to this very thread (`raise`), so it takes effect
/// before the call returns. Signalled to the process group, as rustyline's
/// own Ctrl-Z does, it may land on another thread while this one runs on
/// and sets its settings back before the stop: the shell then keeps those,
/// and after `fg` the terminal echoes and the prompt is not redrawn.
///
/// # Errors
/// When the settings cannot be read or set, or the signal cannot be sent.
pub fn suspend(outside: &Saved) -> io::Result<()> {
    let inside = save();
    set(&outside.0)?;
    // Where no shell does job control (an orphaned process group), the
    // kernel discards the signal and this returns at once.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTSTP).map_err(io::Error::from)?;
    match inside {
        Some(inside) => set(&inside.0),
        None => Ok(()),
    }
}

/// How many bytes have been typed and not read yet, unfinished line
/// included; with `discard`, they are thrown away. A terminal in canonical
/// mode counts only finished lines, so it is switched out of it for the
/// count (and back at once).
pub fn typed_ahead(discard: bool) -> usize {
    let Some(saved) = save() else { return 0 };
    let mut raw = saved.0.clone();
    raw.local_modes.remove(LocalModes::ICANON);
    raw.special_codes[SpecialCodeIndex::VMIN] = 0;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    if set(&raw).is_err() {
        return 0;
    }
    let pending = rustix::io::ioctl_fionread(io::stdin()).unwrap_or(0);
    if discard {
        let _ = tcflush(io::stdin(), QueueSelector::IFlush);
    }
    let _ = restore(saved);
    usize::try_from(pending).unwrap_or(0)
}
