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
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use crate::display::escape_for_terminal;
use crate::message::{Incoming, strip_line_ending};
use crate::prompt::Printer;
use crate::shutdown::Shutdown;
use crate::transport::TICK;

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

/// Whether stdin is a terminal, which selects interactive mode.
pub fn stdin_is_interactive() -> bool {
    io::stdin().is_terminal()
}

/// Why a line source has no more lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// End of input: Ctrl-D, or the end of a pipe or file.
    Eof,
    /// The user typed `/quit`.
    Quit,
    /// Ctrl-C or a termination signal.
    Interrupted,
}

/// The next thing a line source produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A message to send, without its line ending.
    Text(String),
    /// No more messages.
    End(End),
}

/// Where outgoing messages come from: a person at a prompt or a script's stdin.
pub trait LineSource {
    /// Blocks until the next message is available or input ends. While it
    /// waits, `meanwhile` runs every tick (or so); a line it returns ends
    /// the wait with that line instead.
    fn next_line(
        &mut self,
        shutdown: &Shutdown,
        meanwhile: &mut dyn FnMut() -> Option<Line>,
    ) -> io::Result<Line>;

    /// Checked every tick while no line is wanted (a server waiting for a
    /// message, a client waiting for a reply): `Line::End` if the user ended
    /// the input meanwhile (Ctrl-D, `/quit`), `Line::Text` with a line they
    /// typed (the server drops it: it answers nothing; the client queues
    /// it). `/help` is shown at once. Script input is left to be read later.
    fn while_waiting(&mut self) -> Option<Line> {
        None
    }

    /// Ends the waiting that [`LineSource::while_waiting`] began, before a
    /// line is asked for again; returns a line typed meanwhile and not
    /// finished, to offer at the prompt. Script input has none.
    fn stop_waiting(&mut self) -> Option<String> {
        None
    }

    /// Shows `prompt` before the lines asked for from now on (a person's
    /// prompt; script input has none).
    fn set_prompt(&mut self, _prompt: &str) {}

    /// Throws away what the user typed before a line was asked for (a
    /// server operator must answer only what they have seen); how many
    /// bytes that was.
    fn discard_type_ahead(&mut self) -> usize {
        0
    }

    /// Whether input has ended with no line left to read, checked without
    /// blocking. A server uses it to stop listening once it cannot reply.
    fn is_exhausted(&mut self) -> bool {
        false
    }

    /// Whether a line can be returned without waiting (script input that is
    /// already buffered). Loops flush their output when it cannot.
    fn has_ready_line(&mut self) -> bool {
        false
    }

    /// Offers `text` for sending again: the prompt shows it, ready to edit.
    /// Script input ignores the offer (the caller prints the text instead).
    fn offer(&mut self, _text: &str) {}
}

/// Script input: one message per line of a pipe or file (stdin in the binaries).
///
/// The input is read on the calling thread, but only after `poll` says it
/// has data, so the loops can still notice Ctrl-C while it is silent and no
/// helper thread has to be woken for every line.
pub struct ScriptLines<R = io::Stdin> {
    program: &'static str,
    input: R,
    /// Where the warning about a line that is not UTF-8 goes (stderr).
    warnings: Box<dyn Write>,
    /// Bytes read; those before `start` were returned already. Compacted
    /// before each read, so it holds at most one partial line plus a read.
    buffer: Vec<u8>,
    start: usize,
    /// `buffer[start..scanned]` has no newline: where the search resumes, so
    /// a line longer than one read is not searched again from its start.
    scanned: usize,
    ended: bool,
    /// The number of the last line returned, for warnings.
    number: u64,
}

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;

impl ScriptLines {
    /// Reads stdin as script input; `program` prefixes warnings on stderr.
    pub fn from_stdin(program: &'static str) -> ScriptLines {
        ScriptLines::new(program, io::stdin(), Box::new(io::stderr()))
    }
}

