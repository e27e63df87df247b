//! The server side of the chat: answers each message in turn, exactly once.
//!
//! The socket is a ROUTER doing what a REP socket does (take one request,
//! answer it, take the next; each reply goes back along the request's
//! envelope), plus what REP cannot:
//!
//! * it sees the chat-client's message id (see [`crate::MessageId`]), so a
//!   message re-sent after a reconnect is answered once: a copy of a message
//!   already answered gets the same reply again, without asking the operator;
//! * with `ZMQ_ROUTER_MANDATORY` a reply to a client that has vanished fails
//!   instead of disappearing, and the operator is told;
//! * when the operator ends the chat with a message pending, the waiting
//!   chat-client is told the end was deliberate.
//!
//! Plain REQ peers (pyzmq) see a normal REP server.
//!
//! No peer can stall the others or grow the server without bound: replies
//! are sent without blocking (a client that does not read its replies loses
//! them, one notice says so), each connection may queue only a few messages
//! each way, a message over [`crate::message::WIRE_LIMIT_BYTES`] or
//! [`crate::message::MAX_FRAMES`] is dropped unread, the answer memory is
//! bounded in sessions and bytes, ZMTP heartbeats drop dead peers, and every
//! notice a peer can cause is rate-limited.
//!
//! A request goes one way in both modes: its envelope is split off, its
//! body goes through the server channel (plain, or secure: opened, or
//! answered at once as a handshake or a refusal), the answer memory is
//! asked, the message is shown, a reply is taken, and the channel carries it
//! back.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::channel::{Admission, Origin, Plain, ServerChannel};
use crate::clock::Clock;
use crate::display::escape_for_terminal;
use crate::envelope::{Enveloped, Mark, MessageId};
use crate::error::ChatError;
use crate::message::{
    DEFAULT_MAX_MESSAGE_BYTES, Incoming, MAX_FRAMES, MAX_TEXT_BYTES, WIRE_LIMIT_BYTES,
};
use crate::presence::Presence;
use crate::secure::keys::PublicKey;
use crate::secure::server::ServerSecurity;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::throttle::Throttle;
use crate::transport::{self, Bounded, ConnectionWatch, Received, TransportError};

/// How many client sessions the server remembers the last answer of. Old
/// sessions are forgotten first, so memory stays flat under any load.
const REMEMBERED_SESSIONS: usize = 4096;

/// How many bytes of replies the answer memory holds at most (echoed
/// messages are not stored: the re-sent copy is the reply).
const REMEMBERED_BYTES: usize = 16 * 1024 * 1024;

/// ZMTP heartbeats to every client: a peer that answers none for
/// [`HEARTBEAT_TIMEOUT`] is dropped, so dead connections do not pile up.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// See [`HEARTBEAT_INTERVAL`].
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(6);

/// At most one notice of each kind a peer can trigger per this long.
const NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// Where the server's replies come from.
pub enum ReplySource<'a> {
    /// A person or a script, one line per reply.
    Operator(&'a mut dyn LineSource),
    /// Unattended: each message is sent back unchanged (frames and bytes).
    Echo,
}

/// A bound chat server.
pub struct ChatServer {
    socket: zmq::Socket,
    endpoint: String,
    /// Plain, or secure once [`ChatServer::require_encryption`] is called.
    channel: Box<dyn ServerChannel>,
    answers: AnswerMemory,
    /// Messages are shown with at most this many bytes of text.
    max_message_bytes: usize,
    /// The socket's monitor: connections coming and going.
    watch: ConnectionWatch,
    /// Who is connected, from the monitor's events.
    presence: Presence,
    /// Messages read while the operator typed a reply, in arrival order:
    /// at most [`READ_AHEAD`].
    ahead: VecDeque<Pending>,
    /// The message the operator is answering.
    current: Option<Pending>,
    /// Rate limits on the notices a peer can trigger.
    throttle: Throttle,
    /// Rate limit on "N messages are waiting": each worth saying while a
    /// few arrive, a flood of them one line.
    waiting_notices: Throttle,
}

/// How many messages are read ahead while the operator types, at most
/// (each at most [`WIRE_LIMIT_BYTES`]): beyond, they wait in libzmq's
/// queues, which hold a few per connection.
const READ_AHEAD: usize = 64;

/// A message for the operator, admitted by the channel and not answered yet.
struct Pending {
    /// Its envelope (the routing id first): where the reply goes.
    envelope: Vec<Vec<u8>>,
    origin: Origin,
    id: Option<MessageId>,
    /// Its text frames, in the clear.
    body: Vec<Vec<u8>>,
    /// The connection it came on.
    source: Option<RawFd>,
    /// The name its sender gave itself (`chat-client --name`), if any.
    name: Option<String>,
}

