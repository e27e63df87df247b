//! The two ways a person or a program drives the chat, and what they see.
//!
//! * **Interactive** (stdin is a terminal): a rustyline prompt with line
//!   editing and history, `/commands`, labels saying who said what, status
//!   lines saying what the program waits for, colour unless `NO_COLOR` is set.
//! * **Script** (stdin is a pipe or file): no prompt, no colour; one input
//!   line is one message, each received message is exactly one stdout line,
//!   and everything else goes to stderr.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::mpsc;
use std::thread;

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

/// Script input: one message per stdin line, read on a helper thread so the
/// main loop can still notice Ctrl-C while stdin is silent.
pub struct ScriptLines {
    lines: mpsc::Receiver<io::Result<String>>,
    /// A line taken from the channel by [`LineSource::is_exhausted`].
    peeked: Option<io::Result<String>>,
}

impl ScriptLines {
    /// Starts reading stdin.
    pub fn from_stdin(program: &'static str) -> ScriptLines {
        let (sender, lines) = mpsc::sync_channel(64);
        thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buffer = Vec::new();
            let mut number = 0u64;
            loop {
                buffer.clear();
                match stdin.read_until(b'\n', &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        number += 1;
                        let line = match String::from_utf8(buffer.clone()) {
                            Ok(line) => line,
                            Err(_) => {
                                eprintln!(
                                    "{program}: input line {number} is not valid UTF-8; bad bytes sent as \u{FFFD}"
                                );
                                String::from_utf8_lossy(&buffer).into_owned()
                            }
                        };
                        let line = strip_line_ending(&line).to_string();
                        if sender.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        break;
                    }
                }
            }
        });
        ScriptLines {
            lines,
            peeked: None,
        }
    }
}

impl LineSource for ScriptLines {
    fn next_line(&mut self, shutdown: &Shutdown) -> io::Result<Line> {
        loop {
            if shutdown.requested() {
                return Ok(Line::End(End::Interrupted));
            }
            if let Some(peeked) = self.peeked.take() {
                return peeked.map(Line::Text);
            }
            match self.lines.recv_timeout(TICK) {
                Ok(Ok(line)) => return Ok(Line::Text(line)),
                Ok(Err(error)) => return Err(error),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Line::End(End::Eof)),
            }
        }
    }

    fn is_exhausted(&mut self) -> bool {
        if self.peeked.is_some() {
            return false;
        }
        match self.lines.try_recv() {
            Ok(line) => {
                self.peeked = Some(line);
                false
            }
            Err(mpsc::TryRecvError::Empty) => false,
            Err(mpsc::TryRecvError::Disconnected) => true,
        }
    }
}

impl ScriptLines {
    /// The next line if one is ready, without waiting: `None` when stdin has
    /// nothing new, `Line::End(End::Eof)` once it has ended. A line returned
    /// here is consumed; one only peeked by `is_exhausted` is returned again.
    pub fn poll_line(&mut self) -> Option<io::Result<Line>> {
        if let Some(peeked) = self.peeked.take() {
            return Some(peeked.map(Line::Text));
        }
        match self.lines.try_recv() {
            Ok(line) => Some(line.map(Line::Text)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Ok(Line::End(End::Eof))),
        }
    }
}

/// What the user sees: received messages on stdout, the rest on stderr.
pub struct Screen {
    program: &'static str,
    peer: &'static str,
    interactive: bool,
    colour: bool,
}

const BOLD_CYAN: &str = "\x1b[1;36m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Screen {
    /// A screen for `program` (used as the prefix of notices) whose peer is
    /// labelled `peer` (for example "server") in interactive mode.
    pub fn new(program: &'static str, peer: &'static str, interactive: bool) -> Screen {
        let colour = interactive
            && io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
            && std::env::var("TERM").map_or(true, |term| term != "dumb");
        Screen {
            program,
            peer,
            interactive,
            colour,
        }
    }

    /// Whether this screen talks to a person.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// Shows a received message as one line, escaped, and tells the user on
    /// stderr about anything unusual in it.
    pub fn show(&self, incoming: &Incoming) -> io::Result<()> {
        let text = escape_for_terminal(&incoming.text);
        let mut out = io::stdout().lock();
        if self.interactive {
            let (on, off) = if self.colour {
                (BOLD_CYAN, RESET)
            } else {
                ("", "")
            };
            writeln!(out, "{on}{}>{off} {text}", self.peer)?;
        } else {
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        for anomaly in &incoming.anomalies {
            self.notice(&format!("note: {anomaly}"));
        }
        Ok(())
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