impl<R: Read + AsFd> ScriptLines<R> {
    /// Reads `input` as script input; warnings go to `warnings`.
    pub fn new(program: &'static str, input: R, warnings: Box<dyn Write>) -> ScriptLines<R> {
        ScriptLines {
            program,
            input,
            warnings,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            ended: false,
            number: 0,
        }
    }

    /// A complete line from what was read, if there is one; at end of input,
    /// the unterminated rest counts as a last line.
    fn take_line(&mut self) -> Option<String> {
        let end = match memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
            Some(offset) => self.scanned + offset + 1,
            None if self.ended && self.start < self.buffer.len() => self.buffer.len(),
            None => {
                self.scanned = self.buffer.len();
                return None;
            }
        };
        let bytes = &self.buffer[self.start..end];
        self.start = end;
        self.scanned = end;
        self.number += 1;
        let line = match std::str::from_utf8(bytes) {
            Ok(line) => strip_line_ending(line).to_string(),
            Err(_) => {
                let _ = writeln!(
                    self.warnings,
                    "{}: input line {} is not valid UTF-8; bad bytes sent as \u{FFFD}",
                    self.program, self.number
                );
                strip_line_ending(&String::from_utf8_lossy(bytes)).to_string()
            }
        };
        Some(line)
    }

    /// Waits up to `timeout` for the input to be readable, then reads what
    /// is there (never blocking on a read that has no data).
    fn fill(&mut self, timeout: Duration) -> io::Result<()> {
        let mut items = [zmq::PollItem::from_fd(
            self.input.as_fd().as_raw_fd(),
            zmq::POLLIN,
        )];
        match zmq::poll(&mut items, timeout.as_millis() as i64) {
            Ok(0) | Err(zmq::Error::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(io::Error::other(error)),
        }
        self.buffer.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
        let old = self.buffer.len();
        self.buffer.resize(old + READ_CHUNK, 0);
        let read = loop {
            match self.input.read(&mut self.buffer[old..]) {
                Ok(read) => break read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.buffer.truncate(old);
                    return Err(error);
                }
            }
        };
        self.buffer.truncate(old + read);
        self.ended = read == 0;
        Ok(())
    }

    /// Whether a whole line (or, at the end, a last partial one) is buffered.
    fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buffer[self.scanned..]).is_some()
            || (self.ended && self.start < self.buffer.len())
    }

    /// The next line if one is ready, without waiting: `None` when the input
    /// has nothing new, `Line::End(End::Eof)` once it has ended.
    pub fn poll_line(&mut self) -> Option<io::Result<Line>> {
        if !self.has_buffered_line()
            && !self.ended
            && let Err(error) = self.fill(Duration::ZERO)
        {
            return Some(Err(error));
        }
        match self.take_line() {
            Some(line) => Some(Ok(Line::Text(line))),
            None if self.ended => Some(Ok(Line::End(End::Eof))),
            None => None,
        }
    }
}

