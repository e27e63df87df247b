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

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::command::{Command, HELP};
use crate::display::escape_for_terminal;
use crate::message::{Incoming, strip_line_ending};
use crate::shutdown::Shutdown;
use crate::transport::TICK;

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
    /// Blocks until the next message is available or input ends.
    fn next_line(&mut self, shutdown: &Shutdown) -> io::Result<Line>;

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

/// The interactive prompt: rustyline editing, history and `/commands`.
pub struct Prompt {
    editor: DefaultEditor,
    prompt: String,
    offered: Option<String>,
}

impl Prompt {
    /// A prompt showing `prompt` before each line.
    pub fn new(prompt: &str) -> io::Result<Prompt> {
        let editor = DefaultEditor::new().map_err(io::Error::other)?;
        Ok(Prompt {
            editor,
            prompt: prompt.to_string(),
            offered: None,
        })
    }
}

impl LineSource for Prompt {
    fn next_line(&mut self, shutdown: &Shutdown) -> io::Result<Line> {
        loop {
            if shutdown.requested() {
                return Ok(Line::End(End::Interrupted));
            }
            let _blocked = shutdown.at_prompt();
            let read = match self.offered.take() {
                Some(text) => self.editor.readline_with_initial(&self.prompt, (&text, "")),
                None => self.editor.readline(&self.prompt),
            };
            let line = match read {
                Ok(line) => line,
                Err(ReadlineError::Eof) => return Ok(Line::End(End::Eof)),
                Err(ReadlineError::Interrupted) => return Ok(Line::End(End::Interrupted)),
                Err(ReadlineError::Io(error)) => return Err(error),
                Err(other) => return Err(io::Error::other(other)),
            };
            match Command::interpret(&line) {
                Command::Send(text) => {
                    let _ = self.editor.add_history_entry(line.as_str());
                    return Ok(Line::Text(text));
                }
                Command::Quit => return Ok(Line::End(End::Quit)),
                Command::Help => eprintln!("{HELP}"),
                Command::Nothing => {}
                Command::Unknown(word) => {
                    eprintln!(
                        "unknown command {word}; /help lists the commands, //text sends text starting with '/'"
                    )
                }
            }
        }
    }

    fn offer(&mut self, text: &str) {
        self.offered = Some(text.to_string());
    }
}

/// Script input: one message per stdin line.
///
/// Stdin is read on the calling thread, but only after `poll` says it has
/// data, so the loops can still notice Ctrl-C while stdin is silent and no
/// helper thread has to be woken for every line.
pub struct ScriptLines {
    program: &'static str,
    /// The read buffer: bytes read from stdin are `pending[..filled]`; those
    /// before `consumed` were returned already. Beyond `filled` it is spare
    /// room, zeroed once when the buffer grows, not before every read.
    pending: Vec<u8>,
    /// End of the bytes read so far.
    filled: usize,
    /// Start of the bytes not yet returned as lines. Lines are taken by
    /// moving this offset; the buffer is compacted once per read, not per line.
    consumed: usize,
    /// Where to resume looking for a newline in `pending`.
    scanned: usize,
    ended: bool,
    number: u64,
}

const READ_CHUNK: usize = 64 * 1024;

impl ScriptLines {
    /// Reads stdin as script input; `program` prefixes warnings.
    pub fn from_stdin(program: &'static str) -> ScriptLines {
        ScriptLines {
            program,
            pending: Vec::new(),
            filled: 0,
            consumed: 0,
            scanned: 0,
            ended: false,
            number: 0,
        }
    }

    /// A complete line from what was read, if there is one; at end of input,
    /// the unterminated rest counts as a last line.
    fn take_line(&mut self) -> Option<String> {
        let scan_from = self.scanned.max(self.consumed);
        let end = match memchr::memchr(b'\n', &self.pending[scan_from..self.filled]) {
            Some(offset) => scan_from + offset + 1,
            None if self.ended && self.consumed < self.filled => self.filled,
            None => {
                self.scanned = self.filled;
                return None;
            }
        };
        let bytes = &self.pending[self.consumed..end];
        self.consumed = end;
        self.number += 1;
        let line = match std::str::from_utf8(bytes) {
            Ok(line) => strip_line_ending(line).to_string(),
            Err(_) => {
                eprintln!(
                    "{}: input line {} is not valid UTF-8; bad bytes sent as \u{FFFD}",
                    self.program, self.number
                );
                strip_line_ending(&String::from_utf8_lossy(bytes)).to_string()
            }
        };
        Some(line)
    }

