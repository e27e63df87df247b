//! The client side of the chat: send a message, wait for its reply, survive
//! the server dying, freezing or restarting in between.
//!
//! With REQ/REP a client waiting for a reply cannot tell a slow human from a
//! dead server, and a plain receive timeout would give up on a slow typist.
//! Here liveness is judged by the *connection*, not by the reply:
//!
//! * ZMTP heartbeats (`ZMQ_HEARTBEAT_IVL`/`_TIMEOUT`) are answered by the
//!   server's ZeroMQ I/O thread whatever its operator is doing, so a live
//!   server is never given up on; a frozen or unreachable one stops
//!   answering and ZeroMQ drops the connection after the liveness timeout.
//! * A killed server's connection closes at once.
//! * The socket monitor reports both as a lost connection ([`Link`]). The
//!   client says so, lets ZeroMQ reconnect, and when a server is back
//!   re-sends the pending message with the same id (see [`crate::MessageId`]),
//!   so the server answers it exactly once. If none is back within the
//!   give-up time, the message is handed back to the caller unsent.
//!
//! The socket is a DEALER doing REQ's lock-step itself: it sends
//! `[id, "", body]` and takes as the reply only a message that carries the
//! pending id, as every REP socket and chat-server returns it: the answer
//! to a copy that crossed a reconnect is ignored, and so is anything a
//! hostile server sends unasked. A reply over the wire limits is dropped
//! unread. The body comes from the
//! client channel: the text in plain mode; in secure mode a handshake,
//! then the sealed text, and a fresh handshake after every reconnect.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::channel::{ClientChannel, Plain, Step};
use crate::clock::{Clock, TICK};
use crate::envelope::{self, Enveloped, MessageId};
use crate::error::ChatError;
use crate::event;
use crate::message::{Anomaly, DEFAULT_MAX_MESSAGE_BYTES, Incoming, MAX_TEXT_BYTES};
use crate::secure::client::ClientSecurity;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::throttle::Throttle;
use crate::transport::{Bounded, ConnectionEvent, Oversized, Request, ToServer, TransportError};

/// At most one notice of each kind a server can trigger (coming and going)
/// per this interval.
const NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// How many of each kind may be shown at once, before [`NOTICE_INTERVAL`]
/// applies: a server restarted by hand goes and comes back in seconds.
const NOTICE_BURST: u32 = 3;

/// How the client judges that a server is gone.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// A connection silent this long (no heartbeat answered) is dropped.
    pub timeout: Duration,
    /// How long to wait for a server to be reachable again before handing
    /// the pending message back.
    pub give_up: Duration,
}

/// How a client session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// Input ended, or the user quit, with every message answered.
    Finished(End),
    /// No server was reachable within the give-up time; this message was not
    /// answered (it may or may not have been delivered).
    GaveUp {
        /// The message's text.
        unanswered: String,
    },
    /// The server's operator ended the chat while this message waited.
    ServerEnded {
        /// The message's text.
        unanswered: String,
    },
    /// Secure mode failed before any message was sent (the handshake made
    /// as soon as a server was there): `reason` says why, for the user.
    Failed {
        /// Why, for the user.
        reason: String,
    },
    /// Interrupted while this message waited for its reply.
    InterruptedWaiting {
        /// The message's text.
        unanswered: String,
        /// Lines typed while waiting, never sent, in order.
        unsent: Vec<String>,
    },
    /// The person ended the chat (Ctrl-D, `/quit`) while this message
    /// waited for its reply; the lines typed after it were not sent.
    QuitWaiting {
        /// How the person ended it.
        end: End,
        /// The message's text.
        unanswered: String,
        /// Lines typed while waiting, never sent, in order.
        unsent: Vec<String>,
    },
    /// The server refused the message, or secure mode failed (`reason`
    /// says which, for the user); the message was not answered.
    Refused {
        /// Why, for the user.
        reason: String,
        /// The message's text.
        unanswered: String,
    },
}

/// The connection to the server, as the socket monitor tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A server is connected.
    Up,
    /// No server is connected.
    Down {
        /// Since when the pending message has waited without a server: the
        /// loss, or the send if the link was already down then. The give-up
        /// time counts from here.
        since: Instant,
        /// Whether the pending message went out on a connection that was
        /// lost since, so it may be gone and must be sent again; a message
        /// sent while down is still queued in the socket.
        resend: bool,
    },
}

/// What a change of the [`Link`] means for the pending message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do.
    None,
    /// The connection was lost.
    Lost,
    /// A server is connected again.
    Back {
        /// Whether the pending message must go out again.
        resend: bool,
    },
    /// A connection was made at the address but no ZeroMQ handshake
    /// completed on it: not a ZeroMQ program (or a frozen one).
    Foreign,
}

impl Link {
    /// The link as a new message is sent at `now`: one still down counts
    /// its wait from now, and the message is queued, not lost.
    pub fn sent(self, now: Instant) -> Link {
        match self {
            Link::Up => Link::Up,
            Link::Down { .. } => Link::Down {
                since: now,
                resend: false,
            },
        }
    }

    /// The link after `event`, and what that means.
    pub fn on(self, event: ConnectionEvent, now: Instant) -> (Link, Change) {
        match (self, event) {
            (Link::Up, ConnectionEvent::Disconnected) => (
                Link::Down {
                    since: now,
                    resend: true,
                },
                Change::Lost,
            ),
            (Link::Down { resend, .. }, ConnectionEvent::Connected) => {
                (Link::Up, Change::Back { resend })
            }
            // Lost before it was ever up: something took the connection but
            // did not complete a handshake (a refused ZMTP 1.0 peer is
            // dropped without a handshake-failed event).
            (link @ Link::Down { .. }, ConnectionEvent::Disconnected)
            | (link, ConnectionEvent::HandshakeFailed) => (link, Change::Foreign),
            (link, _) => (link, Change::None),
        }
    }

    /// Whether the pending message has waited for a server for `give_up`.
    pub fn gave_up(self, now: Instant, give_up: Duration) -> bool {
        matches!(self, Link::Down { since, .. } if now.duration_since(since) >= give_up)
    }
}

