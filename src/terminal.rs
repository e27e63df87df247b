//! The two ways a person or a program drives the chat, and what they see.
//!
//! * **Interactive** (stdin is a terminal): a rustyline prompt with line
//!   editing and history, `/commands`, labels saying who said what, status
//!   lines saying what the program waits for, colour unless `NO_COLOR` is set.
//! * **Script** (stdin is a pipe or file): no prompt, no colour; one input
//!   line is one message, each received message is exactly one stdout line,
//!   and everything else goes to stderr.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;

use crate::display::escape_for_terminal;
pub use crate::input::{End, Line, LineSource, ScriptLines, is_interactive, stdin_is_interactive};
use crate::message::Incoming;
use crate::prompt::Printer;

/// Prints `line` on stdout, for the examples' simple output. A closed
/// stdout (`… | head -1`) ends the program quietly with exit code 0, as
/// `yes | head` ends, instead of the panic `println!` gives.
pub fn print_line(line: impl std::fmt::Display) {
    let mut stdout = io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// What the user sees: received messages on one output (stdout), the rest
/// on another (stderr).
pub struct Screen {
    program: &'static str,
    peer: &'static str,
    interactive: bool,
    colour: bool,
    /// Received messages. Flushed after every line for a person, and in
    /// script mode whenever the program is about to wait (see [`Screen::flush`]).
    out: RefCell<Box<dyn Write>>,
    /// Notices and status lines, written as they come.
    err: RefCell<Box<dyn Write>>,
    /// For a person at a prompt: everything goes above the line being edited.
    printer: Option<Printer>,
}

const BOLD_CYAN: &str = "\x1b[1;36m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Screen {
    /// The process's own screen: stdout and stderr, for `program` (used as
    /// the prefix of notices) whose peer is labelled `peer` (for example
    /// "server") in interactive mode.
    ///
    /// # Errors
    /// Only if neither stdout nor /dev/null can be opened.
    pub fn new(program: &'static str, peer: &'static str, interactive: bool) -> io::Result<Screen> {
        let colour = interactive
            && io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
            && std::env::var("TERM").map_or(true, |term| term != "dumb");
        // Our own buffer over fd 1: std's stdout flushes at every newline,
        // a system call per message that script mode does not need.
        // With stdout closed, output goes nowhere, as it would through std's stdout.
        let stdout = io::stdout().as_fd().try_clone_to_owned().map(File::from);
        let stdout = stdout.or_else(|_| File::options().write(true).open("/dev/null"))?;
        let mut screen = Screen::with_output(
            program,
            peer,
            interactive,
            Box::new(BufWriter::new(stdout)),
            Box::new(io::stderr()),
        );
        screen.colour = colour;
        Ok(screen)
    }

    /// A screen writing messages to `out` and everything else to `err`,
    /// without colour (for tests and embedding).
    pub fn with_output(
        program: &'static str,
        peer: &'static str,
        interactive: bool,
        out: Box<dyn Write>,
        err: Box<dyn Write>,
    ) -> Screen {
        Screen {
            program,
            peer,
            interactive,
            colour: false,
            out: RefCell::new(out),
            err: RefCell::new(err),
            printer: None,
        }
    }

    /// Sends everything this screen shows through `printer`, so that it
    /// appears above a line being edited at the prompt, not inside it.
    pub fn print_above_prompt(&mut self, printer: Printer) {
        self.printer = Some(printer);
    }

    /// Whether this screen talks to a person.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// Shows a received message as one line, escaped, labelled `peer` in
    /// interactive mode (the default label when `None`), and tells the user
    /// on stderr about anything unusual in it.
    pub fn show(&self, incoming: &Incoming, peer: Option<&str>) -> io::Result<()> {
        self.show_line(&incoming.text, peer.unwrap_or(self.peer))?;
        for anomaly in &incoming.anomalies {
            self.notice(&format!("note: {anomaly}"));
        }
        Ok(())
    }

    fn show_line(&self, text: &str, peer: &str) -> io::Result<()> {
        let text = escape_for_terminal(text);
        let mut out = self.out.borrow_mut();
        if self.interactive {
            let (on, off) = if self.colour {
                (BOLD_CYAN, RESET)
            } else {
                ("", "")
            };
            if let Some(printer) = &self.printer {
                printer.print(&format!("{on}{peer}>{off} {text}"));
                return Ok(());
            }
            writeln!(out, "{on}{peer}>{off} {text}")?;
            out.flush()
        } else {
            // Not writeln!: the formatting machinery costs more than the
            // copy itself, once per message of a script.
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")
        }
    }

    /// Writes out buffered messages. Script-mode loops call it whenever they
    /// are about to wait (for input, or for a peer for a whole tick), so a
    /// reader never waits on output the program is sitting on, while a busy
    /// stream of messages costs one write per buffer, not one per line.
    pub fn flush(&self) -> io::Result<()> {
        self.out.borrow_mut().flush()
    }

    /// A status line for a person (what the program is waiting for); silent in
    /// script mode, where stderr carries only what a script may need.
    pub fn status(&self, text: &str) {
        if self.interactive {
            let (on, off) = if self.colour { (DIM, RESET) } else { ("", "") };
            match &self.printer {
                Some(printer) => printer.print_status(&format!("{on}{text}{off}")),
                None => {
                    let _ = writeln!(self.err.borrow_mut(), "{on}{text}{off}");
                }
            }
        }
    }

    /// A line on stderr, prefixed by the program name, in every mode. A
    /// stderr that cannot be written to is no reason to stop chatting.
    pub fn notice(&self, text: &str) {
        match &self.printer {
            Some(printer) => printer.print(&format!("{}: {text}", self.program)),
            None => {
                let _ = writeln!(self.err.borrow_mut(), "{}: {text}", self.program);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_shows_one_escaped_line_per_message_and_labels_it_for_a_person() {
        let (screen, out, err) = crate::fixture::screen("chat-client", "server", true);
        screen
            .show(&Incoming::decode(&[b"a\x1b]52;c;evil\x07 b"], 100), None)
            .unwrap();
        screen
            .show(&Incoming::decode(&[b"x", b"y"], 100), Some("client ab"))
            .unwrap();
        assert_eq!(
            out.lines(),
            ["server> a\\x1b]52;c;evil\\x07 b", "client ab> x \u{241E} y"]
        );
        assert!(
            err.text()
                .starts_with("chat-client: note: the message had 2 frames")
        );
    }
}
