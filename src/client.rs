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

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::envelope::{Enveloped, MessageId};
use crate::error::ChatError;
use crate::message::Incoming;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::transport::{self, ConnectionEvent, ConnectionWatch, TransportError};

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
}

/// What ended the wait for one reply.
enum Waited {
    Reply(Vec<Vec<u8>>),
    Ended,
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
            session: RandomState::new().hash_one((std::process::id(), Instant::now())),
            sequence: 0,
            liveness,
        })
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
                Waited::Reply(body) => screen.show(&Incoming::decode(body, max_message_bytes))?,
                Waited::Ended => return Ok(ClientEnd::ServerEnded { unanswered: text }),
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
        let request = [id.to_frame(), Vec::new(), text.as_bytes().to_vec()];
        self.socket.send_multipart(&request, 0)?;
        let mut lost_since = if self.connected {
            screen.status("waiting for the server's reply… (Ctrl-C to quit)");
            None
        } else {
            screen.status(&format!(
                "no server at {} yet; the message will be delivered when one appears",
                self.endpoint
            ));
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
            match self.socket.recv_multipart(0) {
                // Fast path: the reply carries exactly our id frame (compared
                // as bytes, no parsing), the delimiter, then the text.
                Ok(mut frames)
                    if frames.len() >= 3 && frames[0] == request[0] && frames[1].is_empty() =>
                {
                    return Ok(Waited::Reply(frames.split_off(2)));
                }
                Ok(frames) => match Enveloped::split(frames, 0) {
                    Ok(reply) if reply.id == Some(id) && reply.ended => return Ok(Waited::Ended),
                    Ok(reply) if reply.id == Some(id) => return Ok(Waited::Reply(reply.body)),
                    // The answer to an earlier copy, or to an earlier message.
                    Ok(reply) if reply.id.is_some() => continue,
                    // A peer that dropped or rewrote our envelope: take what it sent.
                    Ok(reply) => return Ok(Waited::Reply(reply.body)),
                    Err(frames) => return Ok(Waited::Reply(frames)),
                },
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
                            // arrived; the server drops this one if it did.
                            self.socket.send_multipart(&request, 0)?;
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