impl Pending {
    /// Whether `other` is a copy of this message (re-sent after a reconnect).
    fn is_copy(&self, origin: &Origin, id: Option<MessageId>) -> bool {
        id.is_some() && self.id == id && self.origin.key == origin.key
    }
}

/// What the loop does after one request.
enum Served {
    /// Take the next request.
    Next,
    /// The operator's input ended: stop.
    Ended(End),
}

impl ChatServer {
    /// Binds the server's socket on `endpoint`, in plain mode.
    ///
    /// # Errors
    /// When the socket cannot be made or bound (address in use, say).
    pub fn bind(context: &zmq::Context, endpoint: &Endpoint) -> Result<ChatServer, TransportError> {
        let socket = transport::socket_for(context, zmq::ROUTER, endpoint)?;
        socket.set_router_mandatory(true)?;
        socket.set_sndhwm(transport::QUEUED_PER_CONNECTION)?;
        socket.set_rcvhwm(transport::QUEUED_PER_CONNECTION)?;
        socket.set_heartbeat_ivl(HEARTBEAT_INTERVAL.as_millis() as i32)?;
        socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT.as_millis() as i32)?;
        // Attached before binding, so no connection goes unseen.
        let watch = ConnectionWatch::attach(context, &socket)?;
        let endpoint = transport::bind_socket(&socket, endpoint)?;
        Ok(ChatServer {
            socket,
            endpoint,
            channel: Box::new(Plain),
            answers: AnswerMemory::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            watch,
            presence: Presence::default(),
            ahead: VecDeque::new(),
            current: None,
            throttle: Throttle::new(NOTICE_INTERVAL),
            waiting_notices: Throttle::with_burst(NOTICE_INTERVAL, 5),
        })
    }

    /// Turns on secure mode: only encrypted chats are accepted from now on.
    pub fn require_encryption(&mut self, security: ServerSecurity) {
        self.channel = Box::new(security);
    }

    /// Shows at most `bytes` of each message's text (`--max-size`).
    pub fn show_at_most(&mut self, bytes: usize) {
        self.max_message_bytes = bytes;
    }

    /// The endpoint actually bound, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Serves messages until the reply source ends or a signal arrives.
    ///
    /// # Errors
    /// When the screen cannot be written or the socket fails.
    pub fn run(
        &mut self,
        mut replies: ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<End, ChatError> {
        loop {
            let pending = match self.ahead.pop_front() {
                Some(pending) => pending,
                None => match self.next_message(&mut replies, screen, shutdown, clock)? {
                    Ok(Some(pending)) => pending,
                    Ok(None) => continue,
                    Err(end) => return finish(screen, end),
                },
            };
            match self.serve(pending, &mut replies, screen, shutdown, clock)? {
                Served::Next => {}
                Served::Ended(end) => return finish(screen, end),
            }
        }
    }

    /// Waits for the next request and admits it: `Ok(None)` if it was
    /// answered at once (or dropped), `Err(end)` if the wait ended.
    fn next_message(
        &mut self,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<Result<Option<Pending>, End>, ChatError> {
        screen.status("waiting for a message… (Ctrl-C to quit)");
        // Each tick without a message is also the moment to show what is
        // buffered and who came and went. A script whose input has ended
        // can answer nothing more, so stop listening rather than accept a
        // message that would never be answered.
        let (watch, presence) = (&self.watch, &mut self.presence);
        let mut ended = None;
        // The operator may quit while no message waits; what they type
        // meanwhile answers nothing.
        let mut operator_meanwhile = |replies: &mut ReplySource<'_>| {
            let ReplySource::Operator(lines) = replies else {
                return true;
            };
            match lines.while_waiting() {
                Some(Line::End(end)) => ended = Some(end),
                Some(Line::Text(_)) => screen.notice(
                    "not sent: no message is waiting for an answer yet; type your reply once one is shown (/quit or Ctrl-D ends)",
                ),
                None => {}
            }
            ended.is_none() && !lines.is_exhausted()
        };
        // At once, not only from the first tick: keys typed from now on are
        // taken unechoed (see LineSource::while_waiting).
        if !operator_meanwhile(replies) {
            return Ok(Err(ended.unwrap_or(End::Eof)));
        }
        let received = transport::receive_within_from(&mut self.socket, shutdown, || {
            let _ = screen.flush();
            presence.follow(watch, screen, clock.now());
            operator_meanwhile(replies)
        })?;
        if let Some(end) = ended {
            return Ok(Err(end));
        }
        let (message, source) = match received {
            Received::Message(message) => message,
            Received::Interrupted => return Ok(Err(End::Interrupted)),
            Received::Abandoned => return Ok(Err(End::Eof)),
        };
        Ok(Ok(self.admit(message, source, screen, clock.now())))
    }

    /// What one request is: a message for the operator (`Some`), or
    /// something answered at once or dropped (`None`): a handshake or a
    /// refusal, a copy of a message already answered (its reply again), a
    /// copy of one still waiting (which then goes to the copy's
    /// connection), a late copy of an older one.
    fn admit(
        &mut self,
        message: Bounded,
        source: Option<RawFd>,
        screen: &Screen,
        now: Instant,
    ) -> Option<Pending> {
        let frames = match message {
            Ok(frames) => frames,
            Err(oversized) => {
                self.warn(screen, "oversized", &format!(
                    "dropped a message of {} bytes in {} frames unread: a message may have at most {WIRE_LIMIT_BYTES} bytes in {MAX_FRAMES} frames",
                    oversized.bytes, oversized.frames
                ), now);
                return None;
            }
        };
        // A connection this message came on may not have been seen taken in
        // yet: the monitor is read now for it (not for every message: that
        // is a system call each, which the benchmark at 10 clients felt).
        // Its address is what the handshake budget counts by.
        if !self.presence.knows(source) {
            self.presence.follow(&self.watch, screen, now);
        }
        self.presence.heard_from(source, screen, now);
        // Skip the routing id (frame 0): it may be any bytes, even empty.
        let Ok(Enveloped {
            envelope,
            id,
            body,
            name,
            ..
        }) = Enveloped::split(frames, 1)
        else {
            let text = "ignored a message without a REQ envelope (from a DEALER or raw peer?)";
            self.warn(screen, "no envelope", text, now);
            return None;
        };
        let address = self.presence.address_of(source).map(str::to_owned);
        let host = host_of(address.as_deref(), &envelope);
        let (origin, id, body) = match self.channel.incoming(&host, id, body, now) {
            Admission::Message { origin, id, body } => (origin, id, body),
            Admission::Answer {
                body,
                mark,
                notice,
                throttle,
            } => {
                // Named by the connection it came on: whatever it claims
                // to be is what may be forged.
                let notice = match &address {
                    Some(address) => format!("{notice} (from {address})"),
                    None => notice,
                };
                match throttle {
                    Some(kind) => self.warn(screen, kind, &notice, now),
                    None => screen.notice(&notice),
                }
                self.send(marked(envelope, id, mark), vec![body], screen, now);
                return None;
            }
        };
        // A copy of a message still waiting: its reply goes to the copy's
        // connection, the one the client has now, sealed in the session
        // the copy came in (the client may have shaken hands anew).
        if let Some(waiting) = self
            .current
            .iter_mut()
            .chain(self.ahead.iter_mut())
            .find(|waiting| waiting.is_copy(&origin, id))
        {
            waiting.envelope = envelope;
            waiting.source = source;
            waiting.origin = origin;
            if self
                .current
                .as_ref()
                .is_some_and(|current| current.is_copy(&origin, id))
            {
                self.presence.answering(source);
                let text = "the client you are answering sent its message again (it reconnected); your reply goes to it there";
                self.warn(screen, "answering again", text, now);
            }
            return None;
        }
        if let Some(id) = id {
            match self.answers.recall(origin.key, id) {
                Recall::New => {}
                Recall::Answered(answer) => {
                    let reply = match answer {
                        Answer::Echo => body,
                        Answer::Reply(reply) => reply.clone(),
                    };
                    let text = format!(
                        "message #{} arrived again after a reconnect; sent its reply again",
                        id.sequence
                    );
                    self.warn(screen, "again", &text, now);
                    self.answer(envelope, origin, Some(id), reply, screen, now);
                    return None;
                }
                Recall::Stale => return None,
            }
        }
        Some(Pending {
            envelope,
            origin,
            id,
            body,
            source,
            name,
        })
    }

    /// Shows one admitted message and sends the operator's reply (or, with
    /// `--echo`, the message itself).
    fn serve(
        &mut self,
        pending: Pending,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<Served, ChatError> {
        let incoming = Incoming::decode(&pending.body, self.max_message_bytes);
        // Labels are for a person: a script sees the text alone.
        let label = screen.is_interactive().then(|| {
            label(
                &pending.origin,
                pending.name.as_deref(),
                self.presence.address_of(pending.source),
            )
        });
        let ReplySource::Operator(lines) = replies else {
            // The message goes back exactly as it came.
            screen.show(&incoming, label.as_deref())?;
            let Pending {
                envelope,
                origin,
                id,
                body,
                ..
            } = pending;
            if let Some(id) = id {
                self.answers.remember(origin.key, id, Answer::Echo);
            }
            self.answer(envelope, origin, id, body, screen, clock.now());
            return Ok(Served::Next);
        };
        // Typed before this message was on the screen: not its answer.
        let discarded = lines.discard_type_ahead();
        if discarded > 0 {
            screen.notice(&format!(
                "discarded {discarded} bytes typed before this message arrived: a reply is what you type after reading it"
            ));
        }
        screen.show(&incoming, label.as_deref())?;
        if !self.presence.knows(pending.source) {
            screen.notice(
                "the client who sent this has left already: your reply reaches it only if it comes back and sends its message again",
            );
        }
        self.presence.answering(pending.source);
        self.current = Some(pending);
        let waiting = self.ahead.len();
        lines.set_prompt(&match waiting {
            0 => "reply> ".to_string(),
            waiting => format!("reply ({waiting} more waiting)> "),
        });
        let line = operator_reply(&mut **lines, screen, shutdown, &mut || {
            self.read_ahead(screen, clock.now());
            None
        });
        self.presence.answering(None);
        let Some(Pending {
            envelope,
            origin,
            id,
            ..
        }) = self.current.take()
        else {
            return Ok(Served::Next);
        };
        match line? {
            Line::Text(reply) => {
                let reply = vec![reply.into_bytes()];
                if let Some(id) = id {
                    self.answers
                        .remember(origin.key, id, Answer::Reply(reply.clone()));
                }
                self.answer(envelope, origin, id, reply, screen, clock.now());
                Ok(Served::Next)
            }
            Line::End(end) => {
                self.say_goodbye(envelope, origin, id);
                screen.notice(
                    "ending with the last message unanswered; its sender is told the chat ended",
                );
                Ok(Served::Ended(end))
            }
        }
    }

    /// While the operator types: follows the connections, and reads and
    /// admits what has arrived (handshakes and copies are answered at
    /// once), keeping up to [`READ_AHEAD`] messages for the operator.
    fn read_ahead(&mut self, screen: &Screen, now: Instant) {
        self.presence.follow(&self.watch, screen, now);
        let before = self.ahead.len();
        while self.ahead.len() < READ_AHEAD
            && self
                .socket
                .get_events()
                .is_ok_and(|events| events.contains(zmq::POLLIN))
        {
            let Ok((message, source)) = transport::receive_one_with_source(&mut self.socket) else {
                break;
            };
            if let Some(pending) = self.admit(message, source, screen, now) {
                self.ahead.push_back(pending);
            }
        }
        if self.ahead.len() > before {
            let text = match self.ahead.len() {
                1 => "another message is waiting for you".to_string(),
                waiting => format!("{waiting} more messages are waiting for you"),
            };
            if let Some(held) = self.waiting_notices.admit("waiting", now) {
                screen.notice(&Throttle::with_count(&text, held));
            }
        }
    }

    /// Sends `reply` to message `id` from `origin`, through the channel.
    fn answer(
        &mut self,
        envelope: Vec<Vec<u8>>,
        origin: Origin,
        id: Option<MessageId>,
        reply: Vec<Vec<u8>>,
        screen: &Screen,
        now: Instant,
    ) {
        let body = self.channel.outgoing(origin, id, reply);
        self.send(envelope, body, screen, now);
    }

    /// Sends `body` along `envelope` without ever blocking. A reply that
    /// cannot be sent is not an error for the server, which goes on serving
    /// the others: a client that has gone, or that does not read its
    /// replies, loses it (a chat-client that comes back and re-sends its
    /// message gets it from the answer memory), and the operator is told.
    fn send(&mut self, envelope: Vec<Vec<u8>>, body: Vec<Vec<u8>>, screen: &Screen, now: Instant) {
        let mut frames = envelope;
        frames.extend(body);
        match transport::send_now(&self.socket, &frames) {
            Ok(()) => {}
            Err(zmq::Error::EHOSTUNREACH) => self.warn(
                screen,
                "gone",
                "the reply could not be delivered: that client has disconnected",
                now,
            ),
            Err(error) => self.warn(
                screen,
                "not reading",
                &format!("a reply was dropped: that client is not reading its replies ({error})"),
                now,
            ),
        }
    }

    /// Tells a waiting chat-client that the operator ended the chat. Best
    /// effort: a plain REQ peer cannot be told without a fake reply.
    fn say_goodbye(&mut self, envelope: Vec<Vec<u8>>, origin: Origin, id: Option<MessageId>) {
        if let Some(id) = id {
            let mut frames = marked(envelope, Some(id), Mark::Ended);
            frames.extend(self.channel.goodbye(origin, id));
            let _ = transport::send_now(&self.socket, &frames);
        }
    }

    /// A notice a peer can trigger: at most one of each kind per
    /// [`NOTICE_INTERVAL`], with a count of those held back.
    fn warn(&mut self, screen: &Screen, kind: &'static str, text: &str, now: Instant) {
        if let Some(held) = self.throttle.admit(kind, now) {
            screen.notice(&Throttle::with_count(text, held));
        }
    }
}

/// How the sender of a message is labelled for the operator: the name it
/// gave (or "client"), its key's fingerprint in secure mode, whether the
/// chat is encrypted, and the address it connects from.
/// Who a request comes from, for rate limits: the IP address of its
/// connection (an IPv6 address's /64, which one host can fill with
/// addresses, as WireGuard's rate limiter counts), else its routing id (an
/// `ipc://` connection has no address).
fn host_of(address: Option<&str>, envelope: &[Vec<u8>]) -> Vec<u8> {
    match address.and_then(|address| address.parse::<std::net::SocketAddr>().ok()) {
        Some(std::net::SocketAddr::V4(address)) => address.ip().octets().to_vec(),
        Some(std::net::SocketAddr::V6(address)) => address.ip().octets()[..8].to_vec(),
        // The routing id: ROUTER puts it first, one per connection.
        None => envelope.first().cloned().unwrap_or_default(),
    }
}

fn label(origin: &Origin, name: Option<&str>, address: Option<&str>) -> String {
    let mut label = match name {
        Some(name) => escape_for_terminal(name).into_owned(),
        None => "client".to_string(),
    };
    let mut details = Vec::new();
    if let Some(key) = origin.key {
        label = format!("{label} {}", key.fingerprint());
        details.push("encrypted");
    }
    if let Some(address) = address {
        details.push(address);
    }
    if !details.is_empty() {
        label = format!("{label} ({})", details.join(", "));
    }
    label
}

/// The envelope with the id frame carrying `mark` (unchanged for
/// [`Mark::Normal`], or when a plain REQ peer's envelope has no id).
fn marked(mut envelope: Vec<Vec<u8>>, id: Option<MessageId>, mark: Mark) -> Vec<Vec<u8>> {
    if let Some(id) = id
        && mark != Mark::Normal
    {
        id.mark_in(&mut envelope, mark);
    }
    envelope
}

/// Flushes what is buffered for the screen, then reports `end`.
fn finish(screen: &Screen, end: End) -> Result<End, ChatError> {
    screen.flush()?;
    Ok(end)
}

/// The operator's reply to the message just shown, or why there is none. A
/// line longer than a message may be is not sent: the operator is told, and
/// the next line is the reply.
fn operator_reply(
    lines: &mut dyn LineSource,
    screen: &Screen,
    shutdown: &Shutdown,
    meanwhile: &mut dyn FnMut() -> Option<Line>,
) -> std::io::Result<Line> {
    loop {
        // The operator must see the message before answering it.
        if !lines.has_ready_line() {
            screen.flush()?;
        }
        match lines.next_line(shutdown, meanwhile)? {
            Line::Text(reply) if reply.len() > MAX_TEXT_BYTES => screen.notice(&format!(
                "that reply has {} bytes, more than the {MAX_TEXT_BYTES} a message may have; not sent: type a shorter one",
                reply.len()
            )),
            line => return Ok(line),
        }
    }
}

/// What the server knows of a message id.
enum Recall<'a> {
    /// Not seen before: show it and get a reply.
    New,
    /// Already answered, with this.
    Answered(&'a Answer),
    /// Older than the session's last message: a late duplicate, dropped.
    Stale,
}

/// The answer given to a message, as remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// The message itself (echo mode): a re-sent copy is its own reply, so
    /// nothing is stored.
    Echo,
    /// The operator's reply.
    Reply(Vec<Vec<u8>>),
}

