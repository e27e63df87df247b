//! The few terminal operations rustyline does not offer: what a person has
//! typed ahead (before a prompt was shown), and putting the terminal back as
//! it was when a prompt is left in the middle of a line.
//!
//! All of them act on stdin and do nothing when stdin is not a terminal.

use std::io;

/// The terminal's settings, to be put back later.
#[derive(Clone, Copy)]
pub struct Saved(libc::termios);

/// The terminal's current settings, if stdin is a terminal.
pub fn save() -> Option<Saved> {
    let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the termios it is given when it returns 0.
    let filled = unsafe { libc::tcgetattr(libc::STDIN_FILENO, termios.as_mut_ptr()) } == 0;
    // SAFETY: initialised by the successful call just above.
    filled.then(|| Saved(unsafe { termios.assume_init() }))
}

/// Puts the terminal back to `saved` (a prompt left mid-line keeps the raw
/// mode rustyline set).
pub fn restore(saved: Saved) -> io::Result<()> {
    // SAFETY: a valid termios, read earlier from the same terminal.
    match unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved.0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether the terminal is in its usual line mode with echo: then what is
/// typed outside a prompt shows on the screen, unfinished line included.
pub fn echoes_lines() -> bool {
    save().is_some_and(|saved| {
        saved.0.c_lflag & (libc::ICANON | libc::ECHO) == (libc::ICANON | libc::ECHO)
    })
}

/// Keys as they are typed, unechoed, and without waiting for any (no line
/// mode, no echo, reads return at once): as a password prompt takes them.
/// Returns the settings to restore; `None` if stdin is not a terminal.
/// Ctrl-C still sends its signal.
pub fn quiet_keys() -> Option<Saved> {
    let saved = save()?;
    let mut quiet = saved.0;
    quiet.c_lflag &= !(libc::ICANON | libc::ECHO);
    quiet.c_cc[libc::VMIN] = 0;
    quiet.c_cc[libc::VTIME] = 0;
    // SAFETY: a valid termios, derived from the terminal's own.
    let set = unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } == 0;
    set.then_some(saved)
}

/// How many bytes have been typed and not read yet, unfinished line
/// included; with `discard`, they are thrown away. A terminal in canonical
/// mode counts only finished lines, so it is switched out of it for the
/// count (and back at once).
pub fn typed_ahead(discard: bool) -> usize {
    let Some(saved) = save() else { return 0 };
    let mut raw = saved.0;
    raw.c_lflag &= !libc::ICANON;
    raw.c_cc[libc::VMIN] = 0;
    raw.c_cc[libc::VTIME] = 0;
    let mut pending: libc::c_int = 0;
    // SAFETY: valid termios values and a c_int for FIONREAD to fill.
    unsafe {
        if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
            return 0;
        }
        if libc::ioctl(libc::STDIN_FILENO, libc::FIONREAD, &mut pending) != 0 {
            pending = 0;
        }
        if discard {
            libc::tcflush(libc::STDIN_FILENO, libc::TCIFLUSH);
        }
    }
    let _ = restore(saved);
    usize::try_from(pending).unwrap_or(0)
}