/// A chat client connected (or connecting) to a server.
pub struct ChatClient {
    /// The way to the server (a ZeroMQ DEALER in the programs).
    server: Box<dyn ToServer>,
    link: Link,
    /// Plain, or secure once [`ChatClient::require_encryption`] is called.
    channel: Box<dyn ClientChannel>,
    session: u64,
    sequence: u64,
    /// The message last given up on, with its id: sent again unchanged, it
    /// keeps its id, so a server that got the first copy answers it once.
    given_up: Option<(MessageId, String)>,
    /// The id of the handshake made before any message, while it waits.
    hello: Option<MessageId>,
    /// Lines the person typed while a reply was awaited, sent in order, one
    /// per turn, before the prompt asks for more: at most [`QUEUED_LINES`].
    queued: VecDeque<Line>,
    /// A body to send at a given time, for a message (a handshake again,
    /// to a server that was too busy for one): at most one, dropped with
    /// the connection.
    deferred: Option<(Instant, MessageId, Vec<u8>)>,
    /// Whether a server was ever connected (to say "connected", then "back").
    ever_connected: bool,
    /// Whether the user was told that the program at the address is not a
    /// ZeroMQ one, since the last connection.
    told_foreign: bool,
    /// Whether the last program met at the address took the connection but
    /// did not speak ZeroMQ (since a server was last connected): a message
    /// sent then is told so at once, even though the event that showed it
    /// came before the message (libzmq does not try again after such a
    /// protocol error, so no later event may come).
    foreign: bool,
    /// Notices a server can trigger by coming and going.
    throttle: Throttle,
    /// The envelope frame with the name the user gave (`--name`), if any.
    name: Option<Vec<u8>>,
    /// Whether the message being sent (and its copies) goes in the urgent
    /// lane: it was typed as `/urgent TEXT`, or all are (`--urgent`).
    urgent: bool,
    /// Whether every message goes in the urgent lane (`--urgent`).
    all_urgent: bool,
    liveness: Liveness,
    /// Replies are shown with at most this many bytes of text.
    max_message_bytes: usize,
    /// Lines taken from the line source so far, to name a line in notices.
    lines_read: u64,
    /// Lines that were not delivered whole: not sent (over the limit), or
    /// their reply cut to `max_message_bytes`. Script mode then ends with
    /// its own exit code, so a script knows. The first
    /// [`INCOMPLETE_NAMED`] are named; all are counted.
    incomplete: Vec<u64>,
    /// How many lines were not delivered whole, named or not.
    incomplete_count: u64,
}

/// What the client is doing: the loop's state.
enum Phase {
    /// Between messages: the person types the next one (in secure mode,
    /// a handshake may be made meanwhile).
    Typing,
    /// A message waits for its reply.
    Waiting(Waiting),
}

/// A message waiting for its reply.
struct Waiting {
    id: MessageId,
    text: String,
    /// What was typed as the wait began (read then to take the keys
    /// unechoed from the start).
    typed_first: Option<Line>,
    /// Connections lost right after they were made, this message waiting.
    drops: QuickDrops,
    /// Whether the user was told, for this message, that the program at
    /// the address is not ZeroMQ; and that a reply over the limits was
    /// dropped (each said once per message, however often it happens).
    told_foreign: bool,
    told_oversized: bool,
}

/// One thing that happened, as [`ChatClient::wait`] returns it.
enum Event {
    /// A line to send or the end of input; while a reply waits, a line
    /// typed meanwhile, or the person quitting.
    Line(Line),
    /// A message from the server, while a reply waits.
    Reply(Vec<Vec<u8>>),
    /// A message from the server over the limits, dropped unread.
    Oversized(Oversized),
    /// The connection came or went, while a reply waits.
    Connection(ConnectionEvent),
    /// A tick passed with nothing else: the timers' turn, and between
    /// messages, the connection's.
    Tick,
    /// Ctrl-C or a termination signal, while a reply waits.
    Interrupted,
    /// Something the transport tells the user (see [`ToServer::news`]).
    News(String),
}

/// What ended the wait for one reply.
enum Waited {
    Reply(Vec<Vec<u8>>),
    /// The handshake made before any message is done.
    Ready,
    Ended,
    Refused(String),
    GaveUp,
    Interrupted,
    /// The person ended the chat (Ctrl-D, `/quit`) while the reply waited.
    Quit(End),
}

/// What the loop does after an event: go on in a phase, or end.
type Next = ControlFlow<ClientEnd, Phase>;

impl ChatClient {
    /// A client talking to the server through `server` (the server may
    /// appear later). `clock` dates the wait for a first server.
    pub fn new(server: Box<dyn ToServer>, liveness: Liveness, clock: &dyn Clock) -> ChatClient {
        ChatClient {
            server,
            link: Link::Down {
                since: clock.now(),
                resend: false,
            },
            channel: Box::new(Plain),
            session: envelope::random_id(),
            sequence: 0,
            given_up: None,
            hello: None,
            queued: VecDeque::new(),
            deferred: None,
            ever_connected: false,
            told_foreign: false,
            foreign: false,
            throttle: Throttle::with_burst(NOTICE_INTERVAL, NOTICE_BURST),
            name: None,
            urgent: false,
            all_urgent: false,
            liveness,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            lines_read: 0,
            incomplete: Vec::new(),
            incomplete_count: 0,
        }
    }

    /// Turns on secure mode: every message is sealed for the server whose
    /// key `security` pins, and nothing is sent until it proves it holds it.
    pub fn require_encryption(&mut self, security: ClientSecurity) {
        self.channel = Box::new(security);
    }

    /// Sends `name` with every message, for the server's operator to see
    /// (`--name`; not authenticated, and a plain REP server ignores it).
    pub fn call_yourself(&mut self, name: &str) {
        self.name = Some(envelope::name_frame(name));
    }

    /// Shows at most `bytes` of each reply's text (`--max-size`).
    pub fn show_at_most(&mut self, bytes: usize) {
        self.max_message_bytes = bytes;
    }

    /// Sends every message in the urgent lane (`--urgent`; the help desk's
    /// operators serve it first).
    pub fn ask_urgently(&mut self) {
        self.all_urgent = true;
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        self.server.endpoint()
    }

