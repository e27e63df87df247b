//! Where the chat's lines come from: a person at a terminal (the prompt,
//! in [`crate::prompt`]) or a script's stdin ([`ScriptLines`]), behind one
//! [`LineSource`] the loops read the same way.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use crate::message::strip_line_ending;

/// Whether stdin is a terminal: a person can be asked a question there.
pub fn stdin_is_interactive() -> bool {
    io::stdin().is_terminal()
}

/// Whether stdin and stdout are both terminals, which selects interactive
/// mode (the prompt draws on stdout). With stdout sent elsewhere
/// (`chat-client | tee chat.log`), the lines typed are script input and
/// each message is one line of output, as in a pipe.
pub fn is_interactive() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
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
    /// A message to send in the urgent lane (`/urgent TEXT`; the help
    /// desk's operators serve it first).
    Urgent(String),
    /// No more messages.
    End(End),
}

/// Where outgoing messages come from: a person at a prompt or a script's stdin.
pub trait LineSource {
    /// The next message, or the end of input, if one comes within `wait`
    /// (or so: a person's prompt may take a tick); `None` if none did. A
    /// loop calls it in turn with its other sources, never for longer
    /// than a tick.
    ///
    /// # Errors
    /// When the input cannot be read.
    fn next_line(&mut self, wait: Duration) -> io::Result<Option<Line>>;

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

    /// The person typing, when the lines come from one at a prompt: what
    /// only a person's input does. `None` for script input.
    fn person(&mut self) -> Option<&mut dyn Person> {
        None
    }
}

/// What only a person at a prompt does with the lines (see
/// [`LineSource::person`]): keys taken while no line is wanted, a prompt
/// that says what is asked, type-ahead thrown away, a line offered back.
pub trait Person {
    /// Checked every tick while no line is wanted (a server waiting for a
    /// message, a client waiting for a reply): `Line::End` if the user ended
    /// the input meanwhile (Ctrl-D, `/quit`), `Line::Text` with a line they
    /// typed (the server drops it: it answers nothing; the client queues
    /// it). `/help` is shown at once.
    fn while_waiting(&mut self) -> Option<Line>;

    /// Ends the waiting that [`Person::while_waiting`] began, before a
    /// line is asked for again; returns a line typed meanwhile and not
    /// finished, to offer at the prompt.
    fn stop_waiting(&mut self) -> Option<String>;

    /// Shows `prompt` before the lines asked for from now on.
    fn set_prompt(&mut self, prompt: &str);

    /// Throws away what the user typed before a line was asked for (a
    /// server operator must answer only what they have seen); how many
    /// bytes that was.
    fn discard_type_ahead(&mut self) -> usize;

    /// Offers `text` for sending again: the prompt shows it, ready to edit.
    fn offer(&mut self, text: &str);
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
    /// What ends a line: a newline, or NUL with `-0`.
    separator: u8,
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
            separator: b'\n',
        }
    }

    /// Lines end with `separator` instead (NUL, with `-0`): then a line
    /// may hold newlines, and keeps a carriage return at its end.
    pub fn separated_by(mut self, separator: u8) -> Self {
        self.separator = separator;
        self
    }

    /// A line's text without its separator (and, with newlines, a
    /// carriage return before it).
    fn strip<'a>(&self, line: &'a str) -> &'a str {
        match self.separator {
            b'\n' => strip_line_ending(line),
            separator => line.strip_suffix(char::from(separator)).unwrap_or(line),
        }
    }

    /// A complete line from what was read, if there is one; at end of input,
    /// the unterminated rest counts as a last line.
    fn take_line(&mut self) -> Option<String> {
        let end = match memchr::memchr(self.separator, &self.buffer[self.scanned..]) {
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
            Ok(line) => self.strip(line).to_string(),
            Err(_) => {
                let _ = writeln!(
                    self.warnings,
                    "{}: input line {} is not valid UTF-8; bad bytes sent as \u{FFFD}",
                    self.program, self.number
                );
                self.strip(&String::from_utf8_lossy(bytes)).to_string()
            }
        };
        Some(line)
    }

    /// Waits up to `timeout` for the input to be readable, then reads what
    /// is there (never blocking on a read that has no data).
    fn fill(&mut self, timeout: Duration) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let wait = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut ready = [PollFd::new(&self.input, PollFlags::IN)];
        match poll(&mut ready, Some(&wait)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(error.into()),
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
        memchr::memchr(self.separator, &self.buffer[self.scanned..]).is_some()
            || (self.ended && self.start < self.buffer.len())
    }
}

impl<R: Read + AsFd> LineSource for ScriptLines<R> {
    fn next_line(&mut self, wait: Duration) -> io::Result<Option<Line>> {
        if !self.has_buffered_line() && !self.ended {
            self.fill(wait)?;
        }
        Ok(match self.take_line() {
            Some(line) => Some(Line::Text(line)),
            None if self.ended => Some(Line::End(End::Eof)),
            None => None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TICK;
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
        let mut read = Vec::new();
        loop {
            match lines.next_line(TICK).expect("read") {
                None => {}
                Some(Line::Text(text) | Line::Urgent(text)) => read.push(text),
                Some(Line::End(end)) => {
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
    fn with_nul_separators_a_line_keeps_its_newlines_and_carriage_returns() {
        let (lines, _) = script(b"one\ntwo\r\n\0three\r\0last\n".to_vec(), 3);
        let mut lines = lines.separated_by(b'\0');
        assert_eq!(all_lines(&mut lines), ["one\ntwo\r\n", "three\r", "last\n"]);
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
        let mut count = 0;
        loop {
            let text = match lines.next_line(TICK).unwrap() {
                None => continue,
                Some(Line::Text(text) | Line::Urgent(text)) => text,
                Some(Line::End(_)) => break,
            };
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
        assert!(lines.next_line(Duration::ZERO).unwrap().is_none());
        writer.write_all(b"half").unwrap();
        assert!(!lines.has_ready_line(), "a partial line is not ready");
        writer.write_all(b" and whole\nrest").unwrap();
        assert!(lines.has_ready_line());
        assert!(
            matches!(lines.next_line(Duration::ZERO).unwrap(), Some(Line::Text(text)) if text == "half and whole")
        );
        drop(writer);
        assert!(
            lines.has_ready_line(),
            "at the end, the unterminated rest is a line"
        );
        assert!(!lines.is_exhausted());
        assert!(
            matches!(lines.next_line(Duration::ZERO).unwrap(), Some(Line::Text(text)) if text == "rest")
        );
        assert!(lines.is_exhausted());
        assert!(matches!(
            lines.next_line(Duration::ZERO).unwrap(),
            Some(Line::End(End::Eof))
        ));
    }
}
