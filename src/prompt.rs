//! The interactive prompt: rustyline on a thread of its own, so the loops
//! keep watching the network while a person types, and print what happens
//! above the line being edited (rustyline's external printer) instead of
//! through it. History is kept in a file between runs.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{
    Cmd, ConditionalEventHandler, DefaultEditor, Event, EventContext, EventHandler,
    ExternalPrinter, KeyCode, KeyEvent, Modifiers, RepeatCount,
};

use crate::command::{Command, HELP};
use crate::input::{End, Line, LineSource, Person};
use crate::tty;

/// The interactive prompt: rustyline editing, history and `/commands`.
pub struct Prompt {
    requests: mpsc::Sender<Request>,
    lines: mpsc::Receiver<rustyline::Result<String>>,
    printer: Printer,
    prompt: String,
    offered: Option<String>,
    /// Whether a line was asked of the prompt thread and not received yet
    /// (a wait ended by its `meanwhile` leaves the read under way).
    asked: bool,
    /// The terminal before rustyline, put back if the program ends while
    /// a line is being edited.
    saved: Option<tty::Saved>,
    /// While no line is wanted (see [`LineSource::while_waiting`]).
    waiting: Option<Waiting>,
}

/// The keys taken while no line is wanted.
struct Waiting {
    /// The terminal's settings to put back.
    saved: tty::Saved,
    /// The line being typed.
    typed: Vec<u8>,
    /// Bytes read and not looked at yet (after a line ended in a read).
    unread: std::collections::VecDeque<u8>,
    /// Where a terminal escape sequence (an arrow key, say) stands.
    escape: Escape,
}

/// A terminal escape sequence being skipped: `ESC`, then `[` or `O` and
/// parameters up to a final byte (`ESC [ A` is the Up arrow). A key without
/// a prompt to act on moves nothing, and must not become text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Started,
    Sequence,
}

impl Escape {
    /// Whether `byte` belongs to an escape sequence (and is skipped).
    fn skips(&mut self, byte: u8) -> bool {
        let (next, skipped) = match (*self, byte) {
            (Escape::None, 0x1b) => (Escape::Started, true),
            (Escape::None, _) => (Escape::None, false),
            (Escape::Started, b'[' | b'O') => (Escape::Sequence, true),
            // ESC and one key (Alt-key): both skipped.
            (Escape::Started, _) => (Escape::None, true),
            (Escape::Sequence, 0x40..=0x7e) => (Escape::None, true),
            (Escape::Sequence, _) => (Escape::Sequence, true),
        };
        *self = next;
        skipped
    }
}

/// What is kept of a line typed while no line is wanted, at most.
const TYPED_WHILE_WAITING: usize = 4096;

/// What the prompt thread is asked for: one line.
struct Request {
    prompt: String,
    initial: Option<String>,
}

/// Prints a line above the prompt while one is being edited, and as usual
/// when not. Shared by the loops' [`crate::terminal::Screen`].
#[derive(Clone)]
pub struct Printer {
    external: Arc<Mutex<Box<dyn ExternalPrinter + Send>>>,
    /// Whether the prompt thread is editing a line.
    reading: Arc<AtomicBool>,
    /// Bytes typed ahead (outside the prompt) when a line was last printed:
    /// more than that means the cursor sits after an unfinished echoed line.
    typed: Arc<AtomicUsize>,
    /// The last status line (what the program waits for), shown again when
    /// the program is continued after Ctrl-Z.
    status: Arc<Mutex<String>>,
}

impl Printer {
    /// Prints `text` (a whole line, without its newline).
    pub fn print(&self, text: &str) {
        let mut line = String::with_capacity(text.len() + 2);
        if !self.reading.load(Ordering::SeqCst) && tty::echoes_lines() {
            // Text typed while no prompt was shown is echoed by the
            // terminal: start below it rather than after it.
            let typed = tty::typed_ahead(false);
            if typed > self.typed.swap(typed, Ordering::SeqCst) {
                line.push('\n');
            }
        }
        line.push_str(text);
        line.push('\n');
        if let Ok(mut external) = self.external.lock() {
            let _ = external.print(line);
        }
    }

    /// Prints `text` as the status line: what the program waits for now.
    pub fn print_status(&self, text: &str) {
        if let Ok(mut status) = self.status.lock() {
            text.clone_into(&mut status);
        }
        self.print(text);
    }

    /// Prints the last status line again (after the screen was left).
    fn repeat_status(&self) {
        let status = self.status.lock().map(|status| status.clone());
        if let Ok(status) = status
            && !status.is_empty()
        {
            self.print(&status);
        }
    }
}