impl Answer {
    fn bytes(&self) -> usize {
        match self {
            Answer::Echo => 0,
            Answer::Reply(frames) => frames.iter().map(Vec::len).sum(),
        }
    }
}

/// A client session as the answer memory knows it: in secure mode the
/// client's key is part of it, so no client can claim another's session.
type SessionKey = (Option<PublicKey>, u64);

/// The last answer given to each recent client session: at most
/// [`REMEMBERED_SESSIONS`] sessions and [`REMEMBERED_BYTES`] of replies,
/// the oldest sessions forgotten first.
#[derive(Default)]
struct AnswerMemory {
    last: HashMap<SessionKey, (u64, Answer)>,
    order: VecDeque<SessionKey>,
    /// The bytes of all stored replies.
    bytes: usize,
}

impl AnswerMemory {
    fn recall(&self, client: Option<PublicKey>, id: MessageId) -> Recall<'_> {
        match self.last.get(&(client, id.session)) {
            Some((sequence, answer)) if *sequence == id.sequence => Recall::Answered(answer),
            Some((sequence, _)) if *sequence > id.sequence => Recall::Stale,
            _ => Recall::New,
        }
    }

    fn remember(&mut self, client: Option<PublicKey>, id: MessageId, answer: Answer) {
        let key = (client, id.session);
        self.bytes += answer.bytes();
        match self.last.insert(key, (id.sequence, answer)) {
            Some((_, old)) => self.bytes -= old.bytes(),
            None => self.order.push_back(key),
        }
        while self.order.len() > REMEMBERED_SESSIONS
            || (self.bytes > REMEMBERED_BYTES && self.order.len() > 1)
        {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, forgotten)) = self.last.remove(&oldest) {
                self.bytes -= forgotten.bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::fixture::{Lines, Output, StopOnDrop, ipc_endpoint, peer_socket, screen};
    use crate::secure::client::{ClientSecurity, ClientStep};
    use crate::secure::frame::Frame;
    use crate::secure::keys::Identity;

    /// What a server run left: how it ended, its stdout and its stderr.
    struct Ran {
        end: End,
        stdout: Output,
        stderr: Output,
    }

    /// Runs `server` with `replies` until `peer` (on its own thread, given
    /// the endpoint) returns, or the script ends; `peer`'s panics fail the test.
    fn serve_while(
        mut server: ChatServer,
        mut replies: ReplySource<'_>,
        interactive: bool,
        peer: impl FnOnce(&str) + Send + 'static,
    ) -> Ran {
        let (screen, stdout, stderr) = screen("chat-server", "client", interactive);
        let shutdown = Shutdown::default();
        let stop = StopOnDrop(shutdown.clone());
        let endpoint = server.endpoint().to_string();
        let peer = std::thread::spawn(move || {
            let _stop = stop;
            peer(&endpoint);
        });
        let end = server
            .run(
                std::mem::replace(&mut replies, ReplySource::Echo),
                &screen,
                &shutdown,
                &SystemClock,
            )
            .expect("the server loop runs");
        if let Err(panic) = peer.join() {
            std::panic::resume_unwind(panic);
        }
        Ran {
            end,
            stdout,
            stderr,
        }
    }

    fn bound() -> ChatServer {
        ChatServer::bind(&zmq::Context::new(), &ipc_endpoint()).expect("bind")
    }

    fn id(sequence: u64) -> MessageId {
        MessageId {
            session: 0xc0ffee,
            sequence,
        }
    }

    /// A chat-client's request: `[id, "", text]`.
    fn request(socket: &zmq::Socket, id: MessageId, text: &[u8]) {
        socket
            .send_multipart([id.to_frame(), Vec::new(), text.to_vec()], 0)
            .expect("send");
    }

    fn dealer(endpoint: &str) -> zmq::Socket {
        let socket = peer_socket(&zmq::Context::new(), zmq::DEALER);
        socket.connect(endpoint).expect("connect");
        socket
    }

    fn reply(socket: &zmq::Socket) -> Vec<Vec<u8>> {
        socket
            .recv_multipart(0)
            .expect("a reply within the deadline")
    }

    #[test]
    fn a_message_is_shown_and_answered_with_the_operators_next_line() {
        let mut lines = Lines::new(&["hi back", "unused"], End::Eof);
        let ran = serve_while(
            bound(),
            ReplySource::Operator(&mut lines),
            false,
            |endpoint| {
                let client = dealer(endpoint);
                request(&client, id(1), b"hello");
                assert_eq!(
                    reply(&client),
                    [id(1).to_frame(), vec![], b"hi back".to_vec()]
                );
            },
        );
        assert_eq!(ran.end, End::Interrupted);
        assert_eq!(ran.stdout.lines(), ["hello"]);
        assert_eq!(ran.stderr.lines(), ["chat-server: a client connected"]);
    }

    #[test]
    fn senders_are_labelled_with_name_key_and_address() {
        let plain = Origin::default();
        let secure = Origin {
            key: Some(PublicKey([7; 32])),
            session: 1,
        };
        let fingerprint = PublicKey([7; 32]).fingerprint();
        assert_eq!(label(&plain, None, None), "client");
        assert_eq!(
            label(&plain, Some("alice"), Some("10.0.0.1:5")),
            "alice (10.0.0.1:5)"
        );
        assert_eq!(
            label(&secure, None, Some("[::1]:5")),
            format!("client {fingerprint} (encrypted, [::1]:5)")
        );
        assert_eq!(
            label(&plain, Some("\u{1b}[2J"), None),
            "\\x1b[2J",
            "a name cannot drive the terminal"
        );
    }

    #[test]
    fn a_plain_req_peer_without_an_id_is_served_like_rep() {
        let ran = serve_while(bound(), ReplySource::Echo, false, |endpoint| {
            let client = peer_socket(&zmq::Context::new(), zmq::REQ);
            client.connect(endpoint).unwrap();
            client.send("plain", 0).unwrap();
            assert_eq!(client.recv_bytes(0).unwrap(), b"plain");
        });
        assert_eq!(ran.stdout.lines(), ["plain"]);
    }

    #[test]
    fn a_copy_of_an_answered_message_is_answered_from_memory_not_shown_again() {
        let mut lines = Lines::new(&["only answer", "second answer"], End::Eof);
        let ran = serve_while(
            bound(),
            ReplySource::Operator(&mut lines),
            false,
            |endpoint| {
                let client = dealer(endpoint);
                request(&client, id(1), b"hello");
                assert_eq!(reply(&client)[2], b"only answer");
                request(&client, id(1), b"hello");
                assert_eq!(reply(&client)[2], b"only answer");
            },
        );
        assert_eq!(ran.stdout.lines(), ["hello"]);
        assert_eq!(
            ran.stderr.lines(),
            [
                "chat-server: a client connected",
                "chat-server: message #1 arrived again after a reconnect; sent its reply again"
            ]
        );
    }

    #[test]
    fn a_late_copy_of_an_older_message_is_dropped_unanswered() {
        let ran = serve_while(bound(), ReplySource::Echo, false, |endpoint| {
            let client = dealer(endpoint);
            request(&client, id(2), b"two");
            assert_eq!(reply(&client)[2], b"two");
            request(&client, id(1), b"one, late");
            request(&client, id(3), b"three");
            // Replies on one connection keep their order: had the late copy
            // been answered, its reply would come first.
            assert_eq!(
                reply(&client),
                [id(3).to_frame(), vec![], b"three".to_vec()]
            );
        });
        assert_eq!(ran.stdout.lines(), ["two", "three"]);
    }

    #[test]
    fn an_encrypted_message_to_a_plain_server_is_refused_with_a_reason() {
        let ran = serve_while(bound(), ReplySource::Echo, false, |endpoint| {
            let client = dealer(endpoint);
            let hello = Frame::HandshakeInit {
                client_index: 1,
                noise: &[0; 48],
            }
            .encode();
            request(&client, id(1), &hello);
            let refusal = reply(&client);
            assert_eq!(refusal[0], id(1).marked_frame(Mark::Refused));
            assert!(
                String::from_utf8_lossy(&refusal[2]).contains("not in secure mode"),
                "{refusal:?}"
            );
        });
        assert_eq!(ran.stdout.text(), "", "a refused message is not shown");
        assert!(ran.stderr.text().contains("refused an encrypted chat"));
    }

    #[test]
    fn a_message_without_an_envelope_is_ignored_with_a_notice() {
        let ran = serve_while(bound(), ReplySource::Echo, false, |endpoint| {
            let client = dealer(endpoint);
            client.send("no delimiter", 0).unwrap();
            request(&client, id(1), b"proper");
            assert_eq!(reply(&client)[2], b"proper");
        });
        assert_eq!(ran.stdout.lines(), ["proper"]);
        assert!(
            ran.stderr
                .text()
                .contains("ignored a message without a REQ envelope")
        );
    }

    #[test]
    fn quitting_with_a_message_pending_tells_its_sender_the_chat_ended() {
        let mut lines = Lines::new(&[], End::Quit);
        let ran = serve_while(
            bound(),
            ReplySource::Operator(&mut lines),
            false,
            |endpoint| {
                let client = dealer(endpoint);
                request(&client, id(4), b"still there?");
                assert_eq!(reply(&client)[0], id(4).marked_frame(Mark::Ended));
            },
        );
        assert_eq!(ran.end, End::Quit);
        assert_eq!(ran.stdout.lines(), ["still there?"]);
        assert!(
            ran.stderr
                .text()
                .contains("its sender is told the chat ended")
        );
    }

    #[test]
    fn a_script_that_has_ended_stops_the_server_listening() {
        let (screen, _, _) = screen("chat-server", "client", false);
        let shutdown = Shutdown::default();
        // The deadline: a server that kept listening is stopped after 5 s,
        // and the test then fails on how it ended.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let stop = StopOnDrop(shutdown.clone());
        let deadline = std::thread::spawn(move || {
            let _stop = stop;
            let _ = finished.recv_timeout(std::time::Duration::from_secs(5));
        });
        let mut lines = Lines::new(&[], End::Eof);
        let end = bound()
            .run(
                ReplySource::Operator(&mut lines),
                &screen,
                &shutdown,
                &SystemClock,
            )
            .unwrap();
        drop(done);
        deadline.join().unwrap();
        assert_eq!(end, End::Eof);
    }

    #[test]
    fn a_secure_chat_goes_the_same_way_and_is_labelled_with_the_clients_key() {
        let server_identity = Identity::generate().unwrap();
        let server_key = server_identity.public_key();
        let mut server = bound();
        server.require_encryption(ServerSecurity::new(server_identity, None));
        let client_identity = Identity::generate().unwrap();
        let fingerprint = client_identity.public_key().fingerprint();
        let mut lines = Lines::new(&["sealed answer", "unused"], End::Eof);
        let ran = serve_while(
            server,
            ReplySource::Operator(&mut lines),
            true,
            move |endpoint| {
                let mut security = ClientSecurity::new(client_identity, server_key);
                let client = dealer(endpoint);
                request(
                    &client,
                    id(1),
                    &security.opening(id(1), b"secret", Instant::now()).unwrap(),
                );
                let handshake = reply(&client).split_off(2);
                let Ok(ClientStep::Proven(Some(sealed))) = security.step(
                    id(1),
                    Some(b"secret"),
                    Some(id(1)),
                    &handshake,
                    Instant::now(),
                ) else {
                    panic!("the server completes the handshake");
                };
                request(&client, id(1), &sealed);
                let answer = reply(&client).split_off(2);
                assert!(
                    matches!(security.step(id(1), Some(b"secret"), Some(id(1)), &answer, Instant::now()), Ok(ClientStep::Reply(text)) if text == b"sealed answer")
                );
            },
        );
        assert_eq!(
            ran.stdout.lines(),
            [format!("client {fingerprint} (encrypted)> secret")]
        );
        assert!(ran.stderr.text().contains("encrypted session with client"));
    }

    #[test]
    fn a_secure_goodbye_is_sealed_in_the_session() {
        let server_identity = Identity::generate().unwrap();
        let server_key = server_identity.public_key();
        let mut server = bound();
        server.require_encryption(ServerSecurity::new(server_identity, None));
        let client_identity = Identity::generate().unwrap();
        let mut lines = Lines::new(&[], End::Quit);
        let ran = serve_while(
            server,
            ReplySource::Operator(&mut lines),
            false,
            move |endpoint| {
                let mut security = ClientSecurity::new(client_identity, server_key);
                let client = dealer(endpoint);
                request(
                    &client,
                    id(1),
                    &security.opening(id(1), b"bye?", Instant::now()).unwrap(),
                );
                let handshake = reply(&client).split_off(2);
                let Ok(ClientStep::Proven(Some(sealed))) = security.step(
                    id(1),
                    Some(b"bye?"),
                    Some(id(1)),
                    &handshake,
                    Instant::now(),
                ) else {
                    panic!("the server completes the handshake");
                };
                request(&client, id(1), &sealed);
                let goodbye = reply(&client);
                assert_eq!(goodbye[0], id(1).marked_frame(Mark::Ended));
                let step = security.step(
                    id(1),
                    Some(b"bye?"),
                    Some(id(1)),
                    &goodbye[2..],
                    Instant::now(),
                );
                assert!(matches!(step, Ok(ClientStep::Ended)), "{goodbye:?}");
            },
        );
        assert_eq!(ran.end, End::Quit);
    }

    #[test]
    fn answer_memory_recognises_copies_and_forgets_old_sessions() {
        let mut memory = AnswerMemory::default();
        let five = id(5);
        assert!(matches!(memory.recall(None, five), Recall::New));
        let reply = Answer::Reply(vec![b"five".to_vec()]);
        memory.remember(None, five, reply.clone());
        assert!(matches!(memory.recall(None, five), Recall::Answered(answer) if *answer == reply));
        assert!(matches!(memory.recall(None, id(4)), Recall::Stale));
        assert!(matches!(memory.recall(None, id(6)), Recall::New));
        for session in 2..(REMEMBERED_SESSIONS as u64 + 10) {
            let other = MessageId {
                session,
                sequence: 1,
            };
            memory.remember(None, other, Answer::Echo);
        }
        assert!(memory.last.len() <= REMEMBERED_SESSIONS);
        assert!(
            matches!(memory.recall(None, five), Recall::New),
            "the oldest session was forgotten"
        );
    }

    #[test]
    fn answer_memory_holds_at_most_its_byte_budget_and_stores_no_echo() {
        let mut memory = AnswerMemory::default();
        let big = Answer::Reply(vec![vec![b'r'; 1024 * 1024]]);
        for session in 0..100 {
            let key = MessageId {
                session,
                sequence: 1,
            };
            memory.remember(None, key, big.clone());
            assert!(memory.bytes <= REMEMBERED_BYTES, "{} bytes", memory.bytes);
        }
        let kept: usize = memory.last.values().map(|(_, answer)| answer.bytes()).sum();
        assert_eq!(kept, memory.bytes, "the count matches what is stored");
        assert_eq!(memory.last.len(), REMEMBERED_BYTES / (1024 * 1024));
        memory.remember(None, id(1), Answer::Echo);
        assert_eq!(memory.bytes, kept, "an echo costs nothing to remember");
    }
}