    /// The numbers of the lines (from 1) that were not delivered whole so
    /// far (not sent for their size, or answered with a reply cut to
    /// `--max-size`), the first [`INCOMPLETE_NAMED`] of them; and how many
    /// there were in all.
    pub fn incomplete_lines(&self) -> (&[u64], u64) {
        (&self.incomplete, self.incomplete_count)
    }

    /// Counts the line just read as not delivered whole, naming it if
    /// fewer than [`INCOMPLETE_NAMED`] are named (a script of many such
    /// lines must not grow the list without bound).
    fn not_delivered_whole(&mut self) {
        self.incomplete_count += 1;
        if self.incomplete.len() < INCOMPLETE_NAMED {
            self.incomplete.push(self.lines_read);
        }
    }

    /// Sends each line from `lines` and shows each reply, until input ends,
    /// a signal arrives, or a message cannot be answered.
    ///
    /// # Errors
    /// When the screen cannot be written or the transport fails.
    pub fn run(
        &mut self,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<ClientEnd, ChatError> {
        // What the transport has to say before anything is typed (the help
        // desk: answers that waited for the client), even if nothing is.
        while let Some(news) = self.server.news() {
            screen.notice(&news);
        }
        let mut phase = Phase::Typing;
        loop {
            let event = self.wait(&mut phase, lines, screen, shutdown)?;
            let now = clock.now();
            let next = match phase {
                Phase::Typing => self.between_messages(event, lines, screen, now)?,
                Phase::Waiting(waiting) => self.awaiting(waiting, event, lines, screen, now)?,
            };
            match next {
                ControlFlow::Continue(next) => phase = next,
                ControlFlow::Break(end) => {
                    screen.flush()?;
                    return Ok(end);
                }
            }
        }
    }

    /// The next event: whatever the phase waits for, for at most a tick,
    /// after what is already there. Connection events come before the
    /// messages that follow them.
    fn wait(
        &mut self,
        phase: &mut Phase,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
    ) -> Result<Event, ChatError> {
        let Phase::Waiting(waiting) = phase else {
            return self.wait_for_a_line(lines, screen, shutdown);
        };
        if shutdown.requested() {
            return Ok(Event::Interrupted);
        }
        // The person may quit, or type the next lines, meanwhile.
        let typed = waiting.typed_first.take();
        if let Some(line) = typed.or_else(|| lines.person()?.while_waiting()) {
            return Ok(Event::Line(line));
        }
        if let Some(event) = self.server.next_event()? {
            return Ok(Event::Connection(event));
        }
        if let Some(news) = self.server.news() {
            return Ok(Event::News(news));
        }
        Ok(self.server.receive(true)?.map_or(Event::Tick, received))
    }

    /// Between messages: lines typed while the last reply was awaited go
    /// first, then a line already there (a script's go out back to back);
    /// else the keyboard is waited on for up to a tick. (The connection is
    /// looked at once a tick meanwhile: see [`ChatClient::keep_up`].)
    fn wait_for_a_line(
        &mut self,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
    ) -> Result<Event, ChatError> {
        if let Some(line) = self.queued.pop_front() {
            return Ok(Event::Line(line));
        }
        if lines.has_ready_line()
            && let Some(line) = lines.next_line(Duration::ZERO)?
        {
            return Ok(Event::Line(line));
        }
        if shutdown.requested() {
            return Ok(Event::Line(Line::End(End::Interrupted)));
        }
        screen.flush()?;
        Ok(lines.next_line(TICK)?.map_or(Event::Tick, Event::Line))
    }

    /// Between messages: a line is sent; and every tick the client follows
    /// the connection, telling the user when the server goes and comes
    /// back, and in secure mode shakes hands as soon as a server is there.
    fn between_messages(
        &mut self,
        event: Event,
        lines: &mut dyn LineSource,
        screen: &Screen,
        now: Instant,
    ) -> Result<Next, ChatError> {
        match event {
            Event::Line(Line::End(end)) => Ok(ControlFlow::Break(ClientEnd::Finished(end))),
            Event::Line(Line::Text(text)) => self.send_line(text, false, lines, screen, now),
            Event::Line(Line::Urgent(text)) => self.send_line(text, true, lines, screen, now),
            _ => match self.keep_up(screen, now)? {
                Some(reason) => Ok(ControlFlow::Break(ClientEnd::Failed { reason })),
                None => Ok(ControlFlow::Continue(Phase::Typing)),
            },
        }
    }

    /// Between messages, once a tick: follows the connection, sends what
    /// is due, and takes a handshake's answer. `Some(reason)` when secure
    /// mode failed (a wrong server key, say).
    fn keep_up(&mut self, screen: &Screen, now: Instant) -> Result<Option<String>, ChatError> {
        while let Some(event) = self.server.next_event()? {
            self.tell_connection(event, screen, now)?;
        }
        while let Some(news) = self.server.news() {
            screen.notice(&news);
        }
        self.send_deferred(now)?;
        self.shake_hands()?;
        // Only a handshake's answer is read between messages; anything else
        // a server sends unasked waits, bounded, in the transport's queue.
        while self.hello.is_some()
            && let Some(message) = self.server.receive(false)?
        {
            if let Ok(frames) = message
                && let Some(reason) = self.hello_answered(frames, screen, now)?
            {
                return Ok(Some(reason));
            }
        }
        Ok(None)
    }

    /// Sends a line as a message and starts waiting for its reply; a line
    /// over the limit is not sent (and the user told).
    fn send_line(
        &mut self,
        text: String,
        urgent: bool,
        lines: &mut dyn LineSource,
        screen: &Screen,
        now: Instant,
    ) -> Result<Next, ChatError> {
        self.lines_read += 1;
        if text.len() > MAX_TEXT_BYTES {
            screen.notice(&format!(
                "line {} not sent: it has {} bytes, more than the {MAX_TEXT_BYTES} a message may have",
                self.lines_read,
                text.len()
            ));
            self.not_delivered_whole();
            return Ok(ControlFlow::Continue(Phase::Typing));
        }
        let id = self.id_for(&text);
        self.urgent = urgent || self.all_urgent;
        // Events from while the user was typing describe the past; only what
        // happens from now on concerns this message. (A handshake made
        // meanwhile and still unanswered is overtaken by this message's.)
        self.catch_up_with_connection_events(screen, now)?;
        self.hello = None;
        self.deferred = None;
        let body = self.channel.outgoing(id, &text)?;
        self.send(id, &body)?;
        screen.sent(text.as_bytes(), Some(id));
        self.link = self.link.sent(now);
        // Keys are taken (unechoed, see LineSource::while_waiting) from now
        // on, before the status says the client waits: nothing typed after
        // it is echoed raw.
        let typed_first = lines.person().and_then(|person| person.while_waiting());
        if self.link == Link::Up {
            screen.status("waiting for the server's reply… (Ctrl-C to quit)");
        } else {
            screen.status(&format!(
                "no server at {} yet; the message will be delivered when one appears",
                self.server.endpoint()
            ));
        }
        let told_foreign = self.foreign && self.link != Link::Up;
        if told_foreign {
            self.tell_foreign(screen, true);
        }
        Ok(ControlFlow::Continue(Phase::Waiting(Waiting {
            id,
            text,
            typed_first,
            drops: QuickDrops::default(),
            told_foreign,
            told_oversized: false,
        })))
    }

    /// The id for a message with `text`: the one it had if it is the
    /// message last given up on, sent again; else the next.
    fn id_for(&mut self, text: &str) -> MessageId {
        match self.given_up.take() {
            Some((id, given_up)) if given_up == text => id,
            _ => {
                self.sequence += 1;
                MessageId {
                    session: self.session,
                    sequence: self.sequence,
                }
            }
        }
    }

    /// While a message waits: its reply ends the wait, and so do the
    /// person quitting, a signal, a refusal, or no server for the give-up
    /// time; a lost connection means waiting for a server, and re-sending.
    fn awaiting(
        &mut self,
        mut waiting: Waiting,
        event: Event,
        lines: &mut dyn LineSource,
        screen: &Screen,
        now: Instant,
    ) -> Result<Next, ChatError> {
        let answered = match event {
            Event::Interrupted => Some(Waited::Interrupted),
            Event::Line(Line::End(end)) => Some(Waited::Quit(end)),
            Event::Line(typed @ (Line::Text(_) | Line::Urgent(_))) => {
                self.queue(typed, screen);
                None
            }
            Event::Reply(frames) => self.answer_to(&waiting, frames, screen, now)?,
            Event::Oversized(oversized) => {
                if !std::mem::replace(&mut waiting.told_oversized, true) {
                    screen.notice(&format!(
                        "dropped a reply of {} bytes in {} frames unread: over the limits of a chat message",
                        oversized.bytes, oversized.frames
                    ));
                }
                None
            }
            Event::Connection(event) => {
                self.follow_while_waiting(&mut waiting, event, screen, now)?
            }
            Event::News(news) => {
                screen.notice(&news);
                None
            }
            // A whole tick without a reply: show what is buffered meanwhile.
            Event::Tick => {
                screen.flush()?;
                None
            }
        };
        self.send_deferred(now)?;
        let waited = match answered {
            Some(waited) => waited,
            None if self.link.gave_up(now, self.liveness.give_up) => Waited::GaveUp,
            None => return Ok(ControlFlow::Continue(Phase::Waiting(waiting))),
        };
        // What was being typed when the wait ended is not lost: the
        // prompt shows it again, ready to finish.
        if let Some(person) = lines.person()
            && let Some(partial) = person.stop_waiting()
        {
            person.offer(&partial);
        }
        self.conclude(waiting, waited, screen, now)
    }

    /// How a wait ended: the reply shown and the next line asked for, or
    /// the chat's end.
    fn conclude(
        &mut self,
        waiting: Waiting,
        waited: Waited,
        screen: &Screen,
        now: Instant,
    ) -> Result<Next, ChatError> {
        let Waiting { id, text, .. } = waiting;
        let end = match waited {
            Waited::Ready => return Ok(ControlFlow::Continue(Phase::Typing)),
            Waited::Reply(body) => {
                self.show_reply(&body, id, screen)?;
                return Ok(ControlFlow::Continue(Phase::Typing));
            }
            Waited::Ended => ClientEnd::ServerEnded { unanswered: text },
            Waited::Refused(reason) => ClientEnd::Refused {
                reason,
                unanswered: text,
            },
            Waited::GaveUp => {
                // The copy still queued in the transport must not reach a
                // server that appears later: it would be a second one.
                self.reconnect(now, false)?;
                self.given_up = Some((id, text.clone()));
                ClientEnd::GaveUp { unanswered: text }
            }
            Waited::Interrupted => ClientEnd::InterruptedWaiting {
                unanswered: text,
                unsent: self.unsent(),
            },
            Waited::Quit(end) => ClientEnd::QuitWaiting {
                end,
                unanswered: text,
                unsent: self.unsent(),
            },
        };
        Ok(ControlFlow::Break(end))
    }

    /// Shows a reply, and counts its line as not delivered whole if the
    /// reply was cut to `--max-size`.
    fn show_reply(
        &mut self,
        body: &[Vec<u8>],
        id: MessageId,
        screen: &Screen,
    ) -> Result<(), ChatError> {
        let incoming = Incoming::decode(body, self.max_message_bytes);
        screen.show(&incoming, self.channel.peer_label().as_deref(), Some(id))?;
        if incoming
            .anomalies
            .iter()
            .any(|anomaly| matches!(anomaly, Anomaly::Truncated { .. }))
        {
            screen.notice(&format!(
                "the reply to line {} was cut to --max-size",
                self.lines_read
            ));
            self.not_delivered_whole();
        }
        Ok(())
    }

    /// What a message from the server means for the waiting one: the end
    /// of the wait, or `None` to keep waiting (a handshake's answer too).
    fn answer_to(
        &mut self,
        waiting: &Waiting,
        frames: Vec<Vec<u8>>,
        screen: &Screen,
        now: Instant,
    ) -> Result<Option<Waited>, ChatError> {
        let waited = self.reply_to(waiting.id, Some(&waiting.text), frames, screen, now)?;
        Ok(waited.filter(|waited| !matches!(waited, Waited::Ready)))
    }

    /// A connection event while a message waits: a loss is said and the
    /// connection renewed, a server back is sent the message again, a
    /// program that is not ZeroMQ is named.
    fn follow_while_waiting(
        &mut self,
        waiting: &mut Waiting,
        event: ConnectionEvent,
        screen: &Screen,
        now: Instant,
    ) -> Result<Option<Waited>, ChatError> {
        // The message queued in the transport goes with it if a program
        // that is not ZeroMQ makes the client start anew.
        match self.follow(event, now, true)? {
            Change::None | Change::Back { resend: false } => {}
            Change::Lost if waiting.drops.lost(now) => {
                return Ok(Some(Waited::Refused(format!(
                    "the server at {} dropped the connection {QUICK_DROPS} times right after the connection was made, this message waiting: most likely its reply is over the limits of a chat message ({MAX_TEXT_BYTES} bytes of text), which ZeroMQ refuses by dropping the connection",
                    self.server.endpoint()
                ))));
            }
            Change::Lost => {
                // What arrived before the loss is still queued (a server's
                // last words: its goodbye): read it first.
                while let Some(message) = self.server.receive(false)? {
                    if let Ok(frames) = message
                        && let Some(waited) = self.answer_to(waiting, frames, screen, now)?
                    {
                        return Ok(Some(waited));
                    }
                }
                screen.tell(event::Kind::Leave, &format!(
                    "lost the connection to the server at {}; waiting up to {} s for it to come back",
                    self.server.endpoint(),
                    self.liveness.give_up.as_secs_f32()
                ));
                // libzmq does not reconnect after a protocol error (a frame
                // over the limit, say): a new connection does. The message
                // went out on the lost one.
                self.reconnect(now, true)?;
            }
            Change::Foreign => {
                if !std::mem::replace(&mut waiting.told_foreign, true) {
                    self.tell_foreign(screen, true);
                }
            }
            Change::Back { resend: true } => {
                waiting.drops.connected(now);
                // The copy sent on the lost connection may never have
                // arrived; the server drops this one if it did. The server
                // may be a new one: the channel starts afresh.
                self.channel.reset();
                let body = self.channel.outgoing(waiting.id, &waiting.text)?;
                self.send(waiting.id, &body)?;
                screen.tell(
                    event::Kind::Connect,
                    "connected to the server again; re-sent the unanswered message",
                );
            }
        }
        Ok(None)
    }

    /// A connection event between messages, told to the user (rate-limited).
    fn tell_connection(
        &mut self,
        event: ConnectionEvent,
        screen: &Screen,
        now: Instant,
    ) -> Result<(), ChatError> {
        match self.follow(event, now, false)? {
            Change::None => {}
            Change::Lost => {
                let text = format!(
                    "the server at {} went away; a message sent now waits for it (up to {} s)",
                    self.server.endpoint(),
                    self.liveness.give_up.as_secs_f32()
                );
                self.link_status("lost", &text, now, screen);
                self.reconnect(now, false)?;
            }
            Change::Back { .. } => {
                self.told_foreign = false;
                let text = if std::mem::replace(&mut self.ever_connected, true) {
                    format!("the server at {} is back", self.server.endpoint())
                } else {
                    format!("connected to {}", self.server.endpoint())
                };
                self.link_status("back", &text, now, screen);
            }
            Change::Foreign => {
                if !std::mem::replace(&mut self.told_foreign, true) {
                    self.tell_foreign(screen, false);
                }
            }
        }
        Ok(())
    }

    /// In secure mode, with a server there and no handshake under way,
    /// starts one (so the first message need not wait for it).
    fn shake_hands(&mut self) -> Result<(), ChatError> {
        if self.link == Link::Up && self.hello.is_none() {
            let id = MessageId {
                session: self.session,
                sequence: 0,
            };
            if let Some(body) = self.channel.hello()? {
                self.send(id, &body)?;
                self.hello = Some(id);
            }
        }
        Ok(())
    }

    /// A message between messages: only a handshake's answer is expected.
    /// `Some(reason)` when secure mode failed (a wrong server key, say).
    fn hello_answered(
        &mut self,
        frames: Vec<Vec<u8>>,
        screen: &Screen,
        now: Instant,
    ) -> Result<Option<String>, ChatError> {
        let Some(id) = self.hello else {
            return Ok(None);
        };
        match self.reply_to(id, None, frames, screen, now)? {
            Some(Waited::Refused(reason)) => Ok(Some(reason)),
            Some(Waited::Ready) => {
                self.hello = None;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// A status line about the connection, at most one of each `kind` per
    /// [`NOTICE_INTERVAL`] (a server that comes and goes must not flood
    /// the screen).
    fn link_status(&mut self, kind: &'static str, text: &str, now: Instant, screen: &Screen) {
        if let Some(held) = self.throttle.admit(kind, now) {
            let event = match kind {
                "lost" => event::Kind::Leave,
                _ => event::Kind::Connect,
            };
            screen.status_event(event, &Throttle::with_count(text, held));
        }
    }

    /// What a reply means for the pending message `id`: the end of the
    /// wait, or `None` to keep waiting.
    fn reply_to(
        &mut self,
        id: MessageId,
        text: Option<&str>,
        frames: Vec<Vec<u8>>,
        screen: &Screen,
        now: Instant,
    ) -> Result<Option<Waited>, ChatError> {
        // A message without an envelope is nobody's reply; whose reply one
        // with an envelope is, the channel says (in a secure session, the
        // sealed id decides).
        let Ok(reply) = Enveloped::split(frames, 0) else {
            return Ok(None);
        };
        Ok(
            match self
                .channel
                .incoming(id, text, reply.id, reply.mark, reply.body)
            {
                Step::Reply(body) => Some(Waited::Reply(body)),
                Step::Ended => Some(Waited::Ended),
                Step::Send { body, notice } => {
                    if let Some(notice) = notice {
                        screen.notice(&notice);
                    }
                    self.send(id, &body)?;
                    None
                }
                Step::Ignore => None,
                Step::Notice(notice) => {
                    screen.notice(&notice);
                    None
                }
                Step::SendLater { body, pause } => {
                    self.deferred = Some((now + pause, id, body));
                    None
                }
                Step::Failed(reason) => Some(Waited::Refused(reason)),
                Step::Ready { notice } => {
                    screen.notice(&notice);
                    Some(Waited::Ready)
                }
            },
        )
    }

    /// Tells the user that the program at the address is not a ZeroMQ one;
    /// `waiting` when a message waits for a chat-server there.
    fn tell_foreign(&self, screen: &Screen, waiting: bool) {
        let still = if waiting {
            " Still waiting for a chat-server there"
        } else {
            ""
        };
        screen.notice(&format!(
            "the program at {} took the connection but did not complete a ZeroMQ handshake: not a ZeroMQ program (or a frozen one); is the address right?{still}",
            self.server.endpoint()
        ));
    }

    /// Queues a line typed while a reply is awaited, and says so (the keys
    /// were taken unechoed); beyond [`QUEUED_LINES`], it is refused.
    fn queue(&mut self, typed: Line, screen: &Screen) {
        let (Line::Text(text) | Line::Urgent(text)) = &typed else {
            return;
        };
        let shown = crate::display::escape_for_terminal(text).into_owned();
        if self.queued.len() >= QUEUED_LINES {
            screen.notice(&format!(
                "not queued: {QUEUED_LINES} lines already wait to be sent: {shown}"
            ));
            return;
        }
        self.queued.push_back(typed);
        let count = self.queued.len();
        screen.status(&format!(
            "queued ({count} waiting, sent one per reply): {shown}"
        ));
    }

    /// Sends the deferred body, if its time has come.
    fn send_deferred(&mut self, now: Instant) -> Result<(), TransportError> {
        match self.deferred.take() {
            Some((at, id, body)) if at <= now => self.send(id, &body),
            deferred => {
                self.deferred = deferred;
                Ok(())
            }
        }
    }

    /// Sends `body` as message `id`, with the name the user gave.
    fn send(&mut self, id: MessageId, body: &[u8]) -> Result<(), TransportError> {
        self.server.send(&Request {
            name: self.name.as_deref(),
            id,
            body,
            urgent: self.urgent,
        })
    }

    /// The lines typed while the last reply was awaited, never sent.
    fn unsent(&mut self) -> Vec<String> {
        std::mem::take(&mut self.queued)
            .into_iter()
            .filter_map(|line| match line {
                Line::Text(text) | Line::Urgent(text) => Some(text),
                Line::End(_) => None,
            })
            .collect()
    }

    /// Brings the link up to date with what happened while the user typed.
    ///
    /// A connection lost meanwhile means a new connection, before anything
    /// is read from the old one. Between messages nothing reads the
    /// transport, so a server that floods it fills its queue; libzmq then
    /// stops reading that connection, which so misses heartbeat replies and
    /// is dropped, and reconnects. Reading from the stalled queue afterwards
    /// would make libzmq restart input on the new connection, which never
    /// stopped: an assertion (`_input_stopped`, libzmq issue 3937) aborts
    /// the program. A new socket has no stalled queue, and what the old one
    /// held was never asked for.
    fn catch_up_with_connection_events(
        &mut self,
        screen: &Screen,
        now: Instant,
    ) -> Result<(), TransportError> {
        let mut lost = false;
        while let Some(event) = self.server.next_event()? {
            lost |= self.follow(event, now, false)? == Change::Lost;
        }
        if lost {
            screen.status("(the connection to the server dropped while you were typing)");
            self.reconnect(now, false)?;
        }
        Ok(())
    }

    /// Takes in one connection event, the same way wherever it is read:
    /// the link moves on, and whether the address holds a program that is
    /// not ZeroMQ is remembered until a server connects. After such a
    /// program, libzmq ends the session for good (no reconnection, and a
    /// DEALER left without one blocks on send), so a new connection keeps
    /// trying, once per event, the wait still counted from when it began;
    /// `pending` when a message queued in the old one must then go again.
    /// Returns what the event means, for the caller to say.
    fn follow(
        &mut self,
        event: ConnectionEvent,
        now: Instant,
        pending: bool,
    ) -> Result<Change, TransportError> {
        let (link, change) = self.link.on(event, now);
        self.link = link;
        match change {
            Change::Back { .. } => self.foreign = false,
            Change::Foreign => {
                self.foreign = true;
                if let Link::Down { since, .. } = self.link {
                    self.reconnect(since, pending)?;
                }
            }
            Change::None | Change::Lost => {}
        }
        Ok(change)
    }

    /// Starts afresh after a lost connection, or a message given up on: the
    /// one place where the connection's state is reset. The transport
    /// renews the connection (see [`ToServer::renew`]); nothing agreed with
    /// the old server is kept (it may be a new one), no handshake or
    /// deferred body waits; the link is down from `now`, and `resend` says
    /// whether the pending message went out on the lost connection and must
    /// go again.
    fn reconnect(&mut self, now: Instant, resend: bool) -> Result<(), TransportError> {
        self.server.renew()?;
        self.deferred = None;
        self.hello = None;
        self.channel.reset();
        self.link = Link::Down { since: now, resend };
        Ok(())
    }
}

/// A message from the transport as an event.
fn received(message: Bounded) -> Event {
    match message {
        Ok(frames) => Event::Reply(frames),
        Err(oversized) => Event::Oversized(oversized),
    }
}

/// Lines not delivered whole that are named at the end of a script, at
/// most (the rest are counted).
pub const INCOMPLETE_NAMED: usize = 16;

/// Lines typed while a reply is awaited that are kept to be sent, at most.
pub const QUEUED_LINES: usize = 64;

/// How many connections in a row may be lost soon after they were made,
/// the same message waiting, before the client stops re-sending it.
const QUICK_DROPS: u32 = 3;

/// What counts as soon: a reply over the wire limit is refused (and the
/// connection dropped) as soon as it arrives after the re-sent message.
const SOON: Duration = Duration::from_secs(2);

/// Counts connections lost within [`SOON`] of being made while one message
/// waits: a server whose reply ZeroMQ refuses would otherwise be re-sent the
/// message forever, the connection made and lost each time.
#[derive(Default)]
struct QuickDrops {
    connected_at: Option<Instant>,
    count: u32,
}

impl QuickDrops {
    /// A connection was made, and the message re-sent on it.
    fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// A connection was lost: whether that makes [`QUICK_DROPS`] in a row.
    fn lost(&mut self, now: Instant) -> bool {
        match self.connected_at.take() {
            Some(at) if now.duration_since(at) < SOON => self.count += 1,
            _ => self.count = 0,
        }
        self.count >= QUICK_DROPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Mark;
    use crate::fixture::{Lines, Output, SteppingClock, screen};
    use crate::secure::keys::Identity;
    use crate::transport::memory::{ClientDid, MemoryServer, ServerEnd, ToClient};
    use std::cell::RefCell;
    use std::rc::Rc;

    const LIVENESS: Liveness = Liveness {
        timeout: Duration::from_secs(3),
        give_up: Duration::from_secs(30),
    };

    /// What a client run left: how it ended, its stdout and its stderr, and
    /// what the server saw.
    struct Ran {
        end: ClientEnd,
        stdout: Output,
        stderr: Output,
        server: Rc<RefCell<ServerEnd>>,
    }

    /// How the test's server starts.
    #[derive(Clone, Copy, PartialEq)]
    enum Server {
        /// Connected from the start.
        Up,
        /// Nowhere, until the test says otherwise.
        Absent,
    }

    /// Runs a client over `lines` against a server that `server` plays (it
    /// hears what the client does and queues what the client reads), in
    /// memory: no socket, no sleep.
    fn chat(
        lines: &[&str],
        clock: &dyn Clock,
        secure: Option<ClientSecurity>,
        start: Server,
        shutdown: &Shutdown,
        server: impl FnMut(ClientDid<'_>, &mut ToClient) + 'static,
    ) -> Ran {
        let (screen, stdout, stderr) = screen("chat-client", "server", false);
        let (link, server) = MemoryServer::new(server);
        if start == Server::Up {
            let to_client = &mut server.borrow_mut().to_client;
            to_client.events.push_back(ConnectionEvent::Connected);
        }
        let mut client = ChatClient::new(Box::new(link), LIVENESS, clock);
        if let Some(security) = secure {
            client.require_encryption(security);
        }
        let mut lines = Lines::new(lines, End::Eof);
        let end = client.run(&mut lines, &screen, shutdown, clock).unwrap();
        Ran {
            end,
            stdout,
            stderr,
            server,
        }
    }

    /// A server that answers every message with `re: ` and its text.
    fn answering(did: ClientDid<'_>, to_client: &mut ToClient) {
        if let ClientDid::Sent(sent) = did {
            let text = format!("re: {}", String::from_utf8_lossy(&sent.body));
            to_client.reply(sent.id, Mark::Normal, text.as_bytes());
        }
    }

    #[test]
    fn the_link_goes_down_and_back_and_says_when_to_re_send() {
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        let (down, change) = Link::Up.on(ConnectionEvent::Disconnected, start);
        assert_eq!(change, Change::Lost);
        assert_eq!(
            down,
            Link::Down {
                since: start,
                resend: true
            }
        );
        assert_eq!(
            down.on(ConnectionEvent::Connected, later),
            (Link::Up, Change::Back { resend: true })
        );
        // Sent while down: the message is queued in the socket, not lost.
        let queued = down.sent(later);
        assert_eq!(
            queued,
            Link::Down {
                since: later,
                resend: false
            }
        );
        assert_eq!(
            queued.on(ConnectionEvent::Connected, later),
            (Link::Up, Change::Back { resend: false })
        );
        assert_eq!(Link::Up.sent(later), Link::Up);
        for event in [ConnectionEvent::Other, ConnectionEvent::Connected] {
            assert_eq!(Link::Up.on(event, later), (Link::Up, Change::None));
        }
        assert_eq!(
            queued.on(ConnectionEvent::HandshakeFailed, later),
            (queued, Change::Foreign)
        );
        assert_eq!(
            queued.on(ConnectionEvent::Disconnected, later),
            (queued, Change::Foreign),
            "a connection lost before it was up never spoke ZeroMQ"
        );
        assert!(!queued.gave_up(later + Duration::from_secs(29), Duration::from_secs(30)));
        assert!(queued.gave_up(later + Duration::from_secs(30), Duration::from_secs(30)));
        assert!(!Link::Up.gave_up(later + Duration::from_secs(3600), Duration::from_secs(30)));
    }

    #[test]
    fn only_connections_lost_soon_after_being_made_count_as_quick_drops() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut drops = QuickDrops::default();
        assert!(
            !drops.lost(at(0)),
            "a loss before any reconnect is not quick"
        );
        drops.connected(at(10));
        assert!(!drops.lost(at(11)));
        drops.connected(at(20));
        assert!(
            !drops.lost(at(30)),
            "a connection that lasted resets the count"
        );
        for second in [40, 42, 44] {
            drops.connected(at(second));
            let third = second == 44;
            assert_eq!(drops.lost(at(second + 1)), third);
        }
    }

    #[test]
    fn each_line_is_sent_and_its_reply_shown() {
        let ran = chat(
            &["one", "two"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &Shutdown::default(),
            answering,
        );
        assert_eq!(ran.end, ClientEnd::Finished(End::Eof));
        assert_eq!(ran.stdout.lines(), ["re: one", "re: two"]);
        assert_eq!(ran.stderr.text(), "");
    }

    #[test]
    fn a_reply_to_another_id_is_ignored() {
        let ran = chat(
            &["mine"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &Shutdown::default(),
            |did, to_client| {
                if let ClientDid::Sent(sent) = did {
                    let other = MessageId {
                        sequence: 99,
                        ..sent.id
                    };
                    to_client.reply(other, Mark::Normal, b"an old answer");
                    to_client.reply(sent.id, Mark::Normal, b"the answer");
                }
            },
        );
        assert_eq!(ran.stdout.lines(), ["the answer"]);
    }

    #[test]
    fn the_servers_end_and_refusal_marks_end_the_chat_with_the_message_unanswered() {
        for (mark, body) in [
            (Mark::Ended, &b""[..]),
            (Mark::Refused, &b"no \x1b[31mthanks"[..]),
        ] {
            let ran = chat(
                &["hello?", "never sent"],
                &crate::clock::SystemClock,
                None,
                Server::Up,
                &Shutdown::default(),
                move |did, to_client| {
                    if let ClientDid::Sent(sent) = did {
                        to_client.reply(sent.id, mark, body);
                    }
                },
            );
            let unanswered = "hello?".to_string();
            let expected = match mark {
                Mark::Ended => ClientEnd::ServerEnded { unanswered },
                _ => ClientEnd::Refused {
                    reason: "the server refused the message: no \\x1b[31mthanks".into(),
                    unanswered,
                },
            };
            assert_eq!(ran.end, expected);
            assert_eq!(ran.stdout.text(), "");
            assert_eq!(
                ran.server.borrow().sent.len(),
                1,
                "the second line is never sent"
            );
        }
    }

    #[test]
    fn with_no_server_the_message_is_handed_back_after_the_give_up_time() {
        // Each reading of this clock is ten seconds later: 30 s pass in a few ticks.
        let clock = SteppingClock::new(Duration::from_secs(10));
        let ran = chat(
            &["anyone?"],
            &clock,
            None,
            Server::Absent,
            &Shutdown::default(),
            |_, _| {},
        );
        assert_eq!(
            ran.end,
            ClientEnd::GaveUp {
                unanswered: "anyone?".into()
            }
        );
        assert_eq!(
            ran.server.borrow().renewals,
            1,
            "the copy still queued is dropped with the connection"
        );
    }

    #[test]
    fn a_lost_server_is_waited_for_and_the_message_re_sent_with_its_id() {
        let mut sends = 0;
        let ran = chat(
            &["survive this"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &Shutdown::default(),
            move |did, to_client| match did {
                // The first server dies with the message; a new one takes its place.
                ClientDid::Sent(sent) => {
                    sends += 1;
                    if sends == 1 {
                        to_client.events.push_back(ConnectionEvent::Disconnected);
                    } else {
                        to_client.reply(sent.id, Mark::Normal, b"made it");
                    }
                }
                ClientDid::Renewed => to_client.events.push_back(ConnectionEvent::Connected),
                ClientDid::Waited => {}
            },
        );
        let sent = ran.server.borrow().sent.clone();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[1], sent[0], "the same id and text");
        assert_eq!(ran.stdout.lines(), ["made it"]);
        let stderr = ran.stderr.text();
        assert!(
            stderr.contains("lost the connection to the server at memory://server"),
            "{stderr}"
        );
        assert!(
            stderr.contains("connected to the server again; re-sent the unanswered message"),
            "{stderr}"
        );
    }

    #[test]
    fn a_servers_goodbye_that_came_before_the_loss_is_read_first() {
        let ran = chat(
            &["still there?"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &Shutdown::default(),
            |did, to_client| {
                if let ClientDid::Sent(sent) = did {
                    to_client.reply(sent.id, Mark::Ended, b"");
                    to_client.events.push_back(ConnectionEvent::Disconnected);
                }
            },
        );
        assert_eq!(
            ran.end,
            ClientEnd::ServerEnded {
                unanswered: "still there?".into()
            }
        );
        assert_eq!(ran.server.borrow().renewals, 0, "nothing to wait for");
    }

    #[test]
    fn a_signal_while_waiting_hands_the_message_back() {
        let shutdown = Shutdown::default();
        let stop = shutdown.clone();
        let ran = chat(
            &["wait for me"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &shutdown,
            move |did, _| {
                // Ctrl-C once the message has arrived.
                if let ClientDid::Sent(_) = did {
                    stop.request();
                }
            },
        );
        assert_eq!(
            ran.end,
            ClientEnd::InterruptedWaiting {
                unanswered: "wait for me".into(),
                unsent: Vec::new(),
            }
        );
    }

    #[test]
    fn a_secure_client_refuses_a_plain_answer() {
        let security = ClientSecurity::new(
            Identity::generate().unwrap(),
            Identity::generate().unwrap().public_key(),
        );
        let ran = chat(
            &["secret"],
            &crate::clock::SystemClock,
            Some(security),
            Server::Up,
            &Shutdown::default(),
            |did, to_client| {
                if let ClientDid::Sent(sent) = did {
                    assert!(
                        !sent.body.windows(6).any(|w| w == b"secret"),
                        "nothing in clear"
                    );
                    to_client.reply(sent.id, Mark::Normal, b"plain text");
                }
            },
        );
        let ClientEnd::Refused { reason, .. } = ran.end else {
            panic!("expected a refusal, got {:?}", ran.end);
        };
        assert!(reason.contains("answered without encryption"), "{reason}");
    }

    #[test]
    fn a_program_that_is_not_zeromq_is_named_and_tried_anew_until_the_give_up() {
        let clock = SteppingClock::new(Duration::from_secs(10));
        let ran = chat(
            &["hello?"],
            &clock,
            None,
            Server::Absent,
            &Shutdown::default(),
            |did, to_client| {
                // Whatever listens there takes every connection and never
                // completes a ZeroMQ handshake.
                if let ClientDid::Sent(_) | ClientDid::Renewed = did {
                    to_client.events.push_back(ConnectionEvent::HandshakeFailed);
                }
            },
        );
        assert_eq!(
            ran.end,
            ClientEnd::GaveUp {
                unanswered: "hello?".into()
            }
        );
        let stderr = ran.stderr.text();
        assert_eq!(
            stderr
                .matches("did not complete a ZeroMQ handshake")
                .count(),
            1,
            "said once per message: {stderr}"
        );
        let server = ran.server.borrow();
        assert!(server.renewals >= 2, "a new connection each time");
        assert!(
            server.sent.iter().all(|sent| sent.id == server.sent[0].id),
            "the message goes again on each, with its id"
        );
    }

    #[test]
    fn a_server_that_drops_every_connection_at_once_has_the_message_refused() {
        let ran = chat(
            &["too big an answer"],
            &crate::clock::SystemClock,
            None,
            Server::Up,
            &Shutdown::default(),
            |did, to_client| match did {
                // Its reply is over the limit: ZeroMQ drops the connection.
                ClientDid::Sent(_) => to_client.events.push_back(ConnectionEvent::Disconnected),
                ClientDid::Renewed => to_client.events.push_back(ConnectionEvent::Connected),
                ClientDid::Waited => {}
            },
        );
        let ClientEnd::Refused { reason, unanswered } = ran.end else {
            panic!("expected a refusal, got {:?}", ran.end);
        };
        assert_eq!(unanswered, "too big an answer");
        assert!(
            reason.contains(&format!("dropped the connection {QUICK_DROPS} times")),
            "{reason}"
        );
        assert_eq!(ran.server.borrow().sent.len(), 1 + QUICK_DROPS as usize);
    }
}
