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
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::channel::{Admission, Origin, Plain, ServerChannel};
use crate::clock::{Clock, TICK};
use crate::display::escape_for_terminal;
use crate::envelope::{Enveloped, Mark, MessageId};
use crate::error::ChatError;
use crate::event::Kind;
use crate::message::{
    DEFAULT_MAX_MESSAGE_BYTES, Incoming, MAX_FRAMES, MAX_TEXT_BYTES, WIRE_LIMIT_BYTES,
};
use crate::presence::Presence;
use crate::secure::keys::PublicKey;
use crate::secure::server::ServerSecurity;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::throttle::Throttle;
use crate::transport::{Bounded, ConnectionId, ToClients, Undelivered};

/// How many client sessions the server remembers the last answer of. Old
/// sessions are forgotten first, so memory stays flat under any load.
const REMEMBERED_SESSIONS: usize = 4096;

/// How many bytes of replies the answer memory holds at most (echoed
/// messages are not stored: the re-sent copy is the reply).
const REMEMBERED_BYTES: usize = 16 * 1024 * 1024;

/// At most one notice of each kind a peer can trigger per this long.
const NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// Where the server's replies come from.
pub enum ReplySource<'a> {
    /// A person or a script, one line per reply.
    Operator(&'a mut dyn LineSource),
    /// Unattended: each message is sent back unchanged (frames and bytes).
    Echo,
}

/// A chat server, listening.
pub struct ChatServer {
    /// The way to the clients (a ZeroMQ ROUTER in the programs).
    clients: Box<dyn ToClients>,
    /// Plain, or secure once [`ChatServer::require_encryption`] is called.
    channel: Box<dyn ServerChannel>,
    answers: AnswerMemory,
    /// Messages are shown with at most this many bytes of text.
    max_message_bytes: usize,
    /// Who is connected, from the transport's connection events.
    presence: Presence,
    /// Messages read while the operator typed a reply, in arrival order:
    /// at most [`READ_AHEAD`].
    ahead: VecDeque<Pending>,
    phase: Phase,
    /// Rate limits on the notices a peer can trigger.
    throttle: Throttle,
    /// Rate limit on "N messages are waiting": each worth saying while a
    /// few arrive, a flood of them one line.
    waiting_notices: Throttle,
}

/// How many messages are read ahead while the operator types, at most
/// (each at most [`WIRE_LIMIT_BYTES`]): beyond, they wait in the
/// transport's queues, which hold a few per connection.
const READ_AHEAD: usize = 64;

/// What the server is doing: the loop's state.
enum Phase {
    /// No message is being answered: the next one is waited for.
    Idle,
    /// The operator is answering this message.
    Answering(Pending),
}

impl Phase {
    /// The connection of the message being answered: its client leaving is
    /// said at once.
    fn answering(&self) -> Option<ConnectionId> {
        match self {
            Phase::Answering(pending) => pending.source,
            Phase::Idle => None,
        }
    }
}

/// One thing that happened, as [`ChatServer::wait`] returns it.
enum Event {
    /// A request from a client, with the connection it came on.
    Request(Bounded, Option<ConnectionId>),
    /// The operator's line, or the end of their input (Ctrl-C included).
    Line(Line),
    /// A tick passed with nothing else: the connections' turn, and while
    /// the operator types, the messages that arrived meanwhile.
    Tick,
}

/// What the server shows while no message waits.
const WAITING: &str = "waiting for a message… (Ctrl-C to quit)";

/// A message for the operator, admitted by the channel and not answered yet.
struct Pending {
    /// Its envelope (the routing id first): where the reply goes.
    envelope: Vec<Vec<u8>>,
    origin: Origin,
    id: Option<MessageId>,
    /// Its text frames, in the clear.
    body: Vec<Vec<u8>>,
    /// The connection it came on.
    source: Option<ConnectionId>,
    /// The name its sender gave itself (`chat-client --name`), if any.
    name: Option<String>,
}

