//! What the in-process unit tests of the loops share: output they can read
//! back, a clock they drive, and lines they script.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::clock::Clock;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};

/// A `Write` whose bytes the test reads back.
#[derive(Clone, Default)]
pub struct Output(Rc<RefCell<Vec<u8>>>);

impl Output {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.borrow()).into_owned()
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A screen over two [`Output`]s: (screen, stdout, stderr).
pub fn screen(
    program: &'static str,
    peer: &'static str,
    interactive: bool,
) -> (Screen, Output, Output) {
    let (out, err) = (Output::default(), Output::default());
    let screen = Screen::with_output(
        program,
        peer,
        interactive,
        Box::new(out.clone()),
        Box::new(err.clone()),
    );
    (screen, out, err)
}

/// A clock that moves on by `step` each time it is read, so a wait of
/// minutes passes in a few reads.
pub struct SteppingClock {
    now: Mutex<Instant>,
    step: Duration,
}

impl SteppingClock {
    pub fn new(step: Duration) -> SteppingClock {
        SteppingClock {
            now: Mutex::new(Instant::now()),
            step,
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Instant {
        let mut now = self.now.lock().expect("clock lock");
        *now += self.step;
        *now
    }
}

/// Scripted input: these lines, then `end`.
pub struct Lines(VecDeque<Line>);

impl Lines {
    pub fn new(lines: &[&str], end: End) -> Lines {
        let mut queued: VecDeque<Line> = lines
            .iter()
            .map(|line| Line::Text(line.to_string()))
            .collect();
        queued.push_back(Line::End(end));
        Lines(queued)
    }
}

impl LineSource for Lines {
    fn next_line(
        &mut self,
        _shutdown: &Shutdown,
        _meanwhile: &mut dyn FnMut() -> Option<Line>,
    ) -> io::Result<Line> {
        Ok(self.0.pop_front().unwrap_or(Line::End(End::Eof)))
    }

    fn has_ready_line(&mut self) -> bool {
        true
    }

    /// Only an end of input is the end of a script; `/quit` and Ctrl-C come
    /// from a person, who may still be asked.
    fn is_exhausted(&mut self) -> bool {
        matches!(self.0.front(), None | Some(Line::End(End::Eof)))
    }
}

/// Sets the stop flag when dropped, so a loop under test ends even when the
/// peer thread that should have stopped it panicked.
pub struct StopOnDrop(pub Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request();
    }
}

/// A socket for a test's peer, with deadlines on every wait.
pub fn peer_socket(context: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let socket = context.socket(kind).expect("socket");
    socket.set_rcvtimeo(5_000).expect("rcvtimeo");
    socket.set_sndtimeo(5_000).expect("sndtimeo");
    socket.set_linger(0).expect("linger");
    socket
}

/// A fresh `ipc://` endpoint in the temporary folder, unique to this call:
/// nothing listens there until a test binds it.
pub fn ipc_endpoint() -> Endpoint {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "zmq-chat-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Endpoint::Ipc(path.display().to_string())
}
