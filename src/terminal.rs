//! The two ways a person or a program drives the chat, and what they see.
//!
//! * **Interactive** (stdin is a terminal): a rustyline prompt with line
//!   editing and history, `/commands`, labels saying who said what, status
//!   lines saying what the program waits for, colour unless `NO_COLOR` is set.
//! * **Script** (stdin is a pipe or file): no prompt, no colour; one input
//!   line is one message, each received message is exactly one stdout line,
//!   and everything else goes to stderr.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::SystemTime;

use crate::MessageId;
use crate::display::{escape_for_terminal, escape_json_for_terminal};
use crate::event::{Event, Kind, LocalTime};
pub use crate::input::{End, Line, LineSource, ScriptLines, is_interactive, stdin_is_interactive};
use crate::message::Incoming;
use crate::prompt::Printer;
use crate::transcript::Transcript;

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

/// How a screen writes: the flags `--json`, `-0` and `--timestamps`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// Every event as a line of JSON on stdout (see [`crate::event`]),
    /// notices included.
    pub json: bool,
    /// Each message ends with a NUL byte, not a newline, so that a message
    /// may hold newlines; its text is written as it came unless stdout is
    /// a terminal. (A JSON event still ends with a newline: it holds no
    /// raw one.)
    pub nul: bool,
    /// Each message shown after its local time of day.
    pub timestamps: Option<LocalTime>,
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
    style: Style,
    /// With `-0`: stdout is not a terminal, so a message's text goes out
    /// as it came, control characters and all.
    raw: bool,
    /// Whether stdout is a terminal (a person reads it even in script mode).
    out_is_terminal: bool,
    /// `--log`: every event kept there too.
    transcript: Option<RefCell<Transcript>>,
    /// Whether the user was told the transcript cannot be written (once).
    transcript_failed: Cell<bool>,
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
        screen.out_is_terminal = io::stdout().is_terminal();
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
            style: Style::default(),
            raw: false,
            out_is_terminal: false,
            transcript: None,
            transcript_failed: Cell::new(false),
        }
    }

    /// Writes in `style` from now on.
    pub fn set_style(&mut self, style: Style) {
        self.style = style;
        self.raw = style.nul && !self.interactive && !self.out_is_terminal;
    }

    /// Keeps every event in `transcript` as well (`--log`).
    pub fn keep_transcript(&mut self, transcript: Transcript) {
        self.transcript = Some(RefCell::new(transcript));
    }

    /// Whether a transcript is kept (`--log`).
    pub fn keeps_transcript(&self) -> bool {
        self.transcript.is_some()
    }

    /// Whether messages are to be shown with their sender's label: for a
    /// person, in JSON and in a transcript (a script's plain lines are the
    /// text alone).
    pub fn wants_labels(&self) -> bool {
        self.interactive || self.style.json || self.transcript.is_some()
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

    /// Shows a received message (with the chat-client's `id` for it, if
    /// known): as one line, escaped, labelled `peer` in interactive mode
    /// (the default label when `None`), telling the user on stderr about
    /// anything unusual in it; or as one JSON event.
    pub fn show(
        &self,
        incoming: &Incoming,
        peer: Option<&str>,
        id: Option<MessageId>,
    ) -> io::Result<()> {
        let at = SystemTime::now();
        let peer = peer.unwrap_or(self.peer);
        if self.style.json || self.keeps_transcript() {
            let event = Event {
                from: Some(peer),
                id,
                notes: incoming.anomalies.iter().map(ToString::to_string).collect(),
                ..Event::new(Kind::Message, &incoming.text)
            };
            let json = event.to_json(at);
            self.keep(&json);
            if self.style.json {
                return self.write_json(&json);
            }
        }
        self.show_line(&incoming.text, peer, at)?;
        for anomaly in &incoming.anomalies {
            self.notice(&format!("note: {anomaly}"));
        }
        Ok(())
    }

    fn show_line(&self, text: &str, peer: &str, at: SystemTime) -> io::Result<()> {
        let time = match self.style.timestamps {
            Some(local) => format!("[{}] ", local.of_day(at)),
            None => String::new(),
        };
        let mut out = self.out.borrow_mut();
        if self.interactive {
            let (on, off) = if self.colour {
                (BOLD_CYAN, RESET)
            } else {
                ("", "")
            };
            // A message of several lines: each under the first, indented
            // past the label.
            let indent = format!("\n{}", " ".repeat(time.len() + peer.chars().count() + 2));
            let text = escape_lines(text, &indent);
            let line = format!("{time}{on}{peer}>{off} {text}");
            if let Some(printer) = &self.printer {
                printer.print(&line);
                return Ok(());
            }
            writeln!(out, "{line}")?;
            return out.flush();
        }
        let text = match (self.raw, self.style.nul) {
            (true, _) => Cow::Borrowed(text),
            (false, true) => Cow::Owned(escape_lines(text, "\n")),
            (false, false) => escape_for_terminal(text),
        };
        // Not writeln!: the formatting machinery costs more than the copy
        // itself, once per message of a script.
        out.write_all(time.as_bytes())?;
        out.write_all(text.as_bytes())?;
        out.write_all(&[self.separator()])
    }

    /// What ends a message, written and read: NUL with `-0`, else a
    /// newline.
    pub fn separator(&self) -> u8 {
        if self.style.nul { b'\0' } else { b'\n' }
    }

    /// Writes `json`, an event as a line of JSON, on stdout.
    fn write_json(&self, json: &str) -> io::Result<()> {
        // A peer's text, valid JSON, may still hold what a terminal acts on.
        let line = match self.interactive || self.out_is_terminal {
            true => escape_json_for_terminal(json),
            false => Cow::Borrowed(json),
        };
        if let Some(printer) = &self.printer {
            printer.print(&line);
            return Ok(());
        }
        // A newline even with -0: JSON holds none raw.
        let mut out = self.out.borrow_mut();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// Keeps `json`, an event as a line of JSON, in the transcript, if
    /// there is one; tells the user once if it cannot be written.
    fn keep(&self, json: &str) {
        let Some(transcript) = &self.transcript else {
            return;
        };
        let mut transcript = transcript.borrow_mut();
        if let Err(error) = transcript.write(json)
            && !self.transcript_failed.replace(true)
        {
            let path = transcript.path().display().to_string();
            drop(transcript);
            self.notice(&format!("cannot write the transcript {path}: {error}"));
        }
    }

    /// A message this program sent (with its chat-client `id`, if any),
    /// for the transcript.
    pub fn sent(&self, text: &[u8], id: Option<MessageId>) {
        if !self.keeps_transcript() {
            return;
        }
        let text = String::from_utf8_lossy(text);
        let event = Event {
            id,
            ..Event::new(Kind::Sent, &text)
        };
        self.keep(&event.to_json(SystemTime::now()));
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

    /// A status line of a kind a script may act on (the server coming and
    /// going): for a person as [`Screen::status`], an event with `--json`,
    /// and kept in the transcript.
    pub fn status_event(&self, kind: Kind, text: &str) {
        if !self.record(kind, text) {
            self.status(text);
        }
    }

    /// A line on stderr, prefixed by the program name, in every mode (with
    /// `--json`, an event on stdout). A stderr that cannot be written to is
    /// no reason to stop chatting.
    pub fn notice(&self, text: &str) {
        self.tell(Kind::Notice, text);
    }

    /// A notice of a kind a script may act on (a peer connecting or
    /// leaving, a refusal, a give-up), kept in the transcript too.
    pub fn tell(&self, kind: Kind, text: &str) {
        if self.record(kind, text) {
            return;
        }
        match &self.printer {
            Some(printer) => printer.print(&format!("{}: {text}", self.program)),
            None => {
                let _ = writeln!(self.err.borrow_mut(), "{}: {text}", self.program);
            }
        }
    }

    /// Keeps an event of `kind` saying `text` in the transcript (all but
    /// plain notices) and, with `--json`, writes it; whether it was
    /// written, and so needs no words of its own.
    fn record(&self, kind: Kind, text: &str) -> bool {
        let kept = kind != Kind::Notice && self.keeps_transcript();
        if !kept && !self.style.json {
            return false;
        }
        // Made once, for the transcript and stdout alike.
        let json = Event::new(kind, text).to_json(SystemTime::now());
        if kept {
            self.keep(&json);
        }
        if self.style.json {
            let _ = self.write_json(&json);
        }
        self.style.json
    }
}

/// `text` escaped line by line, the lines joined by `separator`.
fn escape_lines(text: &str, separator: &str) -> String {
    let lines: Vec<Cow<'_, str>> = text.split('\n').map(escape_for_terminal).collect();
    lines.join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Output;

    #[test]
    fn the_screen_shows_one_escaped_line_per_message_and_labels_it_for_a_person() {
        let (screen, out, err) = crate::fixture::screen("chat-client", "server", true);
        screen
            .show(
                &Incoming::decode(&[b"a\x1b]52;c;evil\x07 b"], 100),
                None,
                None,
            )
            .unwrap();
        screen
            .show(
                &Incoming::decode(&[b"x", b"y"], 100),
                Some("client ab"),
                None,
            )
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

    fn styled(interactive: bool, style: Style) -> (Screen, Output, Output) {
        let (mut screen, out, err) = crate::fixture::screen("chat-client", "server", interactive);
        screen.set_style(style);
        (screen, out, err)
    }

    #[test]
    fn with_json_every_event_is_a_line_of_json_on_stdout() {
        let json = Style {
            json: true,
            ..Style::default()
        };
        let (screen, out, err) = styled(false, json);
        let id = MessageId {
            session: 0xab,
            sequence: 7,
        };
        screen
            .show(
                &Incoming::decode(&[&b"a\nb"[..], b"c"], 100),
                None,
                Some(id),
            )
            .unwrap();
        screen.tell(Kind::GiveUp, "no server");
        screen.flush().unwrap();
        let lines = out.lines();
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(events[0]["event"], "message");
        assert_eq!(events[0]["text"], "a\nb \u{241E} c");
        assert_eq!(events[0]["from"], "server");
        assert_eq!(events[0]["id"], id.to_string());
        assert!(events[0]["notes"][0].as_str().unwrap().contains("2 frames"));
        assert_eq!(events[1]["event"], "give-up");
        assert_eq!(err.text(), "", "nothing on stderr");
    }

    #[test]
    fn json_on_a_terminal_escapes_what_the_terminal_would_act_on() {
        let (mut screen, out, _) = crate::fixture::screen("chat-client", "server", false);
        screen.out_is_terminal = true;
        screen.set_style(Style {
            json: true,
            ..Style::default()
        });
        let text = "csi \u{9b}2J rlo \u{202e}";
        screen
            .show(&Incoming::decode(&[text.as_bytes()], 100), None, None)
            .unwrap();
        screen.flush().unwrap();
        let line = out.text();
        assert!(line.contains(r"\u009b2J rlo \u202e"), "{line}");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["text"], text);
    }

    #[test]
    fn with_nul_a_message_keeps_its_newlines_and_is_escaped_on_a_terminal_only() {
        let nul = Style {
            nul: true,
            ..Style::default()
        };
        let text = &[&b"two\nlines \x1b[2J"[..]];
        let (screen, out, _) = styled(false, nul);
        screen
            .show(&Incoming::decode(text, 100), None, None)
            .unwrap();
        screen.flush().unwrap();
        assert_eq!(out.text(), "two\nlines \x1b[2J\0");

        let (mut screen, out, _) = crate::fixture::screen("chat-client", "server", false);
        screen.out_is_terminal = true;
        screen.set_style(nul);
        screen
            .show(&Incoming::decode(text, 100), None, None)
            .unwrap();
        screen.flush().unwrap();
        assert_eq!(out.text(), "two\nlines \\x1b[2J\0");
    }

    #[test]
    fn a_message_of_several_lines_is_shown_under_its_label_for_a_person() {
        let (screen, out, _) = styled(true, Style::default());
        screen
            .show(&Incoming::decode(&[b"one\ntwo"], 100), Some("ann"), None)
            .unwrap();
        assert_eq!(out.lines(), ["ann> one", "     two"]);
    }
}