impl Pending {
    /// Whether `other` is a copy of this message (re-sent after a reconnect).
    fn is_copy(&self, origin: &Origin, id: Option<MessageId>) -> bool {
        id.is_some() && self.id == id && self.origin.key == origin.key
    }
}

impl ChatServer {
    /// A server answering the clients that `clients` brings, in plain mode.
    pub fn new(clients: Box<dyn ToClients>) -> ChatServer {
        ChatServer {
            clients,
            channel: Box::new(Plain),
            answers: AnswerMemory::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            presence: Presence::default(),
            ahead: VecDeque::new(),
            phase: Phase::Idle,
            throttle: Throttle::new(NOTICE_INTERVAL),
            waiting_notices: Throttle::with_burst(NOTICE_INTERVAL, 5),
        }
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
        self.clients.endpoint()
    }

    /// Serves messages until the reply source ends or a signal arrives.
    ///
    /// # Errors
    /// When the screen cannot be written or the transport fails.
    pub fn run(
        &mut self,
        mut replies: ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        clock: &dyn Clock,
    ) -> Result<End, ChatError> {
        screen.status(WAITING);
        loop {
            if matches!(self.phase, Phase::Idle)
                && let Some(pending) = self.ahead.pop_front()
            {
                self.serve(pending, &mut replies, screen, clock.now())?;
                continue;
            }
            let event = self.wait(&mut replies, screen, shutdown)?;
            if let ControlFlow::Break(end) = self.on(event, &mut replies, screen, clock.now())? {
                screen.flush()?;
                return Ok(end);
            }
        }
    }

    /// The next event: while the operator answers, their next line, for at
    /// most a tick; else the next request, for at most a tick, after what
    /// the operator did meanwhile.
    fn wait(
        &mut self,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
    ) -> Result<Event, ChatError> {
        if shutdown.requested() {
            return Ok(Event::Line(Line::End(End::Interrupted)));
        }
        if let ReplySource::Operator(lines) = replies {
            if let Phase::Answering(_) = self.phase {
                // The operator must see the message before answering it.
                if !lines.has_ready_line() {
                    screen.flush()?;
                }
                return Ok(lines.next_line(TICK)?.map_or(Event::Tick, Event::Line));
            }
            // The operator may quit while no message waits (keys typed
            // from now on are taken unechoed, see
            // LineSource::while_waiting). A script whose input has ended can
            // answer nothing more, so stop listening rather than accept a
            // message that would never be answered.
            if let Some(line) = lines.person().and_then(|person| person.while_waiting()) {
                return Ok(Event::Line(line));
            }
            if lines.is_exhausted() {
                return Ok(Event::Line(Line::End(End::Eof)));
            }
        }
        Ok(match self.clients.receive(true)? {
            Some((message, source)) => Event::Request(message, source),
            None => Event::Tick,
        })
    }

    /// Takes in one event; `Break` when the chat ends.
    fn on(
        &mut self,
        event: Event,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        now: Instant,
    ) -> Result<ControlFlow<End>, ChatError> {
        match event {
            Event::Request(message, source) => {
                while let Some(news) = self.clients.news() {
                    screen.notice(&news);
                }
                match self.admit(message, source, screen, now) {
                    Some(pending) => self.serve(pending, replies, screen, now)?,
                    None => screen.status(WAITING),
                }
                Ok(ControlFlow::Continue(()))
            }
            Event::Line(line) => self.on_line(line, screen, now),
            // Each tick without a message is also the moment to show what
            // is buffered and who came and went.
            Event::Tick => {
                screen.flush()?;
                while let Some(news) = self.clients.news() {
                    screen.notice(&news);
                }
                self.follow_connections(screen, now);
                if let Phase::Answering(_) = self.phase {
                    self.read_ahead(screen, now);
                }
                Ok(ControlFlow::Continue(()))
            }
        }
    }