/// Ctrl-Z at the prompt: stops the program with the terminal as it was
/// before the prompt, and redraws the line being edited once continued.
/// (rustyline's own Ctrl-Z races with the stop: see [`tty::suspend`].)
struct SuspendKey {
    /// The terminal's settings from before rustyline's.
    outside: tty::Saved,
}

impl ConditionalEventHandler for SuspendKey {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, _: &EventContext) -> Option<Cmd> {
        // Failing, the key does nothing: the prompt stays as it is.
        let _ = tty::suspend(&self.outside);
        Some(Cmd::Repaint)
    }
}

impl Prompt {
    /// A prompt showing `prompt` before each line, with its history in
    /// `history` (loaded now, each sent line appended), if given.
    pub fn new(prompt: &str, history: Option<PathBuf>) -> io::Result<Prompt> {
        let saved = tty::save();
        let mut editor = DefaultEditor::new().map_err(io::Error::other)?;
        // Alt-Enter (Esc then Enter, as terminals send it) puts a newline
        // in the message: one message of several lines.
        editor.bind_sequence(
            KeyEvent(KeyCode::Enter, Modifiers::ALT),
            EventHandler::Simple(Cmd::Newline),
        );
        if let Some(outside) = &saved {
            let suspend = SuspendKey {
                outside: outside.clone(),
            };
            editor.bind_sequence(
                KeyEvent::ctrl('Z'),
                EventHandler::Conditional(Box::new(suspend)),
            );
        }
        if let Some(path) = &history {
            if let Some(folder) = path.parent() {
                crate::folders::create_private(folder).map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!(
                            "cannot create {} for the history: {error}",
                            folder.display()
                        ),
                    )
                })?;
            }
            // A missing file is a first run, not an error.
            let _ = editor.load_history(path);
        }
        let external: Box<dyn ExternalPrinter + Send> =
            Box::new(editor.create_external_printer().map_err(io::Error::other)?);
        let reading = Arc::new(AtomicBool::new(false));
        let (requests, wanted) = mpsc::channel::<Request>();
        let (lines_out, lines) = mpsc::channel();
        let editing = Arc::clone(&reading);
        thread::Builder::new()
            .name("prompt".into())
            .spawn(move || read_lines(editor, history, &wanted, &lines_out, &editing))?;
        Ok(Prompt {
            requests,
            lines,
            printer: Printer {
                external: Arc::new(Mutex::new(external)),
                reading,
                typed: Arc::default(),
                status: Arc::default(),
            },
            prompt: prompt.to_string(),
            offered: None,
            asked: false,
            saved,
            waiting: None,
        })
    }

    /// What prints above the line being edited.
    pub fn printer(&self) -> Printer {
        self.printer.clone()
    }

    /// Waits for the line asked for (asking if no read is under way), for
    /// at most `wait`.
    fn wait_for_line(&mut self, wait: Duration) -> io::Result<Option<rustyline::Result<String>>> {
        if !self.asked {
            let initial = self.offered.take();
            self.printer.typed.store(0, Ordering::SeqCst);
            let request = Request {
                prompt: self.prompt.clone(),
                initial,
            };
            self.requests
                .send(request)
                .map_err(|_| io::Error::other("the prompt thread has ended"))?;
            self.asked = true;
        }
        match self.lines.recv_timeout(wait) {
            Ok(read) => {
                self.asked = false;
                Ok(Some(read))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the prompt thread has ended"))
            }
        }
    }
}

impl LineSource for Prompt {
    fn next_line(&mut self, wait: Duration) -> io::Result<Option<Line>> {
        let line = match self.wait_for_line(wait)? {
            None => return Ok(None),
            Some(Ok(line)) => line,
            Some(Err(ReadlineError::Eof)) => return Ok(Some(Line::End(End::Eof))),
            Some(Err(ReadlineError::Interrupted)) => return Ok(Some(Line::End(End::Interrupted))),
            Some(Err(ReadlineError::Io(error))) => return Err(error),
            Some(Err(other)) => return Err(io::Error::other(other)),
        };
        match Command::interpret(&line) {
            Command::Send(text) => return Ok(Some(Line::Text(text))),
            Command::Urgent(text) => return Ok(Some(Line::Urgent(text))),
            Command::Quit => return Ok(Some(Line::End(End::Quit))),
            Command::Help => self.printer.print(HELP),
            Command::Nothing => {}
            Command::Unknown(word) => self.printer.print(&format!(
                "unknown command {word}; /help lists the commands, //text sends text starting with '/'"
            )),
        }
        // Not a message: the next call asks for another line.
        Ok(None)
    }