impl<R: Read + AsFd> LineSource for ScriptLines<R> {
    fn next_line(
        &mut self,
        shutdown: &Shutdown,
        meanwhile: &mut dyn FnMut() -> Option<Line>,
    ) -> io::Result<Line> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Line::Text(line));
            }
            if self.ended {
                return Ok(Line::End(End::Eof));
            }
            if shutdown.requested() {
                return Ok(Line::End(End::Interrupted));
            }
            self.fill(TICK)?;
            if !self.has_buffered_line()
                && !self.ended
                && let Some(line) = meanwhile()
            {
                return Ok(line);
            }
        }
    }

    fn has_ready_line(&mut self) -> bool {
        if !self.has_buffered_line() && !self.ended {
            let _ = self.fill(Duration::ZERO);
        }
        self.has_buffered_line()
    }

    fn is_exhausted(&mut self) -> bool {
        if self.has_buffered_line() {
            return false;
        }
        if !self.ended && self.fill(Duration::ZERO).is_err() {
            return true;
        }
        self.ended && self.start == self.buffer.len()
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
                Some(printer) => printer.print(&format!("{on}{text}{off}")),
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
    use crate::fixture::Output;

    /// Script lines read from a pipe that a writer thread fills with `input`
    /// in pieces of `piece` bytes, then closes.
    fn script(input: Vec<u8>, piece: usize) -> (ScriptLines<io::PipeReader>, Output) {
        let (reader, mut writer) = io::pipe().expect("pipe");
        std::thread::spawn(move || {
            for chunk in input.chunks(piece.max(1)) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
        });
        let warnings = Output::default();
        let lines = ScriptLines::new("chat-client", reader, Box::new(warnings.clone()));
        (lines, warnings)
    }

    /// Every line until the end of input.
    fn all_lines(lines: &mut ScriptLines<io::PipeReader>) -> Vec<String> {
        let shutdown = Shutdown::default();
        let mut read = Vec::new();
        loop {
            match lines.next_line(&shutdown, &mut || None).expect("read") {
                Line::Text(text) => read.push(text),
                Line::End(end) => {
                    assert_eq!(end, End::Eof);
                    return read;
                }
            }
        }
    }

    #[test]
    fn crlf_and_lf_endings_are_stripped_and_a_last_line_needs_no_newline() {
        let (mut lines, warnings) = script(b"one\r\ntwo\n\nlast".to_vec(), 3);
        assert_eq!(all_lines(&mut lines), ["one", "two", "", "last"]);
        assert_eq!(warnings.text(), "");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_the_line_named() {
        let (mut lines, warnings) = script(b"fine\nbad \xff\xfe here\n".to_vec(), 64);
        assert_eq!(all_lines(&mut lines), ["fine", "bad \u{FFFD}\u{FFFD} here"]);
        assert_eq!(
            warnings.text(),
            "chat-client: input line 2 is not valid UTF-8; bad bytes sent as \u{FFFD}\n"
        );
    }

    #[test]
    fn a_line_longer_than_one_read_arrives_whole() {
        let long = "x".repeat(3 * READ_CHUNK + 17);
        let (mut lines, _) = script(format!("{long}\nafter\n").into_bytes(), 1000);
        assert_eq!(all_lines(&mut lines), [long, "after".to_string()]);
    }

    #[test]
    fn the_buffer_is_compacted_so_many_lines_take_no_more_room_than_a_read() {
        let input: String = (0..50_000).map(|n| format!("line {n}\n")).collect();
        assert!(input.len() > 5 * READ_CHUNK);
        let (mut lines, _) = script(input.into_bytes(), 4096);
        let shutdown = Shutdown::default();
        let mut count = 0;
        while let Line::Text(text) = lines.next_line(&shutdown, &mut || None).unwrap() {
            assert_eq!(text, format!("line {count}"));
            count += 1;
            assert!(
                lines.buffer.len() <= 2 * READ_CHUNK,
                "{}",
                lines.buffer.len()
            );
        }
        assert_eq!(count, 50_000);
    }

    #[test]
    fn readiness_and_exhaustion_are_told_without_waiting() {
        let (reader, mut writer) = io::pipe().unwrap();
        let mut lines = ScriptLines::new("chat-server", reader, Box::new(io::sink()));
        assert!(!lines.has_ready_line());
        assert!(!lines.is_exhausted());
        assert!(lines.poll_line().is_none());
        writer.write_all(b"half").unwrap();
        assert!(!lines.has_ready_line(), "a partial line is not ready");
        writer.write_all(b" and whole\nrest").unwrap();
        assert!(lines.has_ready_line());
        assert!(
            matches!(lines.poll_line(), Some(Ok(Line::Text(text))) if text == "half and whole")
        );
        drop(writer);
        assert!(
            lines.has_ready_line(),
            "at the end, the unterminated rest is a line"
        );
        assert!(!lines.is_exhausted());
        assert!(matches!(lines.poll_line(), Some(Ok(Line::Text(text))) if text == "rest"));
        assert!(lines.is_exhausted());
        assert!(matches!(lines.poll_line(), Some(Ok(Line::End(End::Eof)))));
    }

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
