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
//! * The socket monitor reports both as a lost connection. The client says
//!   so, lets ZeroMQ reconnect, and when a server is back re-sends the pending
//!   message with the same id (see [`crate::envelope`]), so the server
//!   answers it exactly once. If none is back within the give-up time, the
//!   message is handed back to the caller unsent.
//!
//! The socket is a DEALER doing REQ's lock-step itself: it sends
//! `[id, "", text]` and ignores replies whose id is not the pending one (the
//! answer to a copy that crossed a reconnect).
//!
//! In secure mode (see [`crate::secure`]) the text is sealed: the first
//! message of a session goes out as a handshake, and the sealed text follows
//! when the server has proven its key. After a reconnect the client shakes
//! hands afresh and seals the pending message again.

use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::envelope::{self, Enveloped, Mark, MessageId};
use crate::error::ChatError;
use crate::message::Incoming;
use crate::secure::frame::Refusal;
use crate::secure::session::{ClientSecurity, ClientStep, SecureFailure};
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::transport::{self, ConnectionEvent, ConnectionWatch, Frames, TransportError};

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
    GaveUp { unanswered: String },
    /// The server's operator ended the chat while this message waited.
    ServerEnded { unanswered: String },
    /// Interrupted while this message waited for its reply.
    InterruptedWaiting { unanswered: String },
    /// The server refused the message, or secure mode failed (`reason`
    /// says which, for the user); the message was not answered.
    Refused { reason: String, unanswered: String },
}

/// A chat client connected (or connecting) to a server.
pub struct ChatClient {
    socket: zmq::Socket,
    watch: ConnectionWatch,
    connected: bool,
    endpoint: String,
    session: u64,
    sequence: u64,
    liveness: Liveness,
    security: Option<ClientSecurity>,
    /// The pending message's id frame, rewritten in place for each message.
    id_frame: Vec<u8>,
    /// The frames of the latest reply, reused so that receiving the usual
    /// reply allocates nothing.
    reply: [zmq::Message; 3],
}

/// The shape of a received reply.
enum Received {
    /// Exactly `[pending id, "", one text frame]`, held in `reply`.
    Usual,
    /// Anything else, taken out of the socket as owned frames.
    Frames(Vec<Vec<u8>>),
}

/// What ended the wait for one reply.
enum Waited {
    /// The usual reply, `[pending id, "", text]`: the text is `reply[2]`.
    ReplyInPlace,
    Reply(Vec<Vec<u8>>),
    Ended,
    Refused(String),
    GaveUp,
    Interrupted,
}