    /// A line of the operator's: the reply to the message shown, or the end.
    fn on_line(
        &mut self,
        line: Line,
        screen: &Screen,
        now: Instant,
    ) -> Result<ControlFlow<End>, ChatError> {
        // An operator's `/urgent TEXT` is a reply like any other.
        let line = match line {
            Line::Urgent(text) => Line::Text(text),
            line => line,
        };
        let Phase::Answering(_) = self.phase else {
            return Ok(typed_while_idle(line, screen));
        };
        if let Line::Text(reply) = &line
            && reply.len() > MAX_TEXT_BYTES
        {
            screen.notice(&format!(
                "that reply has {} bytes, more than the {MAX_TEXT_BYTES} a message may have; not sent: type a shorter one",
                reply.len()
            ));
            return Ok(ControlFlow::Continue(()));
        }
        let Phase::Answering(Pending {
            envelope,
            origin,
            id,
            ..
        }) = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!("the phase was just matched");
        };
        match line {
            Line::Text(reply) => {
                let reply = vec![reply.into_bytes()];
                if let Some(id) = id {
                    self.answers
                        .remember(origin.key, id, Answer::Reply(reply.clone()));
                }
                self.answer(envelope, origin, id, reply, screen, now);
                if self.ahead.is_empty() {
                    screen.status(WAITING);
                }
                Ok(ControlFlow::Continue(()))
            }
            Line::Urgent(_) => unreachable!("made a plain line above"),
            Line::End(end) => {
                self.say_goodbye(envelope, origin, id);
                screen.notice(
                    "ending with the last message unanswered; its sender is told the chat ended",
                );
                Ok(ControlFlow::Break(end))
            }
        }
    }

    /// Reads the transport's connection events and tells the operator who
    /// came and went.
    fn follow_connections(&mut self, screen: &Screen, now: Instant) {
        let answering = self.phase.answering();
        while let Ok(Some(event)) = self.clients.next_event() {
            self.presence.on(event, answering, screen, now);
        }
    }

    /// What one request is: a message for the operator (`Some`), or
    /// something answered at once or dropped (`None`): a handshake or a
    /// refusal, a copy of a message already answered (its reply again), a
    /// copy of one still waiting (which then goes to the copy's
    /// connection), a late copy of an older one.
    fn admit(
        &mut self,
        message: Bounded,
        source: Option<ConnectionId>,
        screen: &Screen,
        now: Instant,
    ) -> Option<Pending> {
        let frames = self.within_limits(message, screen, now)?;
        // A connection this message came on may not have been seen taken in
        // yet: the transport's events are read now for it (not for every
        // message: that is a system call each, which the benchmark at 10
        // clients felt). Its address is what the handshake budget counts by.
        if !self.presence.knows(source) {
            self.follow_connections(screen, now);
        }
        self.presence.heard_from(source, screen, now);
        let pending = self.open(frames, source, screen, now)?;
        let pending = self.redirect_copy(pending, screen, now)?;
        self.answer_again(pending, screen, now)
    }

    /// The frames of a message within the limits; one over them was read
    /// and dropped, and the operator is told (rate-limited).
    fn within_limits(
        &mut self,
        message: Bounded,
        screen: &Screen,
        now: Instant,
    ) -> Option<Vec<Vec<u8>>> {
        message
            .map_err(|oversized| {
                self.warn(screen, "oversized", &format!(
                    "dropped a message of {} bytes in {} frames unread: a message may have at most {WIRE_LIMIT_BYTES} bytes in {MAX_FRAMES} frames",
                    oversized.bytes, oversized.frames
                ), now);
            })
            .ok()
    }

    /// The message in a request, through the channel: `None` for a request
    /// without an envelope, and for one the channel answers at once (a
    /// handshake, a refusal), which is answered here.
    fn open(
        &mut self,
        frames: Vec<Vec<u8>>,
        source: Option<ConnectionId>,
        screen: &Screen,
        now: Instant,
    ) -> Option<Pending> {
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
        match self.channel.incoming(&host, id, body, now) {
            Admission::Message { origin, id, body } => Some(Pending {
                envelope,
                origin,
                id,
                body,
                source,
                name,
            }),
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
                let event = match mark {
                    Mark::Refused => Kind::Refusal,
                    _ => Kind::Notice,
                };
                match throttle {
                    Some(kind) => self.warn_as(screen, kind, event, &notice, now),
                    None => screen.tell(event, &notice),
                }
                self.send(marked(envelope, id, mark), vec![body], screen, now);
                None
            }
        }
    }

    /// A copy of a message still waiting is not a new one: its reply goes
    /// to the copy's connection, the one the client has now, sealed in the
    /// session the copy came in (the client may have shaken hands anew).
    /// `None` when `copy` was one.
    fn redirect_copy(&mut self, copy: Pending, screen: &Screen, now: Instant) -> Option<Pending> {
        let answering = match &mut self.phase {
            Phase::Answering(pending) => Some(pending),
            Phase::Idle => None,
        };
        let Some(waiting) = answering
            .into_iter()
            .chain(self.ahead.iter_mut())
            .find(|waiting| waiting.is_copy(&copy.origin, copy.id))
        else {
            return Some(copy);
        };
        waiting.envelope = copy.envelope;
        waiting.source = copy.source;
        waiting.origin = copy.origin;
        if matches!(&self.phase, Phase::Answering(current) if current.is_copy(&copy.origin, copy.id))
        {
            let text = "the client you are answering sent its message again (it reconnected, or the desk's broker gave it again); your reply goes to it there";
            self.warn(screen, "answering again", text, now);
        }
        None
    }

    /// A copy of a message already answered gets its reply again, from the
    /// answer memory, and a late copy of an older one nothing: `None` for
    /// either.
    fn answer_again(&mut self, pending: Pending, screen: &Screen, now: Instant) -> Option<Pending> {
        let Some(id) = pending.id else {
            return Some(pending);
        };
        let reply = match self.answers.recall(pending.origin.key, id) {
            Recall::New => return Some(pending),
            Recall::Stale => return None,
            Recall::Answered(Answer::Echo) => pending.body,
            Recall::Answered(Answer::Reply(reply)) => reply.clone(),
        };
        let text = format!(
            "message #{} arrived again after a reconnect; sent its reply again",
            id.sequence
        );
        self.warn(screen, "again", &text, now);
        self.answer(
            pending.envelope,
            pending.origin,
            Some(id),
            reply,
            screen,
            now,
        );
        None
    }

    /// Shows one admitted message; with `--echo` sends it back, else the
    /// operator answers it next.
    fn serve(
        &mut self,
        pending: Pending,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        now: Instant,
    ) -> Result<(), ChatError> {
        let incoming = Incoming::decode(&pending.body, self.max_message_bytes);
        // Labels are for a person (and JSON, and the transcript): a
        // script's plain lines are the text alone.
        let label = screen.wants_labels().then(|| {
            label(
                &pending.origin,
                pending.name.as_deref(),
                self.presence.address_of(pending.source),
            )
        });
        let ReplySource::Operator(lines) = replies else {
            screen.show(&incoming, label.as_deref(), pending.id)?;
            self.echo(pending, screen, now);
            return Ok(());
        };
        // Typed before this message was on the screen: not its answer.
        let discarded = lines
            .person()
            .map_or(0, |person| person.discard_type_ahead());
        if discarded > 0 {
            screen.notice(&format!(
                "discarded {discarded} bytes typed before this message arrived: a reply is what you type after reading it"
            ));
        }
        screen.show(&incoming, label.as_deref(), pending.id)?;
        if !self.presence.knows(pending.source) {
            screen.notice(
                "the client who sent this has left already: your reply reaches it only if it comes back and sends its message again",
            );
        }
        if let Some(person) = lines.person() {
            person.set_prompt(&match self.ahead.len() {
                0 => "reply> ".to_string(),
                waiting => format!("reply ({waiting} more waiting)> "),
            });
        }
        self.phase = Phase::Answering(pending);
        Ok(())
    }

    /// Sends a message back exactly as it came (`--echo`).
    fn echo(&mut self, pending: Pending, screen: &Screen, now: Instant) {
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
        self.answer(envelope, origin, id, body, screen, now);
        screen.status(WAITING);
    }

    /// While the operator types: reads and admits what has arrived
    /// (handshakes and copies are answered at once), keeping up to
    /// [`READ_AHEAD`] messages for the operator.
    fn read_ahead(&mut self, screen: &Screen, now: Instant) {
        let before = self.ahead.len();
        while self.ahead.len() < READ_AHEAD {
            let Ok(Some((message, source))) = self.clients.receive(false) else {
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
        if screen.keeps_transcript() {
            screen.sent(&reply.concat(), id);
        }
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
        match self.clients.send(&frames) {
            Ok(()) => {}
            Err(Undelivered::Gone) => self.warn(
                screen,
                "gone",
                "the reply could not be delivered: that client has disconnected",
                now,
            ),
            Err(Undelivered::NotTaken(error)) => self.warn(
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
            let _ = self.clients.send(&frames);
        }
    }

    /// A notice a peer can trigger: at most one of each kind per
    /// [`NOTICE_INTERVAL`], with a count of those held back.
    fn warn(&mut self, screen: &Screen, kind: &'static str, text: &str, now: Instant) {
        self.warn_as(screen, kind, Kind::Notice, text, now);
    }

    /// As [`ChatServer::warn`], for an event of `event`'s kind.
    fn warn_as(
        &mut self,
        screen: &Screen,
        kind: &'static str,
        event: Kind,
        text: &str,
        now: Instant,
    ) {
        if let Some(held) = self.throttle.admit(kind, now) {
            screen.tell(event, &Throttle::with_count(text, held));
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

/// A line the operator typed while no message waits: it answers nothing,
/// and the end of input ends the chat.
fn typed_while_idle(line: Line, screen: &Screen) -> ControlFlow<End> {
    match line {
        Line::End(end) => ControlFlow::Break(end),
        Line::Text(_) | Line::Urgent(_) => {
            screen.notice(
                "not sent: no message is waiting for an answer yet; type your reply once one is shown (/quit or Ctrl-D ends)",
            );
            ControlFlow::Continue(())
        }
    }
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
    use crate::fixture::{Lines, Output, screen};
    use crate::secure::client::{ClientSecurity, ClientStep};
    use crate::secure::frame::Frame;
    use crate::secure::keys::Identity;
    use crate::transport::memory::{MemoryClients, ServerDid, ToServerLoop, routing_id};
    use crate::transport::{ConnectionEvent, Oversized};

    /// What a server run left: how it ended, its stdout and its stderr, and
    /// every message it sent.
    struct Ran {
        end: End,
        stdout: Output,
        stderr: Output,
        sent: Vec<Vec<Vec<u8>>>,
    }

    /// Runs a server with `replies` in memory: `start` queues what the
    /// clients do first, `clients` acts on what the server does next (and
    /// stops it, as Ctrl-C would, when the test is done).
    fn serve_while(
        mut server: ChatServer,
        replies: ReplySource<'_>,
        interactive: bool,
        start: impl FnOnce(&mut ToServerLoop),
        mut clients: impl FnMut(ServerDid<'_>, &mut ToServerLoop, &Shutdown) + 'static,
    ) -> Ran {
        let (screen, stdout, stderr) = screen("chat-server", "client", interactive);
        let shutdown = Shutdown::default();
        let stop = shutdown.clone();
        let (link, end) = MemoryClients::new(move |did, to_server| clients(did, to_server, &stop));
        start(&mut end.borrow_mut().to_server);
        server.clients = Box::new(link);
        let ended = server
            .run(replies, &screen, &shutdown, &SystemClock)
            .expect("the server loop runs");
        let sent = end.borrow().sent.clone();
        Ran {
            end: ended,
            stdout,
            stderr,
            sent,
        }
    }

    /// A server whose clients the test plays (see [`serve_while`]).
    fn server() -> ChatServer {
        let (nobody, _) = MemoryClients::new(|_, _| {});
        ChatServer::new(Box::new(nobody))
    }

    /// One client on connection 1 (no address, as over `ipc://`) asks `text` as message `id`.
    fn one_client_asks(id: MessageId, text: &'static [u8]) -> impl FnOnce(&mut ToServerLoop) {
        move |to_server| {
            to_server.connect(1, None);
            to_server.request(1, id, text);
        }
    }

    /// Stops the server once it has sent anything.
    fn stop_after_a_reply(did: ServerDid<'_>, _: &mut ToServerLoop, stop: &Shutdown) {
        if let ServerDid::Sent(_) = did {
            stop.request();
        }
    }

    /// After the server's first reply, the clients do `then`; after its
    /// second, the server is stopped.
    fn resend_once(
        then: impl Fn(&mut ToServerLoop) + 'static,
    ) -> impl FnMut(ServerDid<'_>, &mut ToServerLoop, &Shutdown) {
        let mut replies = 0;
        move |did, to_server, stop| {
            if let ServerDid::Sent(_) = did {
                replies += 1;
                match replies {
                    1 => then(to_server),
                    _ => stop.request(),
                }
            }
        }
    }

    fn id(sequence: u64) -> MessageId {
        MessageId {
            session: 0xc0ffee,
            sequence,
        }
    }

    /// The reply `[routing id of connection, id, "", text]`.
    fn reply_on(connection: i32, id: MessageId, text: &[u8]) -> Vec<Vec<u8>> {
        vec![routing_id(connection), id.to_frame(), vec![], text.to_vec()]
    }

    #[test]
    fn a_message_is_shown_and_answered_with_the_operators_next_line() {
        let mut lines = Lines::new(&["hi back", "unused"], End::Eof);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            one_client_asks(id(1), b"hello"),
            stop_after_a_reply,
        );
        assert_eq!(ran.sent, [reply_on(1, id(1), b"hi back")]);
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
        let ran = serve_while(
            server(),
            ReplySource::Echo,
            false,
            |to_server| to_server.frames(1, vec![vec![], b"plain".to_vec()]),
            stop_after_a_reply,
        );
        assert_eq!(ran.sent, [[routing_id(1), vec![], b"plain".to_vec()]]);
        assert_eq!(ran.stdout.lines(), ["plain"]);
    }

    #[test]
    fn a_copy_of_an_answered_message_is_answered_from_memory_not_shown_again() {
        let mut lines = Lines::new(&["only answer", "second answer"], End::Eof);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            one_client_asks(id(1), b"hello"),
            resend_once(|to_server| to_server.request(1, id(1), b"hello")),
        );
        assert_eq!(
            ran.sent,
            [
                reply_on(1, id(1), b"only answer"),
                reply_on(1, id(1), b"only answer")
            ]
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
        let ran = serve_while(
            server(),
            ReplySource::Echo,
            false,
            one_client_asks(id(2), b"two"),
            resend_once(|to_server| {
                to_server.request(1, id(1), b"one, late");
                to_server.request(1, id(3), b"three");
            }),
        );
        // Had the late copy been answered, its reply would come second.
        assert_eq!(
            ran.sent,
            [reply_on(1, id(2), b"two"), reply_on(1, id(3), b"three")]
        );
        assert_eq!(ran.stdout.lines(), ["two", "three"]);
    }

    #[test]
    fn an_encrypted_message_to_a_plain_server_is_refused_with_a_reason() {
        let hello = Frame::HandshakeInit {
            client_index: 1,
            noise: &[0; 48],
        }
        .encode();
        let ran = serve_while(
            server(),
            ReplySource::Echo,
            false,
            move |to_server| {
                to_server.connect(1, None);
                to_server.request(1, id(1), &hello);
            },
            stop_after_a_reply,
        );
        let refusal = &ran.sent[0];
        assert_eq!(refusal[1], id(1).marked_frame(Mark::Refused));
        assert!(
            String::from_utf8_lossy(&refusal[3]).contains("not in secure mode"),
            "{refusal:?}"
        );
        assert_eq!(ran.stdout.text(), "", "a refused message is not shown");
        assert!(ran.stderr.text().contains("refused an encrypted chat"));
    }

    #[test]
    fn a_message_without_an_envelope_is_ignored_with_a_notice() {
        let ran = serve_while(
            server(),
            ReplySource::Echo,
            false,
            |to_server| {
                to_server.frames(1, vec![b"no delimiter".to_vec()]);
                to_server.request(1, id(1), b"proper");
            },
            stop_after_a_reply,
        );
        assert_eq!(ran.sent, [reply_on(1, id(1), b"proper")]);
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
            server(),
            ReplySource::Operator(&mut lines),
            false,
            one_client_asks(id(4), b"still there?"),
            |_, _, _| {},
        );
        assert_eq!(ran.sent.len(), 1);
        assert_eq!(ran.sent[0][1], id(4).marked_frame(Mark::Ended));
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
        let mut lines = Lines::new(&[], End::Eof);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            |_| {},
            |did, _, _| {
                assert!(
                    !matches!(did, ServerDid::Waited),
                    "the server waited for a message it could not answer"
                );
            },
        );
        assert_eq!(ran.end, End::Eof);
    }

    /// A secure client's side of one message, played in memory: the
    /// handshake sent first, the sealed message once the server answers it,
    /// and `check` on the server's last word.
    fn secure_client(
        mut security: ClientSecurity,
        text: &'static [u8],
        check: impl Fn(&[Vec<u8>], Result<ClientStep, crate::secure::client::SecureFailure>) + 'static,
    ) -> (
        impl FnOnce(&mut ToServerLoop),
        impl FnMut(ServerDid<'_>, &mut ToServerLoop, &Shutdown),
    ) {
        let opening = security.opening(id(1), text, Instant::now()).unwrap();
        let start = move |to_server: &mut ToServerLoop| {
            to_server.connect(1, None);
            to_server.request(1, id(1), &opening);
        };
        let mut replies = 0;
        let clients = move |did: ServerDid<'_>, to_server: &mut ToServerLoop, stop: &Shutdown| {
            let ServerDid::Sent(frames) = did else {
                return;
            };
            replies += 1;
            let step = security.step(id(1), Some(text), Some(id(1)), &frames[3..], Instant::now());
            if replies == 1 {
                let Ok(ClientStep::Proven(Some(sealed))) = step else {
                    panic!("the server completes the handshake");
                };
                to_server.request(1, id(1), &sealed);
            } else {
                check(frames, step);
                stop.request();
            }
        };
        (start, clients)
    }

    #[test]
    fn a_secure_chat_goes_the_same_way_and_is_labelled_with_the_clients_key() {
        let server_identity = Identity::generate().unwrap();
        let server_key = server_identity.public_key();
        let mut server = server();
        server.require_encryption(ServerSecurity::new(server_identity, None));
        let client_identity = Identity::generate().unwrap();
        let fingerprint = client_identity.public_key().fingerprint();
        let mut lines = Lines::new(&["sealed answer", "unused"], End::Eof);
        let security = ClientSecurity::new(client_identity, server_key);
        let (start, clients) = secure_client(security, b"secret", |_, step| {
            assert!(matches!(step, Ok(ClientStep::Reply(text)) if text == b"sealed answer"));
        });
        let ran = serve_while(
            server,
            ReplySource::Operator(&mut lines),
            true,
            start,
            clients,
        );
        assert_eq!(ran.sent.len(), 2);
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
        let mut server = server();
        server.require_encryption(ServerSecurity::new(server_identity, None));
        let mut lines = Lines::new(&[], End::Quit);
        let security = ClientSecurity::new(Identity::generate().unwrap(), server_key);
        let (start, clients) = secure_client(security, b"bye?", |goodbye, step| {
            assert_eq!(goodbye[1], id(1).marked_frame(Mark::Ended));
            assert!(matches!(step, Ok(ClientStep::Ended)), "{goodbye:?}");
        });
        let ran = serve_while(
            server,
            ReplySource::Operator(&mut lines),
            false,
            start,
            clients,
        );
        assert_eq!(ran.sent.len(), 2);
        assert_eq!(ran.end, End::Quit);
    }

    #[test]
    fn several_clients_are_answered_in_turn_each_on_its_own_connection() {
        let mut lines = Lines::new(&["to one", "to two", "to three"], End::Eof);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            |to_server| {
                for connection in 1..=3 {
                    to_server.connect(connection, Some(&format!("127.0.0.1:{connection}")));
                }
                to_server.request(1, id(1), b"one");
                to_server.request(
                    2,
                    MessageId {
                        session: 2,
                        sequence: 1,
                    },
                    b"two",
                );
                to_server.request(
                    3,
                    MessageId {
                        session: 3,
                        sequence: 1,
                    },
                    b"three",
                );
            },
            |_, _, _| {},
        );
        let to = |connection: i32, text: &[u8]| {
            let session = if connection == 1 {
                0xc0ffee
            } else {
                connection as u64
            };
            reply_on(
                connection,
                MessageId {
                    session,
                    sequence: 1,
                },
                text,
            )
        };
        assert_eq!(
            ran.sent,
            [to(1, b"to one"), to(2, b"to two"), to(3, b"to three")]
        );
        assert_eq!(ran.stdout.lines(), ["one", "two", "three"]);
        assert_eq!(ran.end, End::Eof);
    }

    #[test]
    fn the_operator_is_told_when_the_client_being_answered_leaves() {
        // The operator takes a few ticks to answer; meanwhile the client goes.
        let mut lines = Lines::after_ticks(&["too late"], End::Eof, 3);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            |to_server| {
                to_server.connect(1, Some("127.0.0.1:5"));
                to_server.request(1, id(1), b"bye");
            },
            |did, to_server, _| {
                if let ServerDid::Looked = did
                    && to_server.gone.is_empty()
                {
                    to_server.event(1, ConnectionEvent::Disconnected);
                    to_server.gone.push(1);
                }
            },
        );
        assert!(ran.sent.is_empty());
        assert_eq!(
            ran.stderr.lines(),
            [
                "chat-server: a client connected from 127.0.0.1:5",
                "chat-server: the client you are answering at 127.0.0.1:5 has left: your reply reaches it only if it comes back and sends its message again",
                "chat-server: the reply could not be delivered: that client has disconnected",
            ]
        );
    }

    #[test]
    fn a_copy_from_a_new_connection_takes_the_reply_there() {
        let mut lines = Lines::after_ticks(&["found you"], End::Eof, 3);
        let ran = serve_while(
            server(),
            ReplySource::Operator(&mut lines),
            false,
            one_client_asks(id(1), b"here"),
            |did, to_server, _| {
                // The client reconnects while the operator types, and sends
                // its message again on the new connection.
                if let ServerDid::Looked = did
                    && to_server.gone.is_empty()
                {
                    to_server.event(1, ConnectionEvent::Disconnected);
                    to_server.gone.push(1);
                    to_server.connect(2, None);
                    to_server.request(2, id(1), b"here");
                }
            },
        );
        assert_eq!(ran.sent, [reply_on(2, id(1), b"found you")]);
        assert_eq!(ran.stdout.lines(), ["here"], "shown once");
        assert!(
            ran.stderr
                .text()
                .contains("the client you are answering sent its message again"),
            "{}",
            ran.stderr.text()
        );
    }

    #[test]
    fn an_oversized_request_is_dropped_with_a_notice_and_the_next_served() {
        let ran = serve_while(
            server(),
            ReplySource::Echo,
            false,
            |to_server| {
                to_server.connect(1, None);
                let oversized = Oversized {
                    frames: 2,
                    bytes: 1 << 30,
                };
                to_server.requests.push_back((Err(oversized), Some(1)));
                to_server.request(1, id(1), b"small");
            },
            stop_after_a_reply,
        );
        assert_eq!(ran.sent, [reply_on(1, id(1), b"small")]);
        assert!(
            ran.stderr
                .text()
                .contains("dropped a message of 1073741824 bytes in 2 frames unread"),
            "{}",
            ran.stderr.text()
        );
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