    /// Waits up to `timeout` for stdin to be readable, then reads what is
    /// there (never blocking on a read that has no data).
    fn fill(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut items = [zmq::PollItem::from_fd(io::stdin().as_raw_fd(), zmq::POLLIN)];
        match zmq::poll(&mut items, timeout.as_millis() as i64) {
            Ok(0) | Err(zmq::Error::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(io::Error::other(error)),
        }
        self.pending.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.scanned = self.scanned.saturating_sub(self.consumed);
        self.consumed = 0;
        let start = self.filled;
        if self.pending.len() < start + READ_CHUNK {
            self.pending.resize(start + READ_CHUNK, 0);
        }
        let read = loop {
            match io::stdin()
                .lock()
                .read(&mut self.pending[start..start + READ_CHUNK])
            {
                Ok(read) => break read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        };
        self.filled = start + read;
        if read == 0 {
            self.ended = true;
        }
        Ok(())
    }

    /// The next line if one is ready, without waiting: `None` when stdin has
    /// nothing new, `Line::End(End::Eof)` once it has ended.
    pub fn poll_line(&mut self) -> Option<io::Result<Line>> {
        if let Some(line) = self.take_line() {
            return Some(Ok(Line::Text(line)));
        }
        if self.ended {
            return Some(Ok(Line::End(End::Eof)));
        }
        if let Err(error) = self.fill(std::time::Duration::ZERO) {
            return Some(Err(error));
        }
        match self.take_line() {
            Some(line) => Some(Ok(Line::Text(line))),
            None if self.ended => Some(Ok(Line::End(End::Eof))),
            None => None,
        }
    }
}

impl LineSource for ScriptLines {
    fn next_line(&mut self, shutdown: &Shutdown) -> io::Result<Line> {
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
        }
    }

    fn has_ready_line(&mut self) -> bool {
        if self.has_complete_line() {
            return true;
        }
        if !self.ended {
            let _ = self.fill(std::time::Duration::ZERO);
        }
        self.has_complete_line() || (self.ended && self.consumed < self.filled)
    }

    fn is_exhausted(&mut self) -> bool {
        if self.has_complete_line() {
            return false;
        }
        if !self.ended && self.fill(std::time::Duration::ZERO).is_err() {
            return true;
        }
        self.ended && self.consumed == self.filled
    }
}

impl ScriptLines {
    fn has_complete_line(&self) -> bool {
        memchr::memchr(b'\n', &self.pending[self.consumed..self.filled]).is_some()
    }
}

/// What the user sees: received messages on stdout, the rest on stderr.
pub struct Screen {
    program: &'static str,
    peer: &'static str,
    interactive: bool,
    colour: bool,
    /// Stdout, buffered by us: flushed after every line for a person, and in
    /// script mode whenever the program is about to wait (see [`Screen::flush`]).
    out: RefCell<BufWriter<File>>,
}

const BOLD_CYAN: &str = "\x1b[1;36m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Screen {
    /// A screen for `program` (used as the prefix of notices) whose peer is
    /// labelled `peer` (for example "server") in interactive mode.
    ///
    /// Fails only if neither stdout nor /dev/null can be opened.
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
        let out = RefCell::new(BufWriter::new(stdout));
        Ok(Screen {
            program,
            peer,
            interactive,
            colour,
            out,
        })
    }

    /// Whether this screen talks to a person.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// Shows a received message as one line, escaped, and tells the user on
    /// stderr about anything unusual in it.
    pub fn show(&self, incoming: &Incoming) -> io::Result<()> {
        self.show_from(incoming, self.peer)
    }

    /// Like [`Screen::show`], with the peer labelled `peer` in interactive
    /// mode (in secure mode, its key's fingerprint).
    pub fn show_from(&self, incoming: &Incoming, peer: &str) -> io::Result<()> {
        self.show_line(&incoming.text, peer)?;
        for anomaly in &incoming.anomalies {
            self.notice(&format!("note: {anomaly}"));
        }
        Ok(())
    }

    /// Shows a received one-frame message: straight from its bytes when they
    /// are valid UTF-8 within `max_bytes` (nothing to tell about it), else
    /// decoded as [`Incoming::decode`] does, with its notes.
    pub fn show_frame(&self, bytes: &[u8], max_bytes: usize) -> io::Result<()> {
        match std::str::from_utf8(bytes) {
            Ok(text) if text.len() <= max_bytes => self.show_line(text, self.peer),
            _ => self.show(&Incoming::decode(vec![bytes.to_vec()], max_bytes)),
        }
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
            eprintln!("{on}{text}{off}");
        }
    }

    /// A line on stderr, prefixed by the program name, in every mode.
    pub fn notice(&self, text: &str) {
        eprintln!("{}: {text}", self.program);
    }
}