impl ChatClient {
    /// Connects to `endpoint`; the server may appear later.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &Endpoint,
        liveness: Liveness,
    ) -> Result<ChatClient, TransportError> {
        let timeout = liveness.timeout.as_millis().clamp(10, i32::MAX as u128) as i32;
        let socket = transport::socket_for(context, zmq::DEALER, endpoint)?;
        socket.set_heartbeat_ivl((timeout / 3).max(10))?;
        socket.set_heartbeat_timeout(timeout)?;
        // The monitor is attached before connecting, or a server that is
        // already up could complete its handshake unseen.
        let watch = ConnectionWatch::attach(context, &socket)?;
        transport::connect_socket(&socket, endpoint)?;
        Ok(ChatClient {
            socket,
            watch,
            connected: false,
            endpoint: endpoint.to_string(),
            session: envelope::random_id(),
            sequence: 0,
            liveness,
            security: None,
            id_frame: Vec::new(),
            reply: [
                zmq::Message::new(),
                zmq::Message::new(),
                zmq::Message::new(),
            ],
        })
    }

    /// Turns on secure mode: every message is sealed for the server whose
    /// key `security` pins, and nothing is sent until it proves it holds it.
    pub fn require_encryption(&mut self, security: ClientSecurity) {
        self.security = Some(security);
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends each line from `lines` and shows each reply, until input ends,
    /// a signal arrives, or a message cannot be answered.
    pub fn run(
        &mut self,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
        max_message_bytes: usize,
    ) -> Result<ClientEnd, ChatError> {
        loop {
            if !lines.has_ready_line() {
                screen.flush()?;
            }
            let text = match lines.next_line(shutdown)? {
                Line::Text(text) => text,
                Line::End(end) => {
                    screen.flush()?;
                    return Ok(ClientEnd::Finished(end));
                }
            };
            self.sequence += 1;
            let id = MessageId {
                session: self.session,
                sequence: self.sequence,
            };
            match self.exchange(id, &text, screen, shutdown)? {
                Waited::ReplyInPlace => screen.show_frame(&self.reply[2], max_message_bytes)?,
                Waited::Reply(body) => {
                    let incoming = Incoming::decode(body, max_message_bytes);
                    match &self.security {
                        Some(security) => screen.show_from(
                            &incoming,
                            &format!("server {} (encrypted)", security.server_key().fingerprint()),
                        )?,
                        None => screen.show(&incoming)?,
                    }
                }
                Waited::Ended => return Ok(ClientEnd::ServerEnded { unanswered: text }),
                Waited::Refused(reason) => {
                    return Ok(ClientEnd::Refused {
                        reason,
                        unanswered: text,
                    });
                }
                Waited::GaveUp => return Ok(ClientEnd::GaveUp { unanswered: text }),
                Waited::Interrupted => {
                    return Ok(ClientEnd::InterruptedWaiting { unanswered: text });
                }
            }
        }
    }

    /// Sends one message and waits for its reply, re-sending it whenever a
    /// lost connection is re-established.
    fn exchange(
        &mut self,
        id: MessageId,
        text: &str,
        screen: &Screen,
        shutdown: &Shutdown,
    ) -> Result<Waited, ChatError> {
        // Events from while the user was typing describe the past; only what
        // happens from now on concerns this message. Reading them only serves
        // the status line, so script mode skips it (a disconnection is still
        // seen during the wait below).
        if screen.is_interactive() {
            self.catch_up_with_connection_events(screen)?;
        }
        id.write_frame(&mut self.id_frame);
        // In secure mode what goes out is sealed; in plain mode, the text itself.
        let mut sealed = match &mut self.security {
            Some(security) => Some(security.opening(id, text.as_bytes())?),
            None => None,
        };
        self.send_request(sealed.as_deref().unwrap_or(text.as_bytes()))?;
        let mut lost_since = if self.connected {
            screen.status("waiting for the server's reply… (Ctrl-C to quit)");
            None
        } else {
            // Script mode shows no status: do not even format it (until the
            // first wait, a script-mode client has not read the events that
            // say it is connected, so this branch runs for every message).
            if screen.is_interactive() {
                screen.status(&format!(
                    "no server at {} yet; the message will be delivered when one appears",
                    self.endpoint
                ));
            }
            Some(Instant::now())
        };
        // Only a connection lost *after* the send may have taken the message
        // with it; one that was down before still has it queued.
        let mut resend_on_connect = false;
        loop {
            if shutdown.requested() {
                return Ok(Waited::Interrupted);
            }
            // Blocks until a reply or the socket's receive timeout (one tick).
            match self.receive_reply() {
                Ok(Received::Usual) => return Ok(Waited::ReplyInPlace),
                Ok(Received::Frames(frames)) => {
                    let reply = match Enveloped::split(frames, 0) {
                        // The answer to an earlier copy, or to an earlier message.
                        Ok(reply) if reply.id.is_some() && reply.id != Some(id) => continue,
                        Ok(reply) => reply,
                        // A peer that dropped our envelope: take what it sent.
                        Err(frames) => Enveloped {
                            envelope: Vec::new(),
                            id: None,
                            mark: Mark::Normal,
                            body: frames,
                        },
                    };
                    match reply.mark {
                        Mark::Ended => return Ok(Waited::Ended),
                        Mark::Refused => {
                            let reason = Incoming::decode(reply.body, 1024).text;
                            let reason = crate::display::escape_for_terminal(&reason);
                            return Ok(Waited::Refused(format!(
                                "the server refused the message: {reason}"
                            )));
                        }
                        Mark::Normal => {}
                    }
                    let Some(security) = &mut self.security else {
                        return Ok(Waited::Reply(reply.body));
                    };
                    let next = match security.step(id, text.as_bytes(), &reply.body) {
                        Ok(ClientStep::Reply(text)) => return Ok(Waited::Reply(vec![text])),
                        Ok(ClientStep::Send(next)) => {
                            screen.notice(&format!(
                                "encrypted chat with server {} (it proved it holds the key given with --server-key)",
                                security.server_key().fingerprint()
                            ));
                            Some(next)
                        }
                        Ok(ClientStep::Restart(hello)) => Some(hello),
                        Ok(ClientStep::Ignore) => None,
                        Err(failure) => {
                            return Ok(Waited::Refused(describe(&failure, &self.endpoint)));
                        }
                    };
                    if let Some(next) = next {
                        self.send_request(&next)?;
                        sealed = Some(next);
                    }
                }
                // A whole tick without a reply: show what is buffered meanwhile.
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => screen.flush()?,
                Err(error) => return Err(error.into()),
            }
            while let Some(event) = self.watch.try_next()? {
                match event {
                    ConnectionEvent::Disconnected if self.connected => {
                        self.connected = false;
                        lost_since = Some(Instant::now());
                        resend_on_connect = true;
                        screen.notice(&format!(
                            "lost the connection to the server at {}; waiting up to {} s for it to come back",
                            self.endpoint,
                            self.liveness.give_up.as_secs_f32()
                        ));
                    }
                    ConnectionEvent::Connected => {
                        self.connected = true;
                        lost_since = None;
                        if std::mem::take(&mut resend_on_connect) {
                            // The copy sent on the lost connection may never have
                            // arrived; the server drops this one if it did. In
                            // secure mode the server may be a new one: shake
                            // hands afresh, the message follows.
                            if let Some(security) = &mut self.security {
                                security.reset();
                                sealed = Some(security.opening(id, text.as_bytes())?);
                            }
                            self.send_request(sealed.as_deref().unwrap_or(text.as_bytes()))?;
                            screen.notice(
                                "connected to the server again; re-sent the unanswered message",
                            );
                        }
                    }
                    _ => {}
                }
            }
            if lost_since.is_some_and(|since| since.elapsed() >= self.liveness.give_up) {
                return Ok(Waited::GaveUp);
            }
        }
    }

    /// Sends `[id frame, "", body]` for the pending message.
    fn send_request(&self, body: &[u8]) -> Result<(), zmq::Error> {
        self.socket.send(&self.id_frame[..], zmq::SNDMORE)?;
        self.socket.send(&[][..], zmq::SNDMORE)?;
        self.socket.send(body, 0)
    }

    /// Receives one reply, blocking for at most the socket's receive timeout.
    /// The usual reply of plain mode lands in the reused `reply` frames;
    /// any other (secure mode, a mark, another id, an odd peer) is returned
    /// as owned frames for the careful path.
    fn receive_reply(&mut self) -> Result<Received, zmq::Error> {
        match transport::receive_frames(&self.socket, &mut self.reply)? {
            Frames::InPlace(3) if self.security.is_none() && self.is_usual_reply() => {
                Ok(Received::Usual)
            }
            Frames::InPlace(count) => Ok(Received::Frames(transport::owned(&self.reply[..count]))),
            Frames::Owned(frames) => Ok(Received::Frames(frames)),
        }
    }

    fn is_usual_reply(&self) -> bool {
        self.reply[0][..] == self.id_frame[..] && self.reply[1].is_empty()
    }

    fn catch_up_with_connection_events(&mut self, screen: &Screen) -> Result<(), zmq::Error> {
        while let Some(event) = self.watch.try_next()? {
            match event {
                ConnectionEvent::Connected => self.connected = true,
                ConnectionEvent::Disconnected => {
                    if self.connected {
                        screen
                            .status("(the connection to the server dropped while you were typing)");
                    }
                    self.connected = false;
                }
                ConnectionEvent::HandshakeFailed | ConnectionEvent::Other => {}
            }
        }
        Ok(())
    }
}

/// What a secure-mode failure means, for the user.
fn describe(failure: &SecureFailure, endpoint: &str) -> String {
    match failure {
        SecureFailure::ServerNotProven => format!(
            "the server at {endpoint} did not prove it holds the key given with --server-key (a different server, or someone in the middle); the message was not sent"
        ),
        SecureFailure::ServerIsPlain => format!(
            "the server at {endpoint} answered without encryption: it is not in secure mode (chat-server --key FILE); the message was not sent"
        ),
        SecureFailure::ReplyNotAuthentic => {
            "the reply failed authentication (altered on the way?) and was not shown".to_string()
        }
        SecureFailure::Refused(reason, text) => {
            let text = crate::display::escape_for_terminal(text);
            match reason {
                Refusal::NotAllowed => format!("the server refused this client: {text}"),
                Refusal::HandshakeFailed => format!("the server refused the handshake: {text}"),
                Refusal::NotAuthentic | Refusal::UnknownSession => {
                    format!("the server refused the message: {text}")
                }
            }
        }
    }
}