    fn person(&mut self) -> Option<&mut dyn Person> {
        Some(self)
    }
}

impl Person for Prompt {
    fn offer(&mut self, text: &str) {
        self.offered = Some(text.to_string());
    }

    fn set_prompt(&mut self, prompt: &str) {
        prompt.clone_into(&mut self.prompt);
    }

    fn while_waiting(&mut self) -> Option<Line> {
        // No prompt is shown: keys are taken unechoed, as they come (a
        // password prompt's way), so nothing typed now shows on the screen
        // as it is typed; Ctrl-D and /quit are obeyed at once, /help shown.
        if self.waiting.is_none() {
            self.waiting = Some(Waiting {
                saved: tty::quiet_keys()?,
                typed: Vec::new(),
                unread: std::collections::VecDeque::new(),
                escape: Escape::None,
            });
        }
        let (printer, waiting) = (&self.printer, self.waiting.as_mut()?);
        if waiting.unread.is_empty() {
            let stdin = io::stdin();
            let mut input = File::from(stdin.as_fd().try_clone_to_owned().ok()?);
            let mut buffer = [0u8; 1024];
            let read = input.read(&mut buffer).ok()?;
            waiting.unread.extend(&buffer[..read]);
        }
        while let Some(byte) = waiting.unread.pop_front() {
            if waiting.escape.skips(byte) {
                continue;
            }
            match byte {
                // Ctrl-D; typed while the terminal was still in line mode,
                // the line discipline left it as a 0 byte.
                0x04 | 0x00 => return Some(Line::End(End::Eof)),
                // Ctrl-Z: stopped, then continued by `fg`, the keys are
                // taken unechoed again and the screen says what still waits.
                tty::SUSPEND_KEY => {
                    // Failing, the key only has the status said again.
                    let _ = tty::suspend(&waiting.saved);
                    printer.repeat_status();
                }
                b'\r' | b'\n' => {
                    let line = String::from_utf8_lossy(&waiting.typed).into_owned();
                    waiting.typed.clear();
                    match Command::interpret(&line) {
                        Command::Quit => return Some(Line::End(End::Quit)),
                        Command::Help => printer.print(HELP),
                        Command::Nothing => {}
                        Command::Urgent(text) => return Some(Line::Urgent(text)),
                        _ => return Some(Line::Text(line)),
                    }
                }
                // Backspace and delete take back a byte.
                0x7f | 0x08 => {
                    waiting.typed.pop();
                }
                byte if waiting.typed.len() < TYPED_WHILE_WAITING => waiting.typed.push(byte),
                _ => {}
            }
        }
        None
    }

    fn stop_waiting(&mut self) -> Option<String> {
        let waiting = self.waiting.take()?;
        let _ = tty::restore(waiting.saved);
        let typed = String::from_utf8_lossy(&waiting.typed).into_owned();
        (!typed.is_empty()).then_some(typed)
    }

    fn discard_type_ahead(&mut self) -> usize {
        match self.waiting.take() {
            Some(waiting) => {
                let pending = tty::typed_ahead(true);
                let _ = tty::restore(waiting.saved);
                waiting.typed.len() + waiting.unread.len() + pending
            }
            None => tty::typed_ahead(true),
        }
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            let _ = tty::restore(waiting.saved);
        }
        // Ending while a line is edited leaves rustyline's raw mode on.
        if self.asked
            && let Some(saved) = self.saved.take()
        {
            let _ = tty::restore(saved);
            println!();
        }
    }
}

/// The prompt thread: reads one line per request until the prompt is
/// dropped, keeping the history of lines sent. `editing` is set while a
/// line is being edited.
fn read_lines(
    mut editor: DefaultEditor,
    history: Option<PathBuf>,
    wanted: &mpsc::Receiver<Request>,
    lines_out: &mpsc::Sender<rustyline::Result<String>>,
    editing: &AtomicBool,
) {
    while let Ok(Request { prompt, initial }) = wanted.recv() {
        editing.store(true, Ordering::SeqCst);
        let read = match &initial {
            Some(text) => editor.readline_with_initial(&prompt, (text, "")),
            None => editor.readline(&prompt),
        };
        editing.store(false, Ordering::SeqCst);
        if let Ok(line) = &read
            && matches!(Command::interpret(line), Command::Send(_))
        {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &history {
                let _ = editor.append_history(path);
            }
        }
        if lines_out.send(read).is_err() {
            return;
        }
    }
}
