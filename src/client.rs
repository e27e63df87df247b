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
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::channel::{ClientChannel, Plain, Step};
use crate::clock::Clock;
use crate::envelope::{self, Enveloped, MessageId};
use crate::error::ChatError;
use crate::message::{Anomaly, DEFAULT_MAX_MESSAGE_BYTES, Incoming, MAX_TEXT_BYTES};
use crate::secure::client::ClientSecurity;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::throttle::Throttle;
use crate::transport::{self, ConnectionEvent, ConnectionWatch, TransportError};

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
    socket: zmq::Socket,
    watch: ConnectionWatch,
    /// What makes a new socket when the old one must go (see
    /// [`ChatClient::reconnect`]).
    context: zmq::Context,
    target: Endpoint,
    endpoint: String,
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
    queued: VecDeque<String>,
    /// A body to send at a given time, for a message (a handshake again,
    /// to a server that was too busy for one): at most one, dropped with
    /// the socket.
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

impl ChatClient {
    /// Connects to `endpoint`; the server may appear later. `clock` dates
    /// the wait for a first server.
    ///
    /// # Errors
    /// When the socket or its monitor cannot be set up, or the endpoint is
    /// malformed.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &Endpoint,
        liveness: Liveness,
        clock: &dyn Clock,
    ) -> Result<ChatClient, TransportError> {
        let (socket, watch) = connected_socket(context, endpoint, liveness)?;
        Ok(ChatClient {
            socket,
            watch,
            context: context.clone(),
            target: endpoint.clone(),
            endpoint: endpoint.to_string(),
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
            liveness,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            lines_read: 0,
            incomplete: Vec::new(),
            incomplete_count: 0,
        })
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

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
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
    /// When the screen cannot be written or the socket fails.
    pub fn run(
        &mut self,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<ClientEnd, ChatError> {
        loop {
            if !lines.has_ready_line() {
                screen.flush()?;
            }
            let mut stopped = None;
            // Lines typed while the last reply was awaited go first, in order.
            let line = match self.queued.pop_front() {
                Some(text) => Line::Text(text),
                None => lines.next_line(shutdown, &mut || {
                    match self.between_messages(screen, clock) {
                        Ok(None) => return None,
                        Ok(Some(reason)) => stopped = Some(Ok(ClientEnd::Failed { reason })),
                        Err(error) => stopped = Some(Err(error)),
                    }
                    Some(Line::End(End::Eof))
                })?,
            };
            if let Some(stopped) = stopped {
                screen.flush()?;
                return stopped;
            }
            if matches!(line, Line::Text(_)) {
                self.lines_read += 1;
            }
            let text = match line {
                Line::Text(text) if text.len() > MAX_TEXT_BYTES => {
                    screen.notice(&format!(
                        "line {} not sent: it has {} bytes, more than the {MAX_TEXT_BYTES} a message may have",
                        self.lines_read,
                        text.len()
                    ));
                    self.not_delivered_whole();
                    continue;
                }
                Line::Text(text) => text,
                Line::End(end) => {
                    screen.flush()?;
                    return Ok(ClientEnd::Finished(end));
                }
            };
            let id = match self.given_up.take() {
                Some((id, given_up)) if given_up == text => id,
                _ => {
                    self.sequence += 1;
                    MessageId {
                        session: self.session,
                        sequence: self.sequence,
                    }
                }
            };
            let waited = self.exchange(id, &text, lines, screen, shutdown, clock)?;
            // What was being typed when the wait ended is not lost: the
            // prompt shows it again, ready to finish.
            if let Some(partial) = lines.stop_waiting() {
                lines.offer(&partial);
            }
            let end = match waited {
                // Only the handshake made between messages ends so.
                Waited::Ready => continue,
                Waited::Reply(body) => {
                    let incoming = Incoming::decode(&body, self.max_message_bytes);
                    screen.show(&incoming, self.channel.peer_label().as_deref())?;
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
                    continue;
                }
                Waited::Ended => ClientEnd::ServerEnded { unanswered: text },
                Waited::Refused(reason) => ClientEnd::Refused {
                    reason,
                    unanswered: text,
                },
                Waited::GaveUp => {
                    // The copy still queued in the socket must not reach a
                    // server that appears later: it would be a second one.
                    self.reconnect(clock.now(), false)?;
                    self.given_up = Some((id, text.clone()));
                    ClientEnd::GaveUp { unanswered: text }
                }
                Waited::Interrupted => ClientEnd::InterruptedWaiting {
                    unanswered: text,
                    unsent: std::mem::take(&mut self.queued).into(),
                },
                Waited::Quit(end) => ClientEnd::QuitWaiting {
                    end,
                    unanswered: text,
                    unsent: std::mem::take(&mut self.queued).into(),
                },
            };
            return Ok(end);
        }
    }

    /// Sends one message and waits for its reply, re-sending it whenever a
    /// lost connection is re-established.
    fn exchange(
        &mut self,
        id: MessageId,
        text: &str,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<Waited, ChatError> {
        // Events from while the user was typing describe the past; only what
        // happens from now on concerns this message. (A handshake made
        // meanwhile and still unanswered is overtaken by this message's.)
        self.catch_up_with_connection_events(screen, clock)?;
        self.hello = None;
        self.deferred = None;
        let body = self.channel.outgoing(id, text)?;
        self.send_request(id, &body)?;
        self.link = self.link.sent(clock.now());
        // Keys are taken (unechoed, see LineSource::while_waiting) from now
        // on, before the status says the client waits: nothing typed after
        // it is echoed raw.
        let mut typed_first = lines.while_waiting();
        if self.link == Link::Up {
            screen.status("waiting for the server's reply… (Ctrl-C to quit)");
        } else {
            screen.status(&format!(
                "no server at {} yet; the message will be delivered when one appears",
                self.endpoint
            ));
        }
        // Each of these is said once per message, however often it happens.
        let (mut told_foreign, mut told_oversized) = (false, false);
        if self.foreign && self.link != Link::Up {
            told_foreign = true;
            self.tell_foreign(screen, true);
        }
        let mut drops = QuickDrops::default();
        loop {
            if shutdown.requested() {
                return Ok(Waited::Interrupted);
            }
            // The person may quit, or type the next lines, meanwhile.
            let typed = match typed_first.take() {
                Some(line) => Some(line),
                None => lines.while_waiting(),
            };
            match typed {
                Some(Line::End(end)) => return Ok(Waited::Quit(end)),
                Some(Line::Text(typed)) => self.queue(typed, screen),
                None => {}
            }
            // Blocks until a reply or the socket's receive timeout (one tick).
            match transport::receive_one(&self.socket) {
                Ok(Ok(frames)) => {
                    if let Some(waited) =
                        self.reply_to(id, Some(text), frames, screen, clock.now())?
                        && !matches!(waited, Waited::Ready)
                    {
                        return Ok(waited);
                    }
                }
                Ok(Err(oversized)) if !std::mem::replace(&mut told_oversized, true) => {
                    screen.notice(&format!(
                        "dropped a reply of {} bytes in {} frames unread: over the limits of a chat message",
                        oversized.bytes, oversized.frames
                    ));
                }
                Ok(Err(_)) => {}
                // A whole tick without a reply: show what is buffered meanwhile.
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => screen.flush()?,
                Err(error) => return Err(error.into()),
            }
            self.send_deferred(clock.now())?;
            while let Some(event) = self.watch.try_next()? {
                // The message queued in the socket goes with it if a
                // program that is not ZeroMQ makes the client start anew.
                match self.follow(event, clock.now(), true)? {
                    Change::None => {}
                    Change::Lost if drops.lost(clock.now()) => {
                        return Ok(Waited::Refused(format!(
                            "the server at {} dropped the connection {QUICK_DROPS} times right after the connection was made, this message waiting: most likely its reply is over the limits of a chat message ({MAX_TEXT_BYTES} bytes of text), which ZeroMQ refuses by dropping the connection",
                            self.endpoint
                        )));
                    }
                    Change::Lost => {
                        // What arrived before the loss is still queued (a
                        // server's last words: its goodbye): read it first.
                        while self.socket.get_events()?.contains(zmq::POLLIN) {
                            if let Ok(frames) = transport::receive_one(&self.socket)?
                                && let Some(waited) =
                                    self.reply_to(id, Some(text), frames, screen, clock.now())?
                                && !matches!(waited, Waited::Ready)
                            {
                                return Ok(waited);
                            }
                        }
                        screen.notice(&format!(
                            "lost the connection to the server at {}; waiting up to {} s for it to come back",
                            self.endpoint,
                            self.liveness.give_up.as_secs_f32()
                        ));
                        // libzmq does not reconnect after a protocol error
                        // (a frame over the limit, say): a new socket does.
                        // The message went out on the lost connection.
                        self.reconnect(clock.now(), true)?;
                    }
                    Change::Back { resend: false } => {}
                    Change::Foreign if !std::mem::replace(&mut told_foreign, true) => {
                        self.tell_foreign(screen, true);
                    }
                    Change::Foreign => {}
                    Change::Back { resend: true } => {
                        drops.connected(clock.now());
                        // The copy sent on the lost connection may never have
                        // arrived; the server drops this one if it did. The
                        // server may be a new one: the channel starts afresh.
                        self.channel.reset();
                        let body = self.channel.outgoing(id, text)?;
                        self.send_request(id, &body)?;
                        screen.notice(
                            "connected to the server again; re-sent the unanswered message",
                        );
                    }
                }
            }
            if self.link.gave_up(clock.now(), self.liveness.give_up) {
                return Ok(Waited::GaveUp);
            }
        }
    }

    /// Between messages (called every tick while the user types): follows
    /// the connection and tells the user when the server goes and comes
    /// back; in secure mode, shakes hands as soon as a server is there.
    /// `Some(reason)` when secure mode failed (a wrong server key, say).
    fn between_messages(
        &mut self,
        screen: &Screen,
        clock: &dyn Clock,
    ) -> Result<Option<String>, ChatError> {
        while let Some(event) = self.watch.try_next()? {
            let now = clock.now();
            match self.follow(event, now, false)? {
                Change::None => {}
                Change::Lost => {
                    self.link_status(
                        "lost",
                        &format!(
                            "the server at {} went away; a message sent now waits for it (up to {} s)",
                            self.endpoint,
                            self.liveness.give_up.as_secs_f32()
                        ),
                        now,
                        screen,
                    );
                    self.reconnect(now, false)?;
                }
                Change::Back { .. } => {
                    self.told_foreign = false;
                    let text = if std::mem::replace(&mut self.ever_connected, true) {
                        format!("the server at {} is back", self.endpoint)
                    } else {
                        format!("connected to {}", self.endpoint)
                    };
                    self.link_status("back", &text, now, screen);
                }
                Change::Foreign if !std::mem::replace(&mut self.told_foreign, true) => {
                    self.tell_foreign(screen, false);
                }
                Change::Foreign => {}
            }
        }
        self.send_deferred(clock.now())?;
        if self.link == Link::Up && self.hello.is_none() {
            let id = MessageId {
                session: self.session,
                sequence: 0,
            };
            if let Some(body) = self.channel.hello()? {
                self.send_request(id, &body)?;
                self.hello = Some(id);
            }
        }
        // Only a handshake's answer is read between messages; anything else
        // a server sends unasked waits, bounded, in the socket's queue.
        while let Some(id) = self.hello
            && self.socket.get_events()?.contains(zmq::POLLIN)
        {
            let Ok(frames) = transport::receive_one(&self.socket)? else {
                continue;
            };
            match self.reply_to(id, None, frames, screen, clock.now())? {
                Some(Waited::Refused(reason)) => return Ok(Some(reason)),
                Some(Waited::Ready) => self.hello = None,
                _ => {}
            }
        }
        Ok(None)
    }

    /// A status line about the connection, at most one of each `kind` per
    /// [`NOTICE_INTERVAL`] (a server that comes and goes must not flood
    /// the screen).
    fn link_status(&mut self, kind: &'static str, text: &str, now: Instant, screen: &Screen) {
        if let Some(held) = self.throttle.admit(kind, now) {
            screen.status(&Throttle::with_count(text, held));
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
                    self.send_request(id, &body)?;
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
            self.endpoint
        ));
    }

    /// Queues a line typed while a reply is awaited, and says so (the keys
    /// were taken unechoed); beyond [`QUEUED_LINES`], it is refused.
    fn queue(&mut self, typed: String, screen: &Screen) {
        let shown = crate::display::escape_for_terminal(&typed).into_owned();
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
    fn send_deferred(&mut self, now: Instant) -> Result<(), zmq::Error> {
        match self.deferred.take() {
            Some((at, id, body)) if at <= now => self.send_request(id, &body),
            deferred => {
                self.deferred = deferred;
                Ok(())
            }
        }
    }

    /// Sends `[name, id, "", body]` for the pending message (no name frame
    /// without `--name`).
    fn send_request(&self, id: MessageId, body: &[u8]) -> Result<(), zmq::Error> {
        if let Some(name) = &self.name {
            self.socket.send(&name[..], zmq::SNDMORE)?;
        }
        self.socket.send(id.to_frame(), zmq::SNDMORE)?;
        self.socket.send(&[][..], zmq::SNDMORE)?;
        self.socket.send(body, 0)
    }

    /// Brings the link up to date with what happened while the user typed.
    ///
    /// A connection lost meanwhile means a new socket, before anything is
    /// read from the old one. Between messages nothing reads the socket, so
    /// a server that floods it fills its queue; libzmq then stops reading
    /// that connection, which so misses heartbeat replies and is dropped,
    /// and reconnects. Reading from the stalled queue afterwards would make
    /// libzmq restart input on the new connection, which never stopped: an
    /// assertion (`_input_stopped`, libzmq issue 3937) aborts the program.
    /// A new socket has no stalled queue, and what the old one held was
    /// never asked for.
    fn catch_up_with_connection_events(
        &mut self,
        screen: &Screen,
        clock: &dyn Clock,
    ) -> Result<(), TransportError> {
        let mut lost = false;
        while let Some(event) = self.watch.try_next()? {
            lost |= self.follow(event, clock.now(), false)? == Change::Lost;
        }
        if lost {
            screen.status("(the connection to the server dropped while you were typing)");
            self.reconnect(clock.now(), false)?;
        }
        Ok(())
    }

    /// Takes in one connection event, the same way wherever it is read:
    /// the link moves on, and whether the address holds a program that is
    /// not ZeroMQ is remembered until a server connects. After such a
    /// program, libzmq ends the session for good (no reconnection, and a
    /// DEALER left without one blocks on send), so a new socket keeps
    /// trying, once per event (events are read once a tick), the wait
    /// still counted from when it began; `pending` when a message queued
    /// in the old socket must then go again. Returns what the event means,
    /// for the caller to say.
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
    /// one place where the connection's state is reset. A new socket and
    /// monitor connect to the same server (libzmq reconnects by itself
    /// after most losses but not after a protocol error, and a new socket
    /// carries no stalled queue); nothing agreed with the old server is
    /// kept (it may be a new one), no handshake or deferred body waits; the
    /// link is down from `now`, and `resend` says whether the pending
    /// message went out on the lost connection and must go again.
    fn reconnect(&mut self, now: Instant, resend: bool) -> Result<(), TransportError> {
        let (socket, watch) = connected_socket(&self.context, &self.target, self.liveness)?;
        // The monitor goes first: it watches the old socket.
        self.watch = watch;
        self.socket = socket;
        self.deferred = None;
        self.hello = None;
        self.channel.reset();
        self.link = Link::Down { since: now, resend };
        Ok(())
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

/// A DEALER with the chat's options, heartbeats after `liveness`, and a
/// monitor, connected to `endpoint`.
fn connected_socket(
    context: &zmq::Context,
    endpoint: &Endpoint,
    liveness: Liveness,
) -> Result<(zmq::Socket, ConnectionWatch), TransportError> {
    let timeout = liveness.timeout.as_millis().clamp(10, i32::MAX as u128) as i32;
    let socket = transport::socket_for(context, zmq::DEALER, endpoint)?;
    // A server that floods the client between messages fills this, then
    // libzmq stops reading: at most this many replies' worth of memory.
    socket.set_rcvhwm(transport::QUEUED_PER_CONNECTION)?;
    socket.set_heartbeat_ivl((timeout / 3).max(10))?;
    socket.set_heartbeat_timeout(timeout)?;
    // The monitor is attached before connecting, or a server that is
    // already up could complete its handshake unseen.
    let watch = ConnectionWatch::attach(context, &socket)?;
    transport::connect_socket(&socket, endpoint)?;
    Ok((socket, watch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Mark;
    use crate::fixture::{
        Lines, Output, SteppingClock, StopOnDrop, ipc_endpoint, peer_socket, screen,
    };
    use crate::secure::keys::Identity;
    use std::sync::mpsc::{self, Receiver};

    const LIVENESS: Liveness = Liveness {
        timeout: Duration::from_secs(3),
        give_up: Duration::from_secs(30),
    };

    /// What a client run left: how it ended, its stdout and its stderr.
    struct Ran {
        end: ClientEnd,
        stdout: Output,
        stderr: Output,
    }

    /// Runs a client at `endpoint` over `lines` while `server` (on its own
    /// thread) plays the server; stops the client when `server` returns.
    /// `server` is also given a channel that closes when the client is done:
    /// a peer whose last reply the client must read waits on it
    /// ([`until_done`]) before it returns, or its socket (linger 0) could
    /// close with the reply unsent, and the stop could come before the
    /// client read it (the cause of a flake under load).
    fn chat(
        endpoint: &Endpoint,
        lines: &[&str],
        clock: &dyn Clock,
        secure: Option<ClientSecurity>,
        server: impl FnOnce(&str, Receiver<()>) + Send + 'static,
    ) -> Ran {
        let (screen, stdout, stderr) = screen("chat-client", "server", false);
        let shutdown = Shutdown::default();
        let stop = StopOnDrop(shutdown.clone());
        let peer_endpoint = endpoint.to_string();
        let (done, finished) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let _stop = stop;
            server(&peer_endpoint, finished);
        });
        let mut client =
            ChatClient::connect(&zmq::Context::new(), endpoint, LIVENESS, clock).unwrap();
        if let Some(security) = secure {
            client.require_encryption(security);
        }
        let mut lines = Lines::new(lines, End::Eof);
        let end = client.run(&mut lines, &screen, &shutdown, clock).unwrap();
        drop(done);
        if let Err(panic) = server.join() {
            std::panic::resume_unwind(panic);
        }
        Ran {
            end,
            stdout,
            stderr,
        }
    }

    /// Keeps a peer (and its socket) until the client is done, at most
    /// the tests' deadline.
    fn until_done(finished: &Receiver<()>) {
        let _ = finished.recv_timeout(crate::fixture::DEADLINE);
    }

    fn router(endpoint: &str) -> zmq::Socket {
        let socket = peer_socket(&zmq::Context::new(), zmq::ROUTER);
        socket.bind(endpoint).expect("bind");
        socket
    }

    /// Receives a request `[routing id, id, "", text]`.
    fn request(socket: &zmq::Socket) -> Vec<Vec<u8>> {
        socket
            .recv_multipart(0)
            .expect("a request within the deadline")
    }

    /// Answers `request` with `text`, its id frame replaced by `id_frame`.
    fn answer(socket: &zmq::Socket, request: &[Vec<u8>], id_frame: &[u8], text: &[u8]) {
        socket
            .send_multipart([&request[0][..], id_frame, b"", text], 0)
            .expect("send");
    }

    fn id_of(request: &[Vec<u8>]) -> MessageId {
        MessageId::parse(&request[1]).expect("an id frame").0
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
        let endpoint = ipc_endpoint();
        let ran = chat(
            &endpoint,
            &["one", "two"],
            &crate::clock::SystemClock,
            None,
            |at, finished| {
                let server = router(at);
                for _ in 0..2 {
                    let request = request(&server);
                    let text = format!("re: {}", String::from_utf8_lossy(&request[3]));
                    answer(&server, &request, &request[1], text.as_bytes());
                }
                until_done(&finished);
            },
        );
        assert_eq!(ran.end, ClientEnd::Finished(End::Eof));
        assert_eq!(ran.stdout.lines(), ["re: one", "re: two"]);
        assert_eq!(ran.stderr.text(), "");
    }

    #[test]
    fn a_reply_to_another_id_is_ignored() {
        let endpoint = ipc_endpoint();
        let ran = chat(
            &endpoint,
            &["mine"],
            &crate::clock::SystemClock,
            None,
            |at, finished| {
                let server = router(at);
                let request = request(&server);
                let other = MessageId {
                    sequence: 99,
                    ..id_of(&request)
                };
                answer(&server, &request, &other.to_frame(), b"an old answer");
                answer(&server, &request, &request[1], b"the answer");
                until_done(&finished);
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
            let endpoint = ipc_endpoint();
            let ran = chat(
                &endpoint,
                &["hello?", "never sent"],
                &crate::clock::SystemClock,
                None,
                move |at, finished| {
                    let server = router(at);
                    let request = request(&server);
                    answer(&server, &request, &id_of(&request).marked_frame(mark), body);
                    until_done(&finished);
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
        }
    }

    #[test]
    fn with_no_server_the_message_is_handed_back_after_the_give_up_time() {
        // Each reading of this clock is ten seconds later: 30 s pass in a few ticks.
        let clock = SteppingClock::new(Duration::from_secs(10));
        let ran = chat(
            &ipc_endpoint(),
            &["anyone?"],
            &clock,
            None,
            |_, finished| {
                // No server; the client is stopped after 5 s if it never gives up.
                let _ = finished.recv_timeout(Duration::from_secs(5));
            },
        );
        assert_eq!(
            ran.end,
            ClientEnd::GaveUp {
                unanswered: "anyone?".into()
            }
        );
    }

    #[test]
    fn a_lost_server_is_waited_for_and_the_message_re_sent_with_its_id() {
        let endpoint = ipc_endpoint();
        let ran = chat(
            &endpoint,
            &["survive this"],
            &crate::clock::SystemClock,
            None,
            |at, finished| {
                let first = request(&router(at));
                // The first server is gone (dropped above); a new one takes its place.
                let server = router(at);
                let again = request(&server);
                assert_eq!(again[1..], first[1..], "the same id and text");
                answer(&server, &again, &again[1], b"made it");
                until_done(&finished);
            },
        );
        assert_eq!(ran.stdout.lines(), ["made it"]);
        let stderr = ran.stderr.text();
        assert!(
            stderr.contains("lost the connection to the server at ipc://"),
            "{stderr}"
        );
        assert!(
            stderr.contains("connected to the server again; re-sent the unanswered message"),
            "{stderr}"
        );
    }

    #[test]
    fn a_signal_while_waiting_hands_the_message_back() {
        let endpoint = ipc_endpoint();
        let ran = chat(
            &endpoint,
            &["wait for me"],
            &crate::clock::SystemClock,
            None,
            |at, _| {
                // Stops the client (StopOnDrop) once the message has arrived.
                request(&router(at));
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
        let endpoint = ipc_endpoint();
        let security = ClientSecurity::new(
            Identity::generate().unwrap(),
            Identity::generate().unwrap().public_key(),
        );
        let ran = chat(
            &endpoint,
            &["secret"],
            &crate::clock::SystemClock,
            Some(security),
            |at, finished| {
                let server = router(at);
                let request = request(&server);
                assert!(
                    !request[3].windows(6).any(|w| w == b"secret"),
                    "nothing in clear"
                );
                answer(&server, &request, &request[1], b"plain text");
                until_done(&finished);
            },
        );
        let ClientEnd::Refused { reason, .. } = ran.end else {
            panic!("expected a refusal, got {:?}", ran.end);
        };
        assert!(reason.contains("answered without encryption"), "{reason}");
    }
}
